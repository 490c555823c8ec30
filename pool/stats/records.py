"""What is remembered of workers, addresses and found blocks: plain records, kept in memory by the
tracker and written to SQLite by the store."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..consensus.block import coinbase_value as block_coinbase_value
from ..found import PENDING

BUCKET_SECONDS = 60  # shares are counted per worker per minute
MATURITY = 100  # confirmations before a coinbase can be spent


@dataclass(slots=True)
class Bucket:
    """Share counts of one worker in one minute."""

    accepted: int = 0
    rejected: int = 0
    stale: int = 0
    diff_sum: float = 0.0
    diff_sq: float = 0.0

    def add_share(self, difficulty: float) -> None:
        self.accepted += 1
        self.diff_sum += difficulty
        self.diff_sq += difficulty * difficulty

    def add(self, other: Bucket) -> None:
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.stale += other.stale
        self.diff_sum += other.diff_sum
        self.diff_sq += other.diff_sq


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
    protocol: str = "v1"  # what it last mined with: "v1" or "sv2"
    best: Best = field(default_factory=Best)
    recent: deque[tuple[float, float]] = field(default_factory=deque)
    buckets: dict[int, Bucket] = field(default_factory=dict)

    @property
    def short_name(self) -> str:
        # The name is the address alone, or the address, one separator and the worker.
        return self.name[len(self.address) + 1 :]

    @property
    def last_active(self) -> float:
        return self.last_share_at if self.last_share_at is not None else self.first_seen


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
    try:
        return block_coinbase_value(bytes.fromhex(block_hex))
    except ValueError:  # not hex, or not a block (BlockParseError)
        return None
