"""What the API and /metrics read about all workers and connections, built in the background.

A pool can have thousands of connections and workers. Walking them all on the event loop that
also serves Stratum would delay every miner's answers while a dashboard or a scraper asks. So the
walk hands the event loop back every `YIELD_EVERY` items, and it is done again only when a
request finds the last one older than `SNAPSHOT_SECONDS` or the pool changed since (a share, a
reject, a connection more or less); concurrent requests wait for the same walk. Requests then
read the snapshot and build only what they return (a page of workers, the top workers' metrics).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .events import MinerView, PoolListener, ShareView
from .stats import HISTORY_BIN_SECONDS, WINDOWS, Estimate, Stats, WorkerStats, combine

if TYPE_CHECKING:
    from .jobs import Job, JobManager, Template
    from .node import NodeSet, TemplateSource
    from .services import PayoutResolver

SNAPSHOT_SECONDS = 2.0  # API answers about all workers are at most this old
HISTORY_SNAPSHOT_SECONDS = 60.0  # the 24 h chart changes per 10-minute bin
YIELD_EVERY = 250  # workers or connections handled between yields to the event loop
PROTOCOLS = ("v1", "sv2")  # what MinerView.protocol can be
HISTORY_MAX_WORKERS = 50  # per-worker series in /api/history (the pool's total covers all)

T = TypeVar("T")


class Cached(Generic[T]):
    """A value rebuilt by `build` when older than `ttl` seconds or when `version()` (cheap)
    changed since it was built; one build at a time."""

    def __init__(
        self,
        build: Callable[[], Awaitable[T]],
        ttl: float,
        version: Callable[[], object] = lambda: None,
    ) -> None:
        self._build = build
        self.ttl = ttl
        self._version = version
        self.value: T | None = None
        self._at = -math.inf
        self._built_version: object = None
        self._task: asyncio.Task[T] | None = None

    async def get(self) -> T:
        if (
            self.value is not None
            and time.monotonic() - self._at < self.ttl
            and self._version() == self._built_version
        ):
            return self.value
        if self._task is None:
            self._task = asyncio.ensure_future(self._refresh())
        return await asyncio.shield(self._task)

    async def _refresh(self) -> T:
        try:
            version = self._version()
            value = await self._build()
            self.value, self._at, self._built_version = value, time.monotonic(), version
            return value
        finally:
            self._task = None

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def pause(i: int) -> None:
    """Hand the event loop back every YIELD_EVERY items."""
    if i % YIELD_EVERY == YIELD_EVERY - 1:
        await asyncio.sleep(0)


class Connections(Protocol):
    """Every protocol's open connections: V1 sessions (in this process or in worker processes)
    and SV2 channels."""

    @property
    def sessions(self) -> Collection[MinerView]: ...


@dataclass(frozen=True)
class Sv2Endpoint:
    """Where SV2 miners connect, and the key they check the pool with."""

    port: int
    authority_pubkey: str  # base58check, ready to paste into AxeOS

    def to_json(self) -> dict[str, Any]:
        return {"port": self.port, "authority_pubkey": self.authority_pubkey}


class PoolView(PoolListener):
    """The running pool as the API, /metrics and the Umbrel widget read it: read-only answers
    from the parts app.py wires together, so readers never reach into the pool itself. As a
    listener it counts shares and rejects, which tell when a snapshot is out of date."""

    def __init__(
        self,
        *,
        stats: Stats,
        jobs: JobManager,
        source: TemplateSource,
        nodes: NodeSet,
        connections: Connections,
        payouts: PayoutResolver,
    ) -> None:
        self.stats = stats  # the tracker's query methods; the view never records into it
        self._jobs = jobs
        self._source = source
        self._nodes = nodes
        self._connections = connections
        self._payouts = payouts
        self.stratum_v2: Sv2Endpoint | None = None  # set once the SV2 port listens
        self.started_at = time.time()
        self._changes = 0

    def on_share(self, session: MinerView, share: ShareView, difficulty: float) -> None:
        self._changes += 1

    def on_reject(self, session: MinerView, code: int, reason: str) -> None:
        self._changes += 1

    def version(self) -> object:
        """Changes whenever a share, a reject or a connection more or less changes what the
        API shows of workers."""
        return (self._changes, len(self._connections.sessions))

    @property
    def chain(self) -> str:
        return self._nodes.chain or ""

    @property
    def template(self) -> Template | None:
        return self._jobs.template

    def job_for(self, script: bytes) -> Job:
        return self._jobs.job_for(script)

    async def resolve_payout(self, address: str) -> bytes:
        return await self._payouts.resolve_payout(address)

    @property
    def sessions(self) -> Collection[MinerView]:
        return self._connections.sessions

    @property
    def node_ok(self) -> bool:
        return self._source.node_ok

    @property
    def node_error(self) -> str | None:
        return None if self._source.node_ok else self._source.last_error

    @property
    def rpc_latency(self) -> float:
        return self._nodes.primary.last_latency

    def uptime(self) -> float:
        return time.time() - self.started_at


def last_active(w: WorkerStats) -> float:
    return w.last_share_at if w.last_share_at is not None else w.first_seen


@dataclass
class Snapshot:
    time: float  # the stats clock when it was taken
    connections: int
    by_protocol: dict[str, int]  # open connections per protocol ("v1", "sv2"), both always
    mining: int
    groups: dict[str, list[MinerView]]  # worker name -> its mining connections
    live_addresses: set[str]  # payout addresses of every authorized connection
    order: list[str]  # every worker name (tracked or connected), online first, then by name
    workers_total: int  # workers tracked (with an accepted share)
    pool_rates: dict[str, Estimate]
    totals: dict[str, Any]
    top: list[WorkerStats] = field(default_factory=list)  # most recently active, for /metrics


async def take_snapshot(pool: PoolView, top_count: int) -> Snapshot:
    stats = pool.stats
    now = stats.clock()
    sessions: list[MinerView] = list(pool.sessions)
    groups: dict[str, list[MinerView]] = {}
    live: set[str] = set()
    mining = 0
    by_protocol = dict.fromkeys(PROTOCOLS, 0)
    for i, s in enumerate(sessions):
        by_protocol[s.protocol] = by_protocol.get(s.protocol, 0) + 1
        if s.address is not None:
            live.add(s.address)
            if s.mining and not s.closed:
                mining += 1
                groups.setdefault(s.worker or s.address, []).append(s)
        await pause(i)
    workers = list(stats.workers.values())
    per_worker: list[dict[str, Estimate]] = []
    for i, w in enumerate(workers):
        per_worker.append(stats.worker_rates(w, now))
        await pause(i)
    pool_rates = {label: combine(r[label] for r in per_worker) for label in WINDOWS}
    del per_worker
    totals = stats.totals(workers, unattributed=True)
    totals["unauthorized"] = stats.rejected_unattributed
    tracked = {w.name for w in workers}
    names = [w.name for w in workers] + [n for n in groups if n not in tracked]
    names.sort(key=lambda n: (n not in groups, n))
    top = heapq.nlargest(top_count, workers, key=last_active) if top_count else []
    return Snapshot(
        time=now,
        connections=len(sessions),
        by_protocol=by_protocol,
        mining=mining,
        groups=groups,
        live_addresses=live,
        order=names,
        workers_total=len(workers),
        pool_rates=pool_rates,
        totals=totals,
        top=top,
    )


@dataclass
class History:
    bin_seconds: int
    end: float
    pool: list[float | None]
    workers: dict[str, list[float | None]]
    time: float


async def take_history(pool: PoolView, max_workers: int = HISTORY_MAX_WORKERS) -> History:
    """Hashrate per bin over 24 h: the pool's sum over every worker, and the series of the
    `max_workers` most recently active."""
    stats = pool.stats
    now = stats.clock()
    workers = list(stats.workers.values())
    shown = {w.name for w in heapq.nlargest(max_workers, workers, key=last_active)}
    series: dict[str, list[float | None]] = {}
    total: list[float | None] = []
    for i, w in enumerate(workers):
        one = stats.history(w, now)
        if any(one):
            if not total:
                total = [None] * len(one)
            for b, v in enumerate(one):
                if v is not None:
                    total[b] = (total[b] or 0.0) + v
            if w.name in shown:
                series[w.name] = one
        await pause(i)
    end = math.ceil(now / HISTORY_BIN_SECONDS) * HISTORY_BIN_SECONDS
    return History(HISTORY_BIN_SECONDS, end, total, series, now)
