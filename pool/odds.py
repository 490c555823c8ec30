"""Honest solo-mining odds from the network difficulty D and a measured hashrate H.

Pure arithmetic, no I/O. One hash meets the network target with probability ~1/(D·2³²), so:

- the network's hashrate is D·2³²/600 (one block per 600 s on average);
- the chance that any one block is ours is H / (D·2³²/600);
- the expected time to our block is D·2³²/H;
- the chance of at least one block within t seconds is 1 − e^(−t·H/(D·2³²)).

Years are Julian (365.25 days), months a twelfth of that. Example (pinned in the tests): 100 TH/s
against a 600 EH/s network wins 1 block in 6,000,000 (0.0000167 %): an expected wait of about
114 years, not the 11.4 years sometimes quoted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

HASHES_PER_DIFFICULTY = 2**32
BLOCK_SECONDS = 600.0
DAY = 86_400.0
YEAR = 365.25 * DAY
MONTH = YEAR / 12


def hashes_per_block(difficulty: float) -> float:
    """Expected hashes to find one block at network difficulty D: D·2³²."""
    if difficulty <= 0:
        raise ValueError("network difficulty must be positive")
    return difficulty * HASHES_PER_DIFFICULTY


def network_hashrate(difficulty: float) -> float:
    """The hashrate that finds one block per 600 s at difficulty D: D·2³²/600 (H/s)."""
    return hashes_per_block(difficulty) / BLOCK_SECONDS


def block_probability(hashrate: float, difficulty: float) -> float:
    """The chance that any one block is ours: H over the network hashrate (at most 1)."""
    if hashrate <= 0:
        return 0.0
    return min(1.0, hashrate / network_hashrate(difficulty))


def expected_seconds(hashrate: float, difficulty: float) -> float:
    """Expected time to our first block, D·2³²/H (infinite with no hashrate)."""
    if hashrate <= 0:
        return math.inf
    return hashes_per_block(difficulty) / hashrate


def chance_within(seconds: float, hashrate: float, difficulty: float) -> float:
    """Probability of at least one block within `seconds`: 1 − e^(−t·H/(D·2³²))."""
    if hashrate <= 0 or seconds <= 0:
        return 0.0
    return -math.expm1(-seconds * hashrate / hashes_per_block(difficulty))


@dataclass(frozen=True)
class Odds:
    hashrate: float
    network_difficulty: float
    network_hashrate: float
    block_probability: float  # that one block is ours
    one_in_blocks: float | None  # 1 / block_probability (None with no hashrate)
    expected_seconds: float | None  # None: never (no hashrate)
    chance_day: float
    chance_month: float
    chance_year: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def odds(hashrate: float, difficulty: float) -> Odds:
    p = block_probability(hashrate, difficulty)
    expected = expected_seconds(hashrate, difficulty)
    return Odds(
        hashrate=hashrate,
        network_difficulty=difficulty,
        network_hashrate=network_hashrate(difficulty),
        block_probability=p,
        one_in_blocks=1 / p if p > 0 else None,
        expected_seconds=expected if math.isfinite(expected) else None,
        chance_day=chance_within(DAY, hashrate, difficulty),
        chance_month=chance_within(MONTH, hashrate, difficulty),
        chance_year=chance_within(YEAR, hashrate, difficulty),
    )
