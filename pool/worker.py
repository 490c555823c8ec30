"""One Stratum worker process of a pool with `[stratum] workers` > 1.

The main process (`pool.workers.WorkerGroup`) starts it as `python -m pool.worker FD` with one
end of a socket pair. The worker listens on the pool's port with SO_REUSEPORT, so the kernel
spreads miners over the workers, and does everything per connection and per share: sessions,
jobs (built from the templates the main process sends), share checks, vardiff. What the main
process needs it reports: share events in batches, session state once a second, and found
blocks at once, after spooling them to disk itself (so a block survives either process dying).
It asks the main process to check payout addresses (only the main process talks to the node).

Messages in: ("start", stratum config, data_dir, index, template, coinbase tag, log level),
("template", template, tag), ("config", stratum config), ("resolved", request id, script,
refusal, error), ("remember", [(username, difficulty), ...]) (miners that left other workers,
so a reconnect here gets its difficulty back), ("stop",). Out: ("ready", pid), ("failed",
errno, message), ("events", [...]), ("block", FoundBlock fields), ("resolve", request id,
address), ("stopped",).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from .blocks import BlockSpool, FoundBlock, found_block, spool_until_written
from .config import StratumConfig
from .ipc import Channel
from .jobs import JobManager, Template
from .shares import Share
from .stratum.server import StratumServer
from .stratum.session import AddressRefused, Session
from .tasks import supervised

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05  # share events reach the main process within this
MAX_BATCH = 4096  # events per message at most
SNAPSHOT_SECONDS = 1.0  # how often changed session state (difficulty, agent...) is reported

# Event tuples (the first item says which):
#   ("c", sid, connected_at)                  a miner connected
#   ("d", sid[, username, difficulty])        it disconnected (with what to remember)
#   ("a", sid, address, worker, achieved, is_block, difficulty)   an accepted share
#   ("r", sid, address, worker, code, reason)                      a rejected share
#   ("u", sid, address, worker, difficulty, user_agent, mining)    its state changed
# sid is the connection's extranonce1: unique across all workers while it is connected.


class WorkerPool:
    """What the sessions of a worker process call back into (`PoolServices`)."""

    def __init__(self, channel: Channel | None = None) -> None:
        self.channel = channel
        self.config = StratumConfig()
        self.jobs = JobManager(b"")
        self.stratum = StratumServer(self, on_connect=self._connected, on_disconnect=self._gone)
        self.spool: BlockSpool | None = None
        self.started = asyncio.Event()
        self.stopping = asyncio.Event()
        self._events: list[tuple[Any, ...]] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._reported: dict[bytes, int] = {}
        self._payouts: dict[str, bytes] = {}
        self._requests: dict[int, asyncio.Future[tuple[bytes | None, str | None, str | None]]] = {}
        self._request_ids = itertools.count(1)
        self._snapshots: asyncio.Task[None] | None = None

    # --- messages from the main process ---------------------------------------------------------

    def on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "template":
            self._install(message[1], message[2])
        elif kind == "start":
            self._start(*message[1:])
        elif kind == "resolved":
            future = self._requests.pop(message[1], None)
            if future is not None and not future.done():
                future.set_result((message[2], message[3], message[4]))
        elif kind == "config":
            self._apply_config(message[1])
        elif kind == "remember":
            now = time.monotonic()
            for username, difficulty in message[1]:
                self.stratum.memory.remember(username, difficulty, now)
        elif kind == "stop":
            self.stopping.set()
        else:
            log.error("unknown message %r from the main process", kind)

    def _start(
        self, config: StratumConfig, data_dir: Path, index: int,
        template: Template | None, tag: bytes, level: int,
    ) -> None:
        logging.getLogger().setLevel(level)
        self.config = config
        self.spool = BlockSpool(data_dir / "blocks")
        self.stratum.extranonce_prefix = index << 24
        self.stratum.extranonce_mask = 0x00FFFFFF
        self.stratum.reuse_port = True
        if template is not None:
            self._install(template, tag)
        self.started.set()

    def _install(self, template: Template, tag: bytes) -> None:
        started = time.perf_counter()
        self.jobs.coinbase_tag = tag
        clean = self.jobs.set_template(template)
        sent = self.stratum.broadcast(clean)
        if clean and sent:
            log.info(
                "sent height %d jobs to %d miner(s) in %.1f ms",
                template.height, sent, 1000 * (time.perf_counter() - started),
            )

    def _apply_config(self, config: StratumConfig) -> None:
        self.config = config
        dropped = self.stratum.apply_config(config)
        if dropped:
            log.warning("reload: closed %d connection(s) of addresses no longer allowed", dropped)

    # --- PoolServices ---------------------------------------------------------------------------

    async def resolve_payout(self, address: str) -> bytes:
        cached = self._payouts.get(address)
        if cached is not None:
            return cached
        request = next(self._request_ids)
        future = asyncio.get_running_loop().create_future()
        self._requests[request] = future
        if not self._send(("resolve", request, address)):
            self._requests.pop(request, None)
            raise ConnectionError("the pool's main process is gone")
        answer: tuple[bytes | None, str | None, str | None] = await future
        script, refusal, error = answer
        if refusal is not None:
            raise AddressRefused(refusal)
        if script is None:
            raise ConnectionError(error or "the main process could not check the address")
        self._payouts[address] = script
        return script

    def share_accepted(self, session: Session, share: Share, difficulty: float) -> None:
        self._queue((
            "a", session.extranonce1, session.address, session.worker,
            share.difficulty, share.is_block, difficulty,
        ))

    def share_rejected(self, session: Session, code: int, reason: str) -> None:
        self._queue(("r", session.extranonce1, session.address, session.worker, code, reason))

    def block_found(self, session: Session, share: Share) -> Awaitable[None]:
        """Spool the block, then hand it to the main process; the miner is answered when the
        returned awaitable is done, i.e. once the block is on disk."""
        block = found_block(session, share)
        log.warning(
            "BLOCK FOUND height=%d hash=%s worker=%s; spooling and handing to the main process",
            block.height, block.hash, block.worker,
        )
        return self.stratum.run_soon(self._spool_and_send(block))

    async def _spool_and_send(self, block: FoundBlock) -> None:
        # On disk first: if either process dies now, the next start submits it from the spool.
        if self.spool is not None:
            await spool_until_written(self.spool, block)
        self.flush()
        if not self._send(("block", dataclasses.asdict(block))):
            log.error("block %s is spooled but the main process is gone; it is submitted at the "
                      "next start", block.hash)

    # --- events -----------------------------------------------------------------------------------

    def _connected(self, session: Session) -> None:
        self._queue(("c", session.extranonce1, session.connected_at))

    def _gone(self, session: Session) -> None:
        self._reported.pop(session.extranonce1, None)
        if session.mining and session.username and (
            session.accepted or session.suggested_difficulty is not None
        ):
            # Its difficulty, for the other workers' memory: it may reconnect to any of them
            # (only a miner that did work or chose its difficulty: not strangers' churn).
            self._queue(("d", session.extranonce1, session.username, session.difficulty))
        else:
            self._queue(("d", session.extranonce1))

    def _queue(self, event: tuple[Any, ...]) -> None:
        events = self._events
        events.append(event)
        if len(events) >= MAX_BATCH:
            self.flush()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._events:
            events, self._events = self._events, []
            self._send(("events", events))

    def snapshot(self) -> None:
        """Queue the state of every session that changed since it was last reported."""
        reported = self._reported
        for session in self.stratum.sessions:
            if session.closed:
                continue
            state = (
                session.address, session.worker, session.difficulty, session.user_agent,
                session.mining,
            )
            # Only a hash is kept per connection (memory); a collision would at worst delay
            # one display update by a second.
            digest = hash(state)
            sid = session.extranonce1
            if reported.get(sid) != digest:
                reported[sid] = digest
                self._queue(("u", sid, *state))

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_SECONDS)
            try:
                self.snapshot()
            except Exception:  # pragma: no cover - never stop reporting
                log.exception("session snapshot failed")

    def _send(self, message: tuple[Any, ...]) -> bool:
        return self.channel is not None and self.channel.send(message)

    # --- life -------------------------------------------------------------------------------------

    async def serve(self) -> int:
        """Listen, report ready, run until told to stop (or the main process is gone)."""
        await self.started.wait()
        try:
            await self.stratum.start()
        except OSError as exc:
            self._send(("failed", exc.errno or 0, exc.strerror or str(exc)))
            return 1
        self._send(("ready", os.getpid()))
        self._snapshots = supervised("snapshots", self._snapshot_loop)
        await self.stopping.wait()
        self._snapshots.cancel()
        await self.stratum.close()  # client.reconnect to every miner; found blocks spooled
        self.snapshot()
        self.flush()
        for future in self._requests.values():
            future.cancel()
        self._send(("stopped",))
        return 0


async def _drain(channel: Channel, timeout: float = 5.0) -> None:
    """Give the last messages time to leave before the process exits."""
    deadline = time.monotonic() + timeout
    transport = channel.transport
    while (
        transport is not None and not channel.closed and transport.get_write_buffer_size()
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.01)


async def run(fd: int) -> int:
    worker = WorkerPool()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # With the whole process group signalled (Ctrl-C, systemd), stop as the main one does.
        loop.add_signal_handler(sig, worker.stopping.set)
    channel = await Channel.open(
        socket.socket(fileno=fd), worker.on_message, on_closed=worker.stopping.set
    )
    worker.channel = channel
    waiter = asyncio.ensure_future(worker.stopping.wait())
    started = asyncio.ensure_future(worker.started.wait())
    await asyncio.wait({waiter, started}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not worker.started.is_set():
        started.cancel()
        return 0  # the main process went away before it started us
    code = await worker.serve()
    await _drain(channel)
    channel.close()
    return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m pool.worker FD (started by solopool itself)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads go through the main process
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s %(name)s[worker {os.getpid()}]: %(message)s",
        stream=sys.stderr,
    )
    from .cli import install_uvloop
    from .fdlimit import raise_open_file_limit
    from .logsafety import quiet_rpc_logger

    quiet_rpc_logger()
    raise_open_file_limit()
    install_uvloop()
    try:
        return asyncio.run(run(int(args[0])))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
