"""The payout resolver of the main process: a miner's address to its output script, decoded
here exactly and cross-checked with the node, remembered once checked (one cache for all
sessions and worker processes, which ask through the main process)."""

from __future__ import annotations

import logging
from typing import Any

from .consensus.address import AddressError, payout_script
from .node import NodeError, NodeSet
from .services import AddressRefused

log = logging.getLogger(__name__)

VALIDATE_TIMEOUT = 5.0  # seconds for the node's validateaddress cross-check of a payout
PAYOUT_CACHE_ENTRIES = 4096  # payout addresses checked with the node and remembered


class NodePayouts:
    """A `PayoutResolver` for the network the nodes are on."""

    def __init__(self, nodes: NodeSet) -> None:
        self.nodes = nodes
        self._checked: dict[str, bytes] = {}

    async def resolve_payout(self, address: str) -> bytes:
        cached = self._checked.get(address)
        if cached is not None:
            return cached
        chain = self.nodes.chain or ""
        try:
            script = payout_script(address, chain)
        except AddressError as exc:
            raise AddressRefused(f"{address!r} is not a valid {chain} address: {exc}") from None
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
        if len(self._checked) >= PAYOUT_CACHE_ENTRIES:
            # Checked addresses come from strangers too: forget the oldest, not grow forever.
            del self._checked[next(iter(self._checked))]
        self._checked[address] = script
        return script
