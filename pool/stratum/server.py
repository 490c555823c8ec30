"""The TCP side of Stratum: an asyncio.Protocol per connection (uvloop-friendly, no streams),
extranonce1 allocation, and fan-out of new jobs to every miner."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .framing import LineFramer, LineTooLong
from .session import PoolServices, Session

log = logging.getLogger(__name__)

MAX_PENDING_LINES = 256  # lines queued behind a slow request (authorize) before we give up
MAX_WRITE_BUFFER = 1 << 20  # a miner that does not read its notifies is dropped, not buffered
TICK_SECONDS = 5.0


class StratumProtocol(asyncio.Protocol):
    """Framing and ordering for one connection; all meaning lives in `Session`."""

    def __init__(self, server: StratumServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.framer = LineFramer(server.pool.config.max_line_bytes)
        self.pending: deque[bytes] = deque()
        self.busy = False
        self.session: Session | None = None

    # asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peername = transport.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        extranonce1 = self.server.allocate_extranonce1()
        self.session = Session(self.server.pool, self, extranonce1, peer)
        self.server.sessions.add(self.session)
        self.server.on_connect(self.session)
        log.debug("%s: connected, extranonce1 %s", peer, extranonce1.hex())

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None or session.closed:
            return
        try:
            lines = self.framer.feed(data)
        except LineTooLong as exc:
            log.info("%s: %s; closing", session.peer, exc)
            session.close()
            return
        self.pending.extend(lines)
        if len(self.pending) > MAX_PENDING_LINES:
            log.info("%s: too many queued requests; closing", session.peer)
            session.close()
            return
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        session = self.session
        if session is not None:
            session.closed = True
            self.server.release(session)
            log.debug("%s: disconnected", session.peer)

    # Writer (what the session writes through) -------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.info("%s: not reading its messages; dropping", self.session and self.session.peer)
            transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # ordering -----------------------------------------------------------------------------------

    def _process(self) -> None:
        session = self.session
        while self.pending and not self.busy and session is not None and not session.closed:
            waiting = session.handle_line(self.pending.popleft())
            if waiting is not None:
                self.busy = True
                task = asyncio.ensure_future(waiting)
                task.add_done_callback(self._resume)
                self.server.tasks.add(task)

    def _resume(self, task: asyncio.Future[Any]) -> None:
        self.server.tasks.discard(task)
        self.busy = False
        if not task.cancelled() and task.exception() is not None and self.session is not None:
            log.error("%s: request failed: %r", self.session.peer, task.exception())
            self.session.close()
            return
        self._process()


class StratumServer:
    def __init__(
        self,
        pool: PoolServices,
        on_connect: Callable[[Session], None] | None = None,
        on_disconnect: Callable[[Session], None] | None = None,
    ) -> None:
        self.pool = pool
        self.on_connect: Callable[[Session], None] = on_connect or (lambda s: None)
        self.on_disconnect: Callable[[Session], None] = on_disconnect or (lambda s: None)
        self.sessions: set[Session] = set()
        self.tasks: set[asyncio.Future[Any]] = set()
        self._extranonces: set[bytes] = set()
        self._next_extranonce = secrets.randbits(32)
        self._server: asyncio.base_events.Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        cfg = self.pool.config
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: StratumProtocol(self), cfg.host, cfg.port, reuse_address=True, backlog=1024
        )
        self._ticker = asyncio.create_task(self._tick_loop(), name="stratum-tick")
        log.info("Stratum listening on %s:%d", cfg.host, self.port)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.notify("client.reconnect", [])
            session.close()
        if self._server is not None:
            await self._server.wait_closed()

    def allocate_extranonce1(self) -> bytes:
        while True:
            self._next_extranonce = (self._next_extranonce + 1) & 0xFFFFFFFF
            candidate = self._next_extranonce.to_bytes(4, "big")
            if candidate not in self._extranonces:
                self._extranonces.add(candidate)
                return candidate

    def release(self, session: Session) -> None:
        self.sessions.discard(session)
        self._extranonces.discard(session.extranonce1)
        self.on_disconnect(session)

    def broadcast(self, clean: bool) -> int:
        """Send the current template's job to every mining session; returns how many."""
        sent = 0
        jobs = self.pool.jobs
        for session in self.sessions:
            if session.mining and session.payout_script is not None and not session.closed:
                session.assign(jobs.job_for(session.payout_script), clean)
                sent += 1
        return sent

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            for session in list(self.sessions):
                try:
                    session.tick(now)
                except Exception:  # one bad session must not stop the others' housekeeping
                    log.exception("%s: tick failed", session.peer)

    def run_soon(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
