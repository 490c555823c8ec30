"""`[stratum] workers = N`: Stratum served by N worker processes on one port (SO_REUSEPORT),
against a real regtest node. The pool under test runs in this process; its workers are real
child processes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pool.app import Pool
from pool.blocks import BlockSpool
from pool.config import ConfigError, parse_config
from pool.found import FoundBlock
from pool.preflight import StartupError
from pool.reload import reload_config
from pool.workers import WorkerGroup, reserve_port
from tests.support.fixtures import PoolFactory
from tests.support.mining import new_block_job, wait_height
from tests.support.node import RegtestNode, free_port
from tests.support.pool_process import PoolProcess, write_config
from tests.support.shares import find_nonce
from tests.support.stratum_client import (
    StratumTestClient,
    closed_by_pool,
    last_notify,
    mining_client,
    submit_params,
)


def group(pool: Pool) -> WorkerGroup:
    assert isinstance(pool.stratum, WorkerGroup)
    return pool.stratum


async def eventually(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (value := predicate()):
            await asyncio.sleep(0.05)
        return value


async def clients_on_every_worker(
    pool: Pool, user: str, workers: int, at_most: int = 64
) -> list[StratumTestClient]:
    """Connect miners until every worker process has one (the kernel picks the worker)."""
    clients: list[StratumTestClient] = []
    while len({c.extranonce1[0] for c in clients}) < workers:
        assert len(clients) < at_most, "SO_REUSEPORT never picked some worker"
        clients.append(await mining_client(pool.stratum.port, user))
    return clients


def one_per_worker(clients: list[StratumTestClient]) -> list[StratumTestClient]:
    by_worker: dict[int, StratumTestClient] = {}
    for c in clients:
        by_worker.setdefault(c.extranonce1[0], c)
    return [by_worker[k] for k in sorted(by_worker)]


def test_config_workers_bounds(tmp_path: Path) -> None:
    assert parse_config({"stratum": {"workers": 4}}, tmp_path).stratum.workers == 4
    assert parse_config({}, tmp_path).stratum.workers == 1
    for bad in (0, 65, "two", 1.5):
        with pytest.raises(ConfigError, match=r"\[stratum\] workers"):
            parse_config({"stratum": {"workers": bad}}, tmp_path)


async def test_workers_mine_blocks_and_report_shares(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node, workers=2)
    workers = group(pool)
    assert len(workers.pids) == 2 and os.getpid() not in workers.pids
    address = node.new_address("bech32")
    clients = await clients_on_every_worker(pool, address + ".rig", 2)
    # extranonce1's top byte names the worker, so no two miners share a coinbase.
    assert len({c.extranonce1 for c in clients}) == len(clients)
    assert {c.extranonce1[0] for c in clients} == {0, 1}

    # The main process sees every miner (for the API and metrics) within a snapshot period.
    await eventually(lambda: sum(s.mining for s in workers.sessions) == len(clients))
    assert {s.address for s in workers.sessions} == {address}

    # Every worker's miner finds a block; each is submitted by the main process and accepted.
    found = 0
    for client in one_per_worker(clients):
        height = node.rpc("getblockcount")
        notify = last_notify(client)
        en2 = bytes(8)
        nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
        res = await client.request(
            "mining.submit", submit_params(address + ".rig", notify, en2, nonce)
        )
        assert res["result"] is True, res
        await wait_height(node, height + 1)
        found += 1
        block = node.rpc("getblock", node.rpc("getbestblockhash"), 2)
        payout = block["tx"][0]["vout"][0]["scriptPubKey"]["address"]
        assert payout == address
        # Every miner on every worker gets the new block's clean job.
        tip = node.rpc("getbestblockhash")
        for c in clients:
            await new_block_job(c, tip)
    assert found == 2
    # Shares reached the stats in the main process: the two blocks were accepted shares.
    await eventually(lambda: pool.shares.accepted >= 2)
    await eventually(lambda: sum(b.status == "accepted" for b in pool.stats.blocks.values()) == 2)
    for c in clients:
        await c.close()


async def test_block_from_a_worker_is_spooled_once_by_that_worker(
    node: RegtestNode, start_pool: PoolFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every spool write of this (the main) process: it may record the verdict, never spool the
    # found block again (the worker spooled it, fsynced, before the miner's `true`).
    written: list[str] = []
    write = BlockSpool.write

    def recording_write(self: BlockSpool, block: FoundBlock) -> Path:
        written.append(block.status)
        return write(self, block)

    monkeypatch.setattr(BlockSpool, "write", recording_write)
    pool = await start_pool(node, workers=2)
    address = node.new_address("bech32")
    client = await mining_client(pool.stratum.port, address + ".rig")
    height = node.rpc("getblockcount")
    notify = last_notify(client)
    nonce = find_nonce(notify, client.extranonce1, bytes(8), meets=True)
    res = await client.request(
        "mining.submit", submit_params(address + ".rig", notify, bytes(8), nonce)
    )
    assert res["result"] is True, res
    await wait_height(node, height + 1)
    spooled = pool.spool.directory / f"{height + 1:08d}-{node.rpc('getbestblockhash')}.json"
    assert spooled.exists()  # by the worker: this process has not written a pending one
    await eventually(lambda: pool.submitter.history and pool.submitter.history[0].final_at)
    await eventually(lambda: written)
    assert written == ["accepted"]
    assert [b.status for b in pool.spool.load_all()] == ["accepted"]
    await client.close()


async def test_rejects_counted_in_main_process(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node, workers=2, start_difficulty=0.001)
    address = node.new_address("bech32")
    clients = await clients_on_every_worker(pool, address + ".w", 2)
    for c in clients:
        notify = last_notify(c)
        en2 = bytes.fromhex("00000000000000aa")
        low = find_nonce(notify, c.extranonce1, en2, meets=False)
        res = await c.request("mining.submit", submit_params(address + ".w", notify, en2, low))
        assert res["error"][0] == 23, res
    await eventually(lambda: pool.shares.rejected == len(clients))
    # A worker with no accepted share is not tracked: its rejects count for the pool.
    await eventually(lambda: pool.stats.unattributed.rejected == len(clients))
    assert address + ".w" not in pool.stats.workers
    for c in clients:
        await c.close()
    await eventually(lambda: not group(pool).sessions)


async def test_refused_address_answered_by_main_process(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node, workers=2)
    client = await StratumTestClient.connect("127.0.0.1", pool.stratum.port)
    await client.request("mining.subscribe", ["test/1"])
    mainnet = "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"
    res = await client.reply(client.send("mining.authorize", [mainnet]))
    assert res["result"] is False and res["error"][0] == 24, res
    assert "not a valid regtest address" in res["error"][1]
    await client.close()


async def test_dead_worker_restarted_others_unaffected(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node, workers=2)
    workers = group(pool)
    address = node.new_address("bech32")
    clients = await clients_on_every_worker(pool, address, 2)
    victim_pid = workers.workers[0].pid
    assert victim_pid is not None
    os.kill(victim_pid, signal.SIGKILL)
    # The main process notices, forgets the dead worker's miners and starts a new worker.
    await eventually(lambda: workers.workers[0].pid not in (None, victim_pid), timeout=30)
    await eventually(lambda: workers.workers[0].ready.done())
    survivors = [c for c in clients if c.extranonce1[0] == 1]
    # Miners on the other worker keep getting work: a new block reaches them.
    node.generate(1)
    tip = node.rpc("getbestblockhash")
    assert survivors
    for c in survivors:
        await new_block_job(c, tip)
    # New miners can reach both workers again.
    again = await clients_on_every_worker(pool, address + ".back", 2)
    for c in clients + again:
        await c.close()


async def test_stop_sends_reconnect_and_ends_workers(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node, workers=2)
    pids = group(pool).pids
    clients = await clients_on_every_worker(pool, node.new_address("bech32"), 2)
    async with asyncio.timeout(60):
        await pool.stop()
    for c in clients:
        await c.notification("client.reconnect")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_busy_port_is_a_clear_startup_error(node: RegtestNode, tmp_path: Path) -> None:
    from tests.support.fixtures import pool_config

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    pool = Pool(pool_config(node, tmp_path / "data", None, workers=2, port=port))
    try:
        with pytest.raises(StartupError, match=f"cannot listen for miners on 127.0.0.1:{port}"):
            await pool.start()
    finally:
        await pool.stop()
        taken.close()


def test_reserve_port_holds_without_taking_connections() -> None:
    holder = reserve_port("127.0.0.1", 0)
    port = holder.getsockname()[1]
    try:
        # Nobody else can have the port while it is held...
        other = socket.socket()
        with pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
        other.close()
        # ...and nothing listens there: connecting is refused, not queued.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        holder.close()
    # Another pool's workers listening there with SO_REUSEPORT: refused, not shared.
    listening = socket.socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    try:
        with pytest.raises(OSError):
            reserve_port("127.0.0.1", listening.getsockname()[1]).close()
    finally:
        listening.close()


async def test_reload_reaches_every_worker(
    node: RegtestNode, start_pool: PoolFactory, tmp_path: Path
) -> None:
    """SIGHUP's reload applies in the workers: allowed addresses close the miners of the others,
    a new coinbase tag is in the next jobs of every worker."""
    pool = await start_pool(node, workers=2)
    port = pool.stratum.port
    keep, drop = node.new_address("bech32"), node.new_address("bech32")
    kept = await clients_on_every_worker(pool, keep + ".a", 2)
    dropped = await clients_on_every_worker(pool, drop + ".b", 2)
    config = write_config(tmp_path / "solopool.toml", node, port, allowed_addresses=[keep])
    config.write_text(config.read_text().replace('[pool]\n', '[pool]\ncoinbase_tag = "/mp/"\n'))
    pool.full_config = dataclasses.replace(pool.full_config, source=config)
    applied = await reload_config(pool)
    assert f"[stratum] allowed_addresses: () -> ('{keep}',)" in applied
    assert "[pool] coinbase_tag: '/solopool/' -> '/mp/'" in applied
    for c in dropped:
        await closed_by_pool(c)
    for c in kept:
        await eventually(lambda c=c: b"/mp/".hex() in last_notify(c)[2])
        assert (await c.request("mining.ping", []))["result"] == "pong"
    for c in kept:
        await c.close()


def _worker_pids(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its dead parent's reaper) is not running.
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
async def test_pool_process_with_workers_ends_cleanly(
    node: RegtestNode, tmp_path: Path, sig: signal.Signals
) -> None:
    """The real `solopool` with workers = 2: SIGTERM is a clean stop (reconnect, exit 0); after
    SIGKILL of the main process its workers notice, send their miners client.reconnect and
    exit instead of holding the port with nobody giving them templates."""
    port = free_port()
    proc = await PoolProcess.start(write_config(tmp_path / "solopool.toml", node, port, workers=2))
    try:
        await proc.wait_log("in 2 worker processes", timeout=60)
        children = _worker_pids(proc.proc.pid)
        assert len(children) == 2, children
        user = node.new_address("bech32")
        clients = [await mining_client(port, f"{user}.rig{i}") for i in range(4)]
        proc.proc.send_signal(sig)
        for client in clients:
            await client.notification("client.reconnect", timeout=15)
            await closed_by_pool(client)
        if sig == signal.SIGTERM:
            assert await proc.wait() == 0, proc.output[-3000:]
        await eventually(lambda: not any(_alive(pid) for pid in children), timeout=30)
    finally:
        await proc.kill()
    assert "Traceback" not in proc.output, proc.output[-3000:]
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_api_and_metrics_show_every_workers_miners(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    import urllib.request

    from tests.support.watch import api

    pool = await start_pool(node, workers=2)
    address = node.new_address("bech32")
    clients = await clients_on_every_worker(pool, address + ".rig", 2)
    for c in clients:
        await c.request("mining.suggest_difficulty", [0.5])
    await eventually(lambda: [s.difficulty for s in group(pool).sessions] == [0.5] * len(clients))
    summary = await api(pool, "/api/pool")
    assert summary["connections"] == len(clients) and summary["miners"] == len(clients)
    workers = await api(pool, f"/api/addresses/{address}")
    (rig,) = [w for w in workers["workers"] if w["name"] == address + ".rig"]
    assert rig["online"] and rig["connections"] == len(clients) and rig["difficulty"] == 0.5
    job = await api(pool, f"/api/job/{address}")
    assert job["address"] == address
    def fetch(url: str) -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(fetch, pool.api.url + "/metrics")
    assert f"solopool_connections {float(len(clients))}" in text, text[:2000]
    for c in clients:
        await c.close()


async def test_worker_that_cannot_start_is_a_startup_error_not_restarted(
    node: RegtestNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import pool.workers as workers_module
    from tests.support.fixtures import pool_config

    monkeypatch.setattr(workers_module.sys, "executable", "/bin/false")
    pool = Pool(pool_config(node, tmp_path / "data", None, workers=2))
    try:
        with pytest.raises(
            StartupError, match=r"could not start the Stratum worker processes \(Stratum worker "
            r". exited with code 1\)"
        ):
            await pool.start()
        await asyncio.sleep(1.5)  # longer than the first restart delay
    finally:
        await pool.stop()
    assert "restarting it" not in caplog.text
    assert all(w.process is None or w.process.returncode is not None for w in group(pool).workers)


async def test_reconnect_to_another_worker_gets_the_difficulty_back(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    from tests.support.stratum_client import difficulties

    pool = await start_pool(node, workers=2)
    port = pool.stratum.port
    user = node.new_address("bech32") + ".rig1"
    first = await mining_client(port, user)
    count = len(first.notifications)
    await first.request("mining.suggest_difficulty", [0.01])
    await first.notification("mining.set_difficulty", after=count)
    left_worker = first.extranonce1[0]
    await first.close()
    await eventually(lambda: not group(pool).sessions)
    await asyncio.sleep(0.2)  # the other worker takes in what to remember
    # Reconnect until the kernel gives the miner to the other worker.
    for _ in range(64):
        again = await mining_client(port, user)
        if again.extranonce1[0] != left_worker:
            break
        await again.close()
    else:
        raise AssertionError("SO_REUSEPORT never picked the other worker")
    assert difficulties(again) == [0.01]  # where it was, not the start difficulty
    await again.close()


async def test_tls_port_served_by_the_workers(
    node: RegtestNode, start_pool: PoolFactory, tmp_path: Path
) -> None:
    from tests.support.mining import mine_one_block
    from tests.support.stratum_client import client_tls_context, connect

    pool = await start_pool(node, data_dir=tmp_path / "tlsdata", workers=2, tls_port=free_port())
    assert (tmp_path / "tlsdata" / "tls" / "cert.pem").exists()  # made once, by the main process
    tls_port = pool.stratum.tls_port
    assert tls_port is not None
    client = await connect("127.0.0.1", tls_port, client_tls_context())
    assert client.writer.get_extra_info("ssl_object") is not None
    await mine_one_block(client, node, node.new_address("bech32") + ".tls")
    await client.close()


async def test_slow_restart_is_not_failed_by_the_dead_workers_channel(
    node: RegtestNode, start_pool: PoolFactory, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The dead worker's closed channel must not fail its replacement's start: here the restart
    comes at once and a start takes longer than the closed-channel grace (as on a busy box)."""
    import pool.workers as workers_module

    monkeypatch.setattr(workers_module, "RESTART_SECONDS", (0.0,))
    monkeypatch.setattr(workers_module, "CHANNEL_GRACE_SECONDS", 0.01)
    pool = await start_pool(node, workers=2)
    w = group(pool).workers[0]
    victim = w.pid
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    await eventually(lambda: w.pid != victim and w.ready.done(), timeout=60)
    assert w.ready.exception() is None and w.ready.result() == w.pid
    assert w.restarts == 1
    assert "could not restart" not in caplog.text
