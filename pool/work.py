"""Keeps the pool's block template current.

New blocks are noticed by BIP22 longpoll (default), ZMQ `hashblock` when configured, and a slow
`getbestblockhash` poll as a safety net (ZMQ is silent during initial block download; a
same-height reorg keeps the height, so hashes are compared, not heights). The template is also
refreshed every `template_refresh_seconds` so new fee-paying transactions get in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from .config import NodeConfig
from .jobs import Template, TemplateError
from .node import NodeClient, NodeError

log = logging.getLogger(__name__)

LONGPOLL_TIMEOUT = 600.0
MAX_BACKOFF = 10.0


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
        self, node: NodeClient, config: NodeConfig, on_template: Callable[[Template], None]
    ) -> None:
        self.node = node
        self.config = config
        self.on_template = on_template
        self.template: Template | None = None
        self.node_ok = True
        self.installed = 0  # count of templates installed, to drop answers overtaken by newer ones
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.last_error: str | None = None

    # --- fetching -------------------------------------------------------------------------------

    async def update(self, reason: str, resend: bool = False) -> bool:
        """Fetch a template now and install it. Returns False if the node could not answer.

        An unchanged template is not sent again unless `resend` (the periodic refresh, which
        also keeps miners like cgminer from calling a quiet pool dead after 90 s)."""
        started = self.installed
        try:
            gbt = await self.node.get_block_template()
        except NodeError as exc:
            self._node_failed(exc)
            return False
        self._install(gbt, reason, started, resend)
        return True

    def _install(self, gbt: dict[str, Any], reason: str, started: int, resend: bool) -> None:
        self._node_recovered()
        try:
            template = Template.from_rpc(gbt)
        except (TemplateError, KeyError, ValueError) as exc:
            log.error("cannot mine on the node's template: %s", exc)
            return
        current = self.template
        if current is not None and self.installed != started and (
            template.prev_hash != current.prev_hash
        ):
            # A newer template was installed while this request was out; this one may be older.
            return
        if current is not None and not resend and same_work(current, template):
            if template.longpollid != current.longpollid:
                self.template = dataclasses.replace(current, longpollid=template.longpollid)
            return
        self.template = template
        self.installed += 1
        if current is None or template.prev_hash != current.prev_hash:
            log.info(
                "new block template at height %d (%s, %d transactions, %s)",
                template.height, reason, len(template.transactions), template.prev_hash[:16],
            )
        self.on_template(template)

    def _node_failed(self, exc: Exception) -> None:
        message = str(exc)
        if self.node_ok or message != self.last_error:
            log.error("node problem: %s; miners keep their last job, retrying", message)
        self.node_ok = False
        self.last_error = message

    def _node_recovered(self) -> None:
        if not self.node_ok:
            log.warning("node is answering again; resuming fresh jobs")
        self.node_ok = True
        self.last_error = None

    # --- watchers -------------------------------------------------------------------------------

    def start(self) -> None:
        if self.config.longpoll:
            self._tasks.append(asyncio.create_task(self._longpoll_loop(), name="longpoll"))
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="tip-poll"))
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="refresh"))
        if self.config.zmq_hashblock:
            self._tasks.append(asyncio.create_task(self._zmq_loop(), name="zmq"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _longpoll_loop(self) -> None:
        delay = 0.5
        while True:
            current = self.template
            if current is None or current.longpollid is None:
                await asyncio.sleep(1.0)
                continue
            started = self.installed
            try:
                gbt = await self.node.get_block_template(
                    longpollid=current.longpollid, timeout=LONGPOLL_TIMEOUT
                )
            except NodeError as exc:
                self._node_failed(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = 0.5
            self._install(gbt, "longpoll", started, resend=False)

    async def _poll_loop(self) -> None:
        delay = self.config.poll_seconds
        while True:
            await asyncio.sleep(delay)
            try:
                best = await self.node.get_best_block_hash()
            except NodeError as exc:
                self._node_failed(exc)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = self.config.poll_seconds
            current = self.template
            if current is None or best != current.prev_hash or not self.node_ok:
                await self.update("poll")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.template_refresh_seconds)
            await self.update("refresh", resend=True)

    async def _zmq_loop(self) -> None:
        import zmq
        import zmq.asyncio

        endpoint = self.config.zmq_hashblock
        assert endpoint is not None
        context = zmq.asyncio.Context.instance()
        socket = context.socket(zmq.SUB)
        socket.setsockopt(zmq.RCVHWM, 0)
        socket.setsockopt(zmq.SUBSCRIBE, b"hashblock")
        socket.connect(endpoint)
        log.info("listening for new blocks on ZMQ %s", endpoint)
        try:
            while True:
                frames = await socket.recv_multipart()
                if len(frames) >= 2:
                    block_hash = frames[1].hex()
                    current = self.template
                    if current is None or block_hash != current.prev_hash:
                        await self.update("zmq")
        finally:
            socket.close(linger=0)
