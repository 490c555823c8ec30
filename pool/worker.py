"""One Stratum worker process of a pool with `[stratum] workers` > 1.

The main process (`pool.workers.WorkerGroup`) starts it as `python -m pool.worker FD` with one
end of a socket pair. The worker listens on the pool's port with SO_REUSEPORT, so the kernel
spreads miners over the workers, and does everything per connection and per share: sessions,
jobs (built from the templates the main process sends), share checks, vardiff. Its sessions use
the same services as in one process (`pool.services`): jobs and config held here, a found block
spooled here by the one `BlockIntake` before the miner's `true` and then handed to the main
process to submit; payout checks and share facts go to the main process as typed messages
(`pool.messages`): shares in batches, session state once a second. With `[stratum_v2]` on it
also serves SV2 on that port (SO_REUSEPORT too), on the same services, with the identity the
main process issued, and reports its channels as it does its V1 sessions.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable
from typing import Any

from . import messages
from .blocks import BlockIntake, BlockSpool
from .config import StratumConfig
from .events import ShareView
from .found import FoundBlock
from .ipc import Channel
from .jobs import JobManager
from .services import AddressRefused, AllMiners, Finder, Miner, install_template
from .shares import Share
from .stratum.server import StratumServer
from .stratum.session import Session
from .sv2.server import Channel as Sv2Channel
from .sv2.server import Sv2Server
from .tasks import supervised

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05  # share events reach the main process within this
MAX_BATCH = 4096  # events per message at most
SNAPSHOT_SECONDS = 1.0  # how often changed session state (difficulty, agent...) is reported


class WorkerPool:
    """The services of a worker process's sessions (`PoolServices`): local jobs and config, the
    block intake, and proxies to the main process for payout checks and share facts."""

    def __init__(self, channel: Channel | None = None) -> None:
        self.channel = channel
        self.config = StratumConfig()
        self.jobs = JobManager(b"")
        self.stratum = StratumServer(self, on_connect=self._connected, on_disconnect=self._gone)
        self.sv2: Sv2Server | None = None  # with `[stratum_v2]` on (Start says)
        self.miners = AllMiners(self.stratum)  # every protocol's miners, for new templates
        self.intake: BlockIntake | None = None
        self.started = asyncio.Event()
        self.stopping = asyncio.Event()
        self._events: list[messages.SessionEvent] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._reported: dict[bytes, int] = {}
        self._requests: dict[int, asyncio.Future[messages.PayoutResolved]] = {}
        self._request_ids = itertools.count(1)
        self._snapshots: asyncio.Task[None] | None = None

    # --- messages from the main process ---------------------------------------------------------

    def on_message(self, message: Any) -> None:
        match message:
            case messages.NewTemplate(template, tag):
                install_template(self.jobs, self.miners, template, tag)
            case messages.Start():
                self._start(message)
            case messages.PayoutResolved(request):
                future = self._requests.pop(request, None)
                if future is not None and not future.done():
                    future.set_result(message)
            case messages.NewConfig(config):
                self._apply_config(config)
            case messages.RememberDifficulties(difficulties):
                now = time.monotonic()
                for username, difficulty in difficulties:
                    self.stratum.memory.remember(username, difficulty, now)
            case messages.Stop():
                self.stopping.set()
            case _:
                log.error("unknown message %r from the main process", type(message).__name__)

    def _start(self, start: messages.Start) -> None:
        logging.getLogger().setLevel(start.log_level)
        self.config = start.config
        self.intake = BlockIntake(BlockSpool(start.data_dir / "blocks"), self._hand_over)
        self.stratum.extranonce_prefix = start.index << 24
        self.stratum.extranonce_mask = 0x00FFFFFF
        self.stratum.reuse_port = True
        if start.sv2 is not None:
            # Its channels' extranonce1s from this worker's space too: unique across workers.
            self.sv2 = Sv2Server(
                self, start.sv2.config, start.sv2.identity, self.stratum.allocate_extranonce1,
                on_connect=self._sv2_connected, on_disconnect=self._gone,
                connections=self.stratum, reuse_port=True,
            )  # fmt: skip
            self.miners.parts.append(self.sv2)
        if start.template is not None:
            install_template(self.jobs, self.miners, start.template, start.coinbase_tag)
        self.started.set()

    def _apply_config(self, config: StratumConfig) -> None:
        self.config = config
        dropped = self.miners.apply_config(config)  # V1 and SV2
        if dropped:
            log.warning(
                "reload: closed %d connection(s) or SV2 channel(s) of addresses no longer allowed",
                dropped,
            )

    # --- PoolServices ---------------------------------------------------------------------------

    async def resolve_payout(self, address: str) -> bytes:
        """Asks the main process, which checks with the node and remembers the answer."""
        request = next(self._request_ids)
        future = asyncio.get_running_loop().create_future()
        self._requests[request] = future
        if not self._send(messages.ResolvePayout(request, address)):
            self._requests.pop(request, None)
            raise ConnectionError("the pool's main process is gone")
        answer: messages.PayoutResolved = await future
        if answer.refusal is not None:
            raise AddressRefused(answer.refusal)
        if answer.script is None:
            raise ConnectionError(answer.error or "the main process could not check the address")
        return answer.script

    def share_accepted(self, session: Miner, share: ShareView, difficulty: float) -> None:
        self._queue(messages.ShareAccepted(
            session.extranonce1, session.address, session.worker,
            share.difficulty, share.is_block, difficulty,
        ))

    def share_rejected(self, session: Miner, code: int, reason: str) -> None:
        self._queue(messages.ShareRejected(
            session.extranonce1, session.address, session.worker, code, reason
        ))

    def block_found(self, session: Finder, share: Share) -> Awaitable[None] | None:
        if self.intake is None:  # pragma: no cover - sessions exist only after Start
            return None
        return self.intake.block_found(session, share)

    def _hand_over(self, block: FoundBlock) -> None:
        # Spooled: the main process submits it (and if it is gone, the next start does).
        self.flush()
        if not self._send(messages.BlockFound(block)):
            log.error("block %s is spooled but the main process is gone; it is submitted at the "
                      "next start", block.hash)

    # --- events -----------------------------------------------------------------------------------

    def _connected(self, session: Session) -> None:
        self._queue(messages.Connected(session.extranonce1, session.connected_at))

    def _gone(self, miner: Session | Sv2Channel) -> None:
        """A V1 session or SV2 channel gone; its difficulty goes to the other workers' memory
        (it may come back to any of them; this one's has it already)."""
        self._reported.pop(miner.extranonce1, None)
        self._queue(messages.Disconnected(miner.extranonce1, miner.remembered_difficulty()))

    def _sv2_connected(self, channel: Sv2Channel) -> None:
        self._queue(messages.Connected(channel.extranonce1, channel.connected_at, "sv2"))


    def _queue(self, event: messages.SessionEvent) -> None:
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
            self._send(messages.Events(tuple(events)))

    def snapshot(self) -> None:
        """Queue the state of every session and SV2 channel that changed since it was last
        reported."""
        reported = self._reported
        for session in self.miners.sessions:
            if session.closed:
                continue
            state = (
                session.address, session.worker, session.difficulty, session.user_agent,
                session.mining, session.protocol,
            )
            # Only a hash is kept per connection (memory); a collision would at worst delay
            # one display update by a second.
            digest = hash(state)
            sid = session.extranonce1
            if reported.get(sid) != digest:
                reported[sid] = digest
                self._queue(messages.MinerChanged(sid, *state))

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_SECONDS)
            try:
                self.snapshot()
            except Exception:  # pragma: no cover - never stop reporting
                log.exception("session snapshot failed")

    def _send(self, message: messages.FromWorker) -> bool:
        return self.channel is not None and self.channel.send(message)

    # --- life -------------------------------------------------------------------------------------

    async def serve(self) -> int:
        """Listen, report ready, run until told to stop (or the main process is gone)."""
        await self.started.wait()
        try:
            await self.stratum.start()
            if self.sv2 is not None:
                await self.sv2.start()
        except OSError as exc:
            self._send(messages.Failed(exc.errno or 0, exc.strerror or str(exc)))
            return 1
        self._send(messages.Ready(os.getpid()))
        self._snapshots = supervised("snapshots", self._snapshot_loop)
        await self.stopping.wait()
        self._snapshots.cancel()
        await self.stratum.close()  # client.reconnect to every miner
        if self.intake is not None:
            await self.intake.drain()  # found blocks spooled and handed over
        if self.sv2 is not None:
            # After the drain: an SV2 miner hears SubmitShares.Success for a block it found.
            await self.sv2.close()
            if self.intake is not None:
                await self.intake.drain()  # one found in between
        self.snapshot()
        self.flush()
        for future in self._requests.values():
            future.cancel()
        self._send(messages.Stopped())
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
