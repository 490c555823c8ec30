"""The machine's own limits, as the bench measures them: the echo pool (canned answers) is a
Stratum pool the bench's submit run works against, and the send floor counts real sends."""

from __future__ import annotations

import asyncio
import json

from pool.consensus.target import nbits_to_target
from solopool_tools.bench.floor import mainnet_notify, send_floor, serve_echo
from solopool_tools.bench.report import table
from solopool_tools.bench.runs import SubmitSettings, run_submit
from tests.support.node import free_port
from tests.support.paths import DATA_DIR

TEMPLATE = DATA_DIR / "gbt_mainnet.json"


def test_echo_pool_job_is_the_templates() -> None:
    line = json.loads(mainnet_notify(TEMPLATE))
    gbt = json.loads(TEMPLATE.read_text())
    assert line["method"] == "mining.notify" and line["params"][8] is True
    assert int(line["params"][6], 16) == int(gbt["bits"], 16)
    assert nbits_to_target(int(line["params"][6], 16)) < 1 << 200  # mainnet-hard: no blocks


async def test_submit_against_the_echo_pool_counts_every_answer() -> None:
    port = free_port()
    server = asyncio.ensure_future(serve_echo("127.0.0.1", port, TEMPLATE, 30))
    try:
        await asyncio.sleep(0.5)
        result = await run_submit(
            SubmitSettings(
                url=f"stratum+tcp://127.0.0.1:{port}", miners=3, seconds=1, window=4,
                chain="main",
            )
        )
    finally:
        server.cancel()
    assert result["connected"] == 3 and result["sent"] > 0
    assert result["responses"] == result["sent"] and result["unanswered"] == 0
    assert result["reject_codes"] == {"23": result["rejected"]}
    assert result["accepted"] == 0


def test_send_floor_sends_to_every_miner() -> None:
    result = send_floor(miners=20, rounds=2)
    assert result["miners"] == 20 and result["rounds"] == 2
    assert result["us_per_send_p50"] > 0 and result["us_per_send_min"] > 0
    # 10,000 sends at the median cost, in ms.
    assert abs(result["ms_for_10000"] - result["us_per_send_p50"] * 10) < 0.2
    # The reader's CPU is read in clock ticks: over 40 receives it may round to zero.
    assert result["us_per_receive"] is not None and result["us_per_receive"] >= 0
    assert "send floor: plain send() of 400 B to 20 loopback miners" in table([result])
