"""Stratum V2 with `[stratum] workers = 2`: every worker process serves the SV2 port
(SO_REUSEPORT) with the one identity the main process issued. The Bitaxe firmware's SV2 client
mines regtest blocks that pay its address in full while a V1 miner mines beside it; the main
process shows the SV2 channel as an "sv2" miner; a restarted worker serves SV2 again; a stop
closes SV2 connections; a taken SV2 port is a one-line start-up error; a worker's difficulty
is remembered across processes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from pool.app import Pool
from pool.config import StratumV2Config
from pool.reload import reload_config
from pool.shares import share_target
from pool.sv2.certificate import authority_pubkey_base58, load_authority_key, xonly_public_key
from pool.sv2.codec import (
    PROTOCOL_MINING,
    REQUIRES_STANDARD_JOBS,
    CloseChannel,
    Message,
    NewMiningJob,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetNewPrevHash,
    SetTarget,
    SetupConnection,
    SetupConnectionSuccess,
    SubmitSharesSuccess,
    UpdateChannel,
    decode_message,
    int_to_u256,
)
from pool.sv2.noise import ACT2_SIZE, Initiator, NoiseSession, ServerHello
from pool.workers import WorkerGroup, WorkerProcess
from tests.support import sv2_client
from tests.support.fixtures import pool_config
from tests.support.node import RegtestNode, RPCError, free_port
from tests.support.pool_process import PoolProcess, write_config
from tests.support.shares import find_nonce
from tests.support.stratum_client import last_notify, mining_client, submit_params
from tests.support.sv2_client import Sv2TestClient, open_standard
from tests.support.sv2_miner import USER, run_miner, sv2_miner
from tests.support.watch import api

__all__ = ["sv2_miner"]  # the fixture

ADDRESS = USER.partition(".")[0]
M = TypeVar("M", bound=Message)


async def eventually(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (value := predicate()):
            await asyncio.sleep(0.05)
        return value


def group(pool: Pool) -> WorkerGroup:
    assert isinstance(pool.stratum, WorkerGroup)
    return pool.stratum


def sv2_port(pool: Pool) -> int:
    port = group(pool).sv2_port
    assert port is not None
    return port


def known(node: RegtestNode, block_hash: str) -> bool:
    try:
        node.rpc("getblockheader", block_hash)
    except RPCError:
        return False
    return True


class Sv2Channel:
    """A scripted SV2 miner that opens one standard channel and stays connected."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.session: NoiseSession | None = None
        self.hello: ServerHello | None = None
        self.pending: list[Message] = []
        self.extranonce_prefix = b""
        self.channel_id = 0
        self.target = b""  # the channel's first target, as opened

    @classmethod
    async def open(cls, port: int, user: str) -> Sv2Channel:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        miner = cls(reader, writer)
        initiator = Initiator(None)
        writer.write(initiator.act1())
        async with asyncio.timeout(20):
            miner.session, miner.hello = initiator.finish(await reader.readexactly(ACT2_SIZE))
        miner.send(SetupConnection(
            PROTOCOL_MINING, 2, 2, REQUIRES_STANDARD_JOBS, "127.0.0.1", port, "test", "", "", ""
        ))  # fmt: skip
        assert isinstance(await miner.receive(), SetupConnectionSuccess)
        miner.send(OpenStandardMiningChannel(1, user, 1e12, b"\xff" * 32))
        opened = await miner.receive()
        assert isinstance(opened, OpenStandardMiningChannelSuccess), opened
        miner.extranonce_prefix = opened.extranonce_prefix
        miner.channel_id, miner.target = opened.channel_id, opened.target
        return miner

    async def receive_type(self, kind: type[M]) -> M:
        """The next `kind` message, past any others (new jobs after a block, SetTargets)."""
        while not isinstance(message := await self.receive(), kind):
            pass
        return message

    @property
    def worker_index(self) -> int:
        return self.extranonce_prefix[0]  # the top byte of extranonce1 names the worker

    def send(self, message: Message) -> None:
        assert self.session is not None
        self.writer.write(self.session.encrypt_message(message))

    async def receive(self) -> Message:
        assert self.session is not None
        async with asyncio.timeout(20):
            while not self.pending:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed by the pool")
                self.pending += [decode_message(h, p) for h, p in self.session.feed(data)]
        return self.pending.pop(0)

    async def closed_by_pool(self, timeout: float = 30) -> bool:
        async with asyncio.timeout(timeout):
            while await self.reader.read(65536):
                pass  # jobs, a Reconnect: until the pool closes
        return True

    def close(self) -> None:
        self.writer.close()


async def channels_on_every_worker(pool: Pool, user: str, at_most: int = 64) -> list[Sv2Channel]:
    """Open SV2 channels until each of the 2 workers has one (the kernel picks the worker)."""
    channels: list[Sv2Channel] = []
    while len({c.worker_index for c in channels}) < 2:
        assert len(channels) < at_most, "SO_REUSEPORT never picked some worker for SV2"
        channels.append(await Sv2Channel.open(sv2_port(pool), user))
    return channels


def with_sv2(config: Any, key_file: Path, port: int = 0) -> Any:
    sv2 = StratumV2Config(port=port or free_port(), host="127.0.0.1", authority_key_file=key_file)
    return dataclasses.replace(config, stratum_v2=sv2)


@pytest_asyncio.fixture
async def workers_pool(fresh_node: RegtestNode, tmp_path: Path) -> AsyncIterator[Pool]:
    fresh_node.generate(101)
    data = tmp_path / "data"
    config = pool_config(fresh_node, data, None, workers=2)
    pool = Pool(with_sv2(config, data / "sv2_authority.key"))
    await pool.start()
    try:
        yield pool
    finally:
        async with asyncio.timeout(90):
            await pool.stop()


async def mine_v1_block(port: int, address: str) -> None:
    """A V1 miner's block on the pool's V1 port (retried: the SV2 miner's blocks make its job
    stale now and then)."""
    client = await mining_client(port, address + ".v1")
    try:
        for _ in range(30):
            notify = last_notify(client)
            en2 = bytes(8)
            nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
            res = await client.request(
                "mining.submit", submit_params(address + ".v1", notify, en2, nonce)
            )
            if res["result"] is True:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"no V1 block accepted: {res}")
    finally:
        await client.close()


def pays_in_full(node: RegtestNode, block_hash: str, address: str) -> bool:
    block = node.rpc("getblock", block_hash, 2)
    paying = [o for o in block["tx"][0]["vout"] if o["value"] > 0]
    script = node.rpc("validateaddress", address)["scriptPubKey"]
    # subsidy + fees, all to the miner: at least 50 BTC on a young regtest chain
    return [o["scriptPubKey"]["hex"] for o in paying] == [script] and paying[0]["value"] >= 50


@pytest.mark.parametrize("channel", ["standard", "extended"])
async def test_firmware_and_v1_miner_mine_on_worker_processes(
    workers_pool: Pool, fresh_node: RegtestNode, sv2_miner: Path, channel: str
) -> None:
    pool = workers_pool
    workers = group(pool)
    assert len(workers.pids) == 2 and pool.sv2 is None  # served by the workers, not here
    key_file = pool.full_config.stratum_v2.authority_key_file
    assert key_file is not None and key_file.stat().st_mode & 0o777 == 0o600
    authority = authority_pubkey_base58(xonly_public_key(load_authority_key(key_file)))
    assert pool.sv2_authority == authority

    # A channel that stays open: the main process and the API show it as an SV2 miner.
    watcher = await Sv2Channel.open(sv2_port(pool), f"{ADDRESS}.watcher")
    record = await eventually(lambda: next(
        (s for s in workers.sessions if s.extranonce1 == watcher.extranonce_prefix[:4]), None
    ))  # fmt: skip
    assert record.protocol == "sv2"
    assert record in workers.workers[watcher.worker_index].sessions.values()
    await eventually(lambda: record.mining and record.address == ADDRESS)
    rows = (await api(pool, "/api/workers"))["workers"]
    assert any(r["online"] and "watcher" in r["name"] for r in rows), rows

    # The firmware mines through the SV2 port while a V1 miner mines on the V1 port.
    v1_address = fresh_node.new_address("bech32")
    firmware = asyncio.ensure_future(run_miner(
        sv2_miner, sv2_port(pool), "--authority-pubkey", authority, "--max-blocks", "3",
        *(["--extended"] if channel == "extended" else []),
    ))  # fmt: skip
    await mine_v1_block(workers.port, v1_address)
    rc, result, log = await firmware
    assert rc == 0, log
    assert "Server certificate verified OK" in log
    assert result["channel"] == channel and result["channel_opened"]
    assert result["warnings"] == [] and result["blocks"], result
    assert set(result["errors"]) <= {"stale-share"}, result

    # Each block the pool took was spooled once, by a worker, and submitted by the main
    # process; the firmware's pay its address in full, the V1 miner's its own.
    spooled = [json.loads(p.read_text()) for p in pool.spool.directory.glob("*.json")]
    by_address = {
        a: {b["hash"] for b in spooled if b["address"] == a} for a in (ADDRESS, v1_address)
    }
    assert len(spooled) == sum(map(len, by_address.values()))  # nobody else's
    assert by_address[ADDRESS] and by_address[ADDRESS] <= set(result["blocks"]), result
    assert len(by_address[v1_address]) == 1
    best = 0
    for address, hashes in by_address.items():
        for block_hash in hashes:
            await eventually(lambda h=block_hash: known(fresh_node, h))
            assert pays_in_full(fresh_node, block_hash, address)
            best += fresh_node.rpc("getblockheader", block_hash)["confirmations"] >= 1
    assert best >= 1
    watcher.close()


async def test_one_identity_on_every_worker_and_after_a_restart(workers_pool: Pool) -> None:
    pool = workers_pool
    workers = group(pool)
    channels = await channels_on_every_worker(pool, f"{ADDRESS}.rig")
    hellos = {(c.hello.server_xonly, c.hello.certificate) for c in channels if c.hello}
    assert len(hellos) == 1  # the same static key and certificate from both workers
    # Extranonce prefixes come from each worker's own space: no two channels share one.
    assert len({c.extranonce_prefix for c in channels}) == len(channels)

    # Both workers die; each is restarted with its SV2 server (nothing else listens there:
    # the main process only holds the port).
    old = workers.pids
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    for c in channels:
        assert await c.closed_by_pool()
    await eventually(lambda: all(w.pid not in (None, *old) for w in workers.workers), 60)
    await eventually(lambda: all(restarted(w) for w in workers.workers), 60)
    again = await channels_on_every_worker(pool, f"{ADDRESS}.back")
    assert {(c.hello.server_xonly, c.hello.certificate) for c in again if c.hello} == hellos
    for c in again:
        c.close()


def restarted(w: WorkerProcess) -> bool:
    """Worker `w` runs again and said it listens."""
    ready = w.ready
    return ready.done() and ready.exception() is None and ready.result() == w.pid


def write_sv2_config(path: Path, node: RegtestNode, port: int, sv2: int) -> Path:
    config = write_config(path, node, port, workers=2)
    with config.open("a") as f:
        f.write(f'\n[stratum_v2]\nport = {sv2}\nhost = "127.0.0.1"\n')
    return config


async def test_pool_process_serves_sv2_in_workers_and_stop_closes_it(
    node: RegtestNode, tmp_path: Path
) -> None:
    """The real `solopool` with workers = 2 and SV2 on: the SV2 port answers with the authority
    key it printed; SIGTERM closes SV2 connections too and the pool exits cleanly."""
    port, sv2 = free_port(), free_port()
    proc = await PoolProcess.start(write_sv2_config(tmp_path / "solopool.toml", node, port, sv2))
    try:
        line = await proc.wait_log("Stratum V2 on", timeout=60)
        assert f"127.0.0.1:{sv2}" in line and "authority public key" in line
        await proc.wait_log("in 2 worker processes", timeout=60)
        address = node.new_address("bech32")
        channels = [await Sv2Channel.open(sv2, f"{address}.rig{i}") for i in range(4)]
        proc.proc.send_signal(signal.SIGTERM)
        for c in channels:
            assert await c.closed_by_pool()
        assert await proc.wait() == 0, proc.output[-3000:]
    finally:
        await proc.kill()
    assert "Traceback" not in proc.output, proc.output[-3000:]


async def test_taken_sv2_port_is_a_one_line_startup_error(
    node: RegtestNode, tmp_path: Path
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    sv2 = taken.getsockname()[1]
    try:
        config = write_sv2_config(tmp_path / "solopool.toml", node, free_port(), sv2)
        proc = await PoolProcess.start(config)
        try:
            assert await proc.wait(timeout=60) == 2, proc.output[-3000:]
        finally:
            await proc.kill()
    finally:
        taken.close()
    errors = [line for line in proc.lines if f"cannot listen for SV2 miners on 127.0.0.1:{sv2}"
              in line]
    assert len(errors) == 1, proc.output[-3000:]
    assert "change [stratum_v2] port or host" in errors[0]
    assert "Traceback" not in proc.output, proc.output[-3000:]


async def test_reload_reaches_sv2_channels_in_worker_processes(
    workers_pool: Pool, fresh_node: RegtestNode, tmp_path: Path
) -> None:
    """A SIGHUP's [stratum] changes travel to the workers, and each applies them to its SV2
    channels as to its V1 sessions: the channel of an address no longer allowed is closed."""
    client = await Sv2TestClient.connect(sv2_port(workers_pool))
    await client.setup()
    client.send(open_standard(USER))
    await client.receive_type(OpenStandardMiningChannelSuccess)
    keep = fresh_node.new_address("bech32")
    config = write_config(
        tmp_path / "solopool.toml", fresh_node, workers_pool.stratum.port, workers=2,
        allowed_addresses=[keep],
    )  # fmt: skip
    workers_pool.full_config = dataclasses.replace(workers_pool.full_config, source=config)
    applied = await reload_config(workers_pool)
    assert f"[stratum] allowed_addresses: () -> ('{keep}',)" in applied
    rest = await client.rest_until_closed()
    assert CloseChannel(1, "address-not-allowed") in rest


async def test_a_worker_back_on_the_other_process_starts_at_its_difficulty(
    workers_pool: Pool,
) -> None:
    """The difficulty memory across worker processes, as V1's: a channel that did work leaves
    its difficulty with the coordinator, which tells every worker; the same worker name opening
    a channel on the other process starts there (one that did no work leaves nothing)."""
    user = ADDRESS + ".back"
    first = await Sv2Channel.open(sv2_port(workers_pool), user)
    job = await first.receive_type(NewMiningJob)
    prev = await first.receive_type(SetNewPrevHash)
    start_target = share_target(0.0001)  # pool_config's start_difficulty
    assert first.target == int_to_u256(start_target)
    nonce = sv2_client.find_nonce(job, prev, lambda h: h <= start_target)
    first.send(sv2_client.submit(first.channel_id, 1, job, prev, nonce))
    await first.receive_type(SubmitSharesSuccess)
    # a nominal hash rate that asks for difficulty 0.01 at the 2 s share interval
    first.send(UpdateChannel(first.channel_id, 0.01 * 2**32 / 2, b"\xff" * 32))
    remembered = int_to_u256(share_target(0.01))
    assert (await first.receive_type(SetTarget)).maximum_target == remembered
    first.close()

    async with asyncio.timeout(60):
        while True:  # until a channel on the other process opens at the remembered target
            again = await Sv2Channel.open(sv2_port(workers_pool), user)
            again.close()
            if again.worker_index != first.worker_index and again.target == remembered:
                break
            await asyncio.sleep(0.1)
    idle = await Sv2Channel.open(sv2_port(workers_pool), ADDRESS + ".idle")
    idle.close()
    assert idle.target == int_to_u256(start_target)
