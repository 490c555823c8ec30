"""Keeps the pool's block template current, from the first healthy node.

New blocks are noticed by BIP22 longpoll (default), ZMQ `hashblock` when configured, and a
`getbestblockhash` poll as a safety net (ZMQ is silent during initial block download; a
same-height reorg keeps the height, so hashes are compared, not heights). The template is also
refreshed every `template_refresh_seconds` so new fee-paying transactions get in.

Node faults: when the node giving templates stops answering (down, hung past the RPC timeout,
HTTP errors, initial block download, or another network), the next healthy node in config order
takes over at once; with none left, miners keep their last job and every node is retried with
backoff. Each outage is logged once, when it starts, and once when it ends. A node that comes
back is checked to be on the same network (chain name and genesis block) before it is used, and
the primary is used again as soon as it is back and has caught up with the chain being mined.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from ..config import NodeConfig
from ..consensus.template import Template, TemplateError
from .errors import NodeError, NodeTimeout, NodeWrongChain
from .nodeset import NodeSet
from .rpc import NodeClient

log = logging.getLogger(__name__)

# A longpoll waits as long as the node holds it (None): giving up and asking again would leave
# a bitcoind RPC thread stuck in the abandoned one until the next block (see pool/node/rpc.py).
LONGPOLL_TIMEOUT: float | None = None
RETRY_MIN = 0.25  # first retry of a node that stopped answering...
RETRY_MAX = 2.0  # ...doubling up to this: a node that returns is used within ~2 s
STANDBY_PROBE_SECONDS = 2.0  # how often healthy standby nodes are looked at
IDENTITY_SECONDS = 10.0  # how often the node giving templates is asked which chain it is on
STOP_SECONDS = 5.0  # how long stop() waits for its cancelled tasks to end

# Starts a named long-running task; the composition root passes one that restarts a task that
# fails (pool.tasks.supervised), so the node package need not know how tasks are supervised.
TaskStarter = Callable[[str, Callable[[], Awaitable[None]]], "asyncio.Task[None]"]


def _unsupervised(name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    async def once() -> None:
        await run()

    return asyncio.create_task(once(), name=name)


def same_work(a: Template, b: Template) -> bool:
    """Templates that would give miners identical jobs."""
    return (
        a.prev_hash == b.prev_hash
        and a.txids == b.txids
        and a.coinbase_value == b.coinbase_value
        and a.bits == b.bits
        and a.version == b.version
    )


class TemplateSource:
    """Fetches templates and hands each new one to `on_template` (on the event loop)."""

    def __init__(
        self,
        nodes: NodeSet | NodeClient,
        config: NodeConfig,
        on_template: Callable[[Template], None],
        start_task: TaskStarter = _unsupervised,
    ) -> None:
        self.nodes = nodes if isinstance(nodes, NodeSet) else NodeSet([nodes])
        self.config = config
        self.on_template = on_template
        self._start_task = start_task
        self.template: Template | None = None
        self.template_node: NodeClient | None = None  # the node the template came from
        self.best_hash: str | None = None  # that node's best block, as last seen
        self.node_ok = True
        self.installed = 0  # count of templates installed, to drop answers overtaken by newer ones
        self.last_error: str | None = None
        self.outage_started: float | None = None  # no node could give templates since then
        self.switches = 0
        self.identity_seconds = IDENTITY_SECONDS
        self._tasks: list[asyncio.Task[None]] = []
        self._longpoll: asyncio.Task[None] | None = None
        self._running = False

    @property
    def node(self) -> NodeClient | None:
        """The node templates come from now (None while no node can give one)."""
        return self.nodes.active

    # --- fetching -------------------------------------------------------------------------------

    async def update(self, reason: str, resend: bool = False) -> bool:
        """Fetch a template now and install it. Returns False if no node could answer.

        An unchanged template is not sent again unless `resend` (the periodic refresh, which
        also keeps miners like cgminer from calling a quiet pool dead after 90 s)."""
        node = self.nodes.active
        if node is None:
            self.node_ok = False
            return False
        started = self.installed
        try:
            gbt = await node.get_block_template()
        except NodeError as exc:
            return await self._node_failed(node, exc)
        return self._install(node, gbt, reason, started, resend)

    def _install(
        self, node: NodeClient, gbt: dict[str, Any], reason: str, started: int, resend: bool
    ) -> bool:
        if node is not self.nodes.active:
            return False  # an answer from a node we have since left
        self._node_recovered()
        try:
            template = Template.from_rpc(gbt)
        except (TemplateError, KeyError, ValueError) as exc:
            log.error("cannot mine on the template of %s: %s", node, exc)
            return False
        current = self.template
        if self._overtaken(template, current, started):
            return True
        if current is not None and not resend and same_work(current, template):
            if template.longpollid != current.longpollid:
                self.template = dataclasses.replace(current, longpollid=template.longpollid)
            self.template_node = node
            return True
        self.template = template
        self.template_node = node
        self.best_hash = template.prev_hash
        self.installed += 1
        if current is None or template.prev_hash != current.prev_hash:
            lower = current is not None and template.height <= current.height
            log.info(
                "new block template at height %d (%s%s, %d transactions, %s, from %s)",
                template.height, reason, ", reorg" if lower else "",
                len(template.transactions), template.prev_hash[:16], node.name,
            )
        self.on_template(template)
        return True

    def _overtaken(self, template: Template, current: Template | None, started: int) -> bool:
        """Another template was installed while this one was being fetched: is this one older?
        Heights say nothing (a reorg can lower them): keep whichever builds on the node's best
        block as last seen."""
        if current is None or self.installed == started:
            return False
        if template.prev_hash == current.prev_hash:
            return False
        return template.prev_hash != self.best_hash or current.prev_hash == self.best_hash

    # --- health ---------------------------------------------------------------------------------

    async def _node_failed(self, node: NodeClient, exc: NodeError) -> bool:
        """A call to `node` failed. If it was giving templates, move to the next healthy node.
        Returns True if another node gave a template."""
        was_up = self.nodes.mark_down(node, exc)
        self._schedule_retry(node)
        if node is not self.nodes.active:
            if was_up:
                self._log_down(node, exc, "it stays a block submission target")
            return False
        candidates = [c for c in self.nodes.usable() if c is not node]
        following = candidates[0] if candidates else None
        self.nodes.active = following  # before any await: concurrent failures agree
        if following is None:
            self.node_ok = False
            self.last_error = str(exc)
            if self.outage_started is None:
                self.outage_started = time.monotonic()
            self._log_down(node, exc, "miners keep their last job; retrying", was_active=True)
            return False
        self._log_down(node, exc, f"templates now from {following}", was_active=True)
        return await self._switch(following, "failover")

    def _log_down(
        self, node: NodeClient, exc: NodeError, consequence: str, was_active: bool = False
    ) -> None:
        if isinstance(exc, NodeWrongChain):
            log.error(
                "WRONG NETWORK: %s. Refusing to take templates from it (its jobs would pay "
                "addresses of another network); %s",
                exc, consequence,
            )
        elif was_active:
            log.error("%s cannot give templates: %s; %s", node, exc, consequence)
        else:
            log.error("%s is not usable: %s; %s", node, exc, consequence)

    def _node_recovered(self) -> None:
        if self.outage_started is not None:
            log.warning(
                "%s is giving templates again after %.1f s without any; fresh jobs sent",
                self.nodes.active, time.monotonic() - self.outage_started,
            )
        self.outage_started = None
        self.node_ok = True
        self.last_error = None

    def _schedule_retry(self, node: NodeClient) -> None:
        state = self.nodes.state(node)
        state.retry_delay = min(max(state.retry_delay * 2, RETRY_MIN), RETRY_MAX)
        state.next_probe = time.monotonic() + state.retry_delay

    async def _switch(self, node: NodeClient, reason: str) -> bool:
        """Take templates from `node` from now on; miners get a job from it at once."""
        self.nodes.active = node
        self.switches += 1
        self._restart_longpoll()
        return await self.update(reason, resend=True)

    async def _probe(self, node: NodeClient) -> None:
        """Look at a node that is not giving templates: is it up, on our network, caught up?"""
        state = self.nodes.state(node)
        try:
            info = await self.nodes.identify(node)
            if not state.up:
                # Only a template proves it can be mined on (initial sync answers -10).
                await node.get_block_template()
            elif info.get("chain") == "main" and info.get("initialblockdownload"):
                raise NodeError(f"{node} is in initial block download")
        except NodeError as exc:
            was_wrong = state.wrong_chain
            was_up = self.nodes.mark_down(node, exc)
            self._schedule_retry(node)
            if was_up or (isinstance(exc, NodeWrongChain) and not was_wrong):
                self._log_down(node, exc, "not used until that changes")
            else:
                log.debug("%s still not usable: %s", node, exc)
            return
        down_for = self.nodes.mark_up(node)
        state.next_probe = time.monotonic() + STANDBY_PROBE_SECONDS
        if down_for is not None and self.nodes.active is not None:
            # (With no node giving templates, the end of the outage is logged when it does.)
            log.warning("%s is usable again (after %.1f s)", node, down_for)
        await self._maybe_switch()

    async def _maybe_switch(self) -> None:
        """Use the best-ranked healthy node that has caught up with the chain being mined."""
        active = self.nodes.active
        tip = self.template.height - 1 if self.template is not None else None
        for node in self.nodes.usable():
            if node is active:
                return
            height = self.nodes.state(node).height
            if active is not None and tip is not None and (height is None or height < tip):
                continue  # back, but still syncing: wait until it has caught up
            if active is not None:
                log.warning("templates from %s again", node)
            await self._switch(node, "node back")
            return

    # --- watchers -------------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._restart_longpoll()
        self._tasks.append(self._start_task("tip-poll", self._poll_loop))
        self._tasks.append(self._start_task("refresh", self._refresh_loop))
        for node in self.nodes.clients:
            self._tasks.append(self._start_task(f"watch-{node}", partial(self._watch_loop, node)))
            endpoint = node.zmq_hashblock
            if node is self.nodes.primary:
                endpoint = self.config.zmq_hashblock or endpoint  # may have been discovered
            if endpoint:
                self._tasks.append(
                    self._start_task(f"zmq-{node}", partial(self._zmq_loop, node, endpoint))
                )

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks)
        if self._longpoll is not None:
            tasks.append(self._longpoll)
            self._longpoll = None
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task that lost its cancellation is left to the supervisor's stop,
            # which names it (the shutdown must not hang on it).
            await asyncio.wait(tasks, timeout=STOP_SECONDS)
        self._tasks.clear()

    def _restart_longpoll(self) -> None:
        """(Re)start the longpoll against the node now giving templates."""
        if not self._running or not self.config.longpoll:
            return
        if self._longpoll is not None:
            if self._longpoll is asyncio.current_task():
                return  # called from the longpoll itself: its next round uses the new node
            self._longpoll.cancel()  # its thread finishes alone; the answer is dropped
        self._longpoll = self._start_task("longpoll", self._longpoll_loop)

    async def _longpoll_loop(self) -> None:
        delay = RETRY_MIN
        while True:
            node = self.nodes.active
            current = self.template
            if node is None or current is None or current.longpollid is None or (
                self.template_node is not node
            ):
                await asyncio.sleep(0.5)
                continue
            started = self.installed
            try:
                gbt = await node.get_block_template(
                    longpollid=current.longpollid, timeout=LONGPOLL_TIMEOUT
                )
            except NodeTimeout:
                continue  # only with a LONGPOLL_TIMEOUT: nothing new for a while, ask again
            except NodeError as exc:
                await self._node_failed(node, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if self._install(node, gbt, "longpoll", started, resend=False):
                delay = RETRY_MIN
            else:
                # Not installed (unusable template, or the node was left meanwhile): the same
                # longpollid would be answered at once again, so do not spin.
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _poll_loop(self) -> None:
        last_identity = time.monotonic()
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            node = self.nodes.active
            if node is None:
                continue  # the watchers look for a node that answers
            try:
                if time.monotonic() - last_identity >= self.identity_seconds:
                    last_identity = time.monotonic()
                    await self.nodes.identify(node)
                best = await node.get_best_block_hash()
            except NodeError as exc:
                await self._node_failed(node, exc)
                continue
            if node is not self.nodes.active:
                continue
            self.best_hash = best
            current = self.template
            if current is None or best != current.prev_hash or not self.node_ok:
                await self.update("poll")

    async def _watch_loop(self, node: NodeClient) -> None:
        """Health of one node while it is not the one giving templates."""
        while True:
            state = self.nodes.state(node)
            if node is self.nodes.active:
                # The longpoll and the tip poll watch it.
                await asyncio.sleep(STANDBY_PROBE_SECONDS)
                continue
            wait = state.next_probe - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            await self._probe(node)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.template_refresh_seconds)
            await self.update("refresh", resend=True)

    async def _zmq_loop(self, node: NodeClient, endpoint: str) -> None:
        import zmq
        import zmq.asyncio

        context = zmq.asyncio.Context.instance()
        socket = context.socket(zmq.SUB)
        socket.setsockopt(zmq.RCVHWM, 0)
        socket.setsockopt(zmq.SUBSCRIBE, b"hashblock")
        socket.connect(endpoint)
        log.info("listening for new blocks from %s on ZMQ %s", node.name, endpoint)
        try:
            while True:
                frames = await socket.recv_multipart()
                if len(frames) >= 2:
                    block_hash = frames[1].hex()
                    current = self.template
                    if node is self.nodes.active:
                        self.best_hash = block_hash
                    if current is None or block_hash != current.prev_hash:
                        await self.update("zmq")
        finally:
            socket.close(linger=0)
