"""Per-connection variable difficulty aiming at one share every `share_interval` seconds."""

from __future__ import annotations

import math

RETARGET_SHARES = 20  # re-estimate after this many shares...
RETARGET_SECONDS = 60.0  # ...or this long, whichever comes first
MAX_STEP = 4.0  # change by at most this factor per step
TOLERANCE = 2.0  # leave the difficulty alone while the rate is within this factor


def round_difficulty(value: float) -> float | int:
    """Whole numbers at or above 1 (sent as JSON integers); 3 significant digits below."""
    if value < 1:
        value = round(value, 2 - math.floor(math.log10(value)))
    return int(round(value)) if value >= 1 else value


class VarDiff:
    __slots__ = ("interval", "minimum", "maximum", "window_start", "shares", "difficulty_sum")

    def __init__(self, interval: float, minimum: float, maximum: float, now: float) -> None:
        self.interval = interval
        self.minimum = minimum
        self.maximum = maximum
        self.window_start = now
        self.shares = 0
        self.difficulty_sum = 0.0

    def clamp(self, difficulty: float, network_difficulty: float | None = None) -> float | int:
        ceiling = self.maximum
        if network_difficulty is not None and network_difficulty >= self.minimum:
            # No point asking for shares harder than a block. Regtest's network difficulty is
            # below any useful share difficulty; there the ceiling does not apply.
            ceiling = min(ceiling, network_difficulty)
        return round_difficulty(max(self.minimum, min(ceiling, difficulty)))

    def reset(self, now: float) -> None:
        self.window_start = now
        self.shares = 0
        self.difficulty_sum = 0.0

    def on_share(
        self, difficulty: float, current: float, now: float, network_difficulty: float | None
    ) -> float | int | None:
        """Record an accepted share; return a new difficulty when one is due."""
        self.shares += 1
        self.difficulty_sum += difficulty
        elapsed = now - self.window_start
        if self.shares < RETARGET_SHARES and elapsed < RETARGET_SECONDS:
            return None
        return self._retarget(current, now, network_difficulty)

    def on_tick(
        self, current: float, now: float, network_difficulty: float | None
    ) -> float | int | None:
        """Periodic check that lowers the difficulty of a miner that has gone quiet."""
        elapsed = now - self.window_start
        if elapsed < max(RETARGET_SECONDS, 3 * self.interval):
            return None
        return self._retarget(current, now, network_difficulty)

    def _retarget(
        self, current: float, now: float, network_difficulty: float | None
    ) -> float | int | None:
        elapsed = max(now - self.window_start, 1e-3)
        # Difficulty-1 shares per second; with no shares assume just under one so it falls.
        rate = self.difficulty_sum / elapsed if self.shares else 0.5 * current / elapsed
        wanted = rate * self.interval
        self.reset(now)
        if current / TOLERANCE <= wanted <= current * TOLERANCE:
            return None
        wanted = max(current / MAX_STEP, min(current * MAX_STEP, wanted))
        new = self.clamp(wanted, network_difficulty)
        return None if new == current else new
