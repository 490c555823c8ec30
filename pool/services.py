"""What a miner session needs from the pool around it, defined once for every protocol.

A session (Stratum V1 today) talks only to these services. In one process they are the local
objects (`app.Pool` wires them); in a `[stratum] workers` process they are thin proxies that
send typed messages (`pool.messages`) to the main process, which hands the same facts to the
same local services. Either way a found block goes through one `BlockIntake`
(`pool.blocks`) in the process that holds it first, which spools it once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Collection, Iterator
from typing import TYPE_CHECKING, Protocol

from .events import MinerView

if TYPE_CHECKING:
    from .config import StratumConfig
    from .events import Events, ShareView
    from .jobs import JobManager, Template
    from .shares import Share

log = logging.getLogger(__name__)


class AddressRefused(Exception):
    """A payout address that cannot be mined to, with the reason for the miner."""


class PayoutResolver(Protocol):
    async def resolve_payout(self, address: str) -> bytes:
        """The output script paying `address`; AddressRefused (with the reason for the miner)
        when it cannot be mined to."""


class Miner(MinerView, Protocol):
    """A miner's connection as the share sink sees it."""

    @property
    def extranonce1(self) -> bytes: ...  # unique across all processes while it is connected


class Finder(Miner, Protocol):
    """The connection a block was found on, as the found block records it."""

    @property
    def username(self) -> str: ...  # as first authorized


class ShareSink(Protocol):
    def share_accepted(self, session: Miner, share: ShareView, difficulty: float) -> None:
        """An accepted share, judged at `difficulty`."""

    def share_rejected(self, session: Miner, code: int, reason: str) -> None:
        """A rejected share (Stratum error `code`)."""


class BlockSink(Protocol):
    def block_found(self, session: Finder, share: Share) -> Awaitable[None] | None:
        """Take a found block; an awaitable means: answer the miner once it is done (spooled)."""


class JobSource(Protocol):
    """The running Stratum config and the jobs built from the current template."""

    config: StratumConfig
    jobs: JobManager


class PoolServices(JobSource, PayoutResolver, ShareSink, BlockSink, Protocol):
    """Everything a session calls: one object, so a session holds one reference."""


class Broadcaster(Protocol):
    def broadcast(self, clean: bool) -> int:
        """Send every miner a job of the current template; returns how many were sent one."""


class MinerServer(Broadcaster, Protocol):
    """One protocol's miners (the V1 server or worker group, the SV2 server)."""

    @property
    def sessions(self) -> Collection[Miner]: ...  # open connections (SV2: channels)

    def apply_config(self, config: StratumConfig) -> int:
        """A reloaded [stratum]; returns how many connections or channels it closed."""


class AllMiners:
    """Every protocol's miners as one (V1, and SV2 when it is on): new jobs, a reloaded
    config, and the live list of open connections the API reads."""

    def __init__(self, *parts: MinerServer) -> None:
        self.parts = list(parts)
        self.sessions = LiveSessions(self.parts)

    def broadcast(self, clean: bool) -> int:
        return sum(part.broadcast(clean) for part in self.parts)

    def apply_config(self, config: StratumConfig) -> int:
        return sum(part.apply_config(config) for part in self.parts)


class LiveSessions(Collection[Miner]):
    """Every part's open connections, read live (no copy)."""

    def __init__(self, parts: list[MinerServer]) -> None:
        self._parts = parts

    def __len__(self) -> int:
        return sum(len(part.sessions) for part in self._parts)

    def __iter__(self) -> Iterator[Miner]:
        for part in self._parts:
            yield from part.sessions

    def __contains__(self, item: object) -> bool:
        return any(item is miner for miner in self)


class ShareTally:
    """The local share sink: counts shares (what the API's snapshot notices change by) and tells
    the observers (stats, metrics, alerts)."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self.accepted = 0
        self.rejected = 0

    def share_accepted(self, session: Miner, share: ShareView, difficulty: float) -> None:
        self.accepted += 1
        self.events.share(session, share, difficulty)

    def share_rejected(self, session: Miner, code: int, reason: str) -> None:
        self.rejected += 1
        self.events.reject(session, code, reason)


def install_template(
    jobs: JobManager, miners: Broadcaster, template: Template, coinbase_tag: bytes | None = None
) -> bool:
    """Make `template` the current one and send its jobs to the miners; True when it builds on
    a new previous block (clean)."""
    started = time.perf_counter()
    if coinbase_tag is not None:
        jobs.coinbase_tag = coinbase_tag
    clean = jobs.set_template(template)
    sent = miners.broadcast(clean)
    if clean and sent:
        log.info(
            "sent height %d jobs to %d miner(s) in %.1f ms",
            template.height, sent, 1000 * (time.perf_counter() - started),
        )
    return clean
