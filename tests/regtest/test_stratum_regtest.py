"""The Stratum server against a real regtest node, driven by a plain test client."""

from __future__ import annotations

import asyncio

from pool.consensus.target import difficulty_to_target
from tests.support.fixtures import PoolFactory
from tests.support.mining import wait_height
from tests.support.node import RegtestNode
from tests.support.shares import find_nonce
from tests.support.stratum_client import (
    StratumTestClient,
    last_notify,
    mining_client,
    submit_params,
)


async def test_share_errors_stale_duplicate_low(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node, start_difficulty=0.001)
    user = node.new_address("bech32") + ".rig1"
    client = await mining_client(pool.stratum.port, user)
    notify = last_notify(client)
    en2 = bytes.fromhex("0000000000000001")

    # Low difficulty: a hash above the network target is also above the share target.
    low = find_nonce(notify, client.extranonce1, en2, meets=False)
    res = await client.request("mining.submit", submit_params(user, notify, en2, low))
    assert res["result"] is None and res["error"][0] == 23, res

    # A block (regtest: about every second hash), then the same share again: duplicate.
    height = node.rpc("getblockcount")
    good = find_nonce(notify, client.extranonce1, en2, meets=True)
    res = await client.request("mining.submit", submit_params(user, notify, en2, good))
    assert res["result"] is True, res
    res = await client.request("mining.submit", submit_params(user, notify, en2, good))
    assert res["error"][0] == 22, res

    # The block moves the tip: a clean job arrives and the old job is stale.
    await wait_height(node, height + 1)
    await wait_until_tip(client, node)
    fresh = [m["params"] for m in client.notifications if m["method"] == "mining.notify"]
    assert fresh[-1][1] != notify[1] and fresh[-1][8] is True
    other = find_nonce(notify, client.extranonce1, en2, meets=True, start=good + 1)
    res = await client.request("mining.submit", submit_params(user, notify, en2, other))
    assert res["error"][0] == 21, res
    await client.close()


async def test_bad_input_keeps_connection_and_other_miner(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node)
    user = node.new_address("bech32")
    bystander = await mining_client(pool.stratum.port, user + ".other")
    client = await mining_client(pool.stratum.port, user)

    client.send_raw(b"this is not json\n")
    client.send_raw(b"[1,2,3]\n")
    bad = client.send("mining.submit", [user, 5, None])
    unknown = client.send("mining.frobnicate", [])
    assert (await client.reply(bad))["error"][0] == 20
    assert (await client.reply(unknown))["error"][0] == 20
    ok = await client.request("mining.extranonce.subscribe", [])
    assert ok["result"] is True

    # A huge unterminated line closes that connection only.
    client.send_raw(b"x" * 20000)
    async with asyncio.timeout(5):
        while not client.closed:
            await asyncio.sleep(0.02)

    notify = last_notify(bystander)
    en2 = bytes(8)
    nonce = find_nonce(notify, bystander.extranonce1, en2, meets=True)
    res = await bystander.request("mining.submit", submit_params(user, notify, en2, nonce))
    assert res["result"] is True, res
    await bystander.close()


async def test_authorize_rejects_wrong_network(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node)
    client = await StratumTestClient.connect("127.0.0.1", pool.stratum.port)
    await client.request("mining.subscribe", ["x"])
    res = await client.request(
        "mining.authorize", ["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4.w", "x"]
    )
    assert res["result"] is False
    assert res["error"][0] == 24 and "regtest" in res["error"][1], res
    shown = await client.notification("client.show_message")
    assert "main" in shown["params"][0]
    submit = await client.request("mining.submit", ["a", "b", "00", "00", "00"])
    assert submit["error"][0] == 24
    await client.close()


async def test_version_rolling_on_and_off(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node)
    user = node.new_address("bech32")
    height = node.rpc("getblockcount")

    rolling = await mining_client(pool.stratum.port, user)
    notify = last_notify(rolling)
    en2 = bytes(8)
    bits = 0x00B0C000
    version = int(notify[5], 16) | bits
    nonce = find_nonce(notify, rolling.extranonce1, en2, meets=True, version=version)
    res = await rolling.request(
        "mining.submit", submit_params(user, notify, en2, nonce, f"{bits:08x}")
    )
    assert res["result"] is True, res
    await wait_height(node, height + 1)
    assert node.rpc("getblockheader", node.rpc("getbestblockhash"))["version"] == version

    outside = await rolling.request(
        "mining.submit", submit_params(user, last_notify(rolling), en2, 1, "40000000")
    )
    assert outside["error"][0] == 20

    # No configure: five params work, and in-mask bits in a sixth are still applied.
    plain = await mining_client(pool.stratum.port, user, configure=False)
    await wait_until_tip(plain, node)
    notify = last_notify(plain)
    nonce = find_nonce(notify, plain.extranonce1, en2, meets=True)
    res = await plain.request("mining.submit", submit_params(user, notify, en2, nonce))
    assert res["result"] is True, res
    await wait_height(node, height + 2)
    await rolling.close()
    await plain.close()


async def wait_until_tip(client: StratumTestClient, node: RegtestNode) -> None:
    """Wait until the client's latest job builds on the node's best block."""
    from pool.consensus.block import stratum_prevhash

    async with asyncio.timeout(10):
        while last_notify(client)[1] != stratum_prevhash(node.rpc("getbestblockhash")):
            await asyncio.sleep(0.02)


async def test_share_at_job_difficulty_after_increase(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node, start_difficulty=0.00002)
    user = node.new_address("bech32")
    client = await mining_client(pool.stratum.port, user)
    old = last_notify(client)
    await client.request("mining.suggest_difficulty", [0.01])
    diff = await client.notification("mining.set_difficulty", after=2)
    assert diff["params"] == [0.01]
    new = await client.notification("mining.notify", after=3)
    assert new["params"][0] != old[0] and new["params"][8] is True
    # Work on the job sent before the increase is still taken (at mainnet difficulty the
    # old-difficulty rule itself is pinned in test_session_unit.py).
    en2 = bytes(8)
    nonce = find_nonce(
        old, client.extranonce1, en2, meets=True, target=difficulty_to_target(0.00002)
    )
    res = await client.request("mining.submit", submit_params(user, old, en2, nonce))
    assert res["result"] is True, res
    await client.close()
