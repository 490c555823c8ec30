"""SV2 miners shown like V1 ones: the Bitaxe firmware's own SV2 client and a V1 miner mine on one
pool; /api/workers, /metrics and the dashboard (in a real headless Chromium) give each worker its
protocol, the connection list has both, and the authority public key is in /api/pool, on the
dashboard and printed by `solopool check`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import async_playwright

from pool.app import Pool
from pool.cli import main
from pool.config import StratumV2Config
from pool.sv2.certificate import (
    authority_pubkey_base58,
    load_authority_key,
    load_or_create_authority_key,
    xonly_public_key,
)
from tests.support.fixtures import pool_config
from tests.support.node import RegtestNode, free_port
from tests.support.sv2_miner import USER, run_miner, sv2_miner
from tests.support.watch import Miner, api, fetch

__all__ = ["sv2_miner"]  # the fixture

ADDRESS = USER.partition(".")[0]
V1_USER = f"{ADDRESS}.nerdminer"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
WAIT = 60.0  # generous: a loaded machine, a CPU miner


async def wait_for(what: str, probe: Callable[[], Awaitable[Any]], timeout: float = WAIT) -> Any:
    """Until `probe()` gives something true; returns it."""
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while not (last := await probe()):
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"{what}: still {last!r} after {timeout:.0f} s") from None
    return last


@pytest_asyncio.fixture
async def sv2_pool(node: RegtestNode, tmp_path: Path) -> AsyncIterator[Pool]:
    # Shares about every 2 s from the CPU client (~1.8 MH/s), so it stays connected a while.
    config = pool_config(node, tmp_path / "data", start_difficulty=0.001)
    sv2 = StratumV2Config(
        port=free_port(), host="127.0.0.1",
        authority_key_file=tmp_path / "data" / "sv2_authority.key",
    )  # fmt: skip
    pool = Pool(dataclasses.replace(config, stratum_v2=sv2))
    await pool.start()
    try:
        yield pool
    finally:
        async with asyncio.timeout(90):
            await pool.stop()


def by_name(workers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in workers}


async def test_sv2_and_v1_workers_show_their_protocol_and_the_key(
    sv2_pool: Pool, sv2_miner: Path
) -> None:
    pool = sv2_pool
    assert pool.sv2 is not None and pool.full_config.stratum_v2.authority_key_file is not None
    key = authority_pubkey_base58(
        xonly_public_key(load_authority_key(pool.full_config.stratum_v2.authority_key_file))
    )
    summary = await api(pool, "/api/pool")
    assert summary["stratum_v2"] == {"port": pool.sv2.port, "authority_pubkey": key}

    bitaxe = asyncio.ensure_future(run_miner(
        sv2_miner, pool.sv2.port, "--authority-pubkey", key, "--seconds", "40",
    ))  # fmt: skip
    v1 = await Miner.connect(pool, V1_USER)
    try:
        reply, _ = await v1.share(block=True)
        assert reply["result"] is True

        async def both_online() -> dict[str, dict[str, Any]] | None:
            workers = by_name((await api(pool, "/api/workers"))["workers"])
            sv2 = workers.get(USER)
            if sv2 is None or not sv2["online"] or sv2["accepted"] < 1:
                return None
            return workers

        workers = await wait_for("the SV2 worker online with a share", both_online)
        assert workers[USER]["protocol"] == "sv2" and workers[USER]["worker"] == "bitaxe1"
        assert workers[V1_USER]["protocol"] == "v1" and workers[V1_USER]["online"]
        summary = await api(pool, "/api/pool")
        assert summary["connections_by_protocol"] == {"v1": 1, "sv2": 1}
        assert summary["connections"] == 2 and summary["miners"] == 2
        detail = by_name((await api(pool, f"/api/addresses/{ADDRESS}"))["workers"])
        assert detail[USER]["protocol"] == "sv2" and detail[V1_USER]["protocol"] == "v1"

        metrics = await asyncio.to_thread(fetch, pool.api.url + "/metrics")
        assert f'solopool_worker_info{{protocol="sv2",worker="{USER}"}} 1.0' in metrics
        assert f'solopool_worker_info{{protocol="v1",worker="{V1_USER}"}} 1.0' in metrics
        assert 'solopool_protocol_connections{protocol="sv2"} 1.0' in metrics
        assert 'solopool_protocol_connections{protocol="v1"} 1.0' in metrics

        shown = await dashboard(pool.api.url, [USER, V1_USER])
        assert shown["sv2-key"] == key
        assert shown["sv2-port"] == str(pool.sv2.port)
        assert shown["sv2-url"] == f"stratum2+tcp://127.0.0.1:{pool.sv2.port}/{key}"
        assert shown[USER] == "SV2" and shown[V1_USER] == "V1"
    finally:
        await v1.close()
        rc, result, log = await asyncio.wait_for(bitaxe, 120)
    assert rc == 0 and result["accepted"] >= 1, log

    # Gone: still listed, with the protocol it last mined with, from the stats.
    async def sv2_offline() -> dict[str, dict[str, Any]] | None:
        workers = by_name((await api(pool, "/api/workers"))["workers"])
        return workers if not workers[USER]["online"] else None

    workers = await wait_for("the SV2 worker offline", sv2_offline)
    assert workers[USER]["protocol"] == "sv2" and workers[V1_USER]["protocol"] == "v1"
    assert (await api(pool, "/api/pool"))["connections_by_protocol"] == {"v1": 0, "sv2": 0}


async def dashboard(url: str, workers: list[str]) -> dict[str, str]:
    """What the dashboard shows in the SV2 panel, and each worker's protocol cell."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{url}/?refresh=1")

            async def rendered() -> bool:
                return bool(await page.evaluate(
                    "!document.getElementById('sv2-panel').hidden && "
                    "document.querySelectorAll('#workers-body tr[data-worker]').length >= 2"
                ))  # fmt: skip

            await wait_for("the dashboard's SV2 panel and workers", rendered)
            shown = {
                name: (await page.locator(f"#{name}").inner_text()).strip()
                for name in ("sv2-key", "sv2-port", "sv2-url")
            }
            for worker in workers:
                cell = page.locator(f'tr[data-worker="{worker}"] td[data-field="protocol"]')
                shown[worker] = (await cell.inner_text()).strip()
            assert errors == []
            return shown
        finally:
            await browser.close()


def write_config(tmp_path: Path, node: RegtestNode, key_file: Path) -> Path:
    path = tmp_path / "solopool.toml"
    path.write_text(
        f'[node]\nrpc_url = "{node.rpc_url}"\nrpc_user = "{node.rpc_user}"\n'
        f'rpc_password = "{node.rpc_password}"\n'
        f'[stratum]\nport = {free_port()}\n[api]\nport = {free_port()}\n'
        f'[pool]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[stratum_v2]\nport = {free_port()}\nauthority_key_file = "{key_file}"\n'
    )
    return path


def test_check_prints_the_authority_key(
    node: RegtestNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "data" / "sv2_authority.key"
    config = write_config(tmp_path, node, key_file)

    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if "authority key" in line]
    assert line.startswith("info") and "will be created at first start" in line, out
    assert not key_file.exists()  # check leaves it to the pool (the user the pool runs as)
    assert any(
        line.startswith("ok") and "Stratum V2 port" in line and line.endswith("is free")
        for line in out.splitlines()
    ), out

    # As start-up makes it; then check shows the key to paste into AxeOS.
    key = authority_pubkey_base58(xonly_public_key(load_or_create_authority_key(key_file)))
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"authority public key (paste into AxeOS): {key}" in out, out
    [line] = [line for line in out.splitlines() if key in line]
    assert line.startswith("ok")

    key_file.chmod(0o644)  # readable by others: refused, with the fix
    assert main(["check", "--config", str(config)]) != 0
    out = capsys.readouterr().out
    assert f"run chmod 600 {key_file}" in out and "FAIL" in out
