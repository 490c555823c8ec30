"""The load side: simulated miners as asyncio Protocols (on uvloop), grouped in one
`ClientRunner` per process. With `--client-procs N` the coordinator drives N runner processes
over pipes (`RemoteRunner`); with one, the runner lives in the coordinator's own loop
(`LocalRunner`).

A miner speaks plain Stratum V1: subscribe, authorize (and optionally suggest_difficulty), then
follows `mining.set_difficulty` and `mining.notify` like a real one. Its submit lines are
pre-built per job (one bytes format with only the id and the nonce left to fill in), pipelined
with a bounded window, and replies are matched by id. During the fan-out test a miner does not
parse at all: it only looks for the new previous-block hash in what it receives and notes when.

All times are `time.monotonic()` (CLOCK_MONOTONIC), so they compare across processes.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import threading
import time
from array import array
from collections import Counter, deque
from typing import Any

from pool.consensus.block import build_header, prevhash_from_stratum
from pool.consensus.merkle import merkle_root_from_branch
from pool.consensus.serialize import sha256d
from pool.consensus.target import difficulty_to_target

from .mining import ValidShares
from .procfs import own_cpu_seconds, raise_fd_limit
from .sv2client import EXTENDED, Sv2Miner

USER_AGENT = "solopool-bench/0.1"
SUBSCRIBE_ID = 1
AUTHORIZE_ID = 2
SUGGEST_ID = 3
FIRST_SUBMIT_ID = 16
TAIL_BYTES = 160  # kept from the previous chunk so a hash split across reads is still found
RECENT_CHUNKS = 6  # notify-bearing chunks kept per miner until the block they announce is known
MAX_BUFFER = 1 << 20
MAX_HASH = (1 << 256) - 1

_loads = json.loads
# The usual reply shapes, read without a JSON parse: {"id":N,"result":true,"error":null} and
# {"id":N,"result":null,"error":[CODE,... Anything else goes through json.loads.
_FAST_REPLY = re.compile(rb'\{"id":(\d+),"result":(true|null),"error":(null|\[(-?\d+),)')


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


class SubmitCounters:
    """What one runner saw during a submit run."""

    __slots__ = (
        "sent",
        "responses",
        "accepted",
        "rejected",
        "codes",
        "window_responses",
        "latencies",
        "per_second",
        "start",
        "end",
        "valid_mined",
        "valid_failed",
        "valid_infeasible",
        "notifies",
    )

    def __init__(self, start: float, end: float) -> None:
        self.sent = 0
        self.responses = 0
        self.accepted = 0
        self.rejected = 0
        self.codes: Counter[str] = Counter()
        self.window_responses = 0
        self.latencies = array("d")
        self.per_second: list[int] = [0] * (int(end - start) + 2)
        self.start = start
        self.end = end
        self.valid_mined = 0
        self.valid_failed = 0
        self.valid_infeasible = 0
        self.notifies = 0

    def count(self, now: float, sent: float, reject: str | None) -> None:
        """One answered submit: accepted (`reject` None) or rejected with that code."""
        self.responses += 1
        if reject is None:
            self.accepted += 1
        else:
            self.rejected += 1
            self.codes[reject] += 1
        if now <= self.end:
            self.window_responses += 1
            self.latencies.append(now - sent)
            self.per_second[int(now - self.start)] += 1


def reject_code(msg: dict[str, Any]) -> str:
    """A short name for why a submit was not accepted, whatever the pool's reply style."""
    error = msg.get("error")
    if isinstance(error, list) and error:
        return str(error[0])
    if isinstance(error, dict):
        return str(error.get("code", "error"))
    if error is not None:
        return str(error)[:40]
    reason = msg.get("reject-reason")  # ckpool's style: result false + reject-reason
    return str(reason)[:40] if reason else "false"


class Miner(asyncio.Protocol):
    """One simulated miner connection."""

    __slots__ = (
        "runner",
        "index",
        "user",
        "suggest",
        "transport",
        "buf",
        "ready",
        "authorized",
        "suggest_answered",
        "extranonce1",
        "en2_size",
        "difficulty",
        "target",
        "job",
        "job_target",
        "nbits",
        "en2",
        "fmt",
        "next_id",
        "nonce",
        "pending",
        "submitting",
        "passive",
        "closed",
        "close_reason",
        "connected_at",
        "ready_at",
        "tail",
        "recent",
        "got",
        "valid",
    )

    def __init__(
        self, runner: ClientRunner, index: int, user: str, suggest: float | None
    ) -> None:
        self.runner = runner
        self.index = index
        self.user = user
        self.suggest = suggest
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.ready: asyncio.Future[None] = runner.loop.create_future()
        self.authorized = False
        self.suggest_answered = suggest is None
        self.extranonce1 = b""
        self.en2_size = 4
        self.difficulty = 1.0
        self.target = difficulty_to_target(1)
        self.job: list[Any] | None = None
        self.job_target = self.target
        self.nbits = 0
        self.en2 = b""
        self.fmt = b""
        self.next_id = FIRST_SUBMIT_ID
        self.nonce = random.getrandbits(32)
        self.pending: dict[int, float] = {}
        self.submitting = False
        self.passive = False
        self.closed = False
        self.close_reason = ""
        self.connected_at = 0.0
        self.ready_at = 0.0
        self.tail = b""
        self.recent: deque[tuple[float, bytes]] = deque(maxlen=RECENT_CHUNKS)
        self.got: float | None = None
        self.valid = ValidShares()

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.connected_at = time.monotonic()
        assert self.transport is not None
        lines = [
            {"id": SUBSCRIBE_ID, "method": "mining.subscribe", "params": [USER_AGENT]},
            {"id": AUTHORIZE_ID, "method": "mining.authorize", "params": [self.user, "x"]},
        ]
        if self.suggest is not None:
            # After authorize, pipelined, as NerdQAxe++ does (ckpool ignores it before).
            lines.append(
                {"id": SUGGEST_ID, "method": "mining.suggest_difficulty", "params": [self.suggest]}
            )
        self.transport.write(
            b"".join(json.dumps(m, separators=(",", ":")).encode() + b"\n" for m in lines)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.submitting = False
        if not self.close_reason:
            self.close_reason = f"closed by the pool ({exc})" if exc else "closed by the pool"
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(self.close_reason))
        self.runner.on_closed(self)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.passive:
            self._watch(now, data)
            return
        buf = self.buf + data if self.buf else data
        end = buf.rfind(b"\n")
        if end < 0:
            self.buf = buf
            if len(buf) > MAX_BUFFER:
                self.fail("line too long from the pool")
            return
        self.buf = buf[end + 1 :]
        freed = 0
        counters = self.runner.counters
        pending = self.pending
        fast = _FAST_REPLY.match
        for line in buf[:end].split(b"\n"):
            if not line or line.isspace():
                continue
            quick = fast(line)
            if quick is not None:
                sent = pending.pop(int(quick[1]), None)
                if sent is not None:
                    freed += 1
                    if counters is not None:
                        code = quick[4]
                        if code is not None:
                            counters.count(now, sent, code.decode())
                        elif quick[2] == b"true":
                            counters.count(now, sent, None)
                        else:
                            counters.count(now, sent, "false")  # null result, null error
                    continue
            try:
                msg = _loads(line)
            except ValueError:
                self.runner.bad_lines += 1
                continue
            if type(msg) is not dict:
                continue
            if msg.get("method") is not None:
                self._notification(msg)
                continue
            msg_id = msg.get("id")
            sent = pending.pop(msg_id, None) if type(msg_id) is int else None
            if sent is None:
                self._reply(msg_id, msg)
                continue
            freed += 1
            if counters is not None:
                accepted = msg.get("result") is True and msg.get("error") is None
                counters.count(now, sent, None if accepted else reject_code(msg))
        if not self.ready.done():
            self._check_ready(now)
        if freed and self.submitting:
            self._send_submits(freed, now)

    # --- handshake and work ---------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        self.close_reason = reason
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def _reply(self, msg_id: Any, msg: dict[str, Any]) -> None:
        if msg_id == SUBSCRIBE_ID:
            result = msg.get("result")
            if msg.get("error") or not isinstance(result, list) or len(result) < 3:
                self.fail(f"subscribe refused: {msg.get('error')}")
                return
            try:
                self.extranonce1 = bytes.fromhex(str(result[1]))
                self.en2_size = int(result[2])
            except (ValueError, TypeError):
                self.fail(f"unreadable subscribe result {result!r}")
        elif msg_id == AUTHORIZE_ID:
            if msg.get("result") is True:
                self.authorized = True
            else:
                self.fail(f"authorize refused: {msg.get('error')}")
        elif msg_id == SUGGEST_ID:
            self.suggest_answered = True

    def _check_ready(self, now: float) -> None:
        if self.authorized and self.suggest_answered and self.job is not None:
            self.ready_at = now
            self.ready.set_result(None)

    def _notification(self, msg: dict[str, Any]) -> None:
        method = msg["method"]
        params = msg.get("params")
        if method == "mining.notify" and isinstance(params, list) and len(params) >= 9:
            self._set_job(params)
        elif method == "mining.set_difficulty" and isinstance(params, list) and params:
            value = params[0]
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                self.difficulty = float(value)
                self.target = difficulty_to_target(value)
                self.valid.forget()
        elif msg.get("id") is not None and self.transport is not None:
            # A request from the pool (mining.ping, client.get_version): answer it.
            result: Any = "pong" if method == "mining.ping" else USER_AGENT
            if method not in ("mining.ping", "client.get_version"):
                result = None
            reply = {"id": msg["id"], "result": result, "error": None}
            self.transport.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")

    def _set_job(self, params: list[Any]) -> None:
        try:
            self.nbits = int(str(params[6]), 16)
        except ValueError:
            return
        self.job = params
        self.job_target = self.target
        self.en2 = random.randbytes(self.en2_size)
        self.valid.forget()
        fields = json.dumps(
            [self.user, str(params[0]), self.en2.hex(), str(params[7])], separators=(",", ":")
        )[1:-1].encode()
        self.fmt = (
            b'{"id":%d,"method":"mining.submit","params":['
            + fields.replace(b"%", b"%%")
            + b',"%08x"]}\n'
        )
        counters = self.runner.counters
        if counters is not None:
            counters.notifies += 1

    def start_submitting(self, window: int, now: float) -> None:
        if self.closed or self.job is None:
            return
        self.submitting = True
        self._send_submits(window, now)

    def _send_submits(self, count: int, now: float) -> None:
        runner = self.runner
        if now >= runner.end_at or self.transport is None or self.closed:
            self.submitting = False
            return
        fmt = self.fmt
        pending = self.pending
        next_id = self.next_id
        ratio = runner.valid_ratio
        parts = []
        for _ in range(count):
            if ratio and self.valid.take(ratio):
                nonce = self._mine()
            else:
                nonce = self.nonce = (self.nonce + 1) & 0xFFFFFFFF
            parts.append(fmt % (next_id, nonce))
            pending[next_id] = now
            next_id += 1
        self.next_id = next_id
        if runner.counters is not None:
            runner.counters.sent += count
        self.transport.write(b"".join(parts))

    def _mine(self) -> int:
        """A nonce whose header hash meets the share target (hashed here, with a midstate)."""
        job = self.job
        assert job is not None
        if not self.valid.prepared:
            coinbase = bytes.fromhex(job[2]) + self.extranonce1 + self.en2 + bytes.fromhex(job[3])
            root = merkle_root_from_branch(sha256d(coinbase), [bytes.fromhex(b) for b in job[4]])
            header = build_header(
                int(job[5], 16), prevhash_from_stratum(job[1]), root, int(job[7], 16),
                self.nbits, 0,
            )  # fmt: skip
            # Meet both the difficulty the job came with and the current one, whichever is
            # harder.
            target = min(self.job_target, self.target)
            self.valid.prepare(header, target, self.runner.max_valid_hashes)
        self.nonce = self.valid.mine(self.nonce, self.runner.counters, self.runner.max_valid_hashes)
        return self.nonce

    # --- fan-out watching -----------------------------------------------------------------------

    def _watch(self, now: float, data: bytes) -> None:
        joined = self.tail + data if self.tail else data
        self.tail = data[-TAIL_BYTES:]
        runner = self.runner
        needle = runner.needle
        if needle is not None and self.got is None and needle in joined:
            self.got = now
            runner.on_arrival()
        elif b"notify" in joined:
            self.recent.append((now, joined))


AnyMiner = Miner | Sv2Miner


class ClientRunner:
    """The miners of one process, and the operations the coordinator asks of them.
    `sv2_channel` ("standard" or "extended"): Stratum V2 miners on that kind of channel;
    None: Stratum V1 miners."""

    def __init__(
        self, host: str, port: int, source_ips: int = 1, sv2_channel: str | None = None
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        self.source_ips = max(1, source_ips) if host.startswith("127.") else 1
        self.sv2_channel = sv2_channel
        self.miners: list[AnyMiner] = []
        self.counters: SubmitCounters | None = None
        self.end_at = 0.0
        self.valid_ratio = 0.0
        self.max_valid_hashes = 200_000
        self.needle: bytes | None = None
        self.arrived = 0
        self.expected = 0
        self.all_arrived: asyncio.Future[None] | None = None
        self.bad_lines = 0
        self.closed_by_pool = 0
        self.closing = False

    def on_closed(self, miner: AnyMiner) -> None:
        if not self.closing:
            self.closed_by_pool += 1

    def on_arrival(self) -> None:
        self.arrived += 1
        waiter = self.all_arrived
        if self.arrived >= self.expected and waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- operations (each returns plain data: it may travel over a pipe) -------------------------

    def new_miner(self, index: int, user: str, suggest: float | None) -> AnyMiner:
        if self.sv2_channel is None:
            return Miner(self, index, user, suggest)
        return Sv2Miner(self, index, user, suggest, extended=self.sv2_channel == EXTENDED)

    async def connect(
        self,
        specs: list[tuple[int, str]],
        concurrency: int = 256,
        suggest: float | None = None,
        timeout: float = 30.0,
        passive: bool = False,
    ) -> dict[str, Any]:
        """Connect and handshake `specs` [(index, user)], at most `concurrency` at a time."""
        raise_fd_limit()
        gate = asyncio.Semaphore(max(1, concurrency))
        errors: Counter[str] = Counter()
        ready: list[AnyMiner] = []
        started = time.monotonic()

        async def one(index: int, user: str) -> None:
            async with gate:
                miner = self.new_miner(index, user, suggest)
                local = None
                if self.source_ips > 1:
                    local = (f"127.0.{index % self.source_ips // 250}.{index % 250 + 2}", 0)
                try:
                    await asyncio.wait_for(
                        self.loop.create_connection(
                            lambda: miner, self.host, self.port, local_addr=local
                        ),
                        timeout,
                    )
                    await asyncio.wait_for(asyncio.shield(miner.ready), timeout)
                except (OSError, TimeoutError, ConnectionError) as exc:
                    reason = str(exc) or type(exc).__name__
                    errors[reason[:120]] += 1
                    if miner.transport is not None:
                        miner.transport.abort()
                    if not miner.ready.done():
                        miner.ready.cancel()
                    return
                miner.passive = passive
                ready.append(miner)

        await asyncio.gather(*(one(i, u) for i, u in specs))
        ready.sort(key=lambda m: m.index)
        self.miners.extend(ready)
        nbits = next((m.nbits for m in reversed(ready) if m.nbits), 0)
        return {
            "requested": len(specs),
            "ready": len(ready),
            "failed": len(specs) - len(ready),
            "errors": dict(errors),
            "started": started,
            "last_connected": max((m.connected_at for m in ready), default=started),
            "last_ready": max((m.ready_at for m in ready), default=started),
            "handshake_seconds": [m.ready_at - m.connected_at for m in ready],
            "nbits": nbits,
            "difficulty": ready[-1].difficulty if ready else None,
        }

    async def submit(
        self,
        start_at: float,
        seconds: float,
        window: int = 8,
        valid_ratio: float = 0.0,
        drain_seconds: float = 5.0,
        max_valid_hashes: int = 200_000,
    ) -> dict[str, Any]:
        """Submit as fast as answered from `start_at` for `seconds`, then wait for the rest."""
        end = start_at + seconds
        counters = SubmitCounters(start_at, end)
        self.counters = counters
        self.end_at = end
        self.valid_ratio = max(0.0, min(1.0, valid_ratio))
        self.max_valid_hashes = max_valid_hashes
        live = [m for m in self.miners if not m.closed]
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        cpu_start = own_cpu_seconds()
        now = time.monotonic()
        for miner in live:
            miner.passive = False
            miner.start_submitting(window, now)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        cpu_window = own_cpu_seconds() - cpu_start
        wall = max(time.monotonic() - start_at, 1e-9)
        deadline = time.monotonic() + drain_seconds
        while any(m.pending and not m.closed for m in live) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        unanswered = sum(len(m.pending) for m in live)
        for miner in live:
            miner.submitting = False
            miner.pending.clear()
        self.counters = None
        return {
            "miners": len(live),
            "sent": counters.sent,
            "responses": counters.responses,
            "accepted": counters.accepted,
            "rejected": counters.rejected,
            "codes": dict(counters.codes),
            "window_responses": counters.window_responses,
            "latencies": counters.latencies,
            "per_second": counters.per_second[: int(seconds) + 1],
            "unanswered": unanswered,
            "closed_by_pool": sum(1 for m in live if m.closed),
            "valid_mined": counters.valid_mined,
            "valid_failed": counters.valid_failed,
            "valid_infeasible": counters.valid_infeasible,
            "notifies": counters.notifies,
            "cpu_seconds": cpu_window,
            "wall_seconds": wall,
            "bad_lines": self.bad_lines,
        }

    async def watch(self, needle: str, timeout: float = 10.0) -> list[float | None]:
        """When each live miner received a line containing `needle` (the new previous-block
        hash as mining.notify carries it), waiting up to `timeout` for all of them."""
        wanted = needle.encode()
        live = [m for m in self.miners if not m.closed]
        self.arrived = 0
        for miner in live:
            miner.passive = True
            miner.got = None
            for at, chunk in miner.recent:
                if wanted in chunk:
                    miner.got = at
                    self.arrived += 1
                    break
        self.expected = len(live)
        self.needle = wanted
        if self.arrived < self.expected:
            waiter: asyncio.Future[None] = self.loop.create_future()
            self.all_arrived = waiter
            try:
                await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                pass
            finally:
                self.all_arrived = None
        self.needle = None
        for miner in live:
            miner.recent.clear()
        return [m.got for m in live]

    async def status(self) -> dict[str, Any]:
        return {
            "cpu_seconds": own_cpu_seconds(),
            "open": sum(1 for m in self.miners if not m.closed),
            "closed_by_pool": self.closed_by_pool,
            "reasons": dict(Counter(m.close_reason for m in self.miners if m.closed)),
        }

    async def disconnect(self) -> dict[str, Any]:
        self.closing = True
        status = await self.status()
        for miner in self.miners:
            if miner.transport is not None and not miner.closed:
                miner.transport.abort()
        self.miners = []
        await asyncio.sleep(0)
        self.closing = False
        return status


# --- running runners in other processes ---------------------------------------------------------


class LocalRunner:
    """A runner in the coordinator's own event loop."""

    def __init__(
        self, host: str, port: int, source_ips: int = 1, sv2_channel: str | None = None
    ) -> None:
        self.client = ClientRunner(host, port, source_ips, sv2_channel)
        self.pid = os.getpid()

    async def call(self, method: str, **kwargs: Any) -> Any:
        return await getattr(self.client, method)(**kwargs)

    async def close(self) -> None:
        await self.client.disconnect()


class RemoteRunner:
    """A runner in a child process, driven over a pipe (one call at a time)."""

    def __init__(
        self, host: str, port: int, source_ips: int = 1, sv2_channel: str | None = None
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main, args=(child, host, port, source_ips, sv2_channel), daemon=True,
            name="solopool-bench-client",
        )
        self.process.start()
        child.close()
        self.pid = self.process.pid

    def _roundtrip(self, message: tuple[str, dict[str, Any]]) -> Any:
        # Blocking pipe I/O on a worker thread: results (latency arrays) can be megabytes.
        self.conn.send(message)
        return self.conn.recv()

    async def call(self, method: str, **kwargs: Any) -> Any:
        try:
            status, value = await asyncio.to_thread(self._roundtrip, (method, kwargs))
        except (EOFError, OSError) as exc:
            raise BenchError(f"a client process died ({exc or type(exc).__name__})") from None
        if status != "ok":
            raise BenchError(f"client process: {value}")
        return value

    async def close(self) -> None:
        try:
            self.conn.send(("exit", {}))
        except (OSError, BrokenPipeError):
            pass
        await asyncio.to_thread(self.process.join, 10.0)
        if self.process.is_alive():
            self.process.terminate()
            await asyncio.to_thread(self.process.join, 5.0)
        self.conn.close()


Runner = LocalRunner | RemoteRunner


def _worker_main(
    conn: multiprocessing.connection.Connection, host: str, port: int, source_ips: int,
    sv2_channel: str | None,
) -> None:  # fmt: skip
    import uvloop

    raise_fd_limit()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(conn, host, port, source_ips, sv2_channel))


async def _serve(
    conn: multiprocessing.connection.Connection, host: str, port: int, source_ips: int,
    sv2_channel: str | None,
) -> None:  # fmt: skip
    loop = asyncio.get_running_loop()
    client = ClientRunner(host, port, source_ips, sv2_channel)
    inbox: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()

    def read_pipe() -> None:  # on a thread: commands can be large (10,000 usernames)
        while True:
            try:
                message: tuple[str, dict[str, Any]] | None = conn.recv()
            except (EOFError, OSError):
                message = None  # the coordinator is gone
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, message)
            except RuntimeError:
                return  # the loop is closed
            if message is None or message[0] == "exit":
                return

    threading.Thread(target=read_pipe, name="bench-pipe", daemon=True).start()
    try:
        while True:
            message = await inbox.get()
            if message is None or message[0] == "exit":
                break
            method, kwargs = message
            try:
                reply: tuple[str, Any] = ("ok", await getattr(client, method)(**kwargs))
            except Exception as exc:  # reported to the coordinator
                reply = ("error", f"{type(exc).__name__}: {exc}")
            try:
                conn.send(reply)
            except OSError:
                break
    finally:
        await client.disconnect()
