"""The TCP side of Stratum: an asyncio.Protocol per connection (uvloop-friendly, no streams),
extranonce1 allocation, connection limits, one periodic sweep for timeouts, and fan-out of new
jobs to every miner.

Memory per connection is bounded: the framer holds at most one line (`max_line_bytes`), lines
waiting behind a slow request (authorize asks the node) are capped and reading pauses while one
is out, and a miner that does not read what we send is dropped once `max_write_buffer` bytes are
queued for it, instead of being buffered forever.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import ssl
import time
from collections.abc import Callable, ValuesView
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..config import StratumConfig
from ..fdlimit import connection_limit, open_file_limit
from ..listen import MAX_WRITE_BUFFER, abort_soon, listen, peer_host, peer_name, sweep_seconds
from ..services import PoolServices
from ..tasks import Supervisor
from .framing import LineTooLong, split_lines
from .session import DifficultyMemory, Session, SessionCommons
from .tls import ensure_self_signed, server_context

log = logging.getLogger(__name__)

MAX_PENDING_LINES = 256  # lines queued behind a slow request (authorize) before we give up
# New blocks to at least this many connections are sent from two threads (when enabled).
THREADED_SEND_MINIMUM = 64
REFUSAL_LOG_SECONDS = 60.0  # refused connections are logged at most once per IP per minute
CLOSE_WAIT_SECONDS = 2.0  # at shutdown: how long miners get to take their client.reconnect
LISTENER_CLOSE_SECONDS = 5.0


class StratumProtocol(asyncio.Protocol):
    """Transport, framing and ordering for one connection; all meaning lives in its `Session`,
    made in `connection_made` once the connection is admitted. It is the session's writer."""

    __slots__ = (
        "server", "transport", "buffer", "max_line", "pending", "busy", "session", "host", "batch",
    )

    def __init__(self, server: StratumServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer: bytearray | None = None  # an unfinished line (see split_lines)
        self.max_line = 0
        self.pending: list[bytes] | None = None  # lines waiting for a slow request to finish
        self.busy = False
        self.session: Session | None = None  # None: not (yet) admitted
        self.host = ""
        # While the lines of one read are handled, their answers are gathered here and sent
        # with one write: a pipelining miner costs one send per read, not one per line.
        self.batch: list[bytes] | None = None

    # asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        assert self.transport is not None
        server = self.server
        peername = transport.get_extra_info("peername")
        host = peer_host(peername)
        if not server.admit(host):
            transport.close()
            return
        self.host = server.commons.shared(host)  # many miners behind one address
        self.max_line = server.pool.config.max_line_bytes
        self.transport.set_write_buffer_limits(high=server.max_write_buffer)
        extranonce1 = server.allocate_extranonce1()
        session = self.session = Session(server.pool, self, extranonce1, server.commons)
        server.register(session)
        server.on_connect(session)
        log.debug("%s: connected, extranonce1 %s", self.peer, extranonce1.hex())

    @property
    def peer(self) -> str:
        return peer_name(self.host, self.transport)

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None or session.closed:
            return
        try:
            lines, self.buffer = split_lines(self.buffer, data, self.max_line)
        except LineTooLong as exc:
            log.info("%s: %s; closing", session.peer, exc)
            session.close("line too long")
            return
        if not lines:
            return
        session.last_activity = time.monotonic()
        if self.busy:
            self._queue(lines)
        else:
            self._process(lines)

    def connection_lost(self, exc: Exception | None) -> None:
        session = self.session
        if session is not None:
            session.closed = True
            self.server.release(session, self.host)
            log.debug("%s: disconnected", session.peer)
            self.pending = None

    def pause_writing(self) -> None:
        """More than `max_write_buffer` bytes queued: the miner is not reading. Drop it."""
        session = self.session
        if session is None or session.closed:
            return
        log.info(
            "%s: not reading its messages (%d bytes waiting); dropping",
            session.peer, self.server.max_write_buffer,
        )
        session.closed = True  # nothing more is written to it
        session.close_reason = "not reading"
        abort_soon(self.transport)

    def resume_writing(self) -> None:
        pass

    # Writer (what the session writes through) -------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.batch is not None:
            self.batch.append(data)
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)

    def _flush(self) -> None:
        batch, self.batch = self.batch, None
        if batch:
            self.write(b"".join(batch))

    def close(self) -> None:
        """The session is done with this connection: flush, then close the transport."""
        self._flush()  # answers already given go out before the connection closes
        if self.transport is not None:
            self.transport.close()

    # ordering -----------------------------------------------------------------------------------

    def _process(self, lines: list[bytes]) -> None:
        """Handle lines in order; stop at one whose answer must wait (authorize), keeping the
        rest for `_resume`, and stop reading meanwhile."""
        session = self.session
        if session is None:
            return
        self.batch = []
        try:
            self._handle_lines(session, lines)
        finally:
            self._flush()

    def _handle_lines(self, session: Session, lines: list[bytes]) -> None:
        for i, line in enumerate(lines):
            if session.closed:
                return
            try:
                waiting = session.handle_line(line)
            except Exception:  # handle_line catches everything; this is the last line of defence
                log.exception("%s: failed to handle a line; closing", session.peer)
                session.close("internal error")
                return
            if waiting is not None:
                self.busy = True
                task = asyncio.ensure_future(waiting)
                task.add_done_callback(self._resume)
                self.server.tasks.add(task)
                self._queue(lines[i + 1 :])
                transport = self.transport
                if transport is not None and not transport.is_closing():
                    transport.pause_reading()
                return

    def _queue(self, lines: list[bytes]) -> None:
        if not lines:
            return
        if self.pending is None:
            self.pending = lines
        else:
            self.pending.extend(lines)
        if len(self.pending) > MAX_PENDING_LINES and self.session is not None:
            log.info("%s: too many queued requests; closing", self.session.peer)
            self.pending = None
            self.session.close("too many queued requests")

    def _resume(self, task: asyncio.Future[Any]) -> None:
        self.server.tasks.discard(task)
        self.busy = False
        session = self.session
        if session is None or session.closed:
            return
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: request failed: %r", session.peer, task.exception())
            session.close("internal error")
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
        lines, self.pending = self.pending, None
        if lines:
            self._process(lines)


def _plain_fd(transport: asyncio.Transport) -> int | None:
    """The socket of a plain TCP transport with nothing queued, else None."""
    if transport.get_write_buffer_size() or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    return None if sock is None else int(sock.fileno())


def _send_direct(
    items: list[tuple[int, bytes, StratumProtocol]],
) -> list[tuple[StratumProtocol, bytes]]:
    """os.write each line to its socket (non-blocking); returns what was not fully sent, for
    the transport to send (the rest of a partial write, or all of it after an error, which the
    transport then reports in its own way)."""
    rest: list[tuple[StratumProtocol, bytes]] = []
    for fd, data, session in items:
        try:
            n = os.write(fd, data)
        except OSError:  # EAGAIN: its buffer is full; anything else: the transport will say
            n = 0
        if n < len(data):
            rest.append((session, data[n:] if n else data))
    return rest


class Listeners:
    """The listening sockets of one StratumServer (plain, and TLS when on), closed together."""

    def __init__(
        self, plain: asyncio.base_events.Server, tls: asyncio.base_events.Server | None
    ) -> None:
        self.plain = plain
        self.tls = tls

    @property
    def sockets(self) -> tuple[Any, ...]:
        """Plain sockets first (so `sockets[0]` is the stratum+tcp port)."""
        tls = tuple(self.tls.sockets) if self.tls is not None else ()
        return tuple(self.plain.sockets) + tls

    def close(self) -> None:
        self.plain.close()
        if self.tls is not None:
            self.tls.close()

    async def wait_closed(self) -> None:
        await self.plain.wait_closed()
        if self.tls is not None:
            await self.tls.wait_closed()


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tls_context(cfg: StratumConfig) -> ssl.SSLContext:
    """The stratum+ssl context; makes the self-signed data_dir/tls/ certificate if needed."""
    cert, key = cfg.tls_cert_file, cfg.tls_key_file
    if cert is None or key is None:
        raise OSError(errno.EINVAL, "[stratum] tls_port needs tls_cert_file and tls_key_file")
    if cfg.tls_self_signed:
        ensure_self_signed(cert, key)
    try:
        return server_context(cert, key)
    except ssl.SSLError as exc:
        message = f"cannot use TLS certificate {cert} / key {key}: {exc}"
        raise OSError(errno.EINVAL, message) from None


class StratumServer:
    def __init__(
        self,
        pool: PoolServices,
        on_connect: Callable[[Session], None] | None = None,
        on_disconnect: Callable[[Session], None] | None = None,
        tasks: Supervisor | None = None,
    ) -> None:
        self.pool = pool
        self._tasks = tasks if tasks is not None else Supervisor("stratum")
        self.on_connect: Callable[[Session], None] = on_connect or (lambda s: None)
        self.on_disconnect: Callable[[Session], None] = on_disconnect or (lambda s: None)
        # Every admitted connection, by extranonce1 (one table, not a set of sessions and
        # another of extranonces); `sessions` is its live view, for iterating and counting.
        self._extranonces: dict[bytes, Session] = {}
        self.sessions: ValuesView[Session] = self._extranonces.values()
        self.tasks: set[asyncio.Future[Any]] = set()  # requests waiting on the node
        self.memory = DifficultyMemory()
        self.commons = SessionCommons(self.memory)  # what its sessions share
        self.max_write_buffer = MAX_WRITE_BUFFER
        self.per_host: dict[str, int] = {}  # open connections per IP
        # Connections of another protocol (SV2) counted against the same limits, and the
        # extranonce1 values their channels hold (never given to a V1 session meanwhile).
        self.other_connections = 0
        self._reserved: set[bytes] = set()
        self.refused = 0  # connections refused over a limit, since start
        self.timed_out = 0  # connections closed by the handshake or idle timeout, since start
        self._refusal_logged: dict[str, float] = {}
        self._next_extranonce = secrets.randbits(32)
        # A worker process of several sets these: its index in the top byte keeps every
        # extranonce1 unique across processes (so no two miners ever hash the same coinbase).
        self.extranonce_prefix = 0
        self.extranonce_mask = 0xFFFFFFFF
        self.reuse_port = False  # listen with SO_REUSEPORT (worker processes share the port)
        # A second thread for the sends of a new block (see _broadcast_threaded); None: off.
        self.sender: ThreadPoolExecutor | None = None
        self._server: Listeners | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False
        # Connections the open-file limit leaves room for (set at start).
        self.fd_connection_limit = 1 << 62

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def tls_port(self) -> int | None:
        """The stratum+ssl port, when `[stratum] tls_port` is set."""
        assert self._server is not None
        tls = self._server.tls
        return None if tls is None else int(tls.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen on `[stratum] host:port`, and with `tls_port` also for stratum+ssl. `host`
        may be IPv4, IPv6 (`::1`), or `::` for every IPv6 and IPv4 address on one socket."""
        cfg = self.pool.config
        self.fd_connection_limit = connection_limit(1 << 62, open_file_limit())
        if self.fd_connection_limit < cfg.max_connections:
            log.warning(
                "accepting at most %d Stratum connections, not max_connections %d: the "
                "open-file limit is %d and %d descriptors are kept for the node, spool, API "
                "and database; raise the limit (ulimit -n, systemd LimitNOFILE=) for more",
                self.fd_connection_limit, cfg.max_connections, open_file_limit(),
                open_file_limit() - self.fd_connection_limit,
            )
        reuse = self.reuse_port
        plain = await listen(
            lambda: StratumProtocol(self), cfg.host, cfg.port, None, reuse_port=reuse
        )
        tls: asyncio.base_events.Server | None = None
        if cfg.tls_port:
            try:
                context = await asyncio.to_thread(tls_context, cfg)
                tls = await listen(
                    lambda: StratumProtocol(self), cfg.host, cfg.tls_port, context,
                    reuse_port=reuse,
                )
            except BaseException:
                plain.close()
                raise
        self._server = Listeners(plain, tls)
        self._ticker = self._tasks.start("stratum-tick", self._tick_loop)
        log.info("Stratum listening on %s", _where(cfg.host, self.port))
        if self.tls_port is not None:
            log.info("Stratum over TLS (stratum+ssl) on %s", _where(cfg.host, self.tls_port))

    def enable_threaded_sends(self) -> None:
        """Send new blocks' jobs from two threads (worth it with a second CPU core to use)."""
        if self.sender is None:
            self.sender = ThreadPoolExecutor(1, thread_name_prefix="stratum-send")

    async def close(self) -> None:
        """Stop accepting, send every miner `client.reconnect` and close it (found blocks still
        being spooled are the block sink's to wait for). Safe to call twice."""
        self._closing = True
        if self.sender is not None:
            self.sender.shutdown(wait=False)
            self.sender = None
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.notify("client.reconnect", [])
            session.close("pool shutting down")
        # Let the transports flush the reconnect and report the close (disconnect events).
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for session in list(self.sessions):
            writer = session.writer
            if isinstance(writer, StratumProtocol) and writer.transport is not None:
                writer.transport.abort()
        for task in list(self.tasks):
            task.cancel()
        if self._server is not None:
            # wait_closed also waits for every accepted connection to report its end; a
            # transport that never does must not hold up shutdown (or a restart) forever.
            try:
                await asyncio.wait_for(self._server.wait_closed(), LISTENER_CLOSE_SECONDS)
            except TimeoutError:
                log.warning("listener did not close within %g s; going on", LISTENER_CLOSE_SECONDS)

    # --- connections ------------------------------------------------------------------------------

    def admit(self, host: str) -> bool:
        """Room for one more connection from `host`? Counts it if so."""
        cfg = self.pool.config
        count = self.per_host.get(host, 0)
        if self._closing:
            return False
        open_connections = len(self.sessions) + self.other_connections
        if open_connections >= cfg.max_connections:
            self._refuse(host, f"the pool is at max_connections ({cfg.max_connections})")
            return False
        if open_connections >= self.fd_connection_limit:
            self._refuse(
                host, f"the pool is at {self.fd_connection_limit} connections, all its "
                "open-file limit allows (raise `ulimit -n` or LimitNOFILE=)"
            )
            return False
        if count >= cfg.max_connections_per_ip:
            self._refuse(
                host, f"{host} is at max_connections_per_ip ({cfg.max_connections_per_ip})"
            )
            return False
        self.per_host[host] = count + 1
        return True

    def _refuse(self, host: str, why: str) -> None:
        self.refused += 1
        now = time.monotonic()
        last = self._refusal_logged.get(host)
        if last is None or now - last >= REFUSAL_LOG_SECONDS:
            self._refusal_logged[host] = now
            log.warning("refusing connections from %s: %s", host, why)

    def admit_other(self, host: str) -> bool:
        """`admit` for a connection of another protocol (SV2): same limits, same counts."""
        if not self.admit(host):
            return False
        self.other_connections += 1
        return True

    def leave_other(self, host: str) -> None:
        """A connection `admit_other` let in has closed."""
        self.other_connections -= 1
        self._leave_host(host)

    def allocate_extranonce1(self) -> bytes:
        while True:
            self._next_extranonce = (self._next_extranonce + 1) & 0xFFFFFFFF
            value = self.extranonce_prefix | (self._next_extranonce & self.extranonce_mask)
            candidate = value.to_bytes(4, "big")
            if candidate not in self._extranonces and candidate not in self._reserved:
                return candidate

    def reserve_extranonce1(self) -> bytes:
        """A unique extranonce1 for another protocol's channel, held until released."""
        extranonce1 = self.allocate_extranonce1()
        self._reserved.add(extranonce1)
        return extranonce1

    def release_extranonce1(self, extranonce1: bytes) -> None:
        self._reserved.discard(extranonce1)

    def recall_difficulty(self, username: str) -> float | int | None:
        """The difficulty `username` had when it last left, over either protocol."""
        return self.memory.recall(username, time.monotonic())

    def remember_difficulty(self, username: str, difficulty: float) -> None:
        """Another protocol's channel of `username` has closed at `difficulty`."""
        self.memory.remember(username, difficulty, time.monotonic())

    def register(self, session: Session) -> None:
        """Count a connection in: `session.extranonce1` from allocate_extranonce1, with no
        await between the two."""
        self._extranonces[session.extranonce1] = session

    def release(self, session: Session, host: str | None = None) -> None:
        if self._extranonces.get(session.extranonce1) is not session:
            return
        del self._extranonces[session.extranonce1]
        if host is not None:
            self._leave_host(host)
        remembered = session.remembered_difficulty()
        if remembered is not None:
            self.memory.remember(*remembered, time.monotonic())
        self.on_disconnect(session)

    def _leave_host(self, host: str) -> None:
        count = self.per_host.get(host, 0) - 1
        if count > 0:
            self.per_host[host] = count
        else:
            self.per_host.pop(host, None)

    # --- work -----------------------------------------------------------------------------------

    def broadcast(self, clean: bool) -> int:
        """Send the current template's job to every mining session; returns how many."""
        jobs = self.pool.jobs
        if self.sender is not None and len(self._extranonces) >= THREADED_SEND_MINIMUM:
            return self._broadcast_threaded(clean)
        sent = 0
        for session in self.sessions:
            if session.mining and session.payout_script is not None and not session.closed:
                session.assign(jobs.job_for(session.payout_script), clean)
                sent += 1
        return sent

    def _broadcast_threaded(self, clean: bool) -> int:
        """`broadcast` with the sends split over this thread and the sender thread.

        On a new block nearly all the time goes into one send() per miner, and a send()
        releases the GIL: two threads send to two halves of the miners at once. Only plain TCP
        connections with nothing queued are written to directly (so nothing can overtake queued
        bytes); what the kernel does not take at once, TLS connections and the rest go through
        their transports as usual, on this thread."""
        assert self.sender is not None
        jobs = self.pool.jobs
        direct: list[tuple[int, bytes, StratumProtocol]] = []
        queued: list[tuple[StratumProtocol, bytes]] = []
        sent = 0
        for session in self.sessions:
            if not session.mining or session.payout_script is None or session.closed:
                continue
            sent += 1
            proto = session.writer
            if not isinstance(proto, StratumProtocol) or proto.batch is not None or (
                proto.transport is None
            ):
                session.assign(jobs.job_for(session.payout_script), clean)
                continue
            transport = proto.transport
            proto.batch = []  # collect what assign writes, instead of sending it
            try:
                session.assign(jobs.job_for(session.payout_script), clean)
            finally:
                batch, proto.batch = proto.batch, None
            if not batch or transport.is_closing():
                continue
            data = batch[0] if len(batch) == 1 else b"".join(batch)
            fd = _plain_fd(transport)
            if fd is None:
                queued.append((proto, data))
            else:
                direct.append((fd, data, proto))
        half = len(direct) // 2
        other = self.sender.submit(_send_direct, direct[half:])
        rest = _send_direct(direct[:half])
        rest += other.result()
        for proto, data in rest + queued:
            late = proto.transport
            if late is not None and not late.is_closing():
                late.write(data)
        return sent

    def apply_config(self, cfg: StratumConfig) -> int:
        """A reloaded config (the pool has already switched to it): apply the difficulty bounds
        to every connection and close the ones whose address is no longer allowed. Limits and
        timeouts are read from the config as they are used. Returns how many were closed."""
        closed = 0
        for session in list(self.sessions):
            if session.closed:
                continue
            if session.address is not None and not session.address_allowed(session.address):
                session.close_with_message(
                    f"{session.address} is no longer allowed to mine on this pool"
                )
                closed += 1
                continue
            try:
                session.apply_config(cfg)
            except Exception:
                log.exception("%s: could not apply the new config", session.peer)
        return closed

    # --- the sweep ------------------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Timeouts and housekeeping for every connection, in one pass."""
        cfg = self.pool.config
        handshake_deadline = now - cfg.handshake_timeout_seconds
        idle_deadline = now - cfg.idle_timeout_seconds
        for session in list(self.sessions):
            if session.closed:
                continue
            try:
                if not session.mining and session.connected_at < handshake_deadline:
                    self.timed_out += 1
                    # Usually a port scanner or a health check: not worth an INFO line each.
                    session.close_with_message(
                        f"no subscribe and authorize within {cfg.handshake_timeout_seconds:g} s",
                        logging.DEBUG,
                    )
                elif session.last_activity < idle_deadline:
                    self.timed_out += 1
                    session.close_with_message(
                        f"nothing received for {cfg.idle_timeout_seconds:g} s"
                    )
                else:
                    session.tick(now)
            except Exception:  # one bad session must not stop the others' housekeeping
                log.exception("%s: tick failed", session.peer)
        self.memory.prune(now)
        logged = self._refusal_logged
        for host in [h for h, t in logged.items() if now - t >= REFUSAL_LOG_SECONDS]:
            del logged[host]

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(sweep_seconds(self.pool.config))
            try:
                self.sweep(time.monotonic())
            except Exception:  # pragma: no cover - sweep guards each session itself
                log.exception("stratum sweep failed")
