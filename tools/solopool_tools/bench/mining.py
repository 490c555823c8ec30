"""Real shares for the submit run's `--valid-ratio`: a share target met by hashing here, with a
SHA-256 midstate, shared by the V1 and SV2 simulated miners."""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

MAX_HASH = (1 << 256) - 1


class ValidCounters(Protocol):
    valid_mined: int
    valid_failed: int
    valid_infeasible: int


class ValidShares:
    """One miner's header being mined: `take` says whether the next submit is a real share
    (spread evenly at `ratio`), `mine` finds a nonce for it after `prepare`."""

    __slots__ = ("mid", "tail12", "target", "feasible", "credit")

    def __init__(self) -> None:
        self.mid: Any = None
        self.tail12 = b""
        self.target = 0
        self.feasible = False
        self.credit = 0.0

    @property
    def prepared(self) -> bool:
        return self.mid is not None

    def forget(self) -> None:
        """A new job or target: prepare again before the next real share."""
        self.mid = None

    def take(self, ratio: float) -> bool:
        self.credit += ratio
        if self.credit >= 1.0:
            self.credit -= 1.0
            return True
        return False

    def prepare(self, header: bytes, target: int, max_hashes: int) -> None:
        """The 80-byte header (any nonce) and the target its shares must meet."""
        self.mid = hashlib.sha256(header[:64])
        self.tail12 = header[64:76]
        self.target = target
        # A target needing more than an eighth of the hash budget per share is not attempted.
        self.feasible = (MAX_HASH + 1) // (target + 1) <= max_hashes // 8

    def mine(self, nonce: int, counters: ValidCounters | None, max_hashes: int) -> int:
        """The first nonce after `nonce` whose header hash meets the target (or the last one
        tried, counted as failed; or the next one, counted as infeasible)."""
        if not self.feasible:
            if counters is not None:
                counters.valid_infeasible += 1
            return (nonce + 1) & 0xFFFFFFFF
        mid = self.mid
        tail = self.tail12
        target = self.target
        sha256 = hashlib.sha256
        for _ in range(max_hashes):
            nonce = (nonce + 1) & 0xFFFFFFFF
            h = mid.copy()
            h.update(tail + nonce.to_bytes(4, "little"))
            if int.from_bytes(sha256(h.digest()).digest(), "little") <= target:
                if counters is not None:
                    counters.valid_mined += 1
                return nonce
        if counters is not None:
            counters.valid_failed += 1
        return nonce
