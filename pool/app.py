"""Wires the parts together: node adapter, template source, jobs, Stratum server, blocks."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from typing import Any

from .api import ApiServer
from .blocks import ACCEPTED, BlockIntake, BlockSpool, BlockSubmitter, FoundBlock
from .config import Config, ConfigError, NodeConfig, load_config
from .consensus.address import CHAINS
from .events import Events
from .jobs import JobManager, Template
from .node import NodeAuthError, NodeClient, NodeError, NodeRPCError, NodeSet, NodeUnreachable
from .node.discovery import with_discovered_zmq
from .node.templates import TemplateSource
from .notify import Notifier
from .payouts import NodePayouts
from .services import ShareTally, install_template
from .stats import Stats, StatsError
from .stratum.server import StratumServer
from .tasks import Supervisor
from .workers import WorkerGroup, WorkerStartError

log = logging.getLogger(__name__)


# What a SIGHUP applies to the running pool; any other changed key needs a restart.
RELOADABLE_STRATUM = frozenset({
    "start_difficulty", "min_difficulty", "max_difficulty", "share_interval_seconds",
    "allowed_addresses", "max_connections", "max_connections_per_ip",
    "handshake_timeout_seconds", "idle_timeout_seconds", "max_invalid_shares_per_minute",
    "max_line_bytes", "version_rolling_mask",
})
RELOADABLE_NODE = frozenset({"template_refresh_seconds"})
RELOADABLE_POOL = frozenset({"coinbase_tag"})
SECRET_KEYS = frozenset({"rpc_password", "rpc_user", "rpc_url"})


def _changes(
    section: str, old: Any, new: Any, reloadable: frozenset[str],
    applied: list[str], restart: list[str],
) -> dict[str, Any]:
    """The reloadable keys of one section that changed (as replace() arguments); describes every
    change in `applied` or `restart` (never showing secret values)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(old):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if before == after:
            continue
        if f.name in reloadable:
            out[f.name] = after
            applied.append(f"[{section}] {f.name}: {before!r} -> {after!r}")
        elif f.name in SECRET_KEYS:
            restart.append(f"[{section}] {f.name}")
        else:
            restart.append(f"[{section}] {f.name} ({before!r} -> {after!r})")
    return out


class StartupError(Exception):
    """The pool cannot start; the message says why and what to do."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # 2 when the fix is in the config file


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
        # Observers: stats first (the notifier reads the block records it keeps).
        self.stats = Stats(
            config.pool.data_dir / "stats.sqlite3", node=self.nodes,
            max_workers=config.pool.max_workers,
            retention_seconds=config.pool.worker_retention_days * 86_400,
        )
        self.events.add(self.stats)
        self.notifier = Notifier(config.notify, self.stats)
        self.events.add(self.notifier)
        self.api = ApiServer(self, config.api)
        self.submitter = BlockSubmitter(self.nodes, self.spool, on_final=self._block_final)
        self.tasks = Supervisor()  # the pool's own background tasks
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
                self, config.stratum.workers, config.pool.data_dir
            )
        else:
            self.stratum = StratumServer(
                self, on_connect=self.events.connect, on_disconnect=self.events.disconnect
            )
            if (os.cpu_count() or 1) > 1:
                self.stratum.enable_threaded_sends()
        self.source = TemplateSource(
            self.nodes, config.node, self._new_template, start_task=self.tasks.start
        )
        self.chain = ""
        self._stopping = asyncio.Event()
        self._stopped = False
        self.started_at = time.time()

    # --- start-up -------------------------------------------------------------------------------

    async def check_node(self) -> None:
        """Learn the chain from the nodes; refuse to start with one clear reason.

        Every node is checked (at once); start-up needs one that can give templates. Backups
        that cannot are retried while the pool runs; one on another network is a config error.
        """
        configs = self.full_config.nodes
        results = await asyncio.gather(
            *(self._check_one(c, n) for c, n in zip(self.nodes.clients, configs, strict=True)),
            return_exceptions=True,
        )
        usable: list[NodeClient] = []
        failures: list[tuple[NodeClient, StartupError]] = []
        genesis: str | None = None
        for client, result in zip(self.nodes.clients, results, strict=True):
            if isinstance(result, StartupError):
                if result.exit_code == 2:
                    raise result
                failures.append((client, result))
                continue
            if isinstance(result, BaseException):
                raise result
            chain, node_genesis = result
            if not usable:
                self.chain, genesis = chain, node_genesis
            elif (chain, node_genesis) != (self.chain, genesis):
                raise StartupError(
                    f"{client} is on chain {chain!r} (genesis {node_genesis[:16]}…) but "
                    f"{usable[0]} is on {self.chain!r} (genesis {(genesis or '')[:16]}…): "
                    "every node must be on the same network",
                    exit_code=2,
                )
            usable.append(client)
        if not usable:
            raise failures[0][1]
        self.nodes.set_identity(self.chain, genesis)
        self.nodes.active = usable[0]
        for client, exc in failures:
            self.nodes.mark_down(client, NodeError(str(exc)))
            log.warning("%s: %s; it will be used when it answers", client, exc)
        if usable[0] is not self.nodes.primary:
            log.warning("templates come from %s until %s answers", usable[0], self.nodes.primary)

    async def _check_one(self, node: NodeClient, node_cfg: NodeConfig) -> tuple[str, str]:
        """One node's chain and genesis hash, or a StartupError saying what is wrong."""
        url = node.display_url
        section = node.name
        cookie = node_cfg.rpc_cookie_file
        if node_cfg.cookie_guessed and cookie is not None and not cookie.exists():
            raise StartupError(
                f"no RPC login configured and no cookie at {cookie}: set [{section}] "
                "rpc_cookie_file to your node's .cookie, or rpc_user and rpc_password",
                exit_code=2,
            )
        try:
            info = await node.get_blockchain_info()
        except NodeAuthError as exc:
            raise StartupError(str(exc), exit_code=2) from None
        except NodeUnreachable:
            raise StartupError(
                f"cannot reach the node's RPC at {url}: is bitcoind running with server=1, and "
                f"is [{section}] rpc_url right?"
            ) from None
        except NodeError as exc:
            raise StartupError(f"the node at {url} answered with an error: {exc}") from None
        chain = str(info.get("chain"))
        if chain not in CHAINS:
            raise StartupError(f"the node is on chain {chain!r}, which solopool does not know")
        if chain == "main" and info.get("initialblockdownload"):
            progress = 100 * float(info.get("verificationprogress", 0))
            raise StartupError(
                f"the node is still in initial block download ({progress:.1f}% verified); "
                "start solopool when it has caught up"
            )
        try:
            await node.get_block_template()
            genesis = await node.get_block_hash(0)
        except NodeRPCError as exc:
            raise StartupError(
                f"the node cannot give a block template yet: {exc.message}"
            ) from None
        except NodeError as exc:
            raise StartupError(f"getblocktemplate failed: {exc}") from None
        log.info("%s: chain %s, height %s", node, chain, info.get("blocks"))
        return chain, genesis

    async def start(self) -> None:
        await self.check_node()
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
        await self.intake.drain()
        await self.source.stop()
        await self.tasks.stop()
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
        self.tasks.once("reload", self.reload_config())

    async def reload_config(self) -> list[str]:
        """Re-read the config file and apply what can change under running miners: difficulty
        bounds, start difficulty, share interval, allowed addresses, connection limits and
        timeouts, coinbase tag, template refresh. Everything else is logged as needing a
        restart and keeps its running value. Returns the changes applied."""
        source = self.full_config.source
        if source is None:
            log.warning("reload: started without a config file; nothing to reload")
            return []
        try:
            new = load_config(source)
        except ConfigError as exc:
            log.error("reload: %s; keeping the running config", exc)
            return []
        old = self.full_config
        applied: list[str] = []
        restart: list[str] = []
        node = _changes("node", old.node, new.node, RELOADABLE_NODE, applied, restart)
        stratum = _changes(
            "stratum", old.stratum, new.stratum, RELOADABLE_STRATUM, applied, restart
        )
        pool = _changes("pool", old.pool, new.pool, RELOADABLE_POOL, applied, restart)
        for f in dataclasses.fields(old):  # [api], [notify], [[backup_node]], ...
            if f.name not in ("node", "stratum", "pool", "source") and (
                getattr(old, f.name) != getattr(new, f.name)
            ):
                restart.append(f"[{f.name}]")
        effective = dataclasses.replace(
            old,
            node=dataclasses.replace(old.node, **node),
            stratum=dataclasses.replace(old.stratum, **stratum),
            pool=dataclasses.replace(old.pool, **pool),
        )
        self.full_config = effective
        self.config = effective.stratum
        if stratum:
            dropped = self.stratum.apply_config(effective.stratum)
            if dropped:
                log.warning(
                    "reload: closed %d connection(s) of addresses no longer allowed", dropped
                )
        if node and isinstance(getattr(self.source, "config", None), NodeConfig):
            self.source.config = dataclasses.replace(self.source.config, **node)
        if "coinbase_tag" in pool:
            self.jobs.coinbase_tag = effective.pool.coinbase_tag.encode()
            # Jobs are built once per template: re-install it so new jobs carry the tag.
            if not await self.source.update("config reload", resend=True):
                log.warning("reload: the new coinbase tag applies from the next template")
        for change in applied:
            log.info("reload: %s", change)
        if restart:
            log.warning("reload: changed but needs a restart: %s", ", ".join(restart))
        if not applied and not restart:
            log.info("reload: %s unchanged", source)
        return applied

    # --- templates --------------------------------------------------------------------------------

    def _new_template(self, template: Template) -> None:
        clean = install_template(self.jobs, self.stratum, template)
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
