"""The tracker: listens to the pool's events, keeps what the miners did in memory (per worker,
per 1-minute bucket) for the API, and persists it through one writer thread.

Nothing here touches the disk on the event loop: shares are aggregated in memory and the writer
thread flushes the changes every few seconds in one transaction. Buckets older than `KEEP_DAYS`
are pruned; all-time totals and best shares live in their own rows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..events import PoolListener
from ..found import ACCEPTED, FoundBlock
from ..shares import ERR_STALE
from ..tasks import Supervisor
from .confirmations import CONFIRM_SECONDS, ConfirmationWatcher
from .estimates import (
    HISTORY_BIN_SECONDS,
    HISTORY_SECONDS,
    RAW_SECONDS,
    WINDOWS,
    Estimate,
    combine,
    history,
    worker_rates,
)
from .records import (
    BUCKET_SECONDS,
    AddressStats,
    Best,
    BlockChange,
    BlockRecord,
    Bucket,
    WorkerStats,
    coinbase_value,
)
from .store import Batch, Loaded, StatsError, Store, best_row, block_row, worker_row

if TYPE_CHECKING:
    from ..events import MinerView, ShareView
    from ..jobs import Template
    from ..node import NodeSet

log = logging.getLogger(__name__)

KEEP_DAYS = 7  # share buckets older than this are pruned from the database
FLUSH_SECONDS = 5.0
MAX_WORKERS_PER_ADDRESS = 256  # more distinct names than this are counted as "<address>._other"
MAX_RAW_SHARES = 100_000  # per worker, however fast it submits
MAX_WORKERS = 10_000  # workers kept, memory and database (the least recently active go first)
WORKER_RETENTION_SECONDS = 30 * 86_400.0  # a worker without a share for this long is forgotten
EVICT_FRACTION = 0.05  # a full table drops this share of its workers at once (amortised O(1))


class Stats(PoolListener):
    """Listens to the pool's events; answers the API; persists through one writer thread;
    follows found blocks' confirmations through `node`."""

    def __init__(
        self,
        path: Path,
        node: NodeSet | None = None,
        clock: Callable[[], float] = time.time,
        flush_seconds: float = FLUSH_SECONDS,
        confirm_seconds: float = CONFIRM_SECONDS,
        max_workers: int = MAX_WORKERS,
        retention_seconds: float = WORKER_RETENTION_SECONDS,
        tasks: Supervisor | None = None,
    ) -> None:
        self.path = path
        self.clock = clock
        self.flush_seconds = flush_seconds
        self.confirm_seconds = confirm_seconds
        self.store = Store(path)
        self.started_at = clock()
        self.workers: dict[str, WorkerStats] = {}
        self.addresses: dict[str, AddressStats] = {}
        self.pool_best = Best()
        self.blocks: dict[str, BlockRecord] = {}  # by hash, in order found
        self.template_at: float | None = None
        self.max_workers = max_workers
        self.retention_seconds = retention_seconds
        self.rejected_unattributed = 0  # rejects before authorize
        # Rejects by workers with no accepted share yet (not tracked: strangers cost nothing)
        self.unattributed = Bucket()
        self._forget_workers: set[str] = set()
        self._forget_addresses: set[str] = set()
        self.on_block_change: list[BlockChange] = []
        self.confirmations = ConfirmationWatcher(
            node, self.blocks, clock, self._block_changed, self.on_block_change
        )
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending = Batch()
        self._dirty_workers: set[str] = set()
        self._dirty_bests: set[tuple[str, str]] = set()
        self._dirty_blocks: set[str] = set()
        self._flush_lock = asyncio.Lock()
        self._tasks = tasks if tasks is not None else Supervisor("stats")
        self._last_prune = 0.0
        self.opened = False

    # --- lifecycle ------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="stats-db"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        """Open the database and load what earlier runs recorded."""
        now = self.clock()
        self.started_at = now
        try:
            await self._run(self.store.open)
            since = int(now - HISTORY_SECONDS - HISTORY_BIN_SECONDS) // 60 * 60
            loaded: Loaded = await self._run(self.store.load, since)
        except sqlite3.Error as exc:
            raise StatsError(f"cannot use the stats database {self.path}: {exc}") from None
        self._load(loaded)
        self.opened = True
        log.info(
            "stats: %d worker(s), %d block(s) from %s",
            len(self.workers), len(self.blocks), self.path,
        )

    def _load(self, loaded: Loaded) -> None:
        for w in self._kept_workers(loaded.workers):
            self.workers[w.name] = w
            self._address(w.address).workers.add(w.name)
        for kind, name, best in loaded.bests:
            if kind == "pool":
                self.pool_best = best
            elif kind == "address":
                if name in self.addresses:
                    self.addresses[name].best = best
                else:
                    self._forget_addresses.add(name)
            elif kind == "worker" and name in self.workers:
                self.workers[name].best = best
        for name, minute, bucket in loaded.buckets:
            owner = self.workers.get(name)
            if owner is not None:
                owner.buckets[minute] = bucket
        for block in loaded.blocks:
            self.blocks[block.hash] = block

    def _kept_workers(self, loaded: list[WorkerStats]) -> list[WorkerStats]:
        """The loaded workers still worth tracking (the others are deleted at the next flush):
        with an accepted share, active within the retention time, the newest `max_workers`."""
        oldest = self.clock() - self.retention_seconds
        kept = []
        for w in loaded:
            # No accepted share (rows written by older versions on a reject), or long idle.
            if w.accepted <= 0 or w.last_active < oldest:
                self._forget_workers.add(w.name)
            else:
                kept.append(w)
        if len(kept) > self.max_workers:
            kept.sort(key=lambda w: w.last_active)
            self._forget_workers.update(w.name for w in kept[: len(kept) - self.max_workers])
            kept = kept[len(kept) - self.max_workers :]
        return kept

    def start(self) -> None:
        """Start the periodic flush and the confirmation watch."""
        self._tasks.start("stats-flush", self._flush_loop)
        if self.confirmations.node is not None:
            self._tasks.start(
                "stats-confirm", lambda: self.confirmations.watch(lambda: self.confirm_seconds)
            )

    async def close(self) -> None:
        await self._tasks.stop()
        if self.opened:
            try:
                await self.flush()
            except (sqlite3.Error, StatsError) as exc:
                log.error("stats: final flush failed: %s", exc)
            await self._run(self.store.close)
            self.opened = False
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except (sqlite3.Error, StatsError) as exc:
                log.error("stats: cannot write to %s: %s (will retry)", self.path, exc)
            except Exception:
                log.exception("stats: flush failed (will retry)")

    # --- flushing -------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write everything recorded since the last flush, in one transaction off the loop."""
        async with self._flush_lock:
            if not self.opened:
                return
            batch = self._take_batch()
            if batch.empty():
                return
            try:
                await self._run(self.store.write, batch)
            except BaseException:
                self._restore(batch)
                raise

    def _take_batch(self) -> Batch:
        batch, self._pending = self._pending, Batch()
        batch.workers = [worker_row(self.workers[name]) for name in self._dirty_workers]
        for kind, name in self._dirty_bests:
            best = self._best(kind, name)
            if best is not None:
                batch.bests.append(best_row(kind, name, best))
        batch.blocks = [block_row(self.blocks[block_hash]) for block_hash in self._dirty_blocks]
        now = self.clock()
        if now - self._last_prune > 3600:
            self._last_prune = now
            batch.prune_before = int(now - KEEP_DAYS * 86_400)
        if batch.prune_before is not None:
            self._age_out(now)
        batch.forget_workers = sorted(self._forget_workers)
        batch.forget_addresses = sorted(self._forget_addresses)
        self._forget_workers = set()
        self._forget_addresses = set()
        self._dirty_workers = set()
        self._dirty_bests = set()
        self._dirty_blocks = set()
        return batch

    def _restore(self, batch: Batch) -> None:
        """A failed write: put the bucket deltas back (rows are rewritten from memory anyway)."""
        for key, b in batch.buckets.items():
            self._pending.buckets.setdefault(key, Bucket()).add(b)
        self._dirty_workers.update(row[0] for row in batch.workers)
        self._dirty_bests.update((row[0], row[1]) for row in batch.bests)
        self._dirty_blocks.update(row[0] for row in batch.blocks)
        # Forgetting twice is harmless; forgetting a worker that came back would not be.
        self._forget_workers.update(n for n in batch.forget_workers if n not in self.workers)
        self._forget_addresses.update(
            a for a in batch.forget_addresses if a not in self.addresses
        )

    def _best(self, kind: str, name: str) -> Best | None:
        if kind == "pool":
            return self.pool_best
        if kind == "address":
            a = self.addresses.get(name)
            return a.best if a is not None else None
        w = self.workers.get(name)
        return w.best if w is not None else None

    # --- events (on the event loop; O(1) per share) ----------------------------------------------

    def _address(self, address: str) -> AddressStats:
        a = self.addresses.get(address)
        if a is None:
            a = self.addresses[address] = AddressStats(address)
        return a

    def _known_worker(self, session: MinerView) -> WorkerStats | None:
        address = session.address
        if address is None:
            return None
        w = self.workers.get(session.worker or address)
        if w is None and address in self.addresses:
            w = self.workers.get(f"{address}._other")
        return w

    def _worker(self, session: MinerView, now: float) -> WorkerStats | None:
        """The worker an accepted share counts for, made at its first one."""
        address = session.address
        if address is None:
            return None
        name = session.worker or address
        w = self.workers.get(name)
        if w is not None:
            return w
        if len(self.workers) >= self.max_workers:
            self._evict(max(1, int(self.max_workers * EVICT_FRACTION)))
        a = self._address(address)
        if len(a.workers) >= MAX_WORKERS_PER_ADDRESS:
            name = f"{address}._other"
            w = self.workers.get(name)
            if w is not None:
                return w
        # The worker started when the connection that first mined for it connected.
        connected = now - max(0.0, time.monotonic() - session.connected_at)
        w = WorkerStats(name=name, address=address, first_seen=min(now, connected))
        self.workers[name] = w
        a.workers.add(name)
        self._dirty_workers.add(name)
        self._forget_workers.discard(name)
        self._forget_addresses.discard(address)
        return w

    def _evict(self, count: int) -> None:
        """Forget the `count` least recently active workers (a full table)."""
        idle = heapq.nsmallest(
            count, self.workers.values(), key=lambda w: w.last_active
        )
        log.info("stats: %d workers tracked; forgetting the %d least recently active",
                 len(self.workers), len(idle))
        for w in idle:
            self._forget(w)

    def _age_out(self, now: float) -> None:
        oldest = now - self.retention_seconds
        for w in [w for w in self.workers.values() if w.last_active < oldest]:
            self._forget(w)

    def _forget(self, w: WorkerStats) -> None:
        del self.workers[w.name]
        self._dirty_workers.discard(w.name)
        self._dirty_bests.discard(("worker", w.name))
        for key in [k for k in self._pending.buckets if k[0] == w.name]:
            del self._pending.buckets[key]
        self._forget_workers.add(w.name)
        a = self.addresses.get(w.address)
        if a is not None:
            a.workers.discard(w.name)
            if not a.workers:
                del self.addresses[w.address]
                self._dirty_bests.discard(("address", w.address))
                self._forget_addresses.add(w.address)

    def _bucket(self, w: WorkerStats, now: float) -> tuple[Bucket, Bucket]:
        minute = int(now) // BUCKET_SECONDS * BUCKET_SECONDS
        live = w.buckets.get(minute)
        if live is None:
            live = w.buckets[minute] = Bucket()
            self._prune_memory(w, now)
        pending = self._pending.buckets.get((w.name, minute))
        if pending is None:
            pending = self._pending.buckets[(w.name, minute)] = Bucket()
        return live, pending

    @staticmethod
    def _prune_memory(w: WorkerStats, now: float) -> None:
        oldest = now - HISTORY_SECONDS - HISTORY_BIN_SECONDS - BUCKET_SECONDS
        for minute in [m for m in w.buckets if m < oldest]:
            del w.buckets[minute]

    def on_share(self, session: MinerView, share: ShareView, difficulty: float) -> None:
        now = self.clock()
        w = self._worker(session, now)
        if w is None:
            return
        w.protocol = session.protocol
        w.accepted += 1
        w.diff_sum += difficulty
        w.last_share_at = now
        w.recent.append((now, difficulty))
        horizon = now - RAW_SECONDS
        while w.recent and (w.recent[0][0] < horizon or len(w.recent) > MAX_RAW_SHARES):
            w.recent.popleft()
        live, pending = self._bucket(w, now)
        live.add_share(difficulty)
        pending.add_share(difficulty)
        self._dirty_workers.add(w.name)

        achieved = share.difficulty
        address = self._address(w.address)
        for kind, name, best in (
            ("worker", w.name, w.best),
            ("address", w.address, address.best),
            ("pool", "", self.pool_best),
        ):
            before = (best.ever, best.round)
            best.update(achieved, now)
            if share.is_block:
                # The block ends the round: "since the last block" starts again from nothing.
                best.new_round()
            if (best.ever, best.round) != before:
                self._dirty_bests.add((kind, name))

    def on_reject(self, session: MinerView, code: int, reason: str) -> None:
        if session.address is None:
            self.rejected_unattributed += 1
            return
        w = self._known_worker(session)
        if w is None:
            # A worker is tracked (and persisted) from its first accepted share only.
            if code == ERR_STALE:
                self.unattributed.stale += 1
            else:
                self.unattributed.rejected += 1
            return
        now = self.clock()
        live, pending = self._bucket(w, now)
        if code == ERR_STALE:
            w.stale += 1
            live.stale += 1
            pending.stale += 1
        else:
            w.rejected += 1
            live.rejected += 1
            pending.rejected += 1
        self._dirty_workers.add(w.name)

    def on_block_found(self, block: FoundBlock) -> None:
        self._record_block(block)

    def on_block_final(self, block: FoundBlock) -> None:
        record = self._record_block(block)
        record.status = block.status
        record.answer = block.answer
        record.in_best_chain = block.in_best_chain
        if block.status == ACCEPTED and block.in_best_chain:
            record.confirmations = max(record.confirmations or 0, 1)
        record.updated_at = self.clock()
        self._dirty_blocks.add(record.hash)

    def _record_block(self, block: FoundBlock) -> BlockRecord:
        record = self.blocks.get(block.hash)
        if record is None:
            record = BlockRecord(
                hash=block.hash,
                height=block.height,
                found_at=block.found_at,
                worker=block.worker,
                address=block.address,
                reward=coinbase_value(block.hex),
                status=block.status,
                answer=block.answer,
                in_best_chain=block.in_best_chain,
                updated_at=self.clock(),
            )
            self.blocks[block.hash] = record
            self._dirty_blocks.add(block.hash)
        return record

    def on_template(self, template: Template, clean: bool) -> None:
        self.template_at = self.clock()

    # --- confirmations --------------------------------------------------------------------------

    async def check_confirmations(self) -> None:
        """Ask the node how deep each recent block is; notice orphans and maturity."""
        await self.confirmations.check()

    def _block_changed(self, record: BlockRecord) -> None:
        self._dirty_blocks.add(record.hash)

    # --- queries (for the API) ------------------------------------------------------------------

    def worker_rates(self, w: WorkerStats, now: float | None = None) -> dict[str, Estimate]:
        return worker_rates(w, self.clock() if now is None else now, self.started_at)

    def rates_for(
        self, workers: Iterable[WorkerStats], now: float | None = None
    ) -> dict[str, Estimate]:
        now = self.clock() if now is None else now
        per_worker = [self.worker_rates(w, now) for w in workers]
        return {label: combine(r[label] for r in per_worker) for label in WINDOWS}

    def history(
        self, w: WorkerStats, now: float | None = None, bin_seconds: int = HISTORY_BIN_SECONDS
    ) -> list[float | None]:
        """Hashrate per `bin_seconds` over the last 24 h, oldest first (see estimates.history)."""
        return history(w, self.clock() if now is None else now, bin_seconds)

    def workers_of(self, address: str) -> list[WorkerStats]:
        a = self.addresses.get(address)
        if a is None:
            return []
        return [self.workers[n] for n in sorted(a.workers) if n in self.workers]

    def blocks_by(self, *, worker: str | None = None, address: str | None = None) -> int:
        return sum(
            1 for b in self.blocks.values()
            if (worker is None or b.worker == worker) and (address is None or b.address == address)
        )

    def totals(
        self, workers: Iterable[WorkerStats], unattributed: bool = False
    ) -> dict[str, Any]:
        """Share counts of `workers` (plus, for the pool, rejects by untracked workers)."""
        accepted = rejected = stale = 0
        if unattributed:
            rejected, stale = self.unattributed.rejected, self.unattributed.stale
        diff_sum = 0.0
        for w in workers:
            accepted += w.accepted
            rejected += w.rejected
            stale += w.stale
            diff_sum += w.diff_sum
        return {"accepted": accepted, "rejected": rejected, "stale": stale, "difficulty": diff_sum}
