"""A connection's invalid shares per minute, counted the same way for V1 and SV2: past
`[stratum] max_invalid_shares_per_minute` the connection is closed (a broken miner, or a
flood), and the miners on other connections never notice it."""

from __future__ import annotations

INVALID_WINDOW_SECONDS = 60.0
# Stale shares count too, except within STALE_GRACE_SECONDS of a connection's first job on a
# new block: every honest miner sends a few then (work already in flight), and never a stream
# of them otherwise.
STALE_GRACE_SECONDS = 30.0


class InvalidShares:
    """Counted rejects in the current minute of one connection."""

    __slots__ = ("window_start", "count", "stale_grace_until")

    def __init__(self, now: float) -> None:
        self.window_start = now
        self.count = 0  # counted rejects since window_start
        self.stale_grace_until = 0.0  # stale shares before this (monotonic) are not counted

    def new_block(self, now: float) -> None:
        """The connection was sent its first job on a new previous block."""
        self.stale_grace_until = now + STALE_GRACE_SECONDS

    def over_limit(self, limit: int, now: float, stale: bool = False) -> bool:
        """Count one reject (a stale one only after the grace); True once this minute's count
        is past `limit`."""
        if stale and now < self.stale_grace_until:
            return False
        if now - self.window_start >= INVALID_WINDOW_SECONDS:
            self.window_start = now
            self.count = 0
        self.count += 1
        return self.count > limit
