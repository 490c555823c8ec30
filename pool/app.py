"""Wires the parts together: node adapter, template source, jobs, Stratum server, blocks."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable
from typing import Any

from .api import ApiServer
from .blocks import ACCEPTED, BlockSpool, BlockSubmitter, FoundBlock, found_block
from .config import Config, NodeConfig
from .consensus.address import AddressError, payout_script
from .events import Events, MinerView, ShareView
from .jobs import JobManager, Template
from .node import NodeClient, NodeError, NodeSet
from .node.discovery import with_discovered_zmq
from .node.templates import TemplateSource
from .notify import Notifier
from .preflight import StartupError, identify_nodes
from .reload import reload_config
from .shares import Share
from .snapshot import PoolView
from .stats import Stats, StatsError
from .stratum.server import StratumServer
from .stratum.session import AddressRefused, Session
from .tasks import supervised
from .workers import WorkerGroup, WorkerStartError

log = logging.getLogger(__name__)

VALIDATE_TIMEOUT = 5.0  # seconds for the node's validateaddress cross-check of a payout
PAYOUT_CACHE_ENTRIES = 4096  # payout addresses checked with the node and remembered


def _client(n: NodeConfig, name: str) -> NodeClient:
    return NodeClient(
        n.rpc_url,
        rpc_user=n.rpc_user,
        rpc_password=n.rpc_password,
        cookie_file=n.rpc_cookie_file,
        timeout=n.rpc_timeout_seconds,
        name=name,
        zmq_hashblock=n.zmq_hashblock,
    )


def make_nodes(config: Config) -> NodeSet:
    """`[node]` first, then every `[[backup_node]]`, named as their config sections."""
    names = ["node", *(f"backup_node {i + 1}" for i in range(len(config.backup_nodes)))]
    return NodeSet([_client(n, name) for n, name in zip(config.nodes, names, strict=True)])


class Pool:
    """The running pool; also what each Stratum session calls back into (`PoolServices`)."""

    def __init__(self, config: Config) -> None:
        self.full_config = config
        self.config = config.stratum
        self.nodes = make_nodes(config)
        self.node = self.nodes.primary
        self.jobs = JobManager(config.pool.coinbase_tag.encode())
        self.spool = BlockSpool(config.pool.data_dir / "blocks")
        self.events = Events()
        # Observers: stats first (the notifier reads the block records it keeps).
        self.stats = Stats(
            config.pool.data_dir / "stats.sqlite3", node=self.nodes,
            max_workers=config.pool.max_workers,
            retention_seconds=config.pool.worker_retention_days * 86_400,
        )
        self.events.add(self.stats)
        self.notifier = Notifier(config.notify, self.stats)
        self.events.add(self.notifier)
        self.submitter = BlockSubmitter(self.nodes, self.spool, on_final=self._block_final)
        # Stratum in this process, or in `[stratum] workers` processes sharing the port.
        self.stratum: StratumServer | WorkerGroup
        if config.stratum.workers > 1:
            self.stratum = WorkerGroup(self, config.stratum.workers)
        else:
            self.stratum = StratumServer(
                self, on_connect=self.events.connect, on_disconnect=self.events.disconnect
            )
            if (os.cpu_count() or 1) > 1:
                self.stratum.enable_threaded_sends()
        self.source = TemplateSource(
            self.nodes, config.node, self._new_template, start_task=supervised
        )
        # What the API, /metrics and the Umbrel widget read: never the pool itself.
        self.view = PoolView(
            stats=self.stats, jobs=self.jobs, source=self.source, nodes=self.nodes,
            connections=self.stratum, payouts=self,
        )
        self.events.add(self.view)
        self.api = ApiServer(self.view, config.api)
        self.chain = ""
        self._payouts: dict[str, bytes] = {}
        self._stopping = asyncio.Event()
        self._stopped = False
        self._reloads: set[asyncio.Task[list[str]]] = set()
        self.shares_accepted = 0
        self.shares_rejected = 0

    # --- start-up -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.chain = await identify_nodes(self.nodes, self.full_config.nodes)
        try:
            await asyncio.to_thread(self.spool.prepare)
        except OSError as exc:
            raise StartupError(
                f"cannot use [pool] data_dir {self.full_config.pool.data_dir}: {exc.strerror}",
                exit_code=2,
            ) from None
        try:
            await self.stats.open()
        except StatsError as exc:
            raise StartupError(str(exc), exit_code=2) from None
        self.stats.start()
        await self.notifier.start()
        resubmitted = await self.submitter.resubmit_pending()
        if resubmitted:
            log.warning("resubmitting %d spooled block(s) from an earlier run", resubmitted)
        if not await self.source.update("start-up"):
            raise StartupError(f"could not get a block template: {self.source.last_error}")
        try:
            await self.api.start()
        except OSError as exc:
            api = self.full_config.api
            raise StartupError(
                f"cannot serve the dashboard and API on {api.host}:{api.port}: {exc.strerror}; "
                "change [api] port or host, or set [api] enabled = false",
                exit_code=2,
            ) from None
        try:
            await self.stratum.start()
        except WorkerStartError as exc:
            raise StartupError(
                f"could not start the Stratum worker processes ({exc.strerror}); see the lines "
                "above, or set [stratum] workers = 1"
            ) from None
        except OSError as exc:
            cfg = self.config
            raise StartupError(
                f"cannot listen for miners on {cfg.host}:{cfg.port}: {exc.strerror}; is another "
                "pool running there? Change [stratum] port or host",
                exit_code=2,
            ) from None
        self.source.config = await with_discovered_zmq(self.node, self.source.config)
        self.source.start()

    async def stop(self) -> None:
        """Shut down in the order that loses nothing: stop taking miners and send each one
        `client.reconnect` (found blocks still being spooled are waited for), stop fetching
        templates, let every block submission reach the node's final answer, then close the
        node. Safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        await self.api.stop()
        await self.stratum.close()
        await self.source.stop()
        await self.submitter.drain(timeout=30)
        if self.submitter.in_flight:
            log.error(
                "%d block submission(s) unfinished at shutdown; they are spooled in %s and "
                "submitted again at the next start",
                len(self.submitter.in_flight), self.spool.directory,
            )
        await self.submitter.close()
        await self.stats.close()
        await self.notifier.stop()
        self.nodes.close()

    async def run_forever(self) -> None:
        """Run until SIGINT or SIGTERM (then stop gracefully); SIGHUP reloads the config."""
        loop = asyncio.get_running_loop()
        handlers: list[signal.Signals] = []
        for sig, handler in (
            (signal.SIGINT, self._on_stop_signal),
            (signal.SIGTERM, self._on_stop_signal),
            (signal.SIGHUP, self._on_reload_signal),
        ):
            try:
                loop.add_signal_handler(sig, handler, sig)
                handlers.append(sig)
            except (NotImplementedError, RuntimeError, AttributeError):
                pass
        try:
            await self.start()  # a StartupError ends the process with its one line
            try:
                await self._stopping.wait()
                log.info("shutting down: sending miners client.reconnect")
            finally:
                await self.stop()
        finally:
            for sig in handlers:
                loop.remove_signal_handler(sig)
        log.info("stopped")

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._stopping.is_set():
            log.warning("%s: already shutting down (waiting for block submissions)", sig.name)
        else:
            log.info("%s received", sig.name)
        self._stopping.set()

    def _on_reload_signal(self, sig: signal.Signals) -> None:
        if self._stopping.is_set():
            return
        task = asyncio.get_running_loop().create_task(reload_config(self), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def request_stop(self) -> None:
        self._stopping.set()

    # --- templates --------------------------------------------------------------------------------

    def _new_template(self, template: Template) -> None:
        started = time.perf_counter()
        clean = self.jobs.set_template(template)
        sent = self.stratum.broadcast(clean)
        self.events.template(template, clean)
        if clean:
            log.info(
                "sent height %d jobs to %d miner(s) in %.1f ms",
                template.height, sent, 1000 * (time.perf_counter() - started),
            )

    async def _block_final(self, block: FoundBlock) -> None:
        self.events.block_final(block)
        if block.status == ACCEPTED:
            # Do not wait for longpoll/ZMQ: a stale template after our own block is wasted work.
            await self.source.update("our block")

    # --- PoolServices ----------------------------------------------------------------------------

    async def resolve_payout(self, address: str) -> bytes:
        cached = self._payouts.get(address)
        if cached is not None:
            return cached
        try:
            script = payout_script(address, self.chain)
        except AddressError as exc:
            raise AddressRefused(
                f"{address!r} is not a valid {self.chain} address: {exc}"
            ) from None
        node = self.nodes.active or self.nodes.primary
        try:
            # A cross-check only: a slow node must not hold a miner's authorize for long.
            info: dict[str, Any] = await node.validate_address(
                address, timeout=min(node.timeout, VALIDATE_TIMEOUT)
            )
        except NodeError as exc:
            # Our decoding is exact; the node's is a cross-check we can do later.
            log.warning("could not cross-check %s with the node (%s)", address, exc)
            return script
        if not info.get("isvalid"):
            reason = info.get("error") or "invalid address"
            raise AddressRefused(f"the node says {address} is not valid: {reason}")
        if info.get("scriptPubKey") != script.hex():
            log.error(
                "payout script mismatch for %s: ours %s, node %s",
                address, script.hex(), info.get("scriptPubKey"),
            )
            raise AddressRefused(f"cannot build a payout for {address}; please report this")
        if len(self._payouts) >= PAYOUT_CACHE_ENTRIES:
            # Checked addresses come from strangers too: forget the oldest, not grow forever.
            del self._payouts[next(iter(self._payouts))]
        self._payouts[address] = script
        return script

    def share_accepted(self, session: MinerView, share: ShareView, difficulty: float) -> None:
        self.shares_accepted += 1
        self.events.share(session, share, difficulty)

    def share_rejected(self, session: MinerView, code: int, reason: str) -> None:
        self.shares_rejected += 1
        self.events.reject(session, code, reason)

    def block_found(self, session: Session, share: Share) -> Awaitable[None]:
        """Spool the block (fsynced), then submit it; the miner is answered when the returned
        awaitable is done, i.e. once the block is on disk."""
        block = found_block(session, share)
        log.warning(
            "BLOCK FOUND height=%d hash=%s worker=%s; submitting",
            block.height, block.hash, block.worker,
        )
        return self.stratum.run_soon(self.spool_and_submit(block))

    async def spool_and_submit(self, block: FoundBlock) -> None:
        await self.submitter.found(block)
        self.events.block_found(block)
