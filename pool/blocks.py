"""Found blocks: spooled to disk (fsynced) before anything else happens to them, then submitted
to every configured node until a final answer, and confirmed with `getblockhash` at their
height. Spool files without a final answer are submitted again at start-up, including one a
crash left half-renamed (`*.tmp`) when it holds a whole block; a damaged one is set aside in
`blocks/damaged/` with an error line, never dropped silently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .consensus.block import block_problem
from .found import ACCEPTED, ORPHANED, PENDING, REJECTED, FoundBlock
from .node import NodeClient, NodeError, NodeRPCError, NodeSet
from .tasks import Supervisor

if TYPE_CHECKING:
    from .services import Finder
    from .shares import Share

log = logging.getLogger(__name__)

RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25

# submitblock answers that mean the node has the block, best first: null (accepted), duplicate
# (it already had it, valid), inconclusive (stored, not yet on its best chain).
ACCEPTING_ANSWERS = ("null", "duplicate", "inconclusive")

# A spool write that fails (disk full, out of file descriptors) is tried again, this far apart.
SPOOL_RETRY_FIRST_SECONDS = 0.05
SPOOL_RETRY_MAX_SECONDS = 5.0
DAMAGED_DIR = "damaged"

# At shutdown, found blocks still being spooled are waited for this long at most.
SPOOL_WAIT_SECONDS = 30.0

# After a block's final answer, nodes that never answered are still offered it for this long.
CATCH_UP_SECONDS = 600.0


_FIELDS = {f.name for f in dataclasses.fields(FoundBlock)}


def found_block(session: Finder, share: Share) -> FoundBlock:
    """The block a share that meets the network target makes, ready to spool and submit."""
    job = share.job
    return FoundBlock(
        height=job.template.height,
        hash=share.block_hash,
        hex=job.block(share.header, session.extranonce1 + share.extranonce2).hex(),
        worker=session.worker or session.username,
        address=session.address or "",
        found_at=time.time(),
    )


class BlockSpool:
    """One JSON file per block under `data_dir/blocks/`, written atomically and fsynced."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, block: FoundBlock) -> Path:
        """Write, fsync the file, rename it into place and fsync the directory: when this
        returns the block survives a crash or power cut."""
        path = self.directory / block.filename
        # Per process: in worker mode a worker spools the block, the main process its verdict.
        tmp = self.directory / f"{block.filename}.{os.getpid()}.tmp"
        data = json.dumps(asdict(block), indent=1).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._sync_directory()
        return path

    def _sync_directory(self) -> None:
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load_all(self) -> list[FoundBlock]:
        blocks = []
        for path in sorted(self.directory.glob("*.json")):
            block = self._read(path)
            if isinstance(block, str):
                log.error("cannot read spooled block %s: %s", path, block)
            else:
                blocks.append(block)
        return blocks

    def pending(self) -> list[FoundBlock]:
        return [b for b in self.load_all() if b.status == PENDING]

    @staticmethod
    def _read(path: Path, whole: bool = False) -> FoundBlock | str:
        """The block a spool file holds, or why it cannot be read (with `whole`: or why it is
        not a complete block)."""
        try:
            data = json.loads(path.read_bytes())
            # Fields a newer version may add are ignored rather than losing the block.
            block = FoundBlock(**{k: v for k, v in data.items() if k in _FIELDS})
            raw = bytes.fromhex(block.hex) if whole else b""
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            return f"{type(exc).__name__}: {exc}"
        problem = block_problem(raw, block.hash) if whole else None
        return block if problem is None else f"not a complete block: {problem}"

    def recover(self) -> list[FoundBlock]:
        """At start-up, before anything else writes here: every spooled block, with the spool
        made whole. A `.tmp` file (a crash between write and rename) holding a complete block is
        renamed into place unless its `.json` already says as much; any file that is not a
        complete block is logged and moved to `damaged/`."""
        blocks: dict[str, FoundBlock] = {}
        for path in sorted(self.directory.glob("*.json")):
            block = self._read(path, whole=True)
            if isinstance(block, str):
                self._set_aside(path, block)
            else:
                blocks[block.hash] = block
        for path in sorted(self.directory.glob("*.tmp")):
            block = self._read(path, whole=True)
            if isinstance(block, str):
                self._set_aside(path, block)
                continue
            known = blocks.get(block.hash)
            if known is not None and not (known.status == PENDING and block.status != PENDING):
                log.info("removing %s: %s holds the same block", path.name, known.filename)
                path.unlink()
                continue
            os.replace(path, self.directory / block.filename)
            self._sync_directory()
            log.warning(
                "recovered block %s at height %d from the unfinished spool file %s",
                block.hash, block.height, path.name,
            )
            blocks[block.hash] = block
        return sorted(blocks.values(), key=lambda b: b.filename)

    def _set_aside(self, path: Path, why: str) -> None:
        damaged = self.directory / DAMAGED_DIR
        try:
            damaged.mkdir(exist_ok=True)
            os.replace(path, damaged / path.name)
            self._sync_directory()
        except OSError as exc:
            log.error(
                "spool file %s is not a complete block (%s) and cannot be moved to %s: %s",
                path, why, damaged, exc,
            )
            return
        log.error(
            "spool file %s is not a complete block (%s); moved to %s for inspection",
            path.name, why, damaged,
        )


async def spool_until_written(spool: BlockSpool, block: FoundBlock) -> None:
    """`spool.write` in a thread, tried again with backoff on any OSError until it succeeds: a
    found block is never given up for a full disk or a lack of file descriptors."""
    delay = SPOOL_RETRY_FIRST_SECONDS
    failures = 0
    while True:
        # A copy: the submitter may record answers while the thread serializes.
        snapshot = dataclasses.replace(block, answers=dict(block.answers))
        try:
            await asyncio.to_thread(spool.write, snapshot)
        except OSError as exc:
            failures += 1
            if failures == 1 or failures % 20 == 0:
                log.error(
                    "cannot spool block %s to %s (%s); trying again (%d attempt(s) so far)",
                    block.hash, spool.directory, exc, failures,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, SPOOL_RETRY_MAX_SECONDS)
            continue
        if failures:
            log.warning("spooled block %s after %d failed attempt(s)", block.hash, failures)
        return


class BlockIntake:
    """The block sink of the process that holds a found block first: logs it, spools it
    (fsynced, once), then hands it on (`hand_over`: to the submitter, or from a worker process
    to the main process). The miner's `true` waits for the spool."""

    def __init__(self, spool: BlockSpool, hand_over: Callable[[FoundBlock], None]) -> None:
        self.spool = spool
        self.hand_over = hand_over
        self.spooling: set[asyncio.Future[Any]] = set()  # must finish even at shutdown

    def block_found(self, session: Finder, share: Share) -> Awaitable[None]:
        block = found_block(session, share)
        log.warning(
            "BLOCK FOUND height=%d hash=%s worker=%s; spooling and submitting",
            block.height, block.hash, block.worker,
        )
        task = asyncio.ensure_future(self._spool_and_hand_over(block))
        self.spooling.add(task)
        task.add_done_callback(self.spooling.discard)
        return task

    async def _spool_and_hand_over(self, block: FoundBlock) -> None:
        # On disk first: if any process dies now, the next start submits it from the spool.
        await spool_until_written(self.spool, block)
        self.hand_over(block)

    async def drain(self, timeout: float = SPOOL_WAIT_SECONDS) -> None:
        """At shutdown: let found blocks still being spooled finish (bounded)."""
        if self.spooling:
            _, pending = await asyncio.wait(set(self.spooling), timeout=timeout)
            if pending:
                log.error("%d found block(s) still not spooled at shutdown", len(pending))


class BlockSubmitter:
    """Owns every found block from the moment it is found until the nodes' final answer."""

    def __init__(
        self,
        nodes: NodeSet | NodeClient,
        spool: BlockSpool,
        on_final: Callable[[FoundBlock], Awaitable[None]] | None = None,
        max_backoff: float = 10.0,
        tasks: Supervisor | None = None,
    ) -> None:
        self.nodes = nodes if isinstance(nodes, NodeSet) else NodeSet([nodes])
        self._tasks = tasks if tasks is not None else Supervisor("blocks")
        self.spool = spool
        self.on_final = on_final
        self.max_backoff = max_backoff
        self.in_flight: set[asyncio.Task[None]] = set()
        self.catch_ups: set[asyncio.Task[None]] = set()
        self.history: list[FoundBlock] = []
        self._submits: set[asyncio.Task[None]] = set()  # every submitblock call under way
        self._busy: dict[str, set[str]] = {}  # block hash -> nodes with a submitblock under way

    def submit(self, block: FoundBlock) -> None:
        """Submit a spooled block until the nodes' final answer."""
        self.history.append(block)
        task = self._tasks.start(f"submit-{block.hash}", lambda: self._submit_until_final(block))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def resubmit_pending(self) -> int:
        """At start-up: submit every spooled block that never got a final answer."""
        recovered = await asyncio.to_thread(self.spool.recover)
        blocks = [b for b in recovered if b.status == PENDING]
        for block in blocks:
            log.warning("resubmitting spooled block %s at height %d", block.hash, block.height)
            self.submit(block)
        return len(blocks)

    async def drain(self, timeout: float | None = None) -> None:
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=timeout)

    async def close(self) -> None:
        """Stop offering finished blocks to nodes that never answered."""
        tasks = [*self.catch_ups, *self._submits]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- submission -----------------------------------------------------------------------------

    def _owing(self, block: FoundBlock) -> list[NodeClient]:
        """Nodes that have not given this block a final answer yet."""
        return [c for c in self.nodes.submit_targets() if c.name not in block.answers]

    async def _submit_round(self, block: FoundBlock, warned: set[str]) -> None:
        """submitblock to every node still owing an answer, all at once. Returns when all have
        answered or failed, or as soon as one accepts: a slow node answers in the background
        (and is not sent the block again meanwhile)."""
        busy = self._busy.setdefault(block.hash, set())
        targets = [c for c in self._owing(block) if c.name not in busy]
        if not targets:
            return
        block.attempts += 1
        pending: set[asyncio.Task[None]] = set()
        for client in targets:
            busy.add(client.name)
            task = asyncio.create_task(self._submit_one(client, block, warned, busy))
            task.add_done_callback(self._submits.discard)
            self._submits.add(task)
            pending.add(task)
        while pending and not self._accepted(block):
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)

    @staticmethod
    def _accepted(block: FoundBlock) -> bool:
        return any(a in ACCEPTING_ANSWERS for a in block.answers.values())

    async def _submit_one(
        self, client: NodeClient, block: FoundBlock, warned: set[str], busy: set[str]
    ) -> None:
        try:
            await self._submit_to(client, block, warned)
        except Exception:  # a bug: the block is still owed to this node, so the round retries
            log.exception("submitblock for %s to %s failed unexpectedly", block.hash, client)
        finally:
            busy.discard(client.name)

    async def _submit_to(self, client: NodeClient, block: FoundBlock, warned: set[str]) -> None:
        try:
            answer = await client.submit_block(block.hex)
        except NodeRPCError as exc:
            if exc.code in (RPC_DESERIALIZATION_ERROR, RPC_VERIFY_ERROR):
                block.answers[client.name] = f"RPC error {exc.code}: {exc.message}"
                return
            error: Exception = exc
        except (NodeError, OSError) as exc:
            error = exc
        else:
            block.answers[client.name] = "null" if answer is None else answer
            log.info("submitblock %s to %s: %s", block.hash, client, block.answers[client.name])
            return
        if client.name not in warned:
            warned.add(client.name)
            log.warning(
                "submitblock for %s to %s failed (%s); retrying until it answers",
                block.hash, client, error,
            )
        else:
            log.debug("submitblock for %s to %s failed again (%s)", block.hash, client, error)

    def _is_final(self, block: FoundBlock) -> bool:
        if self._accepted(block):
            return True
        # Every reachable node rejected it; a node we could not reach might still take it.
        return bool(block.answers) and not self._owing(block)

    async def _submit_until_final(self, block: FoundBlock) -> None:
        delay = 0.25
        warned: set[str] = set()
        while True:
            await self._submit_round(block, warned)
            if self._is_final(block):
                break
            # Back off, but try again the moment a node comes back.
            await self.nodes.wait_for_change(delay)
            delay = min(delay * 2, self.max_backoff)
        await self._judge(block)
        block.final_at = time.time()
        self._log_verdict(block)
        await spool_until_written(self.spool, block)
        if self._owing(block) and block.status != REJECTED:
            task = self._tasks.start(f"late-{block.hash}", lambda: self._catch_up(block, warned))
            self.catch_ups.add(task)
            task.add_done_callback(self.catch_ups.discard)
        else:
            self._busy.pop(block.hash, None)
        if self.on_final is not None:
            await self.on_final(block)

    async def _catch_up(self, block: FoundBlock, warned: set[str]) -> None:
        """Offer a finished block to the nodes that were down when it was found."""
        deadline = time.monotonic() + CATCH_UP_SECONDS
        delay = 1.0
        written = dict(block.answers)
        try:
            while self._owing(block) and time.monotonic() < deadline:
                await self.nodes.wait_for_change(delay)
                delay = min(delay * 2, self.max_backoff)
                await self._submit_round(block, warned)
                if block.answers != written:
                    written = dict(block.answers)
                    await spool_until_written(self.spool, block)
        finally:
            self._busy.pop(block.hash, None)

    async def _judge(self, block: FoundBlock) -> None:
        order = {c.name: i for i, c in enumerate(self.nodes.clients)}
        answers = sorted(block.answers.items(), key=lambda item: order.get(item[0], len(order)))
        accepting = [a for _, a in answers if a in ACCEPTING_ANSWERS]
        if accepting:
            best = min(accepting, key=ACCEPTING_ANSWERS.index)
            block.answer = best
            others = {n: a for n, a in answers if a not in ACCEPTING_ANSWERS}
            if others:
                log.warning("nodes disagree on block %s: %s", block.hash, dict(answers))
            # Accepted, or known to a node: confirm with the hash at that height.
            block.in_best_chain = await self._in_best_chain(block)
            if best == "inconclusive" and not block.in_best_chain:
                block.status = ORPHANED
            else:
                block.status = ACCEPTED
        else:
            block.answer = answers[0][1] if answers else None
            block.status = REJECTED

    async def _in_best_chain(self, block: FoundBlock) -> bool:
        delay = 0.5
        for _ in range(5):
            confirmed = await self.nodes.confirm(block.height, block.hash)
            if confirmed is not None:
                return confirmed
            await asyncio.sleep(delay)  # no node could answer: try a few times
            delay *= 2
        return False

    def _log_verdict(self, block: FoundBlock) -> None:
        waited = (block.final_at or time.time()) - block.found_at
        if block.status == ACCEPTED:
            log.warning(
                "BLOCK ACCEPTED height=%d hash=%s worker=%s answer=%s in_best_chain=%s "
                "answers=%s after %.1f s",
                block.height, block.hash, block.worker, block.answer, block.in_best_chain,
                block.answers, waited,
            )
        else:
            log.error(
                "BLOCK %s height=%d hash=%s worker=%s answer=%s answers=%s after %.1f s",
                block.status.upper(), block.height, block.hash, block.worker, block.answer,
                block.answers, waited,
            )
