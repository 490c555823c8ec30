"""Chain-side helpers: wait for a height, mine blocks through the pool, check what a block pays."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from pool.consensus.block import stratum_prevhash
from pool.consensus.serialize import internal_to_display, sha256d
from tests.support.faults import notifies, wait_for
from tests.support.node import RegtestNode, RPCError
from tests.support.shares import find_nonce, header_for
from tests.support.stratum_client import StratumTestClient, mining_client


async def wait_height(node: RegtestNode, height: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while node.rpc("getblockcount") < height:
            await asyncio.sleep(0.05)


async def mine_one_block(client: StratumTestClient, node: RegtestNode, user: str) -> str:
    """Handshake, take the first job, submit a block, and wait until the node has it."""
    await client.handshake(user)
    # Right after another block the first job may still build on the old tip (the pool's
    # fresh template follows a moment later and makes it stale): mine on the node's tip.
    tip = node.rpc("getbestblockhash")
    await new_block_job(client, tip)
    prev = bytes.fromhex(stratum_prevhash(tip))
    notify = [m for m in notifies(client) if bytes.fromhex(m[1]) == prev][-1]
    en2 = bytes.fromhex("00000000000000aa")
    nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
    header = header_for(notify, client.extranonce1, en2, int(notify[7], 16), nonce)
    block_hash = sha256d(header)[::-1].hex()
    res = await client.request(
        "mining.submit", [user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"]
    )
    assert res["result"] is True, res
    async with asyncio.timeout(15):
        while node.rpc("getbestblockhash") != block_hash:
            await asyncio.sleep(0.05)
    return block_hash


def known_to_node(node: RegtestNode, block_hash: str) -> bool:
    try:
        node.rpc("getblockheader", block_hash)
    except RPCError:
        return False
    return True


async def mine_blocks(
    port: int, user: str, answered: list[str], seq: list[int], *,
    client: StratumTestClient | None = None, until: int | None = None, timeout: float = 20.0,
) -> None:
    """Submit blocks as fast as the pool sends work, recording every one answered `true`,
    until the connection dies (the pool was killed) or `until` blocks are answered; `timeout`
    bounds the wait for each new job."""
    if client is None:
        try:
            client = await mining_client(port, user)
        except (OSError, TimeoutError):
            return
    try:
        while until is None or len(answered) < until:
            seen = len(client.notifications)
            notify = notifies(client)[-1]
            seq[0] += 1
            en2 = seq[0].to_bytes(8, "big")
            nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
            header = header_for(notify, client.extranonce1, en2, int(notify[7], 16), nonce)
            block_hash = internal_to_display(sha256d(header))
            reply = await client.request(
                "mining.submit", [user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"]
            )
            if reply["result"] is True:
                answered.append(block_hash)
            # The pool fetches a template on top of its own block: mine on that next.
            await client.notification("mining.notify", timeout=timeout, after=seen)
    except (ConnectionError, OSError, TimeoutError):
        return
    finally:
        await client.close()


async def new_block_job(client: StratumTestClient, tip: str) -> None:
    """Wait for the clean mining.notify that builds on block `tip`."""
    prev = bytes.fromhex(stratum_prevhash(tip))
    await wait_for(lambda: any(
        m["method"] == "mining.notify" and m["params"][8] is True
        and bytes.fromhex(m["params"][1]) == prev
        for m in client.notifications
    ), 15.0)


def subsidy(height: int) -> Decimal:
    """Regtest halves every 150 blocks."""
    return Decimal(50 * 100_000_000 >> (height // 150)) / Decimal(100_000_000)


def check_block_pays(node: RegtestNode, block_hash: str, address: str) -> dict[str, Any]:
    """The block is in the best chain and its coinbase pays `address` all of subsidy + fees."""
    block: dict[str, Any] = node.rpc("getblock", block_hash, 2)
    assert block["confirmations"] >= 1
    assert node.rpc("getblockhash", block["height"]) == block_hash
    coinbase = block["tx"][0]
    expected_script = node.rpc("validateaddress", address)["scriptPubKey"]
    payout = coinbase["vout"][0]
    assert payout["scriptPubKey"]["hex"] == expected_script
    fees = sum((Decimal(str(tx["fee"])) for tx in block["tx"][1:]), Decimal(0))
    assert Decimal(str(payout["value"])) == subsidy(block["height"]) + fees
    # Every other output is the zero-value witness commitment.
    for out in coinbase["vout"][1:]:
        assert Decimal(str(out["value"])) == 0
        assert out["scriptPubKey"]["hex"].startswith("6a24aa21a9ed")
    return block
