"""Several nodes behind one face: the first healthy one gives templates, the others are
failovers, and a found block goes to all of them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import RPC_INVALID_PARAMETER, NodeError, NodeRPCError, NodeWrongChain
from .rpc import NodeClient


@dataclass
class NodeHealth:
    """What the pool currently knows about one node."""

    up: bool = True
    wrong_chain: bool = False
    last_error: str | None = None
    down_since: float | None = None  # time.monotonic() of the first failure of this outage
    height: int | None = None  # tip height at the last look
    best_hash: str | None = None
    next_probe: float = 0.0
    retry_delay: float = 0.0


class NodeSet:
    """Several nodes in priority order: `[node]` first, then each `[[backup_node]]`.

    The first healthy node supplies templates (`active`; chosen by the template source, which
    watches health); a found block is submitted to all of them at once, and its acceptance may
    be confirmed by any. Every node must be on the network the pool started on (`chain`, and the
    genesis block hash): a node that turns out to be on another one is never used for templates.
    """

    def __init__(self, clients: Sequence[NodeClient]) -> None:
        if not clients:
            raise ValueError("a NodeSet needs at least one node")
        self.clients = tuple(clients)
        self.health = {id(c): NodeHealth() for c in self.clients}
        self.active: NodeClient | None = self.clients[0]
        self.chain: str | None = None
        self.genesis: str | None = None
        self._changed = asyncio.Event()

    @property
    def primary(self) -> NodeClient:
        return self.clients[0]

    def state(self, client: NodeClient) -> NodeHealth:
        return self.health[id(client)]

    def rank(self, client: NodeClient) -> int:
        return self.clients.index(client)

    def usable(self) -> list[NodeClient]:
        """Nodes that may give templates now, best first."""
        return [c for c in self.clients if self.state(c).up]

    def submit_targets(self) -> list[NodeClient]:
        """Nodes a found block goes to: all but those known to be on another network."""
        return [c for c in self.clients if not self.state(c).wrong_chain]

    # --- health --------------------------------------------------------------------------------

    def mark_down(self, client: NodeClient, exc: BaseException) -> bool:
        """Record a failure; True if the node was up until now (the caller logs once)."""
        state = self.state(client)
        was_up = state.up
        state.up = False
        state.wrong_chain = isinstance(exc, NodeWrongChain)
        state.last_error = str(exc)
        if was_up:
            state.down_since = time.monotonic()
        return was_up

    def mark_up(self, client: NodeClient) -> float | None:
        """Record that a node answers; returns how long it was down, or None if it was up."""
        state = self.state(client)
        if state.up:
            return None
        down_for = time.monotonic() - (state.down_since or time.monotonic())
        state.up = True
        state.wrong_chain = False
        state.last_error = None
        state.down_since = None
        state.retry_delay = 0.0
        self._notify_change()
        return down_for

    def _notify_change(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait_for_change(self, timeout: float) -> None:
        """Sleep up to `timeout`, waking early when a node comes back."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    def set_identity(self, chain: str, genesis: str | None) -> None:
        self.chain = chain
        self.genesis = genesis

    async def identify(self, client: NodeClient) -> dict[str, Any]:
        """getblockchaininfo, checked against the network the pool started on.

        Raises NodeWrongChain for another network or another genesis block (a node restarted
        with `-testnet`, `-signet` with another challenge, or pointed at another datadir)."""
        info = await client.get_blockchain_info()
        chain = str(info.get("chain"))
        if self.chain is not None and chain != self.chain:
            raise NodeWrongChain(
                f"{client} is now on chain {chain!r}, but this pool mines on {self.chain!r}"
            )
        if self.genesis is not None:
            genesis = await client.get_block_hash(0)
            if genesis != self.genesis:
                raise NodeWrongChain(
                    f"{client} now has genesis block {genesis[:16]}…, not {self.genesis[:16]}… "
                    f"of the {self.chain} chain this pool started on"
                )
        state = self.state(client)
        if isinstance(info.get("blocks"), int):
            state.height = int(info["blocks"])
        if isinstance(info.get("bestblockhash"), str):
            state.best_hash = str(info["bestblockhash"])
        return info

    def status(self) -> list[dict[str, Any]]:
        """One entry per node, for status pages."""
        rows = []
        for client in self.clients:
            state = self.state(client)
            rows.append(
                {
                    "name": client.name,
                    "url": client.display_url,
                    "up": state.up,
                    "active": client is self.active,
                    "wrong_chain": state.wrong_chain,
                    "height": state.height,
                    "last_error": state.last_error,
                    "latency": client.last_latency,
                }
            )
        return rows

    # --- blocks --------------------------------------------------------------------------------

    async def confirm(self, height: int, block_hash: str) -> bool | None:
        """Is `block_hash` at `height` on the best chain of any node? None if no node answered.
        Returns at the first node that says yes; a slow node does not hold up the answer."""
        tasks = [
            asyncio.create_task(c.get_block_hash(height)) for c in self.submit_targets()
        ]
        answered = False
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    found = await next_done
                except NodeRPCError as exc:
                    # -8: no block at that height on its best chain. Anything else (-28, still
                    # starting after a restart) is no answer: asked again, not taken as "no".
                    answered = answered or exc.code == RPC_INVALID_PARAMETER
                    continue
                except NodeError:
                    continue
                answered = True
                if found == block_hash:
                    return True
        finally:
            for task in tasks:
                task.cancel()
        return False if answered else None

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """A read-only call to the node currently supplying templates (else the primary)."""
        client = self.active or self.primary
        return await client.call(method, *params, timeout=timeout)

    def close(self) -> None:
        for client in self.clients:
            client.close()
