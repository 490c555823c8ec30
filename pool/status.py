"""`solopool status`: the pool, worker and odds summary, read from the running pool's API."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from .config import EXIT_CONFIG, ConfigError, config_file, load_config, local_url
from .units import (
    format_difficulty,
    format_duration,
    format_hashrate,
    format_hashrate_band,
    format_one_in,
    format_probability,
)

TIMEOUT = 5.0


class ApiUnreachable(Exception):
    pass


def api_url(args: argparse.Namespace) -> str:
    """--url, else http://[api] host:port from the config (a wildcard host means this machine)."""
    url: str | None = getattr(args, "url", None)
    if url:
        return url.rstrip("/")
    config = load_config(config_file(args.config))
    return local_url(config.api.host, config.api.port)


def fetch(base: str, path: str) -> Any:
    try:
        with urllib.request.urlopen(base + path, timeout=TIMEOUT) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise ApiUnreachable(f"{base}{path} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ApiUnreachable(f"cannot reach the pool's API at {base}: {reason}") from None


def _rate(item: dict[str, Any] | None) -> str:
    if not item:
        return "-"
    return format_hashrate_band(float(item.get("hashrate") or 0), item.get("band"))


def _ago(t: float | None, now: float) -> str:
    return "never" if not t else f"{format_duration(now - t)} ago"


def render(pool: dict[str, Any], workers: list[dict[str, Any]]) -> str:
    now = float(pool.get("time") or 0)
    node = pool.get("node") or {}
    node_text = (
        f"ok ({1000 * float(node.get('rpc_latency') or 0):.0f} ms)"
        if node.get("ok") else f"DOWN: {node.get('error') or 'no answer'}"
    )
    rates = pool.get("hashrate") or {}
    shares = pool.get("shares") or {}
    best = pool.get("best_share") or {}
    blocks = pool.get("blocks") or {}
    lines = [
        f"solopool {pool.get('version', '')} on {pool.get('network')}, up "
        f"{format_duration(pool.get('uptime'))}",
        f"  node        {node_text}",
        f"  height      {pool.get('height')}   network difficulty "
        f"{format_difficulty(pool.get('difficulty'))} "
        f"(~{format_hashrate(float(pool.get('network_hashrate') or 0))})",
        f"  work        {format_duration(pool.get('template_age'))} old",
        f"  hashrate    {_rate(rates.get('10m'))} (10 min)   {_rate(rates.get('1h'))} (1 h)   "
        f"{_rate(rates.get('24h'))} (24 h)",
        f"  miners      {pool.get('miners', 0)} connected, {pool.get('workers_online', 0)} "
        f"worker(s) online",
        f"  shares      {shares.get('accepted', 0):,} accepted, {shares.get('stale', 0):,} stale, "
        f"{shares.get('rejected', 0):,} rejected",
        f"  best share  {format_difficulty(best.get('all_time'))} all time, "
        f"{format_difficulty(best.get('since_block'))} since the last block",
        f"  blocks      {blocks.get('found', 0)} found ({blocks.get('accepted', 0)} accepted, "
        f"{blocks.get('orphaned', 0)} orphaned, {blocks.get('rejected', 0)} rejected)",
    ]
    sv2 = pool.get("stratum_v2")
    if sv2:
        lines.append(
            f"  stratum v2  port {sv2.get('port')}, authority public key "
            f"{sv2.get('authority_pubkey')}"
        )
    odds = pool.get("odds")
    if odds:
        p = float(odds.get("block_probability") or 0)
        lines += [
            "",
            f"odds at {format_hashrate(float(odds.get('hashrate') or 0))} "
            f"({odds.get('window', '1h')} estimate):",
            f"  each block  {format_one_in(p)} ({format_probability(p)})",
            f"  expected    one block every {format_duration(odds.get('expected_seconds'))}",
            f"  chance      {format_probability(float(odds.get('chance_day') or 0))} in a day, "
            f"{format_probability(float(odds.get('chance_month') or 0))} in a month, "
            f"{format_probability(float(odds.get('chance_year') or 0))} in a year",
        ]
    lines += ["", f"workers ({len(workers)}):"]
    if not workers:
        lines.append("  none yet: point a miner at this pool with your address as the username")
    for w in workers:
        rates = w.get("hashrate") or {}
        state = "online " if w.get("online") else "offline"
        wbest = w.get("best_share") or {}
        lines.append(
            f"  {state} {w.get('name')} ({str(w.get('protocol') or 'v1').upper()})\n"
            f"          {_rate(rates.get('10m'))} (10 min), {_rate(rates.get('24h'))} (24 h); "
            f"difficulty {format_difficulty(w.get('difficulty'))}; "
            f"{w.get('accepted', 0):,} accepted, {w.get('stale', 0):,} stale, "
            f"{w.get('rejected', 0):,} rejected; best {format_difficulty(wbest.get('all_time'))}"
            f"; last share {_ago(w.get('last_share_at'), now)}"
        )
    return "\n".join(lines)


def main_status(args: argparse.Namespace) -> int:
    try:
        base = api_url(args)
    except ConfigError as exc:
        print(f"solopool status: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        pool = fetch(base, "/api/pool")
        workers = fetch(base, "/api/workers").get("workers", [])
    except ApiUnreachable as exc:
        print(
            f"solopool status: {exc} (is solopool running, with [api] enabled? else pass --url)",
            file=sys.stderr,
        )
        return 1
    print(render(pool, workers))
    return 0
