"""Failover between two real regtest nodes linked over loopback p2p: `[node]` and one
`[[backup_node]]`. The primary stops; jobs keep coming from the backup within seconds, a block
found then is accepted by the backup, and when the primary is back it gets the block too and
gives templates again. And a hung backup does not hold up a block the primary accepted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pool.app import Pool
from pool.config import parse_config
from pool.consensus.block import stratum_prevhash
from pool.found import ACCEPTED
from tests.support.faults import FaultProxy, notifies, spooled, wait_for
from tests.support.node import RegtestNode
from tests.support.shares import find_nonce
from tests.support.stratum_client import StratumTestClient, mining_client

BOUND = 15.0
P2P = ["-listen=1", "-bind=127.0.0.1"]  # RegtestNode starts with -listen=0; the last one wins


@pytest.fixture
def linked() -> Iterator[tuple[RegtestNode, RegtestNode]]:
    """Two nodes on one chain: the backup connects to the primary over loopback."""
    with RegtestNode(extra_args=P2P) as primary, RegtestNode(extra_args=P2P) as backup:
        primary.create_wallet()
        primary.generate(3)
        backup.rpc("addnode", f"127.0.0.1:{primary.p2p_port}", "onetry")
        deadline = time.monotonic() + BOUND
        while backup.rpc("getblockcount") != 3:
            assert time.monotonic() < deadline, "the backup did not sync from the primary"
            time.sleep(0.05)
        yield primary, backup


def node_table(node: RegtestNode) -> dict[str, Any]:
    return {
        "rpc_url": node.rpc_url,
        "rpc_user": node.rpc_user,
        "rpc_password": node.rpc_password,
        "poll_seconds": 0.5,
    }


def final(pool: Pool) -> bool:
    """The pool's latest found block has its final answer."""
    history = pool.submitter.history
    return bool(history) and history[-1].final_at is not None


async def find_block(client: StratumTestClient, user: str, notify: list[Any]) -> None:
    en2 = bytes.fromhex("00000000000000%02x" % (len(client.notifications) % 256))
    nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
    reply = await client.request(
        "mining.submit", [user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"]
    )
    assert reply["result"] is True, reply


async def test_failover_to_backup_and_back(
    linked: tuple[RegtestNode, RegtestNode], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    primary, backup = linked
    data_dir = tmp_path / "data"
    config = parse_config(
        {
            "node": node_table(primary),
            "backup_node": [node_table(backup)],
            "stratum": {"host": "127.0.0.1", "port": 0, "start_difficulty": 0.0001},
            "pool": {"data_dir": str(data_dir)},
            "api": {"enabled": False},
        },
        tmp_path,
    )
    pool = Pool(config)
    await pool.start()
    try:
        first, second = pool.nodes.clients
        assert (first.name, second.name) == ("node", "backup_node 1")
        assert pool.source.node is first
        user = primary.new_address("bech32")
        client = await mining_client(pool.stratum.port, user)

        # The primary stops: templates come from the backup, and the miner gets a job from it.
        mark = len(client.notifications)
        stopped = time.monotonic()
        await asyncio.to_thread(primary.stop)
        job = (await client.notification("mining.notify", timeout=BOUND, after=mark))["params"]
        failover = time.monotonic() - stopped
        print(f"FIGURE failover to the backup (job from it): {failover:.2f} s")
        assert pool.source.node is second and pool.source.template_node is second
        assert pool.source.node_ok and not client.closed
        switched = [m for m in caplog.messages if "templates now from" in m]
        assert len(switched) == 1 and "backup_node 1" in switched[0], switched

        # A block found now is submitted to both; the backup accepts it.
        await find_block(client, user, job)
        await wait_for(lambda: final(pool), BOUND)
        block = pool.submitter.history[-1]
        assert block.status == ACCEPTED and block.in_best_chain
        assert block.answers == {"backup_node 1": "null"}  # the primary is down
        assert backup.rpc("getblockhash", 4) == block.hash
        [record] = spooled(data_dir)
        assert record["status"] == ACCEPTED and record["answers"] == {"backup_node 1": "null"}
        await wait_for(lambda: notifies(client)[-1][1] == stratum_prevhash(block.hash), BOUND)
        assert notifies(client)[-1][8] is True

        # The primary comes back: it is offered the block it missed, catches up, and gives
        # templates again.
        restarted = time.monotonic()
        await asyncio.to_thread(primary.start)
        await wait_for(lambda: pool.source.node is first, BOUND)
        back = time.monotonic() - restarted
        print(f"FIGURE back on the primary after its restart: {back:.2f} s")
        assert primary.rpc("getblockhash", 4) == block.hash
        await wait_for(lambda: "node" in spooled(data_dir)[0]["answers"], BOUND)
        assert spooled(data_dir)[0]["answers"]["node"] in ("null", "duplicate")

        # A block found on the primary's job goes to both nodes at once.
        await wait_for(lambda: pool.source.template_node is first, BOUND)
        mark = len(client.notifications)
        await find_block(client, user, notifies(client)[-1])
        await wait_for(lambda: len(pool.submitter.history) == 2, BOUND)
        await wait_for(lambda: final(pool), BOUND)
        second_block = pool.submitter.history[-1]
        assert second_block.status == ACCEPTED and second_block.height == 5
        assert set(second_block.answers) == {"node", "backup_node 1"}
        assert primary.rpc("getblockhash", 5) == second_block.hash
        assert backup.rpc("getblockhash", 5) == second_block.hash
        await client.notification("mining.notify", timeout=BOUND, after=mark)
        await client.close()
    finally:
        await pool.stop()


async def test_hung_backup_does_not_hold_up_a_block(
    fresh_node: RegtestNode, tmp_path: Path
) -> None:
    """A backup whose submitblock and getblockhash never answer: the block is final as soon as
    the primary accepts it, not after the backup's two-minute submitblock timeout."""
    node = fresh_node
    node.generate(1)
    proxy = FaultProxy(node)  # the "backup": the same chain, reached through a proxy
    proxy.hang = {"submitblock", "getblockhash"}
    data_dir = tmp_path / "data"
    config = parse_config(
        {
            "node": node_table(node),
            "backup_node": [{**node_table(node), "rpc_url": proxy.url, "rpc_timeout_seconds": 1}],
            "stratum": {"host": "127.0.0.1", "port": 0, "start_difficulty": 0.0001},
            "pool": {"data_dir": str(data_dir)},
            "api": {"enabled": False},
        },
        tmp_path,
    )
    pool = Pool(config)
    try:
        await pool.start()
        user = node.new_address("bech32")
        client = await mining_client(pool.stratum.port, user)
        found = time.monotonic()
        await find_block(client, user, notifies(client)[-1])
        await wait_for(lambda: final(pool), BOUND)
        elapsed = time.monotonic() - found
        print(f"FIGURE block final with a hung backup: {elapsed:.2f} s")
        block = pool.submitter.history[-1]
        assert block.status == ACCEPTED and block.in_best_chain
        assert block.answers == {"node": "null"} and proxy.calls["submitblock"] == 1
        assert elapsed < 10  # far below the 120 s submitblock timeout
        await client.close()
    finally:
        await pool.stop()
        proxy.close()
