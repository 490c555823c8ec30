"""One SV2 mining channel: its payout, the pool's part of the extranonce, and its difficulty,
kept by the same vardiff controller and [stratum] bounds a V1 session uses.

Each job remembers the difficulty in force when it was sent: SetTarget applies to the jobs
after it, and a share is judged at its job's difficulty or the current one, whichever is
lower (as V1 judges per job). A channel is also what the share and block sinks see as the
miner.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from ..config import StratumConfig
from ..consensus.target import MAX_TARGET, target_to_difficulty
from ..jobs import EXTRANONCE2_SIZE, Job
from ..shares import RootCache, share_target
from ..vardiff import VarDiff, round_difficulty
from .codec import u256_to_int

JOBS_PER_CHANNEL = 16  # jobs a channel may still submit to (same previous block)
STANDARD_EXTRANONCE2 = bytes(EXTRANONCE2_SIZE)  # a standard channel mines headers only


class MaxTargetOutOfRange(ValueError):
    """A miner's maximum_target asks for a difficulty above the pool's [stratum] maximum."""


def difficulty_for_hash_rate(hash_rate: float, share_interval: float) -> float | None:
    """The difficulty at which `hash_rate` (hashes per second) finds one share per
    `share_interval` seconds; None for a rate that says nothing (zero, negative, not finite)."""
    if not math.isfinite(hash_rate) or hash_rate <= 0:
        return None
    return hash_rate * share_interval / 2**32


def difficulty_floor(max_target: bytes, maximum_difficulty: float) -> float:
    """The lowest difficulty whose target is at or below the miner's `max_target` (a U256);
    MaxTargetOutOfRange when that is above `maximum_difficulty`."""
    target = min(u256_to_int(max_target), MAX_TARGET)
    if target <= 0:
        raise MaxTargetOutOfRange("maximum_target is zero")
    floor = target_to_difficulty(target)
    while share_target(floor) > target:  # float rounding: step up until the target fits
        floor = math.nextafter(floor, math.inf)
    if floor > maximum_difficulty:
        raise MaxTargetOutOfRange(
            f"maximum_target needs difficulty {floor:.6g}, above max_difficulty "
            f"{maximum_difficulty:g}"
        )
    return floor


class Channel:
    """One mining channel. A standard channel's extranonce is fixed (so it has its own merkle
    root per job); an extended one rolls the last EXTRANONCE2_SIZE bytes itself."""

    protocol = "sv2"

    def __init__(
        self, channel_id: int, extended: bool, username: str, address: str,
        payout_script: bytes, extranonce1: bytes, cfg: StratumConfig, user_agent: str,
        now: float,
    ) -> None:  # fmt: skip
        self.channel_id = channel_id
        self.extended = extended
        self.username = username
        self.address: str | None = address
        self.worker = username  # ADDRESS.worker, as a V1 session: stats and blocks key by it
        self.payout_script = payout_script
        self.extranonce1 = extranonce1
        self.extranonce2 = STANDARD_EXTRANONCE2  # an extended channel's miner sends its own
        self.vardiff = VarDiff(
            cfg.share_interval_seconds, cfg.min_difficulty, cfg.max_difficulty, now
        )
        self.floor = 0.0  # from the miner's maximum_target: the difficulty never goes below
        self.difficulty: float = round_difficulty(cfg.start_difficulty)
        self.user_agent = user_agent
        self.connected_at = time.monotonic()
        self.mining = True
        self.closed = False
        self.accepted = 0
        # job_id -> (job, difficulty when it was sent)
        self.jobs: OrderedDict[int, tuple[Job, float]] = OrderedDict()
        self.seen: dict[bytes, None] = {}  # header hashes since the last new block
        self.roots = RootCache()  # its last merkle root: shares reuse it (one per job on a
        # standard channel, one per extranonce an extended channel rolls)

    def remembered_difficulty(self) -> tuple[str, float] | None:
        """What the difficulty memory keeps of this channel when it closes (as of a V1
        session): only a channel that did work."""
        return (self.username, self.difficulty) if self.accepted else None

    @property
    def target(self) -> int:
        return share_target(self.difficulty)

    def add_job(self, job_id: int, job: Job, clean: bool) -> None:
        if clean:
            self.jobs.clear()
            self.seen.clear()
        self.jobs[job_id] = (job, self.difficulty)
        while len(self.jobs) > JOBS_PER_CHANNEL:
            self.jobs.popitem(last=False)

    def limit_target(self, max_target: bytes, cfg: StratumConfig) -> None:
        """Honour the miner's maximum_target (MaxTargetOutOfRange if the pool cannot)."""
        self.floor = difficulty_floor(max_target, cfg.max_difficulty)
        self.vardiff.minimum = max(cfg.min_difficulty, self.floor)

    def clamp(self, difficulty: float, network_difficulty: float | None) -> float:
        """`difficulty` within the [stratum] bounds and at or above the miner's floor."""
        return max(self.vardiff.clamp(difficulty, network_difficulty), self.floor)

    def apply_config(self, cfg: StratumConfig) -> None:
        """A reloaded [stratum]: new bounds and share interval (the caller sends a difficulty
        now outside them)."""
        self.vardiff.interval = cfg.share_interval_seconds
        self.vardiff.minimum = max(cfg.min_difficulty, self.floor)
        self.vardiff.maximum = cfg.max_difficulty
