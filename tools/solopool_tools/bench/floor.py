"""What this machine allows any Python pool, measured without solopool's own work in the way.

- `echo-pool`: the least a Stratum V1 pool can do on uvloop. It answers subscribe, authorize and
  every submit with canned lines (one write per read, no JSON parsing beyond finding the id, no
  share check), and sends one real mainnet-difficulty job so the bench's miners can work. The
  `submit` bench pointed at it measures the ceiling of the client and the kernel on this
  machine: no pool can answer faster here than this one does.
- `send-floor`: a plain `socket.send()` of one notify-sized line to each of N loopback
  connections whose reader (another process) waits in epoll, as miners do. On loopback the
  sender's call also runs the receiver's TCP input and wake-up, so this per-miner cost is the
  floor of any fan-out measured on one machine.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import os
import re
import select
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from .procfs import cpu_seconds
from .report import machine

_REJECTED = b',"result":null,"error":[23,"low difficulty share",null]}\n'
_ID = re.compile(rb'"id"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+|null)')


def mainnet_notify(template_path: Path) -> bytes:
    """A clean mining.notify line for the recorded template (pays a fixed P2WPKH script)."""
    from pool.jobs import JobManager, Template

    jobs = JobManager(b"/echo/")
    jobs.set_template(Template.from_rpc(json.loads(template_path.read_text())))
    return jobs.job_for(bytes.fromhex("0014" + "11" * 20)).notify_line(True)


class EchoProtocol(asyncio.Protocol):
    """One connection of the echo pool: canned answers, one write per read."""

    __slots__ = ("transport", "buffer", "notify")

    def __init__(self, notify: bytes) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.notify = notify

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        data = self.buffer + data
        lines = data.split(b"\n")
        self.buffer = lines.pop()
        out: list[bytes] = []
        for line in lines:
            match = _ID.search(line)
            msg_id = match.group(1) if match else b"null"
            if b"mining.submit" in line:
                out.append(b'{"id":' + msg_id + _REJECTED)
            elif b"mining.subscribe" in line:
                out.append(
                    b'{"id":' + msg_id + b',"result":[[["mining.notify","e1"]],"00000001",8],'
                    b'"error":null}\n'
                )
            elif b"mining.authorize" in line:
                out.append(b'{"id":' + msg_id + b',"result":true,"error":null}\n')
                out.append(b'{"id":null,"method":"mining.set_difficulty","params":[1024]}\n')
                out.append(self.notify)
            elif match is not None:
                out.append(b'{"id":' + msg_id + b',"result":true,"error":null}\n')
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def serve_echo(host: str, port: int, template: Path, max_seconds: float) -> None:
    notify = mainnet_notify(template)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: EchoProtocol(notify), host, port, reuse_address=True, backlog=4096
    )
    async with server:
        await asyncio.sleep(max_seconds)


def echo_main(host: str, port: int, template: Path, max_seconds: float) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve_echo(host, port, template, max_seconds))
    return 0


# --- send floor ---------------------------------------------------------------------------------


def _reader(
    port: int, miners: int, ready: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
) -> None:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(miners)]
    poller = select.epoll()
    by_fd = {}
    for s in socks:
        s.setblocking(False)
        poller.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = s
    ready.set()
    while not stop.is_set():
        for fd, _ in poller.poll(0.1):
            try:
                by_fd[fd].recv(65536)
            except BlockingIOError:
                pass
    for s in socks:
        s.close()


def send_floor(miners: int, rounds: int = 10, line_bytes: int = 400) -> dict[str, Any]:
    """Seconds per `send()` of one line to each of `miners` loopback connections (median of
    `rounds` rounds), with the readers waiting in epoll in another process."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    reader = context.Process(target=_reader, args=(port, miners, ready, stop), daemon=True)
    reader.start()
    conns: list[socket.socket] = []
    try:
        while len(conns) < miners:
            conn, _ = listener.accept()
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns.append(conn)
        if not ready.wait(60):
            raise TimeoutError("the reader process did not connect")
        line = b"x" * (line_bytes - 1) + b"\n"
        per_send = []
        reader_before = cpu_seconds(reader.pid) if reader.pid is not None else None
        for _ in range(rounds):
            time.sleep(0.3)  # the reader is idle in epoll again, as miners between blocks
            started = time.perf_counter()
            for conn in conns:
                conn.send(line)
            per_send.append((time.perf_counter() - started) / miners)
        time.sleep(0.3)  # the reader takes in the last round
        reader_after = cpu_seconds(reader.pid) if reader.pid is not None else None
    finally:
        stop.set()
        reader.join(10)
        for conn in conns:
            conn.close()
        listener.close()
    median = statistics.median(per_send)
    receive = None
    if reader_before is not None and reader_after is not None:
        receive = (reader_after - reader_before) / (miners * rounds)  # (plus its idle polls)
    # Sends and receives of one fan-out share the machine's cores; no pool can beat this.
    cores = os.cpu_count() or 1
    both = None if receive is None else (median + receive) * 1000 / cores
    return {
        "bench": "send-floor",
        "miners": miners,
        "rounds": rounds,
        "line_bytes": line_bytes,
        "us_per_send_p50": round(median * 1e6, 2),
        "us_per_send_min": round(min(per_send) * 1e6, 2),
        "ms_for_1000": round(median * 1000 * 1000, 1),
        "ms_for_10000": round(median * 10_000 * 1000, 1),
        "us_per_receive": None if receive is None else round(receive * 1e6, 2),
        "cores": cores,
        "ms_all_cores_1000": None if both is None else round(both * 1000, 1),
        "ms_all_cores_10000": None if both is None else round(both * 10_000, 1),
        "machine": machine(),
    }
