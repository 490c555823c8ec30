"""Bounded state under churn and a quiet API, against a real pool process and a real node.

The attacks (scaled from the 25,000 connections of the attack run to what a 2-core CI machine
does in well under a minute; BOUNDED_CHURN=25000 runs the full size by hand):

- churn: many connections from one host, each authorizing a fresh valid address and sending 4
  stale submits under 4 worker names, then leaving;
- names: one connection authorizing thousands of different 250-character worker names;

while a thread keeps asking the API for everything (/metrics, /api/workers, /api/pool,
/api/history) and another pings over Stratum. Asserted: the pool's RSS grows by at most a
bound scaled from "40 MB for 25,000", every API answer is at most 2 MB, the ping never takes
more than 250 ms, and nothing the strangers did reaches the stats database.

Also here: 200 HTTP requests with a 9 KB URL get a 4xx and at most one log line.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import secrets
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pool.consensus.address import encode_segwit_address
from tests.support.fixtures import PoolFactory
from tests.support.node import RegtestNode, free_port
from tests.support.pool_process import PoolProcess, write_config

CHURN = int(os.environ.get("BOUNDED_CHURN", "3000"))
CONCURRENCY = 100
FULL_SIZE = 25_000
RSS_BOUND_FULL = 40 * 2**20  # for FULL_SIZE connections
RSS_SLACK = 8 * 2**20  # allocator and import noise that does not scale with the attack
API_BOUND = 2 * 2**20
PING_BOUND = 0.250
NAME_FLOOD = 20_000
MAX_INVALID = 600  # the default [stratum] max_invalid_shares_per_minute
BOUND = 60.0
JOBS_KEPT_SECONDS = 12.0  # 8 templates at template_refresh_seconds = 1, and some


def fresh_address() -> str:
    """A valid regtest P2WPKH address nobody has used (a random key hash)."""
    return encode_segwit_address("bcrt", 0, secrets.token_bytes(20))


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def line(msg_id: int, method: str, params: list[Any]) -> bytes:
    return json.dumps({"id": msg_id, "method": method, "params": params}).encode() + b"\n"


async def read_replies(reader: asyncio.StreamReader, ids: set[int]) -> dict[int, Any]:
    replies: dict[int, Any] = {}
    async with asyncio.timeout(BOUND):
        while not ids <= replies.keys():
            raw = await reader.readline()
            if not raw:
                break
            message = json.loads(raw)
            if message.get("id") in ids:
                replies[message["id"]] = message
    return replies


async def churn_one(port: int) -> list[int]:
    """One stranger: a fresh address, 4 stale submits under 4 names; the error codes."""
    address = fresh_address()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [line(1, "mining.subscribe", ["churn/1"]), line(2, "mining.authorize", [address])]
        for i in range(4):
            worker = f"{address}.w{i}"
            lines.append(line(3 + i, "mining.submit", [worker, "deadbeef", "00" * 8,
                                                       "00000000", "00000000"]))
        writer.write(b"".join(lines))
        replies = await read_replies(reader, set(range(1, 7)))
        assert replies[2]["result"] is True, replies[2]
        return [replies[3 + i]["error"][0] for i in range(4)]
    finally:
        writer.close()


async def churn(port: int, count: int) -> list[int]:
    gate = asyncio.Semaphore(CONCURRENCY)
    codes: list[int] = []

    async def one() -> None:
        async with gate:
            codes.extend(await churn_one(port))

    await asyncio.gather(*(one() for _ in range(count)))
    return codes


async def name_flood(port: int, count: int) -> tuple[int, bool]:
    """One connection authorizing up to `count` different 250-character worker names (in
    batches of 100, each answered before the next); returns how many were answered and
    whether the pool closed the connection."""
    address = fresh_address()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    name = "x" * (250 - len(address) - 1 - 6)
    answered = 0
    try:
        writer.write(line(1, "mining.subscribe", ["flood/1"]) + line(2, "mining.authorize",
                                                                        [address]))
        assert (await read_replies(reader, {1, 2}))[2]["result"] is True
        for first in range(10, 10 + count, 100):
            ids = set(range(first, first + 100))
            writer.write(b"".join(
                line(i, "mining.authorize", [f"{address}.{i:06d}{name}"]) for i in ids
            ))
            replies = await read_replies(reader, ids)
            for message in replies.values():
                assert message["result"] is False and message["error"][0] == 24, message
            answered += len(replies)
            if len(replies) < len(ids):
                return answered, True  # the pool closed the connection
    except ConnectionError:
        return answered, True
    finally:
        writer.close()
    return answered, False


class Pinger(threading.Thread):
    """An honest miner's connection (its own thread: the attack's event loop must not delay
    the measurement) pinging every 50 ms; keeps the worst round trip."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.stop = threading.Event()
        self.worst = 0.0
        self.count = 0
        self.sock.sendall(line(1, "mining.subscribe", ["probe/1"])
                          + line(2, "mining.authorize", [fresh_address()]))
        self._wait(2)

    def _wait(self, msg_id: int) -> None:
        while True:
            raw = self.file.readline()
            assert raw, "the pool closed the probe connection"
            if json.loads(raw).get("id") == msg_id:
                return

    def run(self) -> None:
        msg_id = 100
        while not self.stop.is_set():
            msg_id += 1
            started = time.monotonic()
            self.sock.sendall(line(msg_id, "mining.ping", []))
            self._wait(msg_id)
            self.worst = max(self.worst, time.monotonic() - started)
            self.count += 1
            time.sleep(0.05)
        self.sock.close()


class ApiReader(threading.Thread):
    """Asks the API for everything, again and again; keeps the biggest answer."""

    PATHS = ("/metrics", "/api/workers?limit=500", "/api/pool", "/api/history",
             "/api/workers?offset=1000&limit=500", "/api/blocks")

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stop = threading.Event()
        self.biggest = 0
        self.biggest_path = ""
        self.count = 0
        self.failures: list[str] = []

    def fetch_all(self) -> None:
        for path in self.PATHS:
            try:
                with urllib.request.urlopen(self.base + path, timeout=30) as answer:
                    body = answer.read()
            except (urllib.error.URLError, OSError) as exc:
                self.failures.append(f"{path}: {exc}")
                continue
            if len(body) > self.biggest:
                self.biggest, self.biggest_path = len(body), path
            self.count += 1

    def run(self) -> None:
        while not self.stop.is_set():
            self.fetch_all()


def stored_workers(data: Path) -> int:
    with sqlite3.connect(data / "stats.sqlite3") as db:
        count: int = db.execute("SELECT COUNT(*) FROM workers").fetchone()[0]
        return count


async def test_churn_and_name_flood_keep_the_pool_bounded(
    node: RegtestNode, tmp_path: Path
) -> None:
    raise_fd_limit()
    port, api_port = free_port(), free_port()
    data = tmp_path / "data"
    config = tmp_path / "solopool.toml"
    write_config(
        config, node, port, api_port=api_port, data_dir=data,
        # Each template keeps the jobs it made (one per payout address) for 8 templates:
        # refreshed every second, what the strangers' jobs held is released within the test.
        node_options={"template_refresh_seconds": 1},
        share_interval_seconds=10.0,  # the pool's default
        max_connections_per_ip=20000, max_connections=30000,
    )
    proc = await PoolProcess.start(config)
    pinger: Pinger | None = None
    reader: ApiReader | None = None
    try:
        await proc.wait_listening(port, BOUND)
        reader = ApiReader(f"http://127.0.0.1:{api_port}")
        reader.fetch_all()  # everything the API imports and caches, before the baseline
        await churn(port, 200)  # and the buffers a busy pool keeps anyway
        pinger = Pinger(port)
        baseline = rss(proc.pid)
        pinger.start()
        reader.start()

        started = time.monotonic()
        codes = await churn(port, CHURN)
        churn_seconds = time.monotonic() - started
        answered, closed = await name_flood(port, NAME_FLOOD)
        reader.stop.set()
        reader.join(BOUND)
        reader.fetch_all()  # once more, with everything the attack left behind
        await asyncio.sleep(JOBS_KEPT_SECONDS)  # the strangers' jobs expire with their templates
        grown = rss(proc.pid) - baseline
        pinger.stop.set()
        pinger.join(BOUND)

        print(f"FIGURE churn: {CHURN} connections x 4 stale submits in {churn_seconds:.1f} s; "
              f"RSS +{grown / 2**20:.1f} MB; biggest API answer {reader.biggest} bytes "
              f"({reader.biggest_path}, {reader.count} answers); worst ping "
              f"{pinger.worst * 1000:.0f} ms ({pinger.count} pings); name flood: {answered} "
              f"of {NAME_FLOOD} authorizes answered before the close")
        assert set(codes) == {21}, set(codes)
        assert closed and MAX_INVALID <= answered <= MAX_INVALID + 1
        assert not reader.failures, reader.failures[:3]
        assert reader.count >= len(ApiReader.PATHS)
        assert reader.biggest <= API_BOUND
        assert pinger.count > 0 and pinger.worst <= PING_BOUND
        assert grown <= RSS_BOUND_FULL * CHURN / FULL_SIZE + RSS_SLACK
    finally:
        if pinger is not None:
            pinger.stop.set()
        if reader is not None:
            reader.stop.set()
        if proc.running:
            try:
                await proc.stop(BOUND)
            except TimeoutError:
                await proc.kill()
    # Nobody had a share accepted: nothing of theirs is stored, so the next start loads nothing.
    assert stored_workers(data) == 0
    assert "stats: 0 worker(s)" in proc.output


async def test_bad_http_requests_get_4xx_and_one_log_line(
    node: RegtestNode, start_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await start_pool(node)
    port = pool.api.port
    caplog.clear()  # start-up's own warnings (the open-file limit on this machine) are not noise
    statuses = []
    for _ in range(200):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), BOUND)
        statuses.append(int(status.split()[1]))
        writer.close()
    assert all(400 <= s < 500 for s in statuses), set(statuses)
    noisy = [r for r in caplog.records if r.levelno >= 30 or r.exc_info]
    assert len(noisy) <= 1, [r.getMessage()[:200] for r in noisy[:3]]
    assert all(r.exc_info is None for r in noisy)
    # The API still answers.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/pool HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b" 200 " in await asyncio.wait_for(reader.readline(), BOUND)
    writer.close()
