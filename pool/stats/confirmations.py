"""The fate of found blocks after the node's verdict: how deep each recent one is, whether it left
the best chain (orphaned) or came back, and when its reward matures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..found import ACCEPTED, ORPHANED, PENDING
from ..node import NodeError, NodeRPCError
from .records import MATURITY, BlockChange, BlockRecord

if TYPE_CHECKING:
    from ..node import NodeSet

log = logging.getLogger(__name__)

CONFIRM_SECONDS = 60.0
WATCH_ORPHANED_SECONDS = 86_400.0  # an orphan is watched this long for a return to the chain
MAX_WATCHED = 50  # the newest: a handful of calls, however many blocks


def watched(blocks: Mapping[str, BlockRecord], now: float) -> list[BlockRecord]:
    """The blocks whose depth may still change something."""

    def watch(b: BlockRecord) -> bool:
        if b.status == PENDING:  # no verdict yet; the node may have it already
            return True
        if b.status == ACCEPTED:
            return b.confirmations is None or b.confirmations < MATURITY
        return b.status == ORPHANED and now - b.found_at < WATCH_ORPHANED_SECONDS

    return [b for b in blocks.values() if watch(b)][-MAX_WATCHED:]


def depth_change(b: BlockRecord, confirmations: int) -> str | None:
    """What the node's `confirmations` for `b` mean for it ("orphaned", "back_in_chain",
    "matured"), before `b` is updated; None when nothing worth an alert changed."""
    if confirmations < 0 and b.status == ACCEPTED:
        return "orphaned"
    if confirmations > 0 and b.status == ORPHANED:
        return "back_in_chain"
    if confirmations >= MATURITY and (b.confirmations or 0) < MATURITY:
        return "matured"
    return None


class ConfirmationWatcher:
    """Asks the node (through the NodeSet) how deep each watched block is, updates its record,
    reports the record to `changed` (to be persisted) and a change worth an alert to every
    `on_change` callback."""

    def __init__(
        self,
        node: NodeSet | None,
        blocks: Mapping[str, BlockRecord],
        clock: Callable[[], float],
        changed: Callable[[BlockRecord], None],
        on_change: list[BlockChange],
    ) -> None:
        self.node = node
        self.blocks = blocks
        self.clock = clock
        self.changed = changed
        self.on_change = on_change

    async def watch(self, every: Callable[[], float]) -> None:
        """Check every `every()` seconds, for ever."""
        while True:
            await asyncio.sleep(every())
            try:
                await self.check()
            except Exception:
                log.exception("stats: confirmation check failed")

    async def check(self) -> None:
        """Ask the node how deep each recent block is; notice orphans and maturity."""
        if self.node is None:
            return
        for b in watched(self.blocks, self.clock()):
            try:
                header = await self.node.call("getblockheader", b.hash)
            except NodeRPCError as exc:
                log.debug("stats: getblockheader %s: %s", b.hash, exc)
                continue
            except NodeError as exc:
                log.debug("stats: node unavailable for confirmations: %s", exc)
                return
            self._update(b, int(header.get("confirmations", 0)))

    def _update(self, b: BlockRecord, confirmations: int) -> None:
        change = depth_change(b, confirmations)
        # A verdict recorded while the node was away can say "not in the best chain" with the
        # confirmations unchanged: in_best_chain is compared on its own.
        if (
            change is None and confirmations == b.confirmations
            and (confirmations > 0) == b.in_best_chain
        ):
            return
        if change == "orphaned":
            b.status = ORPHANED
        elif change == "back_in_chain":
            b.status = ACCEPTED
        b.confirmations = confirmations
        b.in_best_chain = confirmations > 0
        b.updated_at = self.clock()
        self.changed(b)
        if change is None:
            return
        for callback in self.on_change:
            try:
                callback(b, change)
            except Exception:
                log.exception("stats: block change callback failed")
