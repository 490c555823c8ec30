"""Nothing lost: found blocks are spooled before submitblock and submitted until final."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from pool.blocks import BlockSpool
from pool.consensus.address import address_to_script
from pool.consensus.block import header_hash
from pool.consensus.target import hash_to_int
from pool.found import ACCEPTED, PENDING, FoundBlock
from tests.support.fixtures import PoolFactory
from tests.support.node import RegtestNode
from tests.support.shares import find_nonce
from tests.support.stratum_client import StratumTestClient


async def wait_for(predicate: object, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.1)


def spooled(data_dir: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((data_dir / "blocks").glob("*.json"))]


async def test_block_survives_node_outage(
    fresh_node: RegtestNode, start_pool: PoolFactory, tmp_path: Path
) -> None:
    node = fresh_node
    node.generate(5)
    data_dir = tmp_path / "outage"
    pool = await start_pool(node, data_dir=data_dir)
    address = node.new_address("bech32")
    client = await StratumTestClient.connect("127.0.0.1", pool.stratum.port)
    await client.handshake(address)
    notify = (await client.notification("mining.notify"))["params"]

    node.stop()  # the node goes away; the miner keeps its job and finds a block
    en2 = bytes(8)
    nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
    res = await client.request(
        "mining.submit", [address, notify[0], en2.hex(), notify[7], f"{nonce:08x}"]
    )
    assert res["result"] is True

    # On disk, fsynced, before any answer from the node.
    await wait_for(lambda: len(spooled(data_dir)) == 1)
    [record] = spooled(data_dir)
    assert record["status"] == PENDING and record["height"] == 6
    await asyncio.sleep(1.0)  # a few failed attempts
    assert spooled(data_dir)[0]["status"] == PENDING

    node.start()
    await wait_for(lambda: spooled(data_dir)[0]["status"] == ACCEPTED)
    record = spooled(data_dir)[0]
    assert node.rpc("getblockhash", 6) == record["hash"]
    assert record["in_best_chain"] is True and record["answer"] in ("null", "duplicate")
    assert int(str(record["attempts"])) >= 2
    await client.close()


async def test_pending_spool_is_submitted_at_startup(
    fresh_node: RegtestNode, start_pool: PoolFactory, tmp_path: Path
) -> None:
    node = fresh_node
    node.generate(3)
    address = node.new_address("bech32")
    # Build a block the way a pool that died right after spooling it would have left it.
    builder = await start_pool(node)
    job = builder.jobs.job_for(address_to_script(address, "regtest"))
    extranonce = bytes(12)
    nonce = 0
    while True:
        header = job.header(extranonce, job.ntime, nonce, job.version)
        if hash_to_int(header_hash(header)) <= job.template.target:
            break
        nonce += 1
    block = FoundBlock(
        height=job.template.height,
        hash=header_hash(header)[::-1].hex(),
        hex=job.block(header, extranonce).hex(),
        worker=address,
        address=address,
        found_at=time.time(),
    )
    data_dir = tmp_path / "crashed"
    BlockSpool(data_dir / "blocks").prepare()
    BlockSpool(data_dir / "blocks").write(block)
    assert node.rpc("getblockcount") == 3

    await start_pool(node, data_dir=data_dir)
    await wait_for(lambda: spooled(data_dir)[0]["status"] == ACCEPTED)
    assert node.rpc("getblockhash", 4) == block.hash
    coinbase = node.rpc("getblock", block.hash, 2)["tx"][0]
    assert coinbase["vout"][0]["scriptPubKey"]["address"] == address


def test_spool_round_trip(tmp_path: Path) -> None:
    spool = BlockSpool(tmp_path / "blocks")
    spool.prepare()
    block = FoundBlock(7, "ab" * 32, "00", "w", "a", 1.0)
    path = spool.write(block)
    assert path.name == f"00000007-{'ab' * 32}.json"
    assert spool.pending() == [block]
    block.status = ACCEPTED
    spool.write(block)
    assert spool.pending() == []
    assert not list((tmp_path / "blocks").glob("*.tmp"))
