from __future__ import annotations

import asyncio

from tests.support.fixtures import PoolFactory
from tests.support.node import RegtestNode
from tests.support.shares import find_nonce
from tests.support.stratum_client import StratumTestClient


async def test_handshake_and_block(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node)
    address = node.new_address("bech32")
    client = await StratumTestClient.connect("127.0.0.1", pool.stratum.port)
    await client.handshake(address)
    diff = await client.notification("mining.set_difficulty")
    notify = (await client.notification("mining.notify"))["params"]
    assert notify[8] is True
    en2 = bytes(8)
    nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
    res = await client.request(
        "mining.submit", [address, notify[0], en2.hex(), notify[7], f"{nonce:08x}"]
    )
    assert res["result"] is True, res
    for _ in range(100):
        if node.rpc("getblockcount") == 102:
            break
        await asyncio.sleep(0.05)
    best = node.rpc("getbestblockhash")
    block = node.rpc("getblock", best, 2)
    assert block["tx"][0]["vout"][0]["scriptPubKey"]["address"] == address
    print(diff)
    await client.close()


async def test_every_background_task_hangs_off_the_pools_supervisor(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node)
    names = {task.get_name() for task in pool.tasks.running()}
    # Template watching, the Stratum sweep, the stats flush and the confirmation watcher: each
    # part's long-running work is in the one tree app.py owns.
    assert {"tip-poll", "refresh", "stratum-tick", "stats-flush"} <= names, names
    assert {child.name for child in pool.tasks.children} >= {
        "pool.stats", "pool.notify", "pool.blocks", "pool.stratum", "pool.templates",
    }
    await pool.stop()
    assert pool.tasks.running() == set()
