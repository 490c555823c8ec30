"""A connection's invalid shares per minute, counted the same way for V1 and SV2: past
`[stratum] max_invalid_shares_per_minute` the connection is closed (a broken miner, or a
flood), and the miners on other connections never notice it."""

from __future__ import annotations

INVALID_WINDOW_SECONDS = 60.0
# Stale shares count too, except within STALE_GRACE_SECONDS of a connection's first job on a
# new block: every honest miner sends a few then (work already in flight), and never a stream
# of them otherwise.
STALE_GRACE_SECONDS = 30.0


class CountsInvalidShares:
    """Counted rejects in the current minute of one connection. A mixin, so that its three
    fields live in the connection itself (an idle V1 connection's memory is counted in bytes:
    a separate object would add ~50 to each)."""

    __slots__ = ("invalid_window_start", "invalid_count", "stale_grace_until")

    def start_invalid_count(self, now: float) -> None:
        self.invalid_window_start = now
        self.invalid_count = 0  # counted rejects since invalid_window_start
        self.stale_grace_until = 0.0  # stale shares before this (monotonic) are not counted

    def grace_stale_shares(self, now: float) -> None:
        """The connection was sent its first job on a new previous block."""
        self.stale_grace_until = now + STALE_GRACE_SECONDS

    def invalid_over_limit(self, limit: int, now: float, stale: bool = False) -> bool:
        """Count one reject (a stale one only after the grace); True once this minute's count
        is past `limit`."""
        if stale and now < self.stale_grace_until:
            return False
        if now - self.invalid_window_start >= INVALID_WINDOW_SECONDS:
            self.invalid_window_start = now
            self.invalid_count = 0
        self.invalid_count += 1
        return self.invalid_count > limit
