"""The Umbrel home-screen widget: the four-stats JSON from known summaries, the manifest's widget
entry against Umbrel's rules, and the endpoint the manifest names served by a real pool."""

from __future__ import annotations

import re
from typing import Any

import yaml

from pool.umbrel import REFRESH, four_stats
from tests.support.fixtures import PoolFactory
from tests.support.node import RegtestNode
from tests.support.paths import REPO_DIR
from tests.support.watch import PINNED, Miner, api, wait_blocks_final

APP_DIR = REPO_DIR / "deploy" / "umbrel" / "solopool-pool"


def summary(hashrate: float, best: float | None, workers: int, blocks: int) -> dict[str, Any]:
    """The parts of /api/pool the widget reads."""
    return {
        "hashrate": {"10m": {"hashrate": hashrate}},
        "best_share": {"all_time": best},
        "workers_online": workers,
        "blocks": {"found": blocks},
    }


def texts(widget: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(i["title"], i["text"], i["subtext"]) for i in widget["items"]]


def test_four_stats_known_values() -> None:
    widget = four_stats(summary(1.21e12, 83.1e9, 3, 2))
    assert (widget["type"], widget["refresh"], widget["link"]) == ("four-stats", REFRESH, "")
    assert texts(widget) == [
        ("Hashrate", "1.21", "TH/s"),
        ("Best share", "83.1 G", "difficulty"),
        ("Workers", "3", "online"),
        ("Blocks", "2", "found"),
    ]
    idle = four_stats(summary(0.0, None, 0, 0))
    assert texts(idle) == [
        ("Hashrate", "0", "H/s"),
        ("Best share", "-", "difficulty"),
        ("Workers", "0", "online"),
        ("Blocks", "0", "found"),
    ]


def manifest_widget() -> tuple[dict[str, Any], dict[str, Any]]:
    manifest = yaml.safe_load((APP_DIR / "umbrel-app.yml").read_text())
    compose = yaml.safe_load((APP_DIR / "docker-compose.yml").read_text())
    [widget] = manifest["widgets"]
    return widget, compose


def test_manifest_widget_entry() -> None:
    widget, compose = manifest_widget()
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", widget["id"])
    assert widget["type"] == "four-stats" and widget["refresh"] == REFRESH
    assert widget["link"] == ""
    # `service:port/path`, no scheme; the service is this app's, the port its API port.
    service, port, path = re.fullmatch(r"([\w-]+):(\d+)(/\S*)", widget["endpoint"]).groups()
    assert service in compose["services"]
    assert compose["services"][service]["environment"]["SOLOPOOL_API_PORT"] == port
    assert path == "/api/umbrel/widget"
    # The example in the widget picker looks like the real thing.
    example = widget["example"]
    assert example["type"] == widget["type"]
    real = four_stats(summary(1.21e12, 83.1e9, 3, 0))
    assert [i["title"] for i in example["items"]] == [i["title"] for i in real["items"]]


async def test_widget_served_by_a_real_pool(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node, **PINNED)
    path = manifest_widget()[0]["endpoint"].split("/", 1)[1]
    assert texts(await api(pool, f"/{path}"))[2:] == [
        ("Workers", "0", "online"), ("Blocks", "0", "found")
    ]
    miner = await Miner.connect(pool, f"{node.new_address('bech32')}.rig")
    reply, _ = await miner.share(block=True)
    assert reply["result"] is True, reply
    await wait_blocks_final(pool, 1, timeout=30)
    widget = await api(pool, f"/{path}")
    pool_now = await api(pool, "/api/pool")
    assert widget["type"] == "four-stats" and len(widget["items"]) == 4
    assert texts(widget)[1:] == texts(four_stats(pool_now))[1:]
    assert texts(widget)[2:] == [("Workers", "1", "online"), ("Blocks", "1", "found")]
    assert widget["items"][0]["subtext"].endswith("H/s")
    await miner.close()
