"""Wires the parts together: node adapter, template source, jobs, Stratum server, blocks."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

from .api import ApiServer
from .blocks import BlockIntake, BlockSpool, BlockSubmitter
from .config import Config, NodeConfig
from .events import Events
from .found import ACCEPTED, FoundBlock
from .jobs import JobManager, Template
from .messages import Sv2Setup
from .node import NodeClient, NodeSet
from .node.discovery import with_discovered_zmq
from .node.templates import TemplateSource
from .notify import Notifier
from .payouts import NodePayouts
from .preflight import StartupError, identify_nodes
from .reload import reload_config
from .services import AllMiners, ShareTally, install_template
from .snapshot import PoolView, Sv2Endpoint
from .stats import Stats, StatsError
from .stratum.server import StratumServer
from .sv2.certificate import (
    ServerIdentity,
    authority_pubkey_base58,
    load_or_create_authority_key,
    xonly_public_key,
)
from .sv2.server import Sv2Server
from .tasks import Supervisor
from .workers import Sv2PortError, WorkerGroup, WorkerStartError

log = logging.getLogger(__name__)


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
    """The running pool: builds and wires the parts, owns their background tasks, and is what
    each Stratum session calls back into (`PoolServices`: its parts' methods, wired here)."""

    def __init__(self, config: Config) -> None:
        self.full_config = config
        self.config = config.stratum
        self.nodes = make_nodes(config)
        self.node = self.nodes.primary
        self.jobs = JobManager(config.pool.coinbase_tag.encode())
        self.spool = BlockSpool(config.pool.data_dir / "blocks")
        self.events = Events()
        # Every background task of the process hangs off this one supervisor: each part gets
        # a child of it, stops its own in its turn, and stop() ends whatever is left.
        self.tasks = Supervisor()
        # Observers: stats first (the notifier reads the block records it keeps).
        self.stats = Stats(
            config.pool.data_dir / "stats.sqlite3", node=self.nodes,
            max_workers=config.pool.max_workers,
            retention_seconds=config.pool.worker_retention_days * 86_400,
            tasks=self.tasks.child("stats"),
        )
        self.events.add(self.stats)
        self.notifier = Notifier(config.notify, self.stats, tasks=self.tasks.child("notify"))
        self.events.add(self.notifier)
        self.submitter = BlockSubmitter(
            self.nodes, self.spool, on_final=self._block_final, tasks=self.tasks.child("blocks")
        )
        # The services sessions use (`PoolServices`), the same for a worker process's sessions
        # (the worker group hands their facts to these).
        self.payouts = NodePayouts(self.nodes)
        self.shares = ShareTally(self.events)
        self.intake = BlockIntake(self.spool, self.take_block)
        self.resolve_payout = self.payouts.resolve_payout
        self.share_accepted = self.shares.share_accepted
        self.share_rejected = self.shares.share_rejected
        self.block_found = self.intake.block_found
        # Stratum in this process, or in `[stratum] workers` processes sharing the port.
        self.stratum: StratumServer | WorkerGroup
        if config.stratum.workers > 1:
            self.stratum = WorkerGroup(
                self, config.stratum.workers, config.pool.data_dir,
                tasks=self.tasks.child("workers"),
            )
        else:
            self.stratum = StratumServer(
                self, on_connect=self.events.connect, on_disconnect=self.events.disconnect,
                tasks=self.tasks.child("stratum"),
            )
            if (os.cpu_count() or 1) > 1:
                self.stratum.enable_threaded_sends()
        # Stratum V2 beside V1: served here, or by the worker processes (`WorkerGroup.sv2`).
        self.sv2: Sv2Server | None = None
        self.miners = AllMiners(self.stratum)
        self.source = TemplateSource(
            self.nodes, config.node, self._new_template,
            start_task=self.tasks.child("templates").start,
        )
        self._reloads = self.tasks.child("reload")  # SIGHUP reloads in progress
        # What the API, /metrics and the Umbrel widget read: never the pool itself.
        self.view = PoolView(
            stats=self.stats, jobs=self.jobs, source=self.source, nodes=self.nodes,
            connections=self.miners, payouts=self,
        )
        self.events.add(self.view)
        self.api = ApiServer(self.view, config.api)
        self.chain = ""
        self.sv2_authority = ""  # the authority public key miners paste (base58check)
        self._stopping = asyncio.Event()
        self._stopped = False

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
        identity = self._sv2_identity() if self.full_config.stratum_v2.port else None
        if identity is not None and isinstance(self.stratum, WorkerGroup):
            self.stratum.sv2 = Sv2Setup(self.full_config.stratum_v2, identity)
        try:
            await self.stratum.start()
        except Sv2PortError as exc:
            raise self._sv2_listen_error(exc) from None
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
        if identity is not None:
            await self._start_sv2(identity)
        self.source.config = await with_discovered_zmq(self.node, self.source.config)
        self.source.start()

    def _sv2_identity(self) -> ServerIdentity:
        """The authority key (made at first start) and this run's identity signed by it: one
        for the whole pool, whichever process serves SV2."""
        cfg = self.full_config.stratum_v2
        assert cfg.authority_key_file is not None
        try:
            authority = load_or_create_authority_key(cfg.authority_key_file)
        except (OSError, ValueError) as exc:
            raise StartupError(f"[stratum_v2] authority_key_file: {exc}", exit_code=2) from None
        self.sv2_authority = authority_pubkey_base58(xonly_public_key(authority))
        return ServerIdentity.issue(
            authority, int(cfg.certificate_validity_days * 86_400), int(time.time())
        )

    def _sv2_listen_error(self, exc: OSError) -> StartupError:
        cfg = self.full_config.stratum_v2
        return StartupError(
            f"cannot listen for SV2 miners on {cfg.host}:{cfg.port}: {exc.strerror}; change "
            "[stratum_v2] port or host",
            exit_code=2,
        )

    async def _start_sv2(self, identity: ServerIdentity) -> None:
        """Serve SV2 here beside the V1 server (the worker processes already do with
        workers > 1), and say where and with which authority key."""
        cfg = self.full_config.stratum_v2
        if isinstance(self.stratum, WorkerGroup):
            port = self.stratum.sv2_port or cfg.port  # reserved by the group at its start
        else:
            self.sv2 = Sv2Server(
                self, cfg, identity, self.stratum.allocate_extranonce1,
                on_connect=self.events.connect, on_disconnect=self.events.disconnect,
                connections=self.stratum,
            )  # fmt: skip
            try:
                await self.sv2.start()
            except OSError as exc:
                raise self._sv2_listen_error(exc) from None
            self.miners.parts.append(self.sv2)
            port = self.sv2.port
        self.view.stratum_v2 = Sv2Endpoint(port, self.sv2_authority)
        log.info(
            "Stratum V2 on %s:%d; authority public key %s", cfg.host, port, self.sv2_authority
        )

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
        if self.sv2 is not None:
            await self.sv2.close()
        await self.intake.drain()
        await self.source.stop()
        await self._reloads.stop()
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
        await self.tasks.stop()  # anything a part left running
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
        self._reloads.once("reload", reload_config(self))

    # --- templates --------------------------------------------------------------------------------

    def _new_template(self, template: Template) -> None:
        clean = install_template(self.jobs, self.miners, template)
        self.events.template(template, clean)

    async def _block_final(self, block: FoundBlock) -> None:
        self.events.block_final(block)
        if block.status == ACCEPTED:
            # Do not wait for longpoll/ZMQ: a stale template after our own block is wasted work.
            await self.source.update("our block")

    def take_block(self, block: FoundBlock) -> None:
        """A found block, spooled (here or by a worker process): submit it."""
        self.submitter.submit(block)
        self.events.block_found(block)
