"""A pool killed at the worst moment loses no block.

The real pool process runs through tests/support/pool_launcher.py with the fault
kill-after-spool: it SIGKILLs itself right after a found block's spool file is fsynced and before
`submitblock`.
Started again without the fault, it submits the block at start-up; the node gets it and the
spool file ends ACCEPTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from pathlib import Path

from pool.found import ACCEPTED, PENDING
from tests.support.faults import notifies, spooled, wait_for
from tests.support.mining import known_to_node, mine_blocks
from tests.support.node import RegtestNode, free_port
from tests.support.pool_launcher import KILL_AFTER_SPOOL
from tests.support.pool_process import PoolProcess, write_config
from tests.support.shares import find_nonce
from tests.support.stratum_client import mining_client

BOUND = 20.0
# The pool's default share interval: these tests mine only blocks.
SHARE_INTERVAL = 10.0


async def test_sigkill_after_spool_then_restart_submits(
    fresh_node: RegtestNode, tmp_path: Path
) -> None:
    node = fresh_node
    node.generate(3)
    port = free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "solopool.toml"
    write_config(config, node, port, data_dir=data_dir, share_interval_seconds=SHARE_INTERVAL)

    proc = await PoolProcess.start(config, fault=KILL_AFTER_SPOOL)
    try:
        await proc.wait_listening(port, BOUND)
        user = node.new_address("bech32")
        client = await mining_client(port, user)
        notify = notifies(client)[-1]
        en2 = bytes(8)
        nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
        client.send("mining.submit", [user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"])
        killed_at = time.monotonic()
        code = await proc.wait(BOUND)
        await client.close()
    finally:
        await proc.kill()
    assert code == -signal.SIGKILL, proc.output
    assert "killing the pool with SIGKILL after spooling block" in proc.output
    # On disk and fsynced; never submitted: the node has not seen it.
    [record] = spooled(data_dir)
    assert record["status"] == PENDING and record["height"] == 4
    assert node.rpc("getblockcount") == 3

    proc = await PoolProcess.start(config)
    try:
        await wait_for(lambda: spooled(data_dir)[0]["status"] == ACCEPTED, BOUND)
        print(f"FIGURE block accepted after the kill (incl. restart): "
              f"{time.monotonic() - killed_at:.2f} s")
        record = spooled(data_dir)[0]
        assert node.rpc("getblockhash", 4) == record["hash"]
        assert record["in_best_chain"] is True and record["answers"] == {"node": "null"}
        coinbase = node.rpc("getblock", record["hash"], 2)["tx"][0]
        assert coinbase["vout"][0]["scriptPubKey"]["address"] == user
        assert "resubmitting spooled block" in proc.output
        await proc.wait_listening(port, BOUND)
    finally:
        code = await proc.stop(BOUND)
    assert code == 0, proc.output


# --- a block storm under random SIGKILLs ---------------------------------------------------------

STORM_KILLS = 12


async def test_sigkill_at_random_moments_in_a_block_storm_loses_no_block(
    fresh_node: RegtestNode, tmp_path: Path
) -> None:
    """Every block the pool answered `true` reaches the node, however the kills fall: the
    answer goes out only once the block is on disk, and a restart on the same data_dir
    submits what the killed process had not."""
    node = fresh_node
    node.generate(3)
    port = free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "solopool.toml"
    write_config(config, node, port, data_dir=data_dir, share_interval_seconds=SHARE_INTERVAL)
    user = node.new_address("bech32")
    answered: list[str] = []
    seq = [0]
    rng = random.Random()
    for _ in range(STORM_KILLS):
        proc = await PoolProcess.start(config)
        try:
            await proc.wait_listening(port, BOUND)
            storm = asyncio.create_task(mine_blocks(port, user, answered, seq, timeout=BOUND))
            await asyncio.sleep(rng.uniform(0.2, 1.2))  # the kill falls anywhere in the storm
            assert proc.running, proc.output[-3000:]
        finally:
            await proc.kill()
        await asyncio.wait_for(storm, BOUND)
    assert len(answered) >= STORM_KILLS, proc.output[-3000:]
    missing_before = sum(not known_to_node(node, h) for h in answered)

    proc = await PoolProcess.start(config)
    try:
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: all(known_to_node(node, h) for h in answered), 60)
        lost = [h for h in answered if not known_to_node(node, h)]
        assert not lost, f"{len(lost)} of {len(answered)} blocks answered true never reached " \
            f"the node: {lost}"
        await proc.wait_listening(port, BOUND)
    finally:
        code = await proc.stop(BOUND)
    assert code == 0, proc.output[-3000:]
    damaged = list((data_dir / "blocks" / "damaged").glob("*"))
    print(
        f"FIGURE storm: {STORM_KILLS} SIGKILLs, {len(answered)} blocks answered true, "
        f"{missing_before} not yet on the node after the last kill, 0 lost; "
        f"{len(damaged)} torn spool file(s) set aside"
    )
