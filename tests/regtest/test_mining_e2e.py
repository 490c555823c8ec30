"""End to end: the real solopool-miner mines through the pool on a real regtest node."""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal

import pytest

from pool.found import ACCEPTED
from tests.support.fixtures import PoolFactory
from tests.support.mining import check_block_pays
from tests.support.node import RegtestNode


async def run_miner(port: int, user: str, blocks: int, *extra: str) -> list[str]:
    """Run `solopool-miner` until it has found `blocks` blocks; returns their hashes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "solopool_tools.miner",
        "--url", f"stratum+tcp://127.0.0.1:{port}",
        "--user", user,
        "--blocks", str(blocks),
        "--seconds", "90",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()[-2000:]
    hashes = [line.split()[1] for line in out.decode().splitlines() if line.startswith("block ")]
    assert len(hashes) >= blocks, out.decode()
    return hashes


def in_best_chain(node: RegtestNode, hashes: list[str]) -> str:
    """The one of a miner's blocks that is in the best chain: at regtest difficulty two shares
    in flight can both be blocks at the same height, and only one of them extends the chain."""
    best = [h for h in hashes if node.rpc("getblockheader", h)["confirmations"] >= 1]
    assert len(best) == 1, hashes
    return best[0]


def p2wsh_address(node: RegtestNode) -> str:
    pubkey = node.rpc("getaddressinfo", node.new_address("bech32"), wallet="w")["pubkey"]
    address: str = node.rpc("createmultisig", 1, [pubkey], "bech32")["address"]
    return address


@pytest.mark.parametrize("kind", ["legacy", "p2sh-segwit", "bech32", "p2wsh", "bech32m"])
async def test_each_payout_type(node: RegtestNode, start_pool: PoolFactory, kind: str) -> None:
    pool = await start_pool(node)
    address = p2wsh_address(node) if kind == "p2wsh" else node.new_address(kind)
    found = in_best_chain(node, await run_miner(pool.stratum.port, f"{address}.rig", 1))
    await asyncio.sleep(0.2)
    assert node.rpc("getbestblockhash") == found or node.rpc("getblockheader", found)
    check_block_pays(node, found, address)
    await pool.submitter.drain(10)
    statuses = {b.hash: b.status for b in pool.submitter.history}
    assert statuses[found] == ACCEPTED


async def test_mempool_segwit_transactions_confirm(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    txids = [
        node.rpc("sendtoaddress", node.new_address(kind), 1.5, wallet="w")
        for kind in ("bech32", "bech32m", "p2sh-segwit", "bech32")
    ]
    assert set(txids) <= set(node.rpc("getrawmempool"))
    # The node rebuilds a cached template only 5 s after the mempool changed; wait for it so
    # the pool's first template carries these transactions.
    async with asyncio.timeout(15):
        while not set(txids) <= {
            tx["txid"] for tx in node.rpc("getblocktemplate", {"rules": ["segwit"]})["transactions"]
        }:
            await asyncio.sleep(0.5)
    pool = await start_pool(node)
    address = node.new_address("bech32")
    found = in_best_chain(node, await run_miner(pool.stratum.port, address, 1))
    block = check_block_pays(node, found, address)
    in_block = {tx["txid"] for tx in block["tx"]}
    assert set(txids) <= in_block
    # Segwit spends carry witnesses in the block the pool assembled.
    assert any(tx["txid"] != tx["hash"] for tx in block["tx"][1:])
    for txid in txids:
        assert node.rpc("gettransaction", txid, wallet="w")["confirmations"] >= 1
    fees = sum(Decimal(str(tx["fee"])) for tx in block["tx"][1:])
    assert fees > 0


async def test_heights_1_to_16_and_beyond(
    fresh_node: RegtestNode, start_pool: PoolFactory
) -> None:
    node = fresh_node
    assert node.rpc("getblockcount") == 0
    pool = await start_pool(node, start_difficulty=0.00001, min_difficulty=0.00001)
    address = node.new_address("bech32")
    # Two shares on one job can both be blocks at regtest difficulty and only one extends the
    # chain, so mine until the node is at height 18 rather than counting the miner's blocks.
    miner = asyncio.create_task(run_miner(pool.stratum.port, address, 1000))
    try:
        async with asyncio.timeout(90):
            while node.rpc("getblockcount") < 18:
                await asyncio.sleep(0.1)
    finally:
        miner.cancel()
    for height in range(1, 19):
        check_block_pays(node, node.rpc("getblockhash", height), address)
    # BIP34: the scriptSig starts with OP_1..OP_16 for heights 1-16, a push above.
    h1 = node.rpc("getblock", node.rpc("getblockhash", 1), 2)["tx"][0]["vin"][0]["coinbase"]
    h17 = node.rpc("getblock", node.rpc("getblockhash", 17), 2)["tx"][0]["vin"][0]["coinbase"]
    assert h1.startswith("51") and h17.startswith("0111")


async def test_two_miners_each_paid_for_own_blocks(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node)
    alice = node.new_address("bech32")
    bob = node.new_address("bech32m")
    alice_blocks, bob_blocks = await asyncio.gather(
        run_miner(pool.stratum.port, f"{alice}.a", 2),
        run_miner(pool.stratum.port, f"{bob}.b", 2),
    )
    for address, hashes in ((alice, alice_blocks), (bob, bob_blocks)):
        # A regtest sibling at the same height may lose the race; the rest must pay right.
        in_chain = [h for h in hashes if node.rpc("getblockheader", h)["confirmations"] >= 1]
        assert in_chain, hashes
        for block_hash in in_chain:
            check_block_pays(node, block_hash, address)
