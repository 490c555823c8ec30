"""Hashrate from shares: pure arithmetic on a worker's records, no I/O, no clock of its own.

Hashrate over a window is Σdifficulty·2³² / seconds, where seconds is the window or, if the
worker started later (or the pool was restarted within a short window), the time observed. Its
±1σ band is 1/√n for n equal-difficulty shares; with varying difficulty, n is the effective
number (Σd)²/Σd².
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .records import BUCKET_SECONDS, WorkerStats

ONE_DIFFICULTY = 2**32
RAW_SECONDS = 600  # windows up to this long are computed from individual shares
WINDOWS: dict[str, int] = {"1m": 60, "10m": 600, "1h": 3600, "24h": 86_400}
HISTORY_BIN_SECONDS = 600
HISTORY_SECONDS = 86_400


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


def _recent_rate(w: WorkerStats, window: int, now: float, started_at: float) -> Estimate:
    # Individual shares are kept in memory only since this run (`started_at`) started.
    start = max(now - window, w.first_seen, started_at)
    inside = []
    for at, d in reversed(w.recent):
        if at <= now - window:
            break
        inside.append(d)
    return estimate(sum(inside), sum(d * d for d in inside), len(inside), now - start)


def _bucket_rate(w: WorkerStats, window: int, now: float) -> Estimate:
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
    return estimate(total, sq, count, now - start)


def worker_rates(w: WorkerStats, now: float, started_at: float) -> dict[str, Estimate]:
    """A worker's hashrate over each of WINDOWS, at `now`, in a run that started at
    `started_at`."""
    return {
        label: _recent_rate(w, window, now, started_at) if window <= RAW_SECONDS
        else _bucket_rate(w, window, now)
        for label, window in WINDOWS.items()
    }


def history(
    w: WorkerStats, now: float, bin_seconds: int = HISTORY_BIN_SECONDS
) -> list[float | None]:
    """Hashrate per `bin_seconds` over the last 24 h, oldest first; None for the time before the
    worker started (no data, which is not the same as no hashrate)."""
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
