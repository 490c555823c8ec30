"""A block's status after the node restarts under it: the node takes the block and goes down
before the pool can confirm it, so the submitter's verdict says "not in the best chain". The
confirmation checker corrects that on its first pass after the node is back, and the API shows
the block in the best chain.

The node is real; a FaultProxy in front of it only picks the moment: it stops the node right
after forwarding `submitblock`, before passing on the node's answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from pool.app import Pool
from pool.found import ACCEPTED
from tests.support.faults import FaultProxy, notifies, wait_for
from tests.support.fixtures import pool_config
from tests.support.node import RegtestNode
from tests.support.shares import find_nonce
from tests.support.stratum_client import mining_client
from tests.support.watch import api

CHECK_SECONDS = 2.0  # the confirmation checker's interval in this test
SLACK = 15.0  # a loaded machine: RPC calls and the checker's own pass take time


class StopAfterSubmit(FaultProxy):
    """Stops the node right after it has taken the first submitted block."""

    def __init__(self, node: RegtestNode) -> None:
        super().__init__(node)
        self.stopped = threading.Event()
        self._armed = True

    def handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        if self._armed and b'"submitblock"' in body:
            self._armed = False
            status, raw = self._forward(body)
            self.node.stop()
            self.stopped.set()
            self._reply(handler, status, raw, "application/json")
            return
        super().handle(handler, body)


async def test_block_accepted_while_the_node_restarts_ends_in_best_chain(
    fresh_node: RegtestNode, tmp_path: Path
) -> None:
    node = fresh_node
    node.generate(3)
    proxy = StopAfterSubmit(node)
    config = pool_config(node, tmp_path / "data", node_options={"rpc_url": proxy.url})
    pool = Pool(config)
    pool.stats.confirm_seconds = CHECK_SECONDS
    await pool.start()
    try:
        user = node.new_address("bech32")
        client = await mining_client(pool.stratum.port, user)
        notify = notifies(client)[-1]
        en2 = bytes(8)
        nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
        reply = await client.request(
            "mining.submit", [user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"], timeout=30
        )
        assert reply["result"] is True, reply
        await wait_for(proxy.stopped.is_set, 60)
        # The submitter gives up confirming while the node is down: its verdict is recorded.
        [record] = pool.stats.blocks.values()
        await wait_for(lambda: record.status != "pending", 60)
        assert record.status == ACCEPTED and record.in_best_chain is False
        await asyncio.to_thread(node.start)
        back = time.monotonic()

        async def in_best_chain() -> bool:
            blocks = (await api(pool, "/api/blocks"))["blocks"]
            return bool(blocks and blocks[0]["in_best_chain"] and blocks[0]["confirmations"])

        while not await in_best_chain():
            assert time.monotonic() - back < CHECK_SECONDS + SLACK, record
            await asyncio.sleep(0.2)
        assert node.rpc("getblockhash", 4) == record.hash
        await client.close()
    finally:
        await pool.stop()
        proxy.close()


async def test_a_late_not_in_best_chain_verdict_is_corrected_on_the_next_check(
    fresh_node: RegtestNode, tmp_path: Path
) -> None:
    """The checker has already seen the block 1 deep when a verdict made while the node was
    away ("not in the best chain") arrives: the next pass corrects it although the depth has
    not changed."""
    node = fresh_node
    node.generate(3)
    pool = Pool(pool_config(node, tmp_path / "data"))
    await pool.start()
    try:
        user = node.new_address("bech32")
        client = await mining_client(pool.stratum.port, user)
        notify = notifies(client)[-1]
        en2 = bytes(8)
        nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
        reply = await client.request(
            "mining.submit", [user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"], timeout=30
        )
        assert reply["result"] is True, reply
        await wait_for(lambda: bool(pool.submitter.history)
                       and pool.submitter.history[0].final_at is not None, 60)
        [block] = pool.submitter.history
        await pool.stats.check_confirmations()
        [record] = pool.stats.blocks.values()
        assert record.in_best_chain and record.confirmations == 1
        pool.stats.on_block_final(dataclasses.replace(block, in_best_chain=False))
        assert record.in_best_chain is False
        await pool.stats.check_confirmations()
        assert record.in_best_chain is True and record.confirmations == 1
        await client.close()
    finally:
        await pool.stop()
