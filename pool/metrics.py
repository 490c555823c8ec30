"""Prometheus metrics at /metrics, read at scrape time from the pool's read-only view
(`PoolView`, pool/snapshot.py).

Per-worker series cover the `[api] metrics_max_workers` most recently active workers (a pool
with thousands of workers must not make each scrape megabytes); the pool's totals cover all of
them. Both come from the API's snapshot (pool/snapshot.py), refreshed before each scrape.

Each Pool has its own CollectorRegistry (never the process-global one), so several pools in one
process, as in the tests, each export only their own numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .found import ACCEPTED, ORPHANED, PENDING, REJECTED

if TYPE_CHECKING:
    from .snapshot import Cached, PoolView, Snapshot


class PoolCollector(Collector):
    def __init__(self, pool: PoolView, snapshots: Cached[Snapshot]) -> None:
        self.pool = pool
        self.snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshots.value
        if snap is None:
            return  # not scraped through the API yet
        pool = self.pool
        stats = pool.stats
        now = stats.clock()

        shares = CounterMetricFamily(
            "solopool_shares", "Shares by worker and result (all time)", labels=["worker", "result"]
        )
        difficulty = CounterMetricFamily(
            "solopool_accepted_difficulty",
            "Sum of the difficulty of accepted shares (x 2^32 = hashes)",
            labels=["worker"],
        )
        hashrate = GaugeMetricFamily(
            "solopool_hashrate_hashes_per_second",
            "Estimated hashrate from accepted shares", labels=["worker", "window"],
        )
        band = GaugeMetricFamily(
            "solopool_hashrate_band_ratio",
            "Relative 1-sigma error of the hashrate estimate", labels=["worker", "window"],
        )
        best = GaugeMetricFamily(
            "solopool_best_share_difficulty", "Best share difficulty", labels=["worker", "scope"]
        )
        info = GaugeMetricFamily(
            "solopool_worker_info", "Always 1: the protocol a worker mines (or last mined) with",
            labels=["worker", "protocol"],
        )
        for w in snap.top:
            live = snap.groups.get(w.name)
            info.add_metric([w.name, live[0].protocol if live else w.protocol], 1)
            shares.add_metric([w.name, "accepted"], w.accepted)
            shares.add_metric([w.name, "stale"], w.stale)
            shares.add_metric([w.name, "rejected"], w.rejected)
            difficulty.add_metric([w.name], w.diff_sum)
            for window, e in stats.worker_rates(w, now).items():
                hashrate.add_metric([w.name, window], e.hashrate)
                if e.band is not None:
                    band.add_metric([w.name, window], e.band)
            best.add_metric([w.name, "all_time"], w.best.ever)
            best.add_metric([w.name, "since_block"], w.best.round)
        # Pool-wide, with no worker label: rejects before authorize, and by workers with no
        # accepted share (those are not tracked per worker).
        shares.add_metric(["", "unauthorized"], stats.rejected_unattributed)
        shares.add_metric(["", "stale"], stats.unattributed.stale)
        shares.add_metric(["", "rejected"], stats.unattributed.rejected)
        yield shares
        yield difficulty
        yield hashrate
        yield band
        yield best
        yield info

        pool_rates = snap.pool_rates
        pool_hashrate = GaugeMetricFamily(
            "solopool_pool_hashrate_hashes_per_second", "Pool hashrate estimate", labels=["window"]
        )
        for window, e in pool_rates.items():
            pool_hashrate.add_metric([window], e.hashrate)
        yield pool_hashrate
        yield GaugeMetricFamily(
            "solopool_pool_best_share_difficulty", "Best share of the pool (all time)",
            value=stats.pool_best.ever,
        )
        totals = snap.totals
        pool_shares = CounterMetricFamily(
            "solopool_pool_shares", "Shares of the whole pool by result (workers tracked now)",
            labels=["result"],
        )
        for result in ("accepted", "stale", "rejected", "unauthorized"):
            pool_shares.add_metric([result], totals[result])
        yield pool_shares
        yield GaugeMetricFamily(
            "solopool_workers", "Workers tracked (with an accepted share)",
            value=snap.workers_total,
        )
        yield GaugeMetricFamily(
            "solopool_workers_online", "Workers with a mining connection", value=len(snap.groups)
        )

        blocks = GaugeMetricFamily(
            "solopool_blocks", "Blocks found, by the node's answer", labels=["result"]
        )
        counts = {s: 0 for s in (PENDING, ACCEPTED, REJECTED, ORPHANED)}
        for b in stats.blocks.values():
            counts[b.status] = counts.get(b.status, 0) + 1
        for status, n in counts.items():
            blocks.add_metric([status], n)
        yield blocks
        yield CounterMetricFamily(
            "solopool_blocks_found", "Blocks found (all time)", value=len(stats.blocks)
        )

        yield GaugeMetricFamily(
            "solopool_connected_miners", "Connections that are mining", value=snap.mining
        )
        yield GaugeMetricFamily(
            "solopool_connections", "Open Stratum connections", value=snap.connections
        )
        by_protocol = GaugeMetricFamily(
            "solopool_protocol_connections",
            "Open connections by protocol (an SV2 channel counts as one)", labels=["protocol"],
        )
        for protocol, n in snap.by_protocol.items():
            by_protocol.add_metric([protocol], n)
        yield by_protocol
        template = pool.template
        if template is not None:
            yield GaugeMetricFamily(
                "solopool_network_difficulty", "Network difficulty",
                value=template.network_difficulty,
            )
            yield GaugeMetricFamily(
                "solopool_block_height", "Height of the block being mined",
                value=template.height,
            )
        if stats.template_at is not None:
            yield GaugeMetricFamily(
                "solopool_template_age_seconds", "Time since the current work was installed",
                value=max(0.0, now - stats.template_at),
            )
        yield GaugeMetricFamily(
            "solopool_rpc_latency_seconds", "Duration of the latest RPC call to the node",
            value=pool.rpc_latency,
        )
        yield GaugeMetricFamily(
            "solopool_node_up", "1 while the node answers", value=1 if pool.node_ok else 0
        )
        yield GaugeMetricFamily(
            "solopool_uptime_seconds", "Seconds since the pool started",
            value=pool.uptime(),
        )


def make_registry(pool: PoolView, snapshots: Cached[Snapshot]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(pool, snapshots))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
