"""A crowd of idle connections cannot starve the pool of file descriptors.

The real pool process runs under a soft open-file limit of 256 (`ulimit -n 256`), with the hard
limit 256 too (so the pool cannot raise it) or higher (so it raises its soft limit at start).
400 idle connections come from one host while a miner finds blocks: every block answered `true`
reaches the node, the pool stays up, templates and the API keep working, and the miner keeps
mining. With hard = 256 the connections beyond the limit are refused at once, with a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from pathlib import Path

import pytest

from pool.fdlimit import connection_limit
from tests.support.faults import wait_for
from tests.support.mining import known_to_node, mine_blocks
from tests.support.node import RegtestNode, free_port
from tests.support.pool_process import PoolProcess, write_config
from tests.support.stratum_client import mining_client

BOUND = 20.0
# The pool's default share interval: this test mines only blocks.
SHARE_INTERVAL = 10.0
SOFT = 256
IDLE_CONNECTIONS = 400
BLOCKS = 30


Idle = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


async def open_idle(port: int, count: int) -> Idle:
    """`count` connections that never say anything (those the pool refuses are closed by it)."""
    idle = []
    for _ in range(count):
        with contextlib.suppress(OSError):
            idle.append(await asyncio.open_connection("127.0.0.1", port))
    return idle


def still_open(idle: Idle) -> int:
    return sum(not reader.at_eof() for reader, _ in idle)


@pytest.mark.parametrize("hard", [SOFT, 4096], ids=["hard-256", "hard-4096"])
async def test_idle_crowd_under_ulimit_256_loses_no_block(
    fresh_node: RegtestNode, tmp_path: Path, hard: int
) -> None:
    node = fresh_node
    node.generate(3)
    port, api_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "solopool.toml"
    write_config(
        config, node, port, data_dir=data_dir, api_port=api_port,
        share_interval_seconds=SHARE_INTERVAL,
    )
    user = node.new_address("bech32")
    answered: list[str] = []
    proc = await PoolProcess.start(config, open_files=(SOFT, hard))
    idle: Idle = []
    try:
        await proc.wait_listening(port, BOUND)
        miner = await mining_client(port, user)
        idle = await open_idle(port, IDLE_CONNECTIONS)
        await mine_blocks(port, user, answered, [0], client=miner, until=BLOCKS)
        assert len(answered) == BLOCKS, proc.output[-3000:]
        await wait_for(lambda: all(known_to_node(node, h) for h in answered), 60)
        assert proc.running, proc.output[-3000:]
        # The API answers and lists the blocks.
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/blocks", timeout=10)
            .read()
        )
        listed = json.dumps(json.loads(body))
        assert all(h in listed for h in answered)
        allowed = connection_limit(20000, hard)
        if hard == SOFT:
            # 1 miner + the idle ones fill the limit; the rest were closed at accept.
            await wait_for(lambda: still_open(idle) == allowed - 1, BOUND)
            text = proc.output
            assert f"accepting at most {allowed} Stratum connections" in text
            assert "open-file limit allows" in text
        else:
            assert still_open(idle) == IDLE_CONNECTIONS
        text = proc.output
        assert "Too many open files" not in text and "never retrieved" not in text, text[-3000:]
        print(
            f"FIGURE ulimit -n {SOFT} (hard {hard}): {IDLE_CONNECTIONS} idle connections, "
            f"{still_open(idle)} admitted; {len(answered)} blocks answered true, all on the node"
        )
    finally:
        for _, writer in idle:
            writer.close()
        code = await proc.stop(BOUND)
    assert code == 0, proc.output[-3000:]
