"""The stats SQLite file: its schema and migrations, loading it into records and writing a batch of
changes in one transaction. Every `Store` method runs on the tracker's one writer thread."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import Best, BlockRecord, Bucket, WorkerStats

log = logging.getLogger(__name__)


class StatsError(Exception):
    """The stats database cannot be used; the message says why."""


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
    # 1 -> 2: the protocol (Stratum V1 or V2) a worker last mined with; older rows were V1
    """
    ALTER TABLE workers ADD COLUMN protocol TEXT NOT NULL DEFAULT 'v1';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# The columns a record is written to and read from; the record's fields have the same names.
WORKER_COLUMNS = (
    "name", "address", "first_seen", "last_share_at", "accepted", "rejected", "stale", "diff_sum",
    "protocol",
)
BLOCK_COLUMNS = (
    "hash", "height", "found_at", "worker", "address", "reward", "status", "answer",
    "in_best_chain", "confirmations", "updated_at",
)
BEST_COLUMNS = ("kind", "name", "best_ever", "best_ever_at", "best_round", "best_round_at")

Row = tuple[Any, ...]


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return (
        f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})"
    )


# Rows are taken on the event loop (a copy of the record as it is now) and written later on the
# writer thread, so a record can keep changing while its row is written.
def worker_row(w: WorkerStats) -> Row:
    return tuple(getattr(w, c) for c in WORKER_COLUMNS)


def block_row(b: BlockRecord) -> Row:
    return tuple(getattr(b, c) for c in BLOCK_COLUMNS)


def best_row(kind: str, name: str, best: Best) -> Row:
    return (kind, name, best.ever, best.ever_at, best.round, best.round_at)


@dataclass
class Batch:
    """Everything to write in one flush."""

    buckets: dict[tuple[str, int], Bucket] = field(default_factory=dict)
    workers: list[Row] = field(default_factory=list)
    bests: list[Row] = field(default_factory=list)
    blocks: list[Row] = field(default_factory=list)
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
    """What earlier runs recorded, as records."""

    workers: list[WorkerStats]
    bests: list[tuple[str, str, Best]]  # kind, name, best
    buckets: list[tuple[str, int, Bucket]]  # worker, minute, counts; oldest first
    blocks: list[BlockRecord]  # in the order found


def _fields(row: sqlite3.Row, columns: tuple[str, ...]) -> dict[str, Any]:
    return {c: row[c] for c in columns}


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
        """Every worker, best share and block, and the share buckets from `since_minute` on."""
        db = self._db()
        blocks = []
        for row in db.execute("SELECT * FROM blocks ORDER BY found_at"):
            block = BlockRecord(**_fields(row, BLOCK_COLUMNS))
            block.in_best_chain = bool(block.in_best_chain)  # stored as 0 or 1
            blocks.append(block)
        return Loaded(
            workers=[
                WorkerStats(**_fields(row, WORKER_COLUMNS))
                for row in db.execute("SELECT * FROM workers")
            ],
            bests=[
                (row["kind"], row["name"], Best(
                    row["best_ever"], row["best_ever_at"], row["best_round"], row["best_round_at"]
                ))
                for row in db.execute("SELECT * FROM best_shares")
            ],
            buckets=[
                (row["worker"], row["minute"], Bucket(
                    row["accepted"], row["rejected"], row["stale"], row["diff_sum"],
                    row["diff_sq"],
                ))
                for row in db.execute(
                    "SELECT * FROM share_buckets WHERE minute >= ? ORDER BY minute",
                    (since_minute,),
                )
            ],
            blocks=blocks,
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
            db.executemany(_insert("workers", WORKER_COLUMNS), batch.workers)
            db.executemany(_insert("best_shares", BEST_COLUMNS), batch.bests)
            db.executemany(_insert("blocks", BLOCK_COLUMNS), batch.blocks)
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
