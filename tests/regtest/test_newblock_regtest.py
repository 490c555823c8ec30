"""New blocks from elsewhere reach every miner as a clean job, by longpoll and by ZMQ."""

from __future__ import annotations

import asyncio
import time

from pool.consensus.block import stratum_prevhash
from tests.support.fixtures import PoolFactory
from tests.support.node import RegtestNode
from tests.support.stratum_client import StratumTestClient


async def clean_job_after_external_block(node: RegtestNode, pool_port: int) -> float:
    address = node.new_address("bech32")
    clients = [await StratumTestClient.connect("127.0.0.1", pool_port) for _ in range(3)]
    for client in clients:
        await client.handshake(address)
        await client.notification("mining.notify")
    marks = [len(c.notifications) for c in clients]
    started = time.monotonic()
    [new_tip] = node.generate(1)
    for client, mark in zip(clients, marks, strict=True):
        message = await client.notification("mining.notify", timeout=10, after=mark)
        assert message["params"][1] == stratum_prevhash(new_tip)
        assert message["params"][8] is True
    elapsed = time.monotonic() - started
    for client in clients:
        await client.close()
    return elapsed


async def test_longpoll_delivers_new_block(node: RegtestNode, start_pool: PoolFactory) -> None:
    # No ZMQ, and the safety-net poll far too slow to be what answers.
    pool = await start_pool(node, node_options={"poll_seconds": 60})
    assert pool.full_config.node.zmq_hashblock is None
    await asyncio.sleep(0.3)  # let the longpoll request reach the node
    elapsed = await clean_job_after_external_block(node, pool.stratum.port)
    assert elapsed < 10


async def test_zmq_delivers_new_block(start_pool: PoolFactory) -> None:
    with RegtestNode(zmq=True) as node:
        node.create_wallet()
        node.generate(1)
        # Only ZMQ can deliver: longpoll off, poll slow.
        pool = await start_pool(node, node_options={"longpoll": False, "poll_seconds": 60})
        assert pool.full_config.node.zmq_hashblock == node.zmq_url
        await asyncio.sleep(0.5)  # ZMQ subscription settles ("slow joiner")
        elapsed = await clean_job_after_external_block(node, pool.stratum.port)
        assert elapsed < 10
        await pool.stop()
