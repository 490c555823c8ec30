"""Floods and limits, against a real regtest node with small limits: connections per IP and in
total, the handshake and idle timeouts (one periodic sweep), the invalid-share cap (stale shares
after a new block do not count), a miner that never reads, lines queued behind authorize,
allowed payout addresses, and the memory an idle connection costs."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import time
import tracemalloc
from typing import Any

import pytest

from pool.stratum.server import MAX_PENDING_LINES, StratumProtocol
from pool.stratum.session import DifficultyMemory, normalize_address
from tests.support.fixtures import PoolFactory
from tests.support.node import RegtestNode
from tests.support.shares import find_nonce
from tests.support.stratum_client import StratumTestClient


async def connect(port: int, local_host: str = "127.0.0.1") -> StratumTestClient:
    """A client from a chosen loopback address (127.0.0.0/8 is all ours)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(local_host, 0), limit=1 << 20
    )
    return StratumTestClient(reader, writer)


async def mining_client(port: int, user: str, local_host: str = "127.0.0.1") -> StratumTestClient:
    client = await connect(port, local_host)
    await client.handshake(user)
    await client.notification("mining.notify")
    return client


async def closed_by_pool(client: StratumTestClient, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not client.closed:
            await asyncio.sleep(0.01)


async def alive(client: StratumTestClient) -> None:
    assert (await client.request("mining.ping", [], timeout=5))["result"] == "pong"


def last_notify(client: StratumTestClient) -> list[Any]:
    return [m for m in client.notifications if m["method"] == "mining.notify"][-1]["params"]


def shown(client: StratumTestClient) -> list[str]:
    return [m["params"][0] for m in client.notifications if m["method"] == "client.show_message"]


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def refusal_logs(caplog: pytest.LogCaptureFixture, host: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.getMessage().startswith(f"refusing connections from {host}:")
    ]


# --- connection limits --------------------------------------------------------------------------


async def test_per_ip_limit_refuses_and_logs_once(
    node: RegtestNode, start_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pool = await start_pool(node, max_connections_per_ip=3)
    port = pool.stratum.port
    clients = [await connect(port) for _ in range(3)]
    for client in clients:
        await alive(client)
    refused = [await connect(port) for _ in range(5)]
    for client in refused:
        await closed_by_pool(client)
    assert pool.stratum.refused == 5
    assert len(refusal_logs(caplog, "127.0.0.1")) == 1  # once per IP per minute, not per attempt
    assert "max_connections_per_ip (3)" in refusal_logs(caplog, "127.0.0.1")[0]
    # Another address is not affected; a freed slot is usable again.
    other = await connect(port, "127.0.0.2")
    await alive(other)
    await clients[0].close()
    await until(lambda: pool.stratum.per_host.get("127.0.0.1") == 2)
    again = await connect(port)
    await alive(again)
    for client in (*clients[1:], other, again):
        await client.close()
    await until(lambda: not pool.stratum.sessions)
    assert pool.stratum.per_host == {}


async def test_total_limit(
    node: RegtestNode, start_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pool = await start_pool(node, max_connections=4, max_connections_per_ip=10)
    port = pool.stratum.port
    clients = [await connect(port, f"127.0.0.{i}") for i in (1, 1, 2, 3)]
    for client in clients:
        await alive(client)
    late = await connect(port, "127.0.0.4")
    await closed_by_pool(late)
    assert "max_connections (4)" in refusal_logs(caplog, "127.0.0.4")[0]
    assert len(pool.stratum.sessions) == 4
    for client in clients:
        await alive(client)
        await client.close()


# --- timeouts -------------------------------------------------------------------------------------


async def test_handshake_timeout(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node, handshake_timeout_seconds=0.5)
    port = pool.stratum.port
    silent = await connect(port)
    half = await connect(port)
    await half.request("mining.subscribe", ["half/1"])
    full = await mining_client(port, node.new_address("bech32") + ".full")
    started = time.monotonic()
    await closed_by_pool(silent, 3)
    await closed_by_pool(half, 3)
    assert time.monotonic() - started < 2
    assert any("authorize within 0.5 s" in text for text in shown(half))
    await asyncio.sleep(1.0)  # well past the limit: a miner that finished its handshake stays
    await alive(full)
    assert pool.stratum.timed_out == 2
    await full.close()


async def test_idle_timeout(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node, idle_timeout_seconds=1.0)
    port = pool.stratum.port
    user = node.new_address("bech32")
    quiet = await mining_client(port, user + ".quiet")
    chatty = await mining_client(port, user + ".chatty")
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        await alive(chatty)  # a line every 0.3 s keeps it open
        await asyncio.sleep(0.3)
    await closed_by_pool(quiet, 1)
    assert any("nothing received for 1 s" in text for text in shown(quiet))
    # Jobs sent *to* the quiet miner are not activity; only lines from it are.
    assert not chatty.closed
    assert pool.stratum.timed_out == 1
    await chatty.close()


# --- invalid shares -------------------------------------------------------------------------------


async def test_invalid_share_cap_ignores_stale_shares(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node, max_invalid_shares_per_minute=5)
    user = node.new_address("bech32")
    client = await mining_client(pool.stratum.port, user)
    old = last_notify(client)
    en2 = bytes(8)

    # A new block: every share on the old job is stale, and none of them counts.
    count = len(client.notifications)
    node.generate(1)
    fresh = await client.notification("mining.notify", after=count)
    assert fresh["params"][8] is True and fresh["params"][1] != old[1]
    nonce = 0
    for _ in range(10):
        nonce = find_nonce(old, client.extranonce1, en2, meets=True, start=nonce + 1)
        params = [user, old[0], en2.hex(), old[7], f"{nonce:08x}"]
        assert (await client.request("mining.submit", params))["error"][0] == 21
    await alive(client)

    # Low-difficulty shares do count: five are answered, the sixth closes the connection.
    notify = fresh["params"]
    nonce = 0
    for i in range(6):
        nonce = find_nonce(notify, client.extranonce1, en2, meets=False, start=nonce + 1)
        params = [user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"]
        reply = await client.request("mining.submit", params)
        assert reply["error"][0] == 23, reply
        if i < 5:
            await alive(client)
    await closed_by_pool(client)
    assert any("more than 5 invalid shares in a minute" in text for text in shown(client))


async def test_malformed_submits_count_as_invalid(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node, max_invalid_shares_per_minute=3)
    client = await mining_client(pool.stratum.port, node.new_address("bech32"))
    for _ in range(3):
        reply = await client.request("mining.submit", ["w", "1", "zz", None, 5])
        assert reply["error"][0] in (20, 24), reply
    await alive(client)
    await client.request("mining.submit", ["w", "1", "zz", None, 5])
    await closed_by_pool(client)


# --- bounded memory per connection ----------------------------------------------------------------


async def test_miner_that_never_reads_is_dropped(
    node: RegtestNode, start_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pool = await start_pool(node)
    pool.stratum.max_write_buffer = 32 * 1024  # tiny, so the test needs few notifies
    port = pool.stratum.port
    user = node.new_address("bech32")
    reader_client = await mining_client(port, user + ".reads")

    # A miner that subscribes and authorizes, then never reads again (tiny receive buffer).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    local_port = sock.getsockname()[1]
    for i, (method, params) in enumerate(
        [("mining.subscribe", ["slow/1"]), ("mining.authorize", [user + ".slow", "x"])]
    ):
        line = json.dumps({"id": i + 1, "method": method, "params": params}) + "\n"
        await loop.sock_sendall(sock, line.encode())
    await until(lambda: any(
        s.peer.endswith(f":{local_port}") and s.mining for s in pool.stratum.sessions
    ))
    (slow,) = [s for s in pool.stratum.sessions if s.peer.endswith(f":{local_port}")]

    assert isinstance(slow.writer, StratumProtocol) and slow.writer.transport is not None
    transport = slow.writer.transport
    line = len(pool.jobs.job_for(slow.payout_script or b"").notify_line(False))
    sent = 0
    most = 0
    started = time.monotonic()
    while slow in pool.stratum.sessions:
        assert time.monotonic() - started < 20, sent
        pool.stratum.broadcast(clean=False)
        sent += 1
        most = max(most, transport.get_write_buffer_size())
        # Never more than the limit (plus the line that crossed it) held for it.
        assert most <= 32 * 1024 + line, most
        if sent % 200 == 0:
            await asyncio.sleep(0)  # let the loop write
    assert slow.close_reason == "not reading"
    assert any("not reading its messages" in r.getMessage() for r in caplog.records)
    # The reading miner got every one of them and is fine.
    await until(lambda: len(reader_client.notifications) >= sent, 20)
    await alive(reader_client)
    sock.close()
    await reader_client.close()
    logging.getLogger(__name__).warning(
        "slow reader dropped after %d notifies of %d bytes; most buffered %d", sent, line, most
    )


class FakeTransport:
    """Just enough of a transport to drive a StratumProtocol by hand."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False
        self.reading = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.9", 4242) if name == "peername" else None

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def test_lines_queued_behind_authorize_are_bounded(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node)
    user = node.new_address("bech32")
    ping = b'{"id":%d,"method":"mining.ping","params":[]}\n'
    authorize = json.dumps({"id": 0, "method": "mining.authorize", "params": [user]}).encode()

    # Within the bound: reading pauses while the node is asked, then every line is answered,
    # in order.
    transport = FakeTransport()
    proto = StratumProtocol(pool.stratum)
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.data_received(authorize + b"\n" + b"".join(ping % i for i in range(1, 101)))
    assert proto.busy and not transport.reading and len(proto.pending) == 100
    await until(lambda: not proto.busy)
    assert transport.reading
    ids = [json.loads(line)["id"] for line in bytes(transport.written).splitlines()]
    assert ids[0] == 0 and [i for i in ids if i is not None][1:] == list(range(1, 101))
    proto.connection_lost(None)

    # Past it: the connection is closed rather than queueing without end.
    transport = FakeTransport()
    proto = StratumProtocol(pool.stratum)
    proto.connection_made(transport)  # type: ignore[arg-type]
    many = b"".join(ping % i for i in range(1, MAX_PENDING_LINES + 2))
    proto.data_received(authorize + b"\n" + many)
    assert transport.closing and proto.session is not None
    assert proto.session.close_reason == "too many queued requests"
    proto.connection_lost(None)
    await until(lambda: not pool.stratum.sessions)


async def test_pipelined_lines_over_a_socket_answered_in_order(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node)
    client = await connect(pool.stratum.port)
    user = node.new_address("bech32")
    lines = [{"id": 1, "method": "mining.subscribe", "params": []},
             {"id": 2, "method": "mining.authorize", "params": [user]}]
    lines += [{"id": i, "method": "mining.ping", "params": []} for i in range(3, 203)]
    client.send_raw(b"".join(json.dumps(m).encode() + b"\n" for m in lines))
    for i in range(1, 203):
        assert (await client.reply(i))["error"] is None
    await client.close()


async def test_line_limit(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node, max_line_bytes=256)
    client = await connect(pool.stratum.port)
    padded = {"id": 1, "method": "mining.ping", "params": [], "pad": "x" * 150}
    assert (await client.request("mining.ping", []))["result"] == "pong"
    client.send_raw(json.dumps(padded).encode() + b"\n")
    assert (await client.reply(1))["result"] == "pong"
    client.send_raw(b'{"id":2,"method":"mining.ping","pad":"' + b"x" * 300 + b'"}\n')
    await closed_by_pool(client)
    await until(lambda: not pool.stratum.sessions)


# --- allowed payout addresses ---------------------------------------------------------------------


async def test_allowed_addresses(node: RegtestNode, start_pool: PoolFactory) -> None:
    allowed = node.new_address("bech32")
    pool = await start_pool(node, allowed_addresses=[allowed])
    port = pool.stratum.port
    ok = await mining_client(port, allowed + ".rig")
    stranger = await connect(port)
    await stranger.request("mining.subscribe", [])
    other = node.new_address("bech32")
    reply = await stranger.request("mining.authorize", [other + ".rig", "x"])
    assert reply["result"] is False and reply["error"][0] == 24
    assert "allowed_addresses" in reply["error"][1] and other in reply["error"][1]
    assert shown(stranger) == [reply["error"][1]]
    await closed_by_pool(stranger, 3)  # closed a moment later, like any refused authorize
    await alive(ok)
    await ok.close()


def test_address_normalization() -> None:
    assert normalize_address("BCRT1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KYGT080") == (
        "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    )
    assert normalize_address("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2") == (
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"
    )


def test_difficulty_memory_expires_and_is_bounded() -> None:
    memory = DifficultyMemory(ttl=100, max_entries=3)
    memory.remember("bc1qabc.rig", 512, now=0)
    assert memory.recall("BC1QABC.rig", now=50) == 512  # bech32 case does not matter
    assert memory.recall("bc1qabc.other", now=50) is None
    assert memory.recall("bc1qabc.rig", now=101) is None
    for i in range(5):
        memory.remember(f"bc1qabc.w{i}", i, now=10 + i)
    assert len(memory) == 3 and memory.recall("bc1qabc.w0", now=20) is None
    memory.prune(now=113.5)
    assert len(memory) == 1 and memory.recall("bc1qabc.w4", now=113.5) == 4


# --- memory per idle connection -------------------------------------------------------------------


async def test_memory_per_idle_connection(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node)
    port = pool.stratum.port
    count = 300
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        writers = []
        for _ in range(count):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
        await until(lambda: len(pool.stratum.sessions) == count)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ours = [tracemalloc.Filter(True, "*/pool/*")]
    grown = sum(
        stat.size_diff
        for stat in after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
    )
    per_connection = grown / count
    logging.getLogger(__name__).warning(
        "Python memory per idle connection: %.0f bytes", per_connection
    )
    assert per_connection < 4096
    for writer in writers:
        writer.close()
    await until(lambda: not pool.stratum.sessions)


IDLE_SESSION_BYTES = 2048  # the budget per idle connection (its protocol, session, vardiff)


async def test_memory_per_idle_session_object_graph(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    """What one idle connection costs in the pool's own objects (the protocol, the session it
    has, the session's vardiff, its entries in the server's tables), connected only and mining:
    each within IDLE_SESSION_BYTES. Transports are made first: they are the event loop's."""
    pool = await start_pool(node, max_connections_per_ip=10_000)
    user = node.new_address("bech32")
    handshake = b"".join(
        json.dumps({"id": i, "method": method, "params": params}).encode() + b"\n"
        for i, (method, params) in enumerate(
            [("mining.subscribe", ["idle/1.0"]), ("mining.authorize", [user + ".idle", "x"])]
        )
    )
    # One connection beforehand, so what every connection shares (the job for this payout
    # script, the shared strings) is not counted against each.
    first = StratumProtocol(pool.stratum)
    first.connection_made(FakeTransport())  # type: ignore[arg-type]
    first.data_received(handshake)
    await until(lambda: first.session is not None and first.session.mining)
    count = 300
    ours = [tracemalloc.Filter(True, "*/pool/*")]
    per_state: dict[str, float] = {}
    for state in ("connected", "mining"):
        transports = [FakeTransport() for _ in range(count)]
        protocols: list[StratumProtocol] = []
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for transport in transports:
                proto = StratumProtocol(pool.stratum)
                proto.connection_made(transport)  # type: ignore[arg-type]
                if state == "mining":
                    proto.data_received(handshake)
                protocols.append(proto)
            await until(lambda state=state, protocols=protocols: all(
                p.session is not None and p.session.state == state for p in protocols
            ), 30)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        grown = sum(
            stat.size_diff
            for stat in after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
        )
        per_state[state] = grown / count
        for proto in protocols:
            proto.connection_lost(None)
    logging.getLogger(__name__).warning(
        "pool objects per idle connection: %.0f bytes connected, %.0f bytes mining",
        per_state["connected"], per_state["mining"],
    )
    assert 0 < per_state["connected"] <= IDLE_SESSION_BYTES, per_state
    assert 0 < per_state["mining"] <= IDLE_SESSION_BYTES, per_state
    first.connection_lost(None)
    assert not pool.stratum.sessions


# --- names and stale floods -----------------------------------------------------------------------


async def test_stale_flood_outside_the_grace_closes_the_connection(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    """Stale shares count as invalid unless they follow a new block closely: a connection
    sending nothing but submits on jobs it was never sent is closed like any broken miner."""
    pool = await start_pool(node, max_invalid_shares_per_minute=5)
    user = node.new_address("bech32")
    client = await mining_client(pool.stratum.port, user)
    for i in range(6):
        params = [f"{user}.w{i % 3}", "deadbeef", "00" * 8, "00000000", "00000000"]
        reply = await client.request("mining.submit", params)
        assert reply["error"][0] == 21, reply
        if i < 5:
            await alive(client)
    await closed_by_pool(client)
    assert any("more than 5 invalid shares in a minute" in text for text in shown(client))


async def test_worker_names_per_connection_and_their_length(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node, max_workers_per_connection=3, max_worker_name_length=8)
    user = node.new_address("bech32")
    client = await mining_client(pool.stratum.port, f"{user}.a")
    assert (await client.request("mining.authorize", [f"{user}.b"]))["result"] is True
    too_long = await client.request("mining.authorize", [f"{user}.{'x' * 9}"])
    assert too_long["result"] is False and "longer than 8 characters" in too_long["error"][1]
    # A submit under a new name of the same address takes the third and last place...
    notify = last_notify(client)
    params = [f"{user}.c", notify[0], "00" * 8, notify[7], "00000000"]
    taken = await client.request("mining.submit", params)
    assert taken["error"] is None or taken["error"][0] != 24, taken  # (regtest: often a block)
    refused = await client.request("mining.authorize", [f"{user}.d"])
    assert refused["result"] is False and "more than 3 worker names" in refused["error"][1]
    # ...and a submit under a fourth name is not refused (it may be a block): it counts under
    # the authorized name, and the connection's names stay three.
    params[0] = f"{user}.e"
    params[4] = "00000001"
    counted = await client.request("mining.submit", params)
    assert counted["error"] is None or counted["error"][0] != 24, counted
    [session] = pool.stratum.sessions
    assert session.workers == {f"{user}.a", f"{user}.b", f"{user}.c"}
    assert session.worker == f"{user}.a"
    await alive(client)
    # A first name that is too long is refused (and the connection closed, as for a bad address).
    other = await connect(pool.stratum.port)
    await other.request("mining.subscribe", ["test/1"])
    res = await other.request("mining.authorize", [f"{user}.{'y' * 9}"])
    assert res["result"] is False and "longer than 8 characters" in res["error"][1]
    await closed_by_pool(other)
