"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright): it renders,
its figures match the API, and they update after more shares."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

from pool.units import (
    format_band,
    format_difficulty,
    format_duration,
    format_hashrate,
    format_one_in,
    format_probability,
)
from tests.support.fixtures import PoolFactory
from tests.support.node import RegtestNode
from tests.support.watch import PINNED, Miner, api, wait_blocks_final

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOT = Path("/tmp/solopool-dashboard.png")
PREFIX = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


FORMATS: list[tuple[str, Callable[[Any], str], list[float]]] = [
    ("fmtHashrate", format_hashrate, [0, 0.5, 52_000, 1.21e12, 999.6e12, 600e18]),
    ("fmtBand", format_band, [0.08, 0.158, 0.0123]),
    ("fmtDifficulty", format_difficulty,
     [4.656542373906925e-10, 1.23e-7, 0.000123, 0.5, 512, 2.31e9, 83.1e12]),
    ("fmtDuration", format_duration, [45, 600, 18_000, 259_200, 3.6e9, 4.29e11, 8.59e18]),
    ("fmtProbability", format_probability, [1 / 6e6, 0.00873, 0.5, 0.99999, 1.0, 3.67e-12]),
    ("fmtOneIn", format_one_in, [1 / 6e6, 1 / 11_342.4, 1.0, 1.667e-9]),
]


def parse_hashrate(text: str) -> tuple[float, str]:
    """"1.21 TH/s ± 8.0%" -> (1.21e12, "± 8.0%")."""
    match = re.fullmatch(r"([\d.]+) ([kMGTPE]?)H/s(?: (± [\d.]+%))?", text.strip())
    assert match, text
    return float(match.group(1)) * PREFIX[match.group(2)], match.group(3) or ""


def count(text: str) -> int:
    return int(text.replace(",", ""))


async def cell(page: Page, worker: str, field: str) -> str:
    text = await page.locator(f'tr[data-worker="{worker}"] td[data-field="{field}"]').inner_text()
    return text.strip()


async def wait_until(page: Page, expression: str, timeout: float = 10.0) -> None:
    """Poll `expression` in the page (page.wait_for_function would need 'unsafe-eval', which the
    dashboard's Content-Security-Policy rightly refuses)."""
    async with asyncio.timeout(timeout):
        while not await page.evaluate(expression):
            await asyncio.sleep(0.05)


async def text(page: Page, element_id: str) -> str:
    return (await page.locator(f"#{element_id}").inner_text()).strip()


async def test_dashboard_renders_and_updates(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node, **PINNED)
    address = node.new_address("bech32")
    rig = await Miner.connect(pool, f"{address}.bitaxe")
    other = await Miner.connect(pool, f"{address}.nerdminer")
    for _ in range(6):
        assert (await rig.share())[0]["result"] is True
    for _ in range(2):
        assert (await other.share())[0]["result"] is True
    old = rig.notify()
    reply, block_hash = await rig.share(block=True)
    assert reply["result"] is True
    await rig.wait_new_tip(old[1])
    await other.wait_new_tip(old[1])
    stale = rig.submitted[0]
    assert (await rig.submit_on(*stale))["error"][0] == 21
    await wait_blocks_final(pool, 1)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(f"{pool.api.url}/?refresh=1")
            await wait_until(page, "Number(document.body.dataset.updates || 0) >= 1")
            # Hold the stats clock still so the page and the API show the same estimates, and
            # let the page refresh once more at the held time.
            held = time.time()
            pool.stats.clock = lambda: held
            updates = int(await page.evaluate("document.body.dataset.updates"))
            await wait_until(page, f"Number(document.body.dataset.updates) >= {updates + 1}")

            summary: dict[str, Any] = await api(pool, "/api/pool")
            workers = {w["name"]: w for w in (await api(pool, "/api/workers"))["workers"]}
            assert count(await text(page, "pool-accepted")) == summary["shares"]["accepted"] == 9
            assert count(await text(page, "pool-stale")) == summary["shares"]["stale"] == 1
            assert count(await text(page, "pool-rejected")) == summary["shares"]["rejected"] == 0
            assert count(await text(page, "blocks-found")) == summary["blocks"]["found"] == 1
            assert count(await text(page, "miners")) == summary["miners"] == 2
            assert await text(page, "net-difficulty") == format_difficulty(summary["difficulty"])
            assert await text(page, "best-all-time") == format_difficulty(
                summary["best_share"]["all_time"]
            )
            assert count(await text(page, "height")) == summary["height"]
            assert (await text(page, "network")).lower() == "regtest"
            assert "node ok" in await text(page, "node-status")
            assert await text(page, "odds-one-in") == "1 in 1"  # regtest: every block is ours

            shown, band = parse_hashrate(await text(page, "pool-hashrate"))
            pool_10m = summary["hashrate"]["10m"]
            # The same figure, to the 3 digits shown.
            assert abs(shown - pool_10m["hashrate"]) <= 0.005 * pool_10m["hashrate"]
            assert band == format_band(pool_10m["band"])

            for name, entry in workers.items():
                assert count(await cell(page, name, "accepted")) == entry["accepted"]
                assert count(await cell(page, name, "stale")) == entry["stale"]
                assert count(await cell(page, name, "rejected")) == entry["rejected"]
                assert await cell(page, name, "best") == format_difficulty(
                    entry["best_share"]["all_time"]
                )
                assert await cell(page, name, "status") == "online"
                value, band = parse_hashrate(await cell(page, name, "hashrate"))
                expected = entry["hashrate"]["10m"]
                assert abs(value - expected["hashrate"]) <= 0.005 * expected["hashrate"]
                assert band == format_band(expected["band"])
            assert count(await cell(page, rig.user, "accepted")) == 7
            assert count(await cell(page, rig.user, "stale")) == 1

            block_row = page.locator(f'tr[data-hash="{block_hash}"]')
            assert "accepted" in await block_row.inner_text()
            assert await page.locator("#chart svg polyline, #chart svg circle").count() >= 1

            # More shares: the page catches up by itself.
            pool.stats.clock = time.time
            for _ in range(3):
                assert (await other.share())[0]["result"] is True
            await wait_until(page, "document.getElementById('pool-accepted').textContent === '12'")
            await wait_until(
                page,
                f"document.querySelector('tr[data-worker=\"{other.user}\"] "
                "td[data-field=\"accepted\"]').textContent === '5'",
            )

            # Check your payout.
            await page.fill("#job-address", address)
            await page.click("#job-form button")
            verdict = page.locator("#job-result .verdict.good")
            await verdict.wait_for(timeout=5_000)
            assert address in await verdict.inner_text()
            assert address in await page.locator("#job-result table").inner_text()

            # The page formats numbers exactly as pool/units.py does (mainnet-sized ones too).
            for js, py, values in FORMATS:
                shown = await page.evaluate(f"(values) => values.map({js})", values)
                assert shown == [py(v) for v in values], js

            await page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert errors == []
        finally:
            await browser.close()
    await rig.close()
    await other.close()


async def test_dashboard_shows_miner_text_as_text(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    """Workers named like HTML are shown as those characters: no element, no handler."""
    pool = await start_pool(node, **PINNED)
    address = node.new_address("bech32")
    html = "<img src=x onerror=document.body.dataset.pwned=1>"
    script = "<script>document.body.dataset.pwned=2</script>"
    user = f"{address}.{html}"
    rig = await Miner.connect(pool, user)
    other = await Miner.connect(pool, f"{address}.{script}")  # two workers: a chart legend
    assert (await other.share())[0]["result"] is True
    old = rig.notify()
    reply, block_hash = await rig.share(block=True)
    assert reply["result"] is True
    await rig.wait_new_tip(old[1])
    await wait_blocks_final(pool, 1)
    assert (await rig.share())[0]["result"] is True

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(f"{pool.api.url}/?refresh=1")
            # Two refreshes: the workers table, the blocks table and the chart legend are drawn.
            await wait_until(page, "Number(document.body.dataset.updates || 0) >= 2", 30)
            legend_drawn = "document.querySelectorAll('#chart-legend span').length >= 3"
            await wait_until(page, legend_drawn, 30)

            assert await page.evaluate("document.querySelectorAll('img').length") == 0
            assert await page.evaluate("document.querySelectorAll('[onerror]').length") == 0
            assert await page.evaluate("document.scripts.length") == 1  # dashboard.js only
            assert await page.evaluate("document.body.dataset.pwned") is None
            row = page.locator("#workers-body tr").filter(has_text=html)
            assert await row.count() == 1
            assert await row.get_attribute("data-worker") == user
            name = row.locator(".worker-name")
            assert await name.evaluate("n => n.textContent") == html
            assert await name.evaluate("n => n.children.length") == 0
            block_row = page.locator(f'tr[data-hash="{block_hash}"]')
            assert html in await block_row.inner_text()
            legend = await page.evaluate("document.getElementById('chart-legend').textContent")
            assert html in legend and script in legend
            assert await page.locator("#workers-body tr").filter(has_text=script).count() == 1
            assert errors == []
        finally:
            await browser.close()
    await rig.close()
    await other.close()
