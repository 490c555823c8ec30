"""The Umbrel home-screen widget: the pool at a glance in Umbrel's "four-stats" widget format
(hashrate, best share, workers online, blocks found). deploy/umbrel's manifest points Umbrel at
/api/umbrel/widget; Umbrel fetches it from the container directly, every `refresh`."""

from __future__ import annotations

from typing import Any

from .units import format_difficulty, format_hashrate

REFRESH = "30s"
HASHRATE_WINDOW = "10m"  # the dashboard's headline hashrate


def four_stats(summary: dict[str, Any]) -> dict[str, Any]:
    """The widget from the /api/pool summary (pool.api.ApiServer.pool_summary)."""
    hashrate = summary["hashrate"][HASHRATE_WINDOW]["hashrate"]
    value, _, unit = format_hashrate(hashrate).partition(" ")
    best = summary["best_share"]["all_time"]
    return {
        "type": "four-stats",
        "refresh": REFRESH,
        "link": "",
        "items": [
            {"title": "Hashrate", "text": value, "subtext": unit},
            {"title": "Best share", "text": format_difficulty(best), "subtext": "difficulty"},
            {"title": "Workers", "text": str(summary["workers_online"]), "subtext": "online"},
            {"title": "Blocks", "text": str(summary["blocks"]["found"]), "subtext": "found"},
        ],
    }
