"""Found blocks: spooled to disk (fsynced) before submitblock, then submitted until the node
gives a final answer. Unfinished spool files are submitted again at start-up."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .node import NodeClient, NodeError, NodeRPCError

log = logging.getLogger(__name__)

PENDING = "pending"
ACCEPTED = "accepted"
REJECTED = "rejected"
ORPHANED = "orphaned"

RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25


@dataclass
class FoundBlock:
    height: int
    hash: str
    hex: str
    worker: str
    address: str
    found_at: float
    status: str = PENDING
    answer: str | None = None  # what submitblock said; "null" when accepted outright
    in_best_chain: bool = False
    attempts: int = 0

    @property
    def filename(self) -> str:
        return f"{self.height:08d}-{self.hash}.json"


class BlockSpool:
    """One JSON file per block under `data_dir/blocks/`, written atomically and fsynced."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, block: FoundBlock) -> Path:
        path = self.directory / block.filename
        tmp = path.with_suffix(".tmp")
        data = json.dumps(asdict(block), indent=1).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return path

    def load_all(self) -> list[FoundBlock]:
        blocks = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                blocks.append(FoundBlock(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError) as exc:
                log.error("cannot read spooled block %s: %s", path, exc)
        return blocks

    def pending(self) -> list[FoundBlock]:
        return [b for b in self.load_all() if b.status == PENDING]


class BlockSubmitter:
    """Owns every found block from the moment it is found until the node's final answer."""

    def __init__(
        self,
        node: NodeClient,
        spool: BlockSpool,
        on_final: Callable[[FoundBlock], Awaitable[None]] | None = None,
        max_backoff: float = 10.0,
    ) -> None:
        self.node = node
        self.spool = spool
        self.on_final = on_final
        self.max_backoff = max_backoff
        self.in_flight: set[asyncio.Task[None]] = set()
        self.history: list[FoundBlock] = []

    async def found(self, block: FoundBlock) -> None:
        """Spool, then submit. Returns once the spool file is on disk."""
        await asyncio.to_thread(self.spool.write, block)
        self._start(block)

    def _start(self, block: FoundBlock) -> None:
        self.history.append(block)
        task = asyncio.create_task(self._submit_until_final(block), name=f"submit-{block.hash}")
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def resubmit_pending(self) -> int:
        """At start-up: submit every spooled block that never got a final answer."""
        blocks = await asyncio.to_thread(self.spool.pending)
        for block in blocks:
            log.warning("resubmitting spooled block %s at height %d", block.hash, block.height)
            self._start(block)
        return len(blocks)

    async def drain(self, timeout: float | None = None) -> None:
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=timeout)

    async def _submit_until_final(self, block: FoundBlock) -> None:
        delay = 0.25
        while True:
            block.attempts += 1
            try:
                answer = await self.node.submit_block(block.hex)
                await self._judge(block, answer)
                break
            except NodeRPCError as exc:
                if exc.code in (RPC_DESERIALIZATION_ERROR, RPC_VERIFY_ERROR):
                    block.status, block.answer = REJECTED, f"RPC error {exc.code}: {exc.message}"
                    break
                log.warning("submitblock for %s failed (%s); retrying", block.hash, exc)
            except NodeError as exc:
                log.warning("submitblock for %s failed (%s); retrying", block.hash, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)
        self._log_verdict(block)
        await asyncio.to_thread(self.spool.write, block)
        if self.on_final is not None:
            await self.on_final(block)

    async def _judge(self, block: FoundBlock, answer: str | None) -> None:
        block.answer = "null" if answer is None else answer
        if answer is None or answer in ("duplicate", "inconclusive"):
            # Accepted, or known to the node: confirm with the hash at that height.
            block.in_best_chain = await self._in_best_chain(block)
            if answer == "inconclusive" and not block.in_best_chain:
                block.status = ORPHANED
            else:
                block.status = ACCEPTED
        else:
            block.status = REJECTED

    async def _in_best_chain(self, block: FoundBlock) -> bool:
        try:
            return await self.node.get_block_hash(block.height) == block.hash
        except NodeRPCError:
            return False  # height not on the best chain (yet)

    def _log_verdict(self, block: FoundBlock) -> None:
        if block.status == ACCEPTED:
            log.warning(
                "BLOCK ACCEPTED height=%d hash=%s worker=%s answer=%s in_best_chain=%s",
                block.height, block.hash, block.worker, block.answer, block.in_best_chain,
            )
        else:
            log.error(
                "BLOCK %s height=%d hash=%s worker=%s answer=%s",
                block.status.upper(), block.height, block.hash, block.worker, block.answer,
            )
