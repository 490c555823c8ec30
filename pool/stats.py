"""What the miners did: share counts, best shares, hashrate estimates and found blocks, kept in
memory for the API and persisted to one SQLite file in data_dir so a restart loses nothing.

Nothing here touches the disk on the event loop: shares are aggregated in memory (per worker,
per 1-minute bucket) and a single writer thread flushes the changes every few seconds in one
transaction. Buckets older than `KEEP_DAYS` are pruned; all-time totals and best shares live in
their own rows.

Hashrate over a window is Σdifficulty·2³² / seconds, where seconds is the window or, if the
worker started later (or the pool was restarted within a short window), the time observed. Its
±1σ band is 1/√n for n equal-difficulty shares; with varying difficulty, n is the effective
number (Σd)²/Σd².
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import logging
import math
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .blocks import ACCEPTED, ORPHANED, PENDING, FoundBlock
from .events import PoolListener
from .node import NodeError, NodeRPCError
from .shares import ERR_STALE
from .stratum.session import split_username
from .tasks import supervised

if TYPE_CHECKING:
    from .events import MinerView, ShareView
    from .jobs import Template

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUCKET_SECONDS = 60
RAW_SECONDS = 600  # windows up to this long are computed from individual shares
WINDOWS: dict[str, int] = {"1m": 60, "10m": 600, "1h": 3600, "24h": 86_400}
KEEP_DAYS = 7  # share buckets older than this are pruned from the database
FLUSH_SECONDS = 5.0
CONFIRM_SECONDS = 60.0
MATURITY = 100  # confirmations before a coinbase can be spent
WATCH_ORPHANED_SECONDS = 86_400.0
MAX_WORKERS_PER_ADDRESS = 256  # more distinct names than this are counted as "<address>._other"
MAX_RAW_SHARES = 100_000  # per worker, however fast it submits
MAX_WORKERS = 10_000  # workers kept, memory and database (the least recently active go first)
WORKER_RETENTION_SECONDS = 30 * 86_400.0  # a worker without a share for this long is forgotten
EVICT_FRACTION = 0.05  # a full table drops this share of its workers at once (amortised O(1))
HISTORY_BIN_SECONDS = 600
HISTORY_SECONDS = 86_400
ONE_DIFFICULTY = 2**32


class StatsError(Exception):
    """The stats database cannot be used; the message says why."""


class RPC(Protocol):
    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any: ...


# --- estimates ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    hashrate: float  # H/s
    band: float | None  # relative ±1σ; None without shares
    shares: int
    seconds: float  # the time the estimate covers

    def to_json(self) -> dict[str, Any]:
        return {
            "hashrate": self.hashrate,
            "band": self.band,
            "shares": self.shares,
            "seconds": round(self.seconds, 3),
        }


def estimate(diff_sum: float, diff_sq: float, shares: int, seconds: float) -> Estimate:
    """Hashrate from `shares` accepted shares whose difficulties sum to `diff_sum` (and whose
    squares sum to `diff_sq`) over `seconds`."""
    if seconds <= 0 or diff_sum <= 0 or shares <= 0:
        return Estimate(0.0, None, shares, max(seconds, 0.0))
    n_eff = diff_sum * diff_sum / diff_sq if diff_sq > 0 else float(shares)
    return Estimate(diff_sum * ONE_DIFFICULTY / seconds, 1 / math.sqrt(n_eff), shares, seconds)


def combine(estimates: Iterable[Estimate]) -> Estimate:
    """The sum of independent estimates; their 1σ errors add in quadrature."""
    total = 0.0
    variance = 0.0
    shares = 0
    seconds = 0.0
    for e in estimates:
        total += e.hashrate
        if e.band is not None:
            variance += (e.hashrate * e.band) ** 2
        shares += e.shares
        seconds = max(seconds, e.seconds)
    if total <= 0:
        return Estimate(0.0, None, shares, seconds)
    return Estimate(total, math.sqrt(variance) / total, shares, seconds)


# --- in-memory records ----------------------------------------------------------------------------


class Bucket:
    __slots__ = ("accepted", "rejected", "stale", "diff_sum", "diff_sq")

    def __init__(
        self,
        accepted: int = 0,
        rejected: int = 0,
        stale: int = 0,
        diff_sum: float = 0.0,
        diff_sq: float = 0.0,
    ) -> None:
        self.accepted = accepted
        self.rejected = rejected
        self.stale = stale
        self.diff_sum = diff_sum
        self.diff_sq = diff_sq

    def add_share(self, difficulty: float) -> None:
        self.accepted += 1
        self.diff_sum += difficulty
        self.diff_sq += difficulty * difficulty


@dataclass
class Best:
    """Best share difficulty: all-time and since the last block (the "round")."""

    ever: float = 0.0
    ever_at: float | None = None
    round: float = 0.0
    round_at: float | None = None

    def update(self, difficulty: float, at: float) -> None:
        if difficulty > self.ever:
            self.ever, self.ever_at = difficulty, at
        if difficulty > self.round:
            self.round, self.round_at = difficulty, at

    def new_round(self) -> None:
        self.round, self.round_at = 0.0, None

    def to_json(self) -> dict[str, Any]:
        return {
            "all_time": self.ever or None,
            "all_time_at": self.ever_at,
            "since_block": self.round or None,
            "since_block_at": self.round_at,
        }


@dataclass
class WorkerStats:
    name: str  # the full username, ADDRESS.worker
    address: str
    first_seen: float
    last_share_at: float | None = None
    accepted: int = 0
    rejected: int = 0  # rejected for any reason but stale
    stale: int = 0
    diff_sum: float = 0.0
    best: Best = field(default_factory=Best)
    recent: deque[tuple[float, float]] = field(default_factory=deque)
    buckets: dict[int, Bucket] = field(default_factory=dict)

    @property
    def short_name(self) -> str:
        return split_username(self.name)[1]


@dataclass
class AddressStats:
    address: str
    best: Best = field(default_factory=Best)
    workers: set[str] = field(default_factory=set)


@dataclass
class BlockRecord:
    hash: str
    height: int
    found_at: float
    worker: str
    address: str
    reward: int | None  # satoshis paid by the coinbase (subsidy + fees)
    status: str = PENDING
    answer: str | None = None
    in_best_chain: bool = False
    confirmations: int | None = None
    updated_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "height": self.height,
            "found_at": self.found_at,
            "worker": self.worker,
            "address": self.address,
            "reward": self.reward,
            "status": self.status,
            "answer": self.answer,
            "in_best_chain": self.in_best_chain,
            "confirmations": self.confirmations,
            "mature": self.confirmations is not None and self.confirmations >= MATURITY,
        }


BlockChange = Callable[[BlockRecord, str], None]


def coinbase_value(block_hex: str) -> int | None:
    """The sum of the coinbase's outputs in a serialized block, or None if it cannot be read."""

    def varint(raw: bytes, pos: int) -> tuple[int, int]:
        first = raw[pos]
        if first < 0xFD:
            return first, pos + 1
        size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        return int.from_bytes(raw[pos + 1 : pos + 1 + size], "little"), pos + 1 + size

    try:
        raw = bytes.fromhex(block_hex)
        _, pos = varint(raw, 80)
        pos += 4  # version
        if raw[pos] == 0 and raw[pos + 1] == 1:  # segwit marker and flag
            pos += 2
        inputs, pos = varint(raw, pos)
        for _ in range(inputs):
            pos += 36
            length, pos = varint(raw, pos)
            pos += length + 4
        outputs, pos = varint(raw, pos)
        total = 0
        for _ in range(outputs):
            total += int.from_bytes(raw[pos : pos + 8], "little")
            length, pos = varint(raw, pos + 8)
            pos += length
        if pos > len(raw):
            return None
        return total
    except (ValueError, IndexError, KeyError):
        return None


def _last_active(last_share_at: float | None, first_seen: float) -> float:
    return last_share_at if last_share_at is not None else first_seen


# --- the database (used only on the writer thread) ---------------------------------------------

MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE workers (
        name TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_share_at REAL,
        accepted INTEGER NOT NULL DEFAULT 0,
        rejected INTEGER NOT NULL DEFAULT 0,
        stale INTEGER NOT NULL DEFAULT 0,
        diff_sum REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE best_shares (
        kind TEXT NOT NULL,          -- 'worker', 'address' or 'pool'
        name TEXT NOT NULL,
        best_ever REAL NOT NULL,
        best_ever_at REAL,
        best_round REAL NOT NULL,
        best_round_at REAL,
        PRIMARY KEY (kind, name)
    );
    CREATE TABLE share_buckets (
        worker TEXT NOT NULL,
        minute INTEGER NOT NULL,     -- unix time of the bucket's start
        accepted INTEGER NOT NULL,
        rejected INTEGER NOT NULL,
        stale INTEGER NOT NULL,
        diff_sum REAL NOT NULL,
        diff_sq REAL NOT NULL,
        PRIMARY KEY (worker, minute)
    );
    CREATE INDEX share_buckets_minute ON share_buckets (minute);
    CREATE TABLE blocks (
        hash TEXT PRIMARY KEY,
        height INTEGER NOT NULL,
        found_at REAL NOT NULL,
        worker TEXT NOT NULL,
        address TEXT NOT NULL,
        reward INTEGER,
        status TEXT NOT NULL,
        answer TEXT,
        in_best_chain INTEGER NOT NULL,
        confirmations INTEGER,
        updated_at REAL NOT NULL
    );
    """,
]


@dataclass
class Batch:
    """Everything to write in one flush."""

    buckets: dict[tuple[str, int], Bucket] = field(default_factory=dict)
    workers: list[tuple[Any, ...]] = field(default_factory=list)
    bests: list[tuple[Any, ...]] = field(default_factory=list)
    blocks: list[tuple[Any, ...]] = field(default_factory=list)
    prune_before: int | None = None
    forget_workers: list[str] = field(default_factory=list)  # rows deleted before any writes
    forget_addresses: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (
            self.buckets or self.workers or self.bests or self.blocks or self.prune_before
            or self.forget_workers or self.forget_addresses
        )


@dataclass
class Loaded:
    workers: list[sqlite3.Row]
    bests: list[sqlite3.Row]
    buckets: list[sqlite3.Row]
    blocks: list[sqlite3.Row]


class Store:
    """The SQLite file. Every method runs on the one writer thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    def open(self) -> int:
        """Open (creating or migrating the schema); returns the schema version found."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            found = self._migrate(db)
        except BaseException:
            db.close()
            raise
        self.db = db
        return found

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> int:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            db.execute("INSERT INTO schema_version (version) VALUES (0)")
            db.commit()
            version = 0
        else:
            version = int(row[0])
        if version > len(MIGRATIONS):
            raise StatsError(
                f"the stats database has schema version {version}, newer than this solopool "
                f"knows ({len(MIGRATIONS)}); upgrade solopool or move the file away"
            )
        found = version
        while version < len(MIGRATIONS):
            # One transaction per step: the schema change and its version number together.
            db.executescript(
                f"BEGIN; {MIGRATIONS[version]}; "
                f"UPDATE schema_version SET version = {version + 1}; COMMIT;"
            )
            version += 1
            log.info("stats database migrated to schema version %d", version)
        return found

    def load(self, since_minute: int) -> Loaded:
        db = self._db()
        return Loaded(
            workers=db.execute("SELECT * FROM workers").fetchall(),
            bests=db.execute("SELECT * FROM best_shares").fetchall(),
            buckets=db.execute(
                "SELECT * FROM share_buckets WHERE minute >= ? ORDER BY minute", (since_minute,)
            ).fetchall(),
            blocks=db.execute("SELECT * FROM blocks ORDER BY found_at").fetchall(),
        )

    def write(self, batch: Batch) -> None:
        db = self._db()
        with db:
            forget = [(name,) for name in batch.forget_workers]
            db.executemany("DELETE FROM workers WHERE name = ?", forget)
            db.executemany("DELETE FROM share_buckets WHERE worker = ?", forget)
            db.executemany("DELETE FROM best_shares WHERE kind = 'worker' AND name = ?", forget)
            db.executemany(
                "DELETE FROM best_shares WHERE kind = 'address' AND name = ?",
                [(a,) for a in batch.forget_addresses],
            )
            db.executemany(
                """INSERT INTO share_buckets
                       (worker, minute, accepted, rejected, stale, diff_sum, diff_sq)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (worker, minute) DO UPDATE SET
                       accepted = accepted + excluded.accepted,
                       rejected = rejected + excluded.rejected,
                       stale = stale + excluded.stale,
                       diff_sum = diff_sum + excluded.diff_sum,
                       diff_sq = diff_sq + excluded.diff_sq""",
                [
                    (w, m, b.accepted, b.rejected, b.stale, b.diff_sum, b.diff_sq)
                    for (w, m), b in batch.buckets.items()
                ],
            )
            db.executemany(
                """INSERT OR REPLACE INTO workers
                       (name, address, first_seen, last_share_at, accepted, rejected, stale,
                        diff_sum)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                batch.workers,
            )
            db.executemany(
                """INSERT OR REPLACE INTO best_shares
                       (kind, name, best_ever, best_ever_at, best_round, best_round_at)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                batch.bests,
            )
            db.executemany(
                """INSERT OR REPLACE INTO blocks
                       (hash, height, found_at, worker, address, reward, status, answer,
                        in_best_chain, confirmations, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                batch.blocks,
            )
            if batch.prune_before is not None:
                db.execute("DELETE FROM share_buckets WHERE minute < ?", (batch.prune_before,))

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def _db(self) -> sqlite3.Connection:
        if self.db is None:
            raise StatsError("the stats database is not open")
        return self.db


# --- the tracker ----------------------------------------------------------------------------------


class Stats(PoolListener):
    """Listens to the pool's events; answers the API; persists through one writer thread."""

    def __init__(
        self,
        path: Path,
        node: RPC | None = None,
        clock: Callable[[], float] = time.time,
        flush_seconds: float = FLUSH_SECONDS,
        confirm_seconds: float = CONFIRM_SECONDS,
        max_workers: int = MAX_WORKERS,
        retention_seconds: float = WORKER_RETENTION_SECONDS,
    ) -> None:
        self.path = path
        self.node = node
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
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending = Batch()
        self._dirty_workers: set[str] = set()
        self._dirty_bests: set[tuple[str, str]] = set()
        self._dirty_blocks: set[str] = set()
        self._flush_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
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
        oldest = self.clock() - self.retention_seconds
        rows = []
        for row in loaded.workers:
            # No accepted share (rows written by older versions on a reject), or long idle.
            active = _last_active(row["last_share_at"], row["first_seen"])
            if row["accepted"] <= 0 or active < oldest:
                self._forget_workers.add(row["name"])
            else:
                rows.append(row)
        if len(rows) > self.max_workers:
            rows.sort(key=lambda r: _last_active(r["last_share_at"], r["first_seen"]))
            self._forget_workers.update(r["name"] for r in rows[: len(rows) - self.max_workers])
            rows = rows[len(rows) - self.max_workers :]
        for row in rows:
            w = WorkerStats(
                name=row["name"],
                address=row["address"],
                first_seen=row["first_seen"],
                last_share_at=row["last_share_at"],
                accepted=row["accepted"],
                rejected=row["rejected"],
                stale=row["stale"],
                diff_sum=row["diff_sum"],
            )
            self.workers[w.name] = w
            self._address(w.address).workers.add(w.name)
        for row in loaded.bests:
            best = Best(row["best_ever"], row["best_ever_at"], row["best_round"],
                        row["best_round_at"])
            kind, name = row["kind"], row["name"]
            if kind == "pool":
                self.pool_best = best
            elif kind == "address":
                if name in self.addresses:
                    self.addresses[name].best = best
                else:
                    self._forget_addresses.add(name)
            elif kind == "worker" and name in self.workers:
                self.workers[name].best = best
        for row in loaded.buckets:
            owner = self.workers.get(row["worker"])
            if owner is not None:
                owner.buckets[row["minute"]] = Bucket(
                    row["accepted"], row["rejected"], row["stale"], row["diff_sum"],
                    row["diff_sq"],
                )
        for row in loaded.blocks:
            self.blocks[row["hash"]] = BlockRecord(
                hash=row["hash"],
                height=row["height"],
                found_at=row["found_at"],
                worker=row["worker"],
                address=row["address"],
                reward=row["reward"],
                status=row["status"],
                answer=row["answer"],
                in_best_chain=bool(row["in_best_chain"]),
                confirmations=row["confirmations"],
                updated_at=row["updated_at"],
            )

    def start(self) -> None:
        """Start the periodic flush and the confirmation watch."""
        self._tasks.append(supervised("stats-flush", self._flush_loop))
        if self.node is not None:
            self._tasks.append(supervised("stats-confirm", self._confirm_loop))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
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

    async def _confirm_loop(self) -> None:
        while True:
            await asyncio.sleep(self.confirm_seconds)
            try:
                await self.check_confirmations()
            except Exception:
                log.exception("stats: confirmation check failed")

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
        for name in self._dirty_workers:
            w = self.workers[name]
            batch.workers.append(
                (w.name, w.address, w.first_seen, w.last_share_at, w.accepted, w.rejected,
                 w.stale, w.diff_sum)
            )
        for kind, name in self._dirty_bests:
            best = self._best(kind, name)
            if best is not None:
                batch.bests.append(
                    (kind, name, best.ever, best.ever_at, best.round, best.round_at)
                )
        for block_hash in self._dirty_blocks:
            b = self.blocks[block_hash]
            batch.blocks.append(
                (b.hash, b.height, b.found_at, b.worker, b.address, b.reward, b.status,
                 b.answer, int(b.in_best_chain), b.confirmations, b.updated_at)
            )
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
            into = self._pending.buckets.setdefault(key, Bucket())
            into.accepted += b.accepted
            into.rejected += b.rejected
            into.stale += b.stale
            into.diff_sum += b.diff_sum
            into.diff_sq += b.diff_sq
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
            count, self.workers.values(), key=lambda w: _last_active(w.last_share_at, w.first_seen)
        )
        log.info("stats: %d workers tracked; forgetting the %d least recently active",
                 len(self.workers), len(idle))
        for w in idle:
            self._forget(w)

    def _age_out(self, now: float) -> None:
        oldest = now - self.retention_seconds
        for w in [w for w in self.workers.values()
                  if _last_active(w.last_share_at, w.first_seen) < oldest]:
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

    def _watched(self, now: float) -> list[BlockRecord]:
        def watch(b: BlockRecord) -> bool:
            if b.status == PENDING:  # no verdict yet; the node may have it already
                return True
            if b.status == ACCEPTED:
                return b.confirmations is None or b.confirmations < MATURITY
            return b.status == ORPHANED and now - b.found_at < WATCH_ORPHANED_SECONDS

        watched = [b for b in self.blocks.values() if watch(b)]
        return watched[-50:]  # the newest: a handful of calls, however many blocks

    async def check_confirmations(self) -> None:
        """Ask the node how deep each recent block is; notice orphans and maturity."""
        if self.node is None:
            return
        for b in self._watched(self.clock()):
            try:
                header = await self.node.call("getblockheader", b.hash)
            except NodeRPCError as exc:
                log.debug("stats: getblockheader %s: %s", b.hash, exc)
                continue
            except NodeError as exc:
                log.debug("stats: node unavailable for confirmations: %s", exc)
                return
            confirmations = int(header.get("confirmations", 0))
            change = None
            if confirmations < 0 and b.status == ACCEPTED:
                b.status, b.in_best_chain, change = ORPHANED, False, "orphaned"
            elif confirmations > 0 and b.status == ORPHANED:
                b.status, b.in_best_chain, change = ACCEPTED, True, "back_in_chain"
            elif confirmations >= MATURITY and (b.confirmations or 0) < MATURITY:
                change = "matured"
            # A verdict recorded while the node was away can say "not in the best chain"
            # with the confirmations unchanged: in_best_chain is compared on its own.
            if (
                confirmations == b.confirmations and (confirmations > 0) == b.in_best_chain
                and change is None
            ):
                continue
            b.confirmations = confirmations
            b.in_best_chain = confirmations > 0
            b.updated_at = self.clock()
            self._dirty_blocks.add(b.hash)
            if change is not None:
                for callback in self.on_block_change:
                    try:
                        callback(b, change)
                    except Exception:
                        log.exception("stats: block change callback failed")

    # --- queries (for the API) ------------------------------------------------------------------

    def worker_rates(self, w: WorkerStats, now: float | None = None) -> dict[str, Estimate]:
        now = self.clock() if now is None else now
        rates: dict[str, Estimate] = {}
        for label, window in WINDOWS.items():
            if window <= RAW_SECONDS:
                # Individual shares are kept in memory only since this run started.
                start = max(now - window, w.first_seen, self.started_at)
                inside = []
                for at, d in reversed(w.recent):
                    if at <= now - window:
                        break
                    inside.append(d)
                total = sum(inside)
                sq = sum(d * d for d in inside)
                count = len(inside)
            else:
                aligned = math.ceil((now - window) / BUCKET_SECONDS) * BUCKET_SECONDS
                start = max(aligned, w.first_seen)
                total = sq = 0.0
                count = 0
                for minute in reversed(w.buckets):  # created in time order
                    if minute < aligned:
                        break
                    b = w.buckets[minute]
                    total += b.diff_sum
                    sq += b.diff_sq
                    count += b.accepted
            rates[label] = estimate(total, sq, count, now - start)
        return rates

    def rates_for(
        self, workers: Iterable[WorkerStats], now: float | None = None
    ) -> dict[str, Estimate]:
        now = self.clock() if now is None else now
        per_worker = [self.worker_rates(w, now) for w in workers]
        return {label: combine(r[label] for r in per_worker) for label in WINDOWS}

    def history(
        self, w: WorkerStats, now: float | None = None, bin_seconds: int = HISTORY_BIN_SECONDS
    ) -> list[float | None]:
        """Hashrate per `bin_seconds` over the last 24 h, oldest first; None for the time
        before the worker started (no data, which is not the same as no hashrate)."""
        now = self.clock() if now is None else now
        end = math.ceil(now / bin_seconds) * bin_seconds
        bins = HISTORY_SECONDS // bin_seconds
        first = end - bins * bin_seconds
        sums = [0.0] * bins
        for minute, b in w.buckets.items():
            index = (minute - first) // bin_seconds
            if 0 <= index < bins:
                sums[int(index)] += b.diff_sum
        out: list[float | None] = []
        for i, total in enumerate(sums):
            lo = max(first + i * bin_seconds, w.first_seen)
            hi = min(first + (i + 1) * bin_seconds, now)
            seconds = hi - lo
            if seconds <= 0:
                out.append(None)
            else:
                out.append(total * ONE_DIFFICULTY / seconds if total > 0 else 0.0)
        return out

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
