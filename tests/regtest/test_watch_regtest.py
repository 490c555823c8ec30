"""The miner's view against a real regtest node and real Stratum clients: stats, hashrate bands,
persistence across a restart, the JSON API (job endpoint), metrics, webhooks, `solopool status`."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pool.app import Pool
from pool.config import NotifyConfig
from pool.found import ACCEPTED, ORPHANED
from tests.support.fixtures import PoolFactory, pool_config
from tests.support.node import RegtestNode, free_port
from tests.support.watch import PINNED, TINY, Miner, api, api_status, wait_blocks_final


def worker_entry(workers: dict[str, Any], name: str) -> dict[str, Any]:
    [entry] = [w for w in workers["workers"] if w["name"] == name]
    return entry


async def test_stats_match_what_was_submitted(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node, **PINNED)
    a, b = node.new_address("bech32"), node.new_address("bech32m")
    rig1 = await Miner.connect(pool, f"{a}.rig1")
    rig2 = await Miner.connect(pool, f"{a}.rig2")
    solo = await Miner.connect(pool, b)
    for miner, count in ((rig1, 5), (rig2, 3), (solo, 2)):
        for _ in range(count):
            reply, _ = await miner.share()
            assert reply["result"] is True, reply

    # rig1 finds a block: everyone gets a new tip; rig1's old job is now stale.
    old = rig1.notify()
    reply, block_hash = await rig1.share(block=True)
    assert reply["result"] is True, reply
    for miner in (rig1, rig2, solo):
        await miner.wait_new_tip(old[1])
    stale_notify, stale_en2, stale_nonce = rig1.submitted[0]
    reply = await rig1.submit_on(stale_notify, stale_en2, stale_nonce)
    assert reply["error"][0] == 21, reply
    round_start = {rig1.user: len(rig1.achieved), rig2.user: len(rig2.achieved)}
    reply, _ = await rig1.share()
    assert reply["result"] is True
    notify, en2, nonce = rig1.submitted[-1]
    reply = await rig1.submit_on(notify, en2, nonce)  # the same share again
    assert reply["error"][0] == 22, reply
    for _ in range(2):
        reply, _ = await rig2.share()
        assert reply["result"] is True
    await wait_blocks_final(pool, 1)

    workers = await api(pool, "/api/workers")
    e1 = worker_entry(workers, rig1.user)
    assert (e1["accepted"], e1["stale"], e1["rejected"]) == (7, 1, 1)
    assert e1["best_share"]["all_time"] == max(rig1.achieved)
    assert e1["best_share"]["since_block"] == max(rig1.achieved[round_start[rig1.user]:])
    assert e1["blocks"] == 1 and e1["online"] and e1["worker"] == "rig1"
    assert e1["difficulty"] == TINY and e1["accepted_difficulty"] == pytest.approx(7 * TINY)
    e2 = worker_entry(workers, rig2.user)
    assert (e2["accepted"], e2["stale"], e2["rejected"]) == (5, 0, 0)
    # rig2 found no block: its round is all of its shares.
    assert e2["best_share"]["all_time"] == e2["best_share"]["since_block"] == max(rig2.achieved)
    e3 = worker_entry(workers, b)
    assert (e3["accepted"], e3["best_share"]["all_time"]) == (2, max(solo.achieved))

    by_a = await api(pool, f"/api/addresses/{a}")
    assert by_a["shares"]["difficulty"] == pytest.approx(12 * TINY)
    assert (by_a["shares"]["accepted"], by_a["shares"]["stale"], by_a["shares"]["rejected"]) == (
        12, 1, 1
    )
    assert by_a["best_share"]["all_time"] == max(rig1.achieved + rig2.achieved)
    after_block = rig1.achieved[round_start[rig1.user]:] + rig2.achieved[round_start[rig2.user]:]
    assert by_a["best_share"]["since_block"] == max(after_block)
    assert {w["name"] for w in by_a["workers"]} == {rig1.user, rig2.user}
    [found] = by_a["blocks"]
    assert found["hash"] == block_hash and found["worker"] == rig1.user
    assert found["status"] == ACCEPTED and found["in_best_chain"]
    header = node.rpc("getblock", block_hash, 2)
    assert found["reward"] == round(header["tx"][0]["vout"][0]["value"] * 100_000_000)

    summary = await api(pool, "/api/pool")
    assert summary["network"] == "regtest"
    assert summary["shares"]["accepted"] == 14 and summary["miners"] == 3
    assert summary["best_share"]["all_time"] == max(rig1.achieved + rig2.achieved + solo.achieved)
    assert summary["best_share"]["since_block"] == max(after_block)
    assert summary["blocks"]["found"] == 1 and summary["blocks"]["accepted"] == 1
    assert summary["height"] == node.rpc("getblockcount")
    assert summary["node"]["ok"] and summary["template_age"] >= 0
    assert summary["odds"]["chance_day"] == 1.0  # regtest: certain

    status, missing = await api_status(pool, f"/api/addresses/{node.new_address('bech32')}")
    assert status == 404 and "error" in missing

    # The same numbers reach the database, written by the flush (not per share).
    await pool.stats.flush()
    with sqlite3.connect(pool.stats.path) as db:
        row = db.execute(
            "SELECT accepted, stale, rejected FROM workers WHERE name = ?", (rig1.user,)
        ).fetchone()
        assert row == (7, 1, 1)
        assert db.execute("SELECT hash FROM blocks").fetchall() == [(block_hash,)]
    for miner in (rig1, rig2, solo):
        await miner.close()


async def test_hashrate_lies_within_its_band(node: RegtestNode, start_pool: PoolFactory) -> None:
    """A miner that submits one share of difficulty d every `interval` seconds hashes at
    d·2³²/interval; the pool's estimate must be within its own ±1σ band of that."""
    pool = await start_pool(node, **PINNED)
    user = node.new_address("bech32") + ".steady"
    miner = await Miner.connect(pool, user)
    interval, n = 0.04, 40
    started = time.monotonic()
    for i in range(n):
        await asyncio.sleep(max(0.0, started + (i + 1) * interval - time.monotonic()))
        reply, _ = await miner.share()
        assert reply["result"] is True
    true_rate = TINY * 2**32 / interval
    entry = worker_entry(await api(pool, "/api/workers"), user)
    for window in ("1m", "10m", "1h", "24h"):
        e = entry["hashrate"][window]
        assert e["shares"] == n, (window, e)
        assert e["band"] == pytest.approx(pure_band(n))
        assert abs(e["hashrate"] - true_rate) <= e["band"] * e["hashrate"], (window, e, true_rate)
        assert "±" in e["text"]
    # The 24 h window divides by the time observed, not by 24 h.
    assert entry["hashrate"]["24h"]["hashrate"] > 0.8 * true_rate
    summary = await api(pool, "/api/pool")
    assert math.isclose(
        summary["hashrate"]["10m"]["hashrate"], entry["hashrate"]["10m"]["hashrate"], rel_tol=0.2
    )
    await miner.close()


def pure_band(n: int) -> float:
    return 1 / math.sqrt(n) if n else math.nan


async def test_stats_survive_a_restart(
    node: RegtestNode, start_pool: PoolFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "kept"
    first = await start_pool(node, data_dir=data_dir, **PINNED)
    user = node.new_address("bech32") + ".rig"
    miner = await Miner.connect(first, user)
    for _ in range(3):
        assert (await miner.share())[0]["result"] is True
    old = miner.notify()
    reply, block_hash = await miner.share(block=True)
    assert reply["result"] is True
    await miner.wait_new_tip(old[1])
    await wait_blocks_final(first, 1)
    before = worker_entry(await api(first, "/api/workers"), user)
    await miner.close()
    await first.stop()

    second = await start_pool(node, data_dir=data_dir, **PINNED)
    after = worker_entry(await api(second, "/api/workers"), user)
    assert not after["online"]
    for key in ("accepted", "stale", "rejected", "accepted_difficulty", "best_share", "blocks",
                "first_seen", "last_share_at"):
        assert after[key] == before[key], key
    assert after["hashrate"]["24h"]["shares"] == 4  # from the stored 1-minute buckets
    blocks = (await api(second, "/api/blocks"))["blocks"]
    assert [b["hash"] for b in blocks] == [block_hash] and blocks[0]["status"] == ACCEPTED

    miner = await Miner.connect(second, user)
    for _ in range(2):
        assert (await miner.share())[0]["result"] is True
    again = worker_entry(await api(second, "/api/workers"), user)
    assert again["accepted"] == 6 and again["online"]
    assert again["best_share"]["all_time"] == max(before["best_share"]["all_time"],
                                                  *miner.achieved)
    await miner.close()


async def test_job_endpoint_shows_the_exact_payout(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node)
    address = node.new_address("p2sh-segwit")
    miner = await Miner.connect(pool, address + ".verify")
    job = await api(pool, f"/api/job/{address}")
    expected_script = node.rpc("validateaddress", address)["scriptPubKey"]
    payout, commitment = job["outputs"]
    assert payout["script_hex"] == expected_script == job["payout_script"]
    assert payout["address"] == address and payout["pays_you"] and payout["type"] == "payout"
    assert payout["value"] == job["coinbase_value"] == pool.jobs.template.coinbase_value
    assert commitment["value"] == 0 and commitment["type"] == "witness commitment"
    assert commitment["script_hex"].startswith("6a24aa21a9ed") and commitment["address"] is None
    assert job["pays_only_you"] is True
    # Exactly the work the miner was sent.
    notifies = [m["params"] for m in miner.client.notifications if m["method"] == "mining.notify"]
    sent = {n[0]: n for n in notifies}
    assert job["job_id"] in sent
    assert (job["coinb1"], job["coinb2"]) == (sent[job["job_id"]][2], sent[job["job_id"]][3])

    for bad in ("not-an-address", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"):
        status, body = await api_status(pool, f"/api/job/{bad}")
        assert status == 400 and "error" in body, body
    status, body = await api_status(pool, f"/api/job/{node.new_address('bech32')}")
    assert status == 404 and "no miner" in body["error"]
    status, body = await api_status(pool, "/api/nothing-here")
    assert status == 404 and "error" in body

    # Read-only: no other method.
    def post() -> int:
        request = urllib.request.Request(pool.api.url + "/api/pool", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert await asyncio.to_thread(post) == 405

    # The node's credentials appear nowhere.
    secret = node.rpc_password
    for path in ("/api/pool", "/api/workers", f"/api/addresses/{address}", "/api/blocks",
                 f"/api/job/{address}", "/api/history", "/metrics", "/", "/dashboard.js"):
        def raw(path: str = path) -> bytes:
            with urllib.request.urlopen(pool.api.url + path, timeout=5) as response:
                return bytes(response.read())

        body_bytes = await asyncio.to_thread(raw)
        assert secret.encode() not in body_bytes, path
    await miner.close()


async def test_metrics_per_pool(node: RegtestNode, start_pool: PoolFactory) -> None:
    one = await start_pool(node, **PINNED)
    two = await start_pool(node, **PINNED)
    user_one = node.new_address("bech32") + ".m1"
    user_two = node.new_address("bech32") + ".m2"
    m1 = await Miner.connect(one, user_one)
    m2 = await Miner.connect(two, user_two)
    for _ in range(3):
        assert (await m1.share())[0]["result"] is True
    assert (await m2.share())[0]["result"] is True

    def scrape(pool: Pool) -> str:
        with urllib.request.urlopen(pool.api.url + "/metrics", timeout=5) as response:
            return str(response.read().decode())

    text_one = await asyncio.to_thread(scrape, one)
    text_two = await asyncio.to_thread(scrape, two)
    assert f'solopool_shares_total{{result="accepted",worker="{user_one}"}} 3.0' in text_one
    assert user_two not in text_one and user_one not in text_two
    assert f'solopool_shares_total{{result="accepted",worker="{user_two}"}} 1.0' in text_two
    for name in ("solopool_hashrate_hashes_per_second{", "solopool_best_share_difficulty{",
                 'solopool_blocks{result="accepted"}', "solopool_connected_miners 1.0",
                 "solopool_template_age_seconds", "solopool_rpc_latency_seconds",
                 "solopool_node_up 1.0"):
        assert name in text_one, name
    await m1.close()
    await m2.close()


async def test_confirmations_and_orphans(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node, **PINNED)
    miner = await Miner.connect(pool, node.new_address("bech32") + ".deep")
    old = miner.notify()
    reply, block_hash = await miner.share(block=True)
    assert reply["result"] is True
    await miner.wait_new_tip(old[1])
    await wait_blocks_final(pool, 1)
    record = pool.stats.blocks[block_hash]
    assert record.confirmations == 1
    node.generate(2)
    await pool.stats.check_confirmations()
    assert record.confirmations == 3 and record.status == ACCEPTED

    node.rpc("invalidateblock", block_hash)
    try:
        await pool.stats.check_confirmations()
        assert record.status == ORPHANED and record.confirmations == -1
        assert pool.notifier.sent[-1].event == "block_orphaned"
        summary = await api(pool, "/api/pool")
        assert summary["blocks"]["orphaned"] == 1
    finally:
        node.rpc("reconsiderblock", block_hash)
    await pool.stats.check_confirmations()
    assert record.status == ACCEPTED and record.confirmations == 3
    assert pool.notifier.sent[-1].event == "block_back_in_chain"
    await miner.close()


async def test_block_webhooks_retries_and_silent_worker(
    node: RegtestNode, tmp_path: Path
) -> None:
    received: list[dict[str, Any]] = []
    flaky_calls: list[dict[str, Any]] = []
    hanging = asyncio.Event()
    release = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    async def flaky(request: web.Request) -> web.Response:
        flaky_calls.append(await request.json())
        return web.Response(status=503 if len(flaky_calls) % 2 else 200)

    async def stuck(request: web.Request) -> web.Response:
        hanging.set()
        await release.wait()  # never answers while the test runs
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/flaky", flaky)
    app.router.add_post("/stuck", stuck)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"

    config = pool_config(node, tmp_path / "notify", **PINNED)
    config = dataclasses.replace(config, notify=NotifyConfig(
        webhook_urls=(f"{base}/hook", f"{base}/flaky", f"{base}/stuck"),
        worker_silent_minutes=1.5 / 60,
    ))
    pool = Pool(config)
    pool.notifier.retry_delays = (0.05, 0.05)
    pool.notifier.timeout = 1.0
    pool.notifier.stop_grace = 0.2
    await pool.start()
    try:
        user = node.new_address("bech32") + ".alerting"
        miner = await Miner.connect(pool, user)
        old = miner.notify()
        reply, block_hash = await miner.share(block=True)
        assert reply["result"] is True
        await miner.wait_new_tip(old[1])
        await asyncio.wait_for(hanging.wait(), 5)
        # A webhook that never answers does not hold up shares.
        started = time.monotonic()
        for _ in range(3):
            assert (await miner.share())[0]["result"] is True
        assert time.monotonic() - started < 1.0

        async with asyncio.timeout(10):
            while len([r for r in received if r["event"].startswith("block")]) < 2:
                await asyncio.sleep(0.02)
        found, accepted = [r for r in received if r["event"].startswith("block")]
        assert found["event"] == "block_found" and found["hash"] == block_hash
        assert block_hash in found["message"] and block_hash in found["content"]
        assert found["worker"] == user and found["title"].startswith("Block")
        assert accepted["event"] == "block_accepted" and accepted["hash"] == block_hash
        # The flaky endpoint got each alert after a retry.
        async with asyncio.timeout(5):
            while len(flaky_calls) < 4:
                await asyncio.sleep(0.02)
        assert [c["event"] for c in flaky_calls[:2]] == ["block_found"] * 2

        # Silence: no share for 1.5 s -> one alert; a share -> "back".
        async with asyncio.timeout(6):
            while not any(r["event"] == "worker_silent" for r in received):
                await asyncio.sleep(0.05)
        silent = next(r for r in received if r["event"] == "worker_silent")
        assert silent["worker"] == user
        assert (await miner.share())[0]["result"] is True
        async with asyncio.timeout(5):
            while not any(r["event"] == "worker_back" for r in received):
                await asyncio.sleep(0.05)
        assert sum(r["event"] == "worker_silent" for r in received) == 1
        await miner.close()
    finally:
        await pool.stop()
        release.set()
        await runner.cleanup()


async def test_status_command(node: RegtestNode, start_pool: PoolFactory, tmp_path: Path) -> None:
    pool = await start_pool(node, **PINNED)
    user = node.new_address("bech32") + ".cli"
    miner = await Miner.connect(pool, user)
    for _ in range(4):
        assert (await miner.share())[0]["result"] is True

    async def status(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pool.cli", "status", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await status("--url", pool.api.url)
    assert code == 0, err
    assert "regtest" in out and user in out and "4 accepted" in out
    assert "H/s ±" in out and "odds at" in out and "in a year" in out

    # From the config file's [api] section.
    config = tmp_path / "status.toml"
    config.write_text(f'[api]\nhost = "127.0.0.1"\nport = {pool.api.port}\n')
    code, out, err = await status("--config", str(config))
    assert code == 0, err
    assert user in out

    # Nothing listening: one clear line, exit 1.
    code, out, err = await status("--url", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "cannot reach the pool's API" in err
    await miner.close()

