"""Percentiles, the machine description, and the human-readable tables."""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of already sorted values."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    rank = (len(values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return float(values[low] + (values[high] - values[low]) * (rank - low))


def summarize_ms(values: Iterable[float], points: Sequence[float] = (50, 90, 99)) -> dict[str, Any]:
    """p50/p90/p99/max/mean of seconds, in milliseconds (rounded to µs)."""
    ordered = sorted(values)
    out: dict[str, Any] = {"count": len(ordered)}
    for q in points:
        value = percentile(ordered, q)
        out[f"p{q:g}"] = None if value is None else round(1000 * value, 3)
    out["max"] = round(1000 * ordered[-1], 3) if ordered else None
    out["mean"] = round(1000 * sum(ordered) / len(ordered), 3) if ordered else None
    return out


def machine() -> dict[str, Any]:
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        uvloop_version: str | None = version("uvloop")
    except Exception:  # pragma: no cover - not installed as a distribution
        uvloop_version = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "uvloop": uvloop_version,
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            text = f"{value:,.0f}"
        elif abs(value) >= 1:
            text = f"{value:.2f}"
        else:
            text = f"{value:.3g}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".rstrip()


def _lat(summary: dict[str, Any] | None) -> str:
    if not summary or summary.get("p50") is None:
        return "-"
    return f"p50 {summary['p50']:.2f} / p99 {summary['p99']:.2f} / max {summary['max']:.2f} ms"


def _procs(count: Any, lead: str = ", ") -> str:
    """", 3 processes" for a pool of several processes; nothing for one (or unknown)."""
    return f"{lead}{count} processes" if isinstance(count, int) and count > 1 else ""


def _load(load: dict[str, Any] | None) -> str:
    if not load or load.get("machine_busy_cores") is None:
        return "-"
    other = load.get("other_cores") or 0.0
    warn = "  << other programs were busy: figures are pessimistic" if other > 0.25 else ""
    return (
        f"machine {load['machine_busy_cores']:.2f} cores busy (pool "
        f"{_fmt(load.get('pool_cores'))}{_procs(load.get('pool_processes'), ' in ')}, client "
        f"{_fmt(load.get('client_cores'))}, other {_fmt(other)}){warn}"
    )


def _notes(*lists: Any) -> list[tuple[str, str]]:
    notes = dict.fromkeys(n for notes in lists if notes for n in notes)
    return [("  note", str(n)) for n in notes]


def rows_for(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, value) rows for one bench result; a row with an empty value is a heading."""
    kind = result.get("bench")
    label = result.get("label") or ""
    suffix = f" [{label}]" if label else ""
    rows: list[tuple[str, str]] = []
    if result.get("error"):
        return [(f"{kind}{suffix}", ""), ("  FAILED", str(result["error"]))]
    if kind == "submit":
        pool = result.get("pool", {})
        client = result.get("client", {})
        mode = "real shares" if result.get("valid_ratio") else "random nonces"
        if result.get("protocol", "v1") != "v1":
            mode += f", {result['protocol']}"
        rows.append(
            (
                f"submit, {mode}: {result['connected']} miners x window {result['window']}, "
                f"{result['client_procs']} client process(es){suffix}",
                "",
            )
        )
        rows.append(("  throughput", _fmt(result.get("submits_per_second"), "responses/s")))
        rows.append(("  latency", _lat(result.get("latency_ms"))))
        codes = result.get("reject_codes") or {}
        rows.append(
            (
                "  answered",
                f"{result['responses']:,} of {result['sent']:,} sent: "
                f"{result['accepted']:,} accepted, {result['rejected']:,} rejected"
                + (f" (codes {codes})" if codes else ""),
            )
        )
        rows.append(
            (
                "  pool CPU",
                f"{_fmt(pool.get('cpu_seconds_per_1000'))} s per 1,000 submits "
                f"({_fmt(pool.get('cpu_utilization'))} cores{_procs(pool.get('processes'))})",
            )
        )
        utils = ", ".join(_fmt(u) for u in client.get("cpu_utilization", []))
        bound = " CLIENT-BOUND" if client.get("client_bound") else ""
        rows.append(("  client CPU", f"{utils} cores per client process{bound}"))
        rows.append(("  load", _load(result.get("load"))))
        if result.get("node_calls_during_run") is not None:
            rows.append(("  node RPC calls during run", _fmt(result["node_calls_during_run"])))
        if pool.get("disk_write_bytes") is not None:
            rows.append(("  pool disk writes during run", _fmt(pool["disk_write_bytes"], "B")))
        rows.extend(_notes(pool.get("notes"), (result.get("load") or {}).get("notes")))
    elif kind == "fanout":
        for stage in result.get("stages", []):
            rows.append(
                (
                    f"fan-out: {stage['miners']:,} miners, {result['addresses']} payout "
                    f"address(es), timed from {result['reference']}{suffix}",
                    "",
                )
            )
            rows.append(("  last miner notified", _lat(stage.get("last_ms"))))
            rows.append(("  median miner notified", _lat(stage.get("median_ms"))))
            rows.append(
                (
                    "  blocks",
                    f"{stage['blocks']} mined, {stage['incomplete']} incomplete "
                    f"({stage['missing']} notices missing)",
                )
            )
            rows.append(("  load", _load(stage.get("load"))))
            rows.extend(_notes(stage.get("pool_notes"), (stage.get("load") or {}).get("notes")))
    elif kind == "connections":
        rows.append((f"connections: {result['requested']:,} idle authorized miners{suffix}", ""))
        rows.append(
            (
                "  held",
                f"{result['ready']:,} authorized, {result['held']:,} still open after "
                f"{result['hold_seconds']:g} s; pool has {_fmt(result.get('pool_fds'))} fds"
                + _procs(result.get("pool_processes"), " in "),
            )
        )
        rows.append(
            (
                "  pool RSS per connection",
                _fmt(result.get("rss_per_connection_bytes"), "B")
                + f" ({_fmt(result.get('rss_before_kib'), 'KiB')} -> "
                f"{_fmt(result.get('rss_after_kib'), 'KiB')}"
                + (
                    ", summed over the processes"
                    if _procs(result.get("pool_processes"))
                    else ""
                )
                + ")",
            )
        )
        rows.append(("  TCP connects", _fmt(result.get("connects_per_second"), "/s")))
        rows.append(("  full handshakes", _fmt(result.get("handshakes_per_second"), "/s")))
        rows.append(("  load while connecting", _load(result.get("load"))))
        rows.extend(_notes(result.get("pool_notes"), (result.get("load") or {}).get("notes")))
    elif kind == "send-floor":
        rows.append((
            f"send floor: plain send() of {result['line_bytes']} B to {result['miners']:,} "
            f"loopback miners waiting in epoll{suffix}", "",
        ))
        rows.append((
            "  per send",
            f"p50 {_fmt(result.get('us_per_send_p50'))} / min "
            f"{_fmt(result.get('us_per_send_min'))} µs over {result['rounds']} rounds",
        ))
        rows.append((
            "  one process, 1,000 / 10,000 miners",
            f"{_fmt(result.get('ms_for_1000'))} / {_fmt(result.get('ms_for_10000'))} ms "
            "of sends alone",
        ))
        rows.append(("  receiving (the miners' side)", _fmt(result.get("us_per_receive"), "µs")))
        rows.append((
            f"  sends + receives on all {result.get('cores')} cores, 1,000 / 10,000",
            f"{_fmt(result.get('ms_all_cores_1000'))} / "
            f"{_fmt(result.get('ms_all_cores_10000'))} ms at the very least",
        ))
    else:
        rows.append((f"{kind}{suffix}", ""))
        rows.append(("  result", str({k: v for k, v in result.items() if k != "machine"})))
    return rows


def table(results: Sequence[dict[str, Any]]) -> str:
    rows = [row for result in results for row in rows_for(result)]
    if not rows:
        return "(no results)"
    width = max(len(name) for name, value in rows if value)
    lines = [f"{name:<{width}}  {value}" if value else name for name, value in rows]
    info = next((r.get("machine") for r in results if r.get("machine")), None)
    if info:
        lines.append(
            f"machine: {info.get('nproc')} CPUs ({info.get('cpu_model')}), Python "
            f"{info.get('python')}, uvloop {info.get('uvloop')}"
        )
    return "\n".join(lines)
