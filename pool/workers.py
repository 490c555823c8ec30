"""The main process's side of `[stratum] workers` > 1: Stratum served by worker processes.

`WorkerGroup` stands where the single-process pool has its `StratumServer`: it reserves the
port(s), starts the workers (`pool.worker`), sends them every new template, and hands what
their sessions report (`pool.messages`) to the same services a session of the main process
would use: share facts to the share sink, found blocks (already spooled by the worker) to the
submitter, payout checks to the payout resolver. It keeps a record of each of their connections
for the API and metrics, and restarts a worker that dies. Miners on the other workers never
notice. With `[stratum_v2]` on, every worker also serves SV2 on its port, with the one identity
(static key and certificate) the main process issued.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import socket
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from sys import intern
from typing import Any, Protocol

from .config import StratumConfig
from .events import Events as Observers
from .found import FoundBlock
from .ipc import Channel, encode
from .messages import (
    BlockFound,
    Connected,
    Disconnected,
    Events,
    Failed,
    MinerChanged,
    NewConfig,
    NewTemplate,
    PayoutResolved,
    Ready,
    RememberDifficulties,
    ResolvePayout,
    SessionEvent,
    ShareAccepted,
    ShareRejected,
    Start,
    Stop,
    Stopped,
    Sv2Setup,
)
from .services import AddressRefused, JobSource, PayoutResolver, ShareSink
from .stratum.server import tls_context
from .tasks import Supervisor

log = logging.getLogger(__name__)

READY_TIMEOUT = 60.0  # a worker's start-up (import, listen) on a slow box
STOP_TIMEOUT = 45.0  # a worker's shutdown: reconnects sent, found blocks spooled
RESTART_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # back-off between restarts of a dying worker
STABLE_SECONDS = 60.0  # a worker that ran this long before dying is restarted without back-off
CHANNEL_GRACE_SECONDS = 2.0  # a closed channel without an exit: give up on the worker after this


class WorkerStartError(OSError):
    """A worker process did not come up (it exited, or never said it listens)."""


class Sv2PortError(OSError):
    """The `[stratum_v2]` port is taken."""


class MainServices(JobSource, PayoutResolver, ShareSink, Protocol):
    """What the workers' sessions reach in the main process: the local services."""

    events: Observers  # connects and disconnects, for the observers

    def take_block(self, block: FoundBlock) -> None:
        """A found block already spooled: submit it."""


@dataclass(slots=True, eq=False)
class MinerRecord:
    """What the main process knows of one connection a worker serves (a `Miner`), kept up to
    date from that worker's messages."""

    extranonce1: bytes
    connected_at: float
    address: str | None = None
    worker: str = ""
    difficulty: float = 0.0
    user_agent: str = ""
    protocol: str = "v1"
    mining: bool = False
    closed: bool = False


class WorkerProcess:
    """One worker: its process, its channel, and the sessions it reported."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self.sessions: dict[bytes, MinerRecord] = {}
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.stopped = False  # it said goodbye (a clean stop)
        self.restarts = 0
        self.served = False  # it listened at least once (else a death is a failed start)
        self.launched_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def reserve_port(host: str, port: int) -> socket.socket:
    """Check nothing else listens on host:port, and hold it (bound with SO_REUSEPORT, never
    listening, so it takes no connections) until the workers listen: port 0 picks one port
    for all of them, and no other program can take it in between."""
    bind_host = host.strip("[]")
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    infos = socket.getaddrinfo(
        bind_host, port, family if ":" in bind_host else socket.AF_UNSPEC, socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )
    family, _, _, _, address = infos[0]

    def make(reuse_port: bool) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and bind_host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return sock

    # Without SO_REUSEPORT first: that bind fails if anyone (even another solopool with
    # workers) has the port, instead of silently sharing its miners with it.
    probe = make(False)
    try:
        probe.bind(address)
        chosen = probe.getsockname()[1]
    finally:
        probe.close()
    holder = make(True)
    try:
        holder.bind((address[0], chosen, *address[2:]))
    except BaseException:
        holder.close()
        raise
    return holder


class WorkerGroup:
    """`[stratum] workers` Stratum processes on one port; the pool's `stratum` in that mode."""

    def __init__(
        self, pool: MainServices, count: int, data_dir: Path, tasks: Supervisor | None = None
    ) -> None:
        self.pool = pool
        self._tasks = tasks if tasks is not None else Supervisor("workers")
        self.count = count
        self.data_dir = data_dir
        self.workers: list[WorkerProcess] = []
        self._holders: list[socket.socket] = []
        self._port = 0
        self._tls_port: int | None = None
        self.sv2: Sv2Setup | None = None  # set before start() to serve SV2 too
        self._sv2_port: int | None = None
        self._closing = False
        self._supervisors: set[asyncio.Task[None]] = set()
        self._answers: set[asyncio.Task[None]] = set()

    # --- what the pool and the API read -------------------------------------------------------

    @property
    def sessions(self) -> list[MinerRecord]:
        return [s for w in self.workers for s in w.sessions.values()]

    @property
    def port(self) -> int:
        return self._port

    @property
    def tls_port(self) -> int | None:
        return self._tls_port

    @property
    def sv2_port(self) -> int | None:
        return self._sv2_port

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.pid is not None]

    # --- start and stop -------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.pool.config
        if not hasattr(socket, "SO_REUSEPORT"):
            raise OSError(
                errno.EINVAL, "[stratum] workers > 1 needs SO_REUSEPORT (Linux); set workers = 1"
            )
        if cfg.tls_port:
            await asyncio.to_thread(tls_context, cfg)  # checks the files; makes a self-signed one
        holder = reserve_port(cfg.host, cfg.port)
        self._holders.append(holder)
        self._port = holder.getsockname()[1]
        if cfg.tls_port:
            tls_holder = reserve_port(cfg.host, cfg.tls_port)
            self._holders.append(tls_holder)
            self._tls_port = tls_holder.getsockname()[1]
        if self.sv2 is not None:
            try:
                sv2_holder = reserve_port(self.sv2.config.host or cfg.host, self.sv2.config.port)
            except OSError as exc:
                self._release_ports()
                raise Sv2PortError(exc.errno, exc.strerror) from None
            self._holders.append(sv2_holder)
            self._sv2_port = sv2_holder.getsockname()[1]
        self.workers = [WorkerProcess(i) for i in range(self.count)]
        try:
            pids = await asyncio.gather(*(self._launch(w) for w in self.workers))
        except BaseException:
            self._closing = True  # the supervisors must not restart what failed to start
            await self._terminate_all()
            self._release_ports()
            raise
        log.info(
            "Stratum listening on %s:%d in %d worker processes (pids %s)",
            cfg.host, self._port, self.count, ", ".join(map(str, pids)),
        )
        if self._tls_port is not None:
            log.info("Stratum over TLS (stratum+ssl) on %s:%d", cfg.host, self._tls_port)

    def _worker_config(self) -> StratumConfig:
        return dataclasses.replace(
            self.pool.config, port=self._port, tls_port=self._tls_port or 0
        )

    def _worker_sv2(self) -> Sv2Setup | None:
        if self.sv2 is None:
            return None
        config = dataclasses.replace(self.sv2.config, port=self._sv2_port or 0)
        return dataclasses.replace(self.sv2, config=config)

    async def _launch(self, w: WorkerProcess) -> int:
        """Start worker `w` and wait until it listens; returns its pid."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            w.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pool.worker", str(child.fileno()),
                pass_fds=(child.fileno(),),
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        w.ready = asyncio.get_running_loop().create_future()
        w.stopped = False
        w.launched_at = time.monotonic()
        w.channel = await Channel.open(
            parent, lambda message: self._on_message(w, message), lambda: self._on_closed(w)
        )
        pool = self.pool
        w.channel.send(Start(
            self._worker_config(), self.data_dir, w.index, pool.jobs.template,
            pool.jobs.coinbase_tag, logging.getLogger().getEffectiveLevel(), self._worker_sv2(),
        ))
        supervisor = self._tasks.start(f"worker-{w.index}", partial(self._supervise, w))
        self._supervisors.add(supervisor)
        supervisor.add_done_callback(self._supervisors.discard)
        try:
            return await asyncio.wait_for(asyncio.shield(w.ready), READY_TIMEOUT)
        except TimeoutError:
            raise WorkerStartError(
                errno.ETIMEDOUT, f"Stratum worker {w.index} did not start in {READY_TIMEOUT:g} s"
            ) from None

    async def _supervise(self, w: WorkerProcess) -> None:
        process = w.process
        assert process is not None
        code = await process.wait()
        if not w.ready.done():
            w.ready.set_exception(
                WorkerStartError(errno.ECHILD, f"Stratum worker {w.index} exited with code {code}")
            )
        self._drop_sessions(w)
        if self._closing or w.process is not process or w.stopped or not w.served:
            return  # a clean stop, or a start that failed (start() reports that)
        if time.monotonic() - w.launched_at > STABLE_SECONDS:
            w.restarts = 0  # it ran well for a while: the next restart is quick again
        log.error(
            "Stratum worker %d (pid %d) exited with code %s; its miners reconnect to the "
            "others; restarting it", w.index, process.pid, code,
        )
        while not self._closing:
            await asyncio.sleep(RESTART_SECONDS[min(w.restarts, len(RESTART_SECONDS) - 1)])
            if self._closing:
                return
            w.restarts += 1
            try:
                pid = await self._launch(w)
            except OSError as exc:
                log.error("Stratum worker %d could not restart: %s", w.index, exc.strerror)
                continue
            log.warning("Stratum worker %d restarted (pid %d)", w.index, pid)
            return

    async def close(self) -> None:
        """Have every worker send its miners `client.reconnect`, spool its found blocks and
        exit (the blocks they handed over are with the submitter). Safe to call twice."""
        self._closing = True
        for w in self.workers:
            if w.channel is not None:
                w.channel.send(Stop())
        await self._wait_exit(STOP_TIMEOUT)
        await self._terminate_all()
        self._release_ports()
        for task in list(self._answers):
            task.cancel()

    async def _wait_exit(self, timeout: float) -> None:
        waits = [w.process.wait() for w in self.workers if w.process is not None]
        if waits:
            await asyncio.wait({asyncio.ensure_future(x) for x in waits}, timeout=timeout)

    async def _terminate_all(self) -> None:
        for w in self.workers:
            process = w.process
            if process is not None and process.returncode is None:
                log.warning("Stratum worker %d did not stop; killing it", w.index)
                process.kill()
        await self._wait_exit(5.0)
        for w in self.workers:
            if w.channel is not None:
                w.channel.close()
            self._drop_sessions(w)

    def _release_ports(self) -> None:
        for holder in self._holders:
            holder.close()
        self._holders = []

    # --- work -----------------------------------------------------------------------------------

    def broadcast(self, clean: bool) -> int:
        """Send the current template to every worker: they build and send the jobs (and log
        them), so this sends no miner a job itself and returns 0."""
        template = self.pool.jobs.template
        if template is None:
            return 0
        data = encode(NewTemplate(template, self.pool.jobs.coinbase_tag))
        for w in self.workers:
            if w.channel is not None:
                w.channel.send_encoded(data)
        return 0

    def apply_config(self, cfg: StratumConfig) -> int:
        """A reloaded config: each worker applies it (and logs what it closed)."""
        for w in self.workers:
            if w.channel is not None:
                w.channel.send(NewConfig(self._worker_config()))
        return 0

    # --- from the workers -------------------------------------------------------------------------

    def _on_message(self, w: WorkerProcess, message: Any) -> None:
        match message:
            case Events(events):
                self._apply(w, events)
            case BlockFound(block):
                self.pool.take_block(block)
            case ResolvePayout(request, address):
                task = asyncio.ensure_future(self._resolve(w, request, address))
                self._answers.add(task)
                task.add_done_callback(self._answers.discard)
            case Ready(pid):
                if not w.ready.done():
                    w.ready.set_result(pid)
                w.served = True
            case Failed(code, text):
                if not w.ready.done():
                    w.ready.set_exception(OSError(code, text))
            case Stopped():
                w.stopped = True
            case _:
                log.error(
                    "unknown message %r from Stratum worker %d", type(message).__name__, w.index
                )

    def _on_closed(self, w: WorkerProcess) -> None:
        # Normally its exit follows at once and says more (the supervisor reports the code).
        # This launch's future: by the time this fires a restart may be starting, not failed.
        ready = w.ready

        def gone() -> None:
            if not ready.done():
                ready.set_exception(
                    WorkerStartError(errno.EPIPE, f"Stratum worker {w.index} closed its channel")
                )

        asyncio.get_running_loop().call_later(CHANNEL_GRACE_SECONDS, gone)

    def _apply(self, w: WorkerProcess, events: tuple[SessionEvent, ...]) -> None:
        remember: list[tuple[str, float]] = []
        for event in events:
            # The most frequent first.
            if type(event) is ShareAccepted:
                self.pool.share_accepted(self._record(w, event), event, event.judged_at)
            elif type(event) is ShareRejected:
                self.pool.share_rejected(self._record(w, event), event.code, event.reason)
            elif type(event) is MinerChanged:
                self._changed(w, event)
            elif type(event) is Connected:
                record = MinerRecord(event.sid, event.connected_at, protocol=event.protocol)
                w.sessions[event.sid] = record
                self.pool.events.connect(record)
            elif type(event) is Disconnected:
                self._disconnected(w, event, remember)
        if remember:
            # A miner that reconnects lands on any worker: all of them remember its difficulty.
            message = encode(RememberDifficulties(tuple(remember)))
            for other in self.workers:
                if other is not w and other.channel is not None:
                    other.channel.send_encoded(message)

    @staticmethod
    def _record(w: WorkerProcess, share: ShareAccepted | ShareRejected) -> MinerRecord:
        """The connection a share came from, with the worker name it was submitted under."""
        record = w.sessions.get(share.sid)
        if record is None:  # its connect event was lost (cannot happen in order; for safety)
            record = w.sessions[share.sid] = MinerRecord(share.sid, time.monotonic())
        if record.worker != share.worker:
            record.address, record.worker = share.address, share.worker
        return record

    @staticmethod
    def _changed(w: WorkerProcess, event: MinerChanged) -> None:
        record = w.sessions.get(event.sid)
        if record is None:
            record = w.sessions[event.sid] = MinerRecord(event.sid, time.monotonic())
        # Shared strings: thousands of miners often have one address and one agent.
        record.address = None if event.address is None else intern(event.address)
        record.user_agent = intern(event.user_agent)
        record.worker, record.difficulty, record.mining, record.protocol = (
            event.worker, event.difficulty, event.mining, event.protocol
        )

    def _disconnected(
        self, w: WorkerProcess, event: Disconnected, remember: list[tuple[str, float]]
    ) -> None:
        gone = w.sessions.pop(event.sid, None)
        if gone is not None:
            gone.closed = True
            self.pool.events.disconnect(gone)
        if event.remember is not None:
            remember.append(event.remember)

    def _drop_sessions(self, w: WorkerProcess) -> None:
        sessions, w.sessions = w.sessions, {}
        for s in sessions.values():
            s.closed = True
            self.pool.events.disconnect(s)

    async def _resolve(self, w: WorkerProcess, request: int, address: str) -> None:
        try:
            answer = PayoutResolved(request, script=await self.pool.resolve_payout(address))
        except AddressRefused as exc:
            answer = PayoutResolved(request, refusal=str(exc))
        except Exception as exc:
            log.error("checking payout address %s failed: %r", address[:100], exc)
            answer = PayoutResolved(request, error="the pool could not check the address")
        if w.channel is not None:
            w.channel.send(answer)
