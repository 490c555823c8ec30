"""Node faults under a running pool: nothing crashes, miners stay connected, work resumes.

Real regtest nodes throughout. The faults a real node cannot show on demand (a hung RPC, HTTP
500, initial block download, another network) are injected by `FaultProxy`, a JSON-RPC proxy in
front of a real node, so templates, blocks and chain moves stay real. Timings are printed (run
with -s to see them) and only checked against generous bounds.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

import pool.node.templates
from pool.app import Pool
from pool.consensus.block import stratum_prevhash
from pool.found import ACCEPTED
from pool.node import NodeClient, NodeTimeout
from tests.support.faults import IBD_MESSAGE, FaultProxy, errors_from, notifies, wait_for
from tests.support.fixtures import PoolFactory
from tests.support.node import RegtestNode
from tests.support.shares import find_nonce
from tests.support.stratum_client import StratumTestClient, mining_client

BOUND = 15.0  # seconds: generous upper bound for every detection/resume time
SOURCE_LOG = pool.node.templates.log.name  # the template source logs node outages


@pytest.fixture
def proxy(node: RegtestNode) -> Iterator[FaultProxy]:
    p = FaultProxy(node)
    yield p
    p.close()


def figure(name: str, seconds: float) -> None:
    print(f"FIGURE {name}: {seconds:.2f} s")


async def submit(client: StratumTestClient, user: str, notify: list[Any], block: bool) -> Any:
    """Submit a share on `notify` that is (or is not) a block; returns the result."""
    en2 = bytes.fromhex("00000000000000%02x" % (len(client.notifications) % 256))
    nonce = find_nonce(notify, client.extranonce1, en2, meets=block)
    reply = await client.request(
        "mining.submit", [user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"]
    )
    return reply["result"]


async def next_notify(client: StratumTestClient, mark: int, timeout: float = BOUND) -> list[Any]:
    message = await client.notification("mining.notify", timeout=timeout, after=mark)
    params: list[Any] = message["params"]
    return params


def accepted(mining: Pool, count: int = 0) -> bool:
    """The pool's latest found block (and at least `count` blocks) got ACCEPTED."""
    history = mining.submitter.history
    return len(history) >= max(count, 1) and history[-1].status == ACCEPTED


async def clean_job_on(client: StratumTestClient, best: str, mark: int) -> list[Any]:
    """Wait for a clean job on block `best` among the notifications from index `mark`."""
    want = stratum_prevhash(best)

    def found() -> list[Any] | None:
        for message in client.notifications[mark:]:
            params: list[Any] = message["params"]
            if message["method"] == "mining.notify" and params[1] == want and params[8]:
                return params
        return None

    await wait_for(found, BOUND)
    job = found()
    assert job is not None
    return job


async def test_node_stopped_mid_mining(
    node: RegtestNode, start_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pool = await start_pool(node)
    user = node.new_address("bech32")
    client = await mining_client(pool.stratum.port, user)
    job = notifies(client)[-1]
    height = node.rpc("getblockcount")

    stopped = time.monotonic()
    await asyncio.to_thread(node.stop)
    await wait_for(lambda: not pool.source.node_ok, BOUND)
    figure("node stop noticed (from the stop request)", time.monotonic() - stopped)
    await asyncio.sleep(3.0)  # many retries (backoff 0.25 s .. 2 s)
    # Miners stay connected and keep hashing the last job: a block found on it is taken
    # (on regtest every share that counts is a block) and spooled until the node is back.
    assert not client.closed
    assert await submit(client, user, job, block=True) is True
    await wait_for(lambda: len(pool.submitter.history) == 1, BOUND)
    down_lines = errors_from(caplog.records, SOURCE_LOG)
    assert len(down_lines) == 1, down_lines  # one line for the outage, not one per retry
    assert "cannot give templates" in down_lines[0] and "keep their last job" in down_lines[0]

    mark = len(client.notifications)
    await asyncio.to_thread(node.start)
    restarted = time.monotonic()
    await next_notify(client, mark)
    figure("jobs resumed after node restart", time.monotonic() - restarted)
    figure("node outage seen by miners", time.monotonic() - stopped)
    assert pool.source.node_ok
    # The block found during the outage is submitted and accepted...
    await wait_for(lambda: pool.submitter.history[0].status == ACCEPTED, BOUND)
    figure("block found during the outage accepted after restart", time.monotonic() - restarted)
    assert node.rpc("getblockhash", height + 1) == pool.submitter.history[0].hash
    # ...and the miner gets a clean job on it.
    await clean_job_on(client, node.rpc("getbestblockhash"), mark)

    # Mine a block through the pool again: accepted, and a fresh clean job follows.
    mark = len(client.notifications)
    assert await submit(client, user, notifies(client)[-1], block=True) is True
    await wait_for(lambda: node.rpc("getblockcount") == height + 2, BOUND)
    await clean_job_on(client, node.rpc("getbestblockhash"), mark)
    await wait_for(lambda: accepted(pool), BOUND)
    assert len(errors_from(caplog.records, SOURCE_LOG)) == 1
    await client.close()


async def test_reorgs_give_clean_jobs(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node)
    user = node.new_address("bech32")
    client = await mining_client(pool.stratum.port, user)
    tip = node.rpc("getbestblockhash")
    height = node.rpc("getblockcount")
    assert notifies(client)[-1][1] == stratum_prevhash(tip)

    # The tip is invalidated: the node's best block is now one lower. The template at the
    # lower height must replace ours (prev hashes are compared with the node's best hash).
    started = time.monotonic()
    mark = len(client.notifications)
    node.rpc("invalidateblock", tip)
    await clean_job_on(client, node.rpc("getblockhash", height - 1), mark)
    figure("clean job after invalidateblock (lower tip)", time.monotonic() - started)
    assert pool.source.template is not None and pool.source.template.height == height

    # A longer competing chain wins.
    started = time.monotonic()
    mark = len(client.notifications)
    node.generate(2)
    await clean_job_on(client, node.rpc("getbestblockhash"), mark)
    figure("clean job after a longer competing chain", time.monotonic() - started)

    # A same-height reorg: the height stays, the hash changes.
    competing_tip = node.rpc("getbestblockhash")
    mark = len(client.notifications)
    node.rpc("invalidateblock", competing_tip)
    node.generate(1)
    assert node.rpc("getblockcount") == height + 1
    await clean_job_on(client, node.rpc("getbestblockhash"), mark)

    # Work on the new chain is good: a block from the pool lands on it.
    assert await submit(client, user, notifies(client)[-1], block=True) is True
    await wait_for(lambda: node.rpc("getblockcount") == height + 2, BOUND)
    await wait_for(lambda: accepted(pool), BOUND)
    assert pool.submitter.history[-1].in_best_chain
    node.rpc("reconsiderblock", tip)
    node.rpc("reconsiderblock", competing_tip)
    await client.close()


async def test_rpc_timeouts(
    node: RegtestNode,
    proxy: FaultProxy,
    start_pool: PoolFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The client alone: a hung call times out; longpolls (own threads) never hold up the rest.
    client = NodeClient(proxy.url, rpc_user="x", rpc_password="x", timeout=1, max_threads=2)
    proxy.hang = {"getblocktemplate"}
    longpolls = [
        asyncio.ensure_future(client.get_block_template(longpollid="x", timeout=2))
        for _ in range(4)
    ]
    started = time.monotonic()
    assert len(await client.get_best_block_hash()) == 64
    assert time.monotonic() - started < 1.0
    for poll in longpolls:
        with pytest.raises(NodeTimeout):
            await poll
    figure("4 hung longpolls (timeout 2 s) all timed out after", time.monotonic() - started)
    proxy.hang = {"*"}
    started = time.monotonic()
    with pytest.raises(NodeTimeout):
        await client.get_best_block_hash()
    assert time.monotonic() - started < 3.0
    client.close()
    proxy.hang = set()

    # The pool: a longpoll that times out is asked again, not counted as a node failure.
    monkeypatch.setattr(pool.node.templates, "LONGPOLL_TIMEOUT", 1.0)
    caplog.set_level(logging.INFO)
    mining = await start_pool(node, node_options={"rpc_url": proxy.url, "rpc_timeout_seconds": 1})
    user = node.new_address("bech32")
    miner = await mining_client(mining.stratum.port, user)
    await asyncio.sleep(2.5)
    assert mining.source.node_ok and errors_from(caplog.records, SOURCE_LOG) == []

    # A hung validateaddress (a miner authorizing) does not delay new blocks for the others.
    proxy.hang = {"validateaddress"}
    newcomer = await StratumTestClient.connect("127.0.0.1", mining.stratum.port)
    await newcomer.request("mining.subscribe", ["slow/1"])
    authorize = newcomer.send("mining.authorize", [node.new_address("bech32"), "x"])
    mark = len(miner.notifications)
    started = time.monotonic()
    [new_tip] = node.generate(1)
    job = await next_notify(miner, mark)
    figure("new block delivered while validateaddress hangs", time.monotonic() - started)
    assert job[1] == stratum_prevhash(new_tip) and job[8] is True
    reply = await newcomer.reply(authorize, timeout=BOUND)  # the cross-check timed out
    assert reply["result"] is True
    assert mining.source.node_ok

    # Everything hangs: the node is given up on after the RPC timeout, with one line.
    proxy.hang = {"*"}
    started = time.monotonic()
    figure("hung node noticed (rpc_timeout 1 s)",
           await wait_for(lambda: not mining.source.node_ok, BOUND))
    await asyncio.sleep(2.0)
    lines = errors_from(caplog.records, SOURCE_LOG)
    assert len(lines) == 1 and "did not answer" in lines[0], lines
    assert not miner.closed
    mark = len(miner.notifications)
    proxy.hang = set()
    started = time.monotonic()
    await next_notify(miner, mark)
    figure("jobs resumed after the hang ended", time.monotonic() - started)
    assert mining.source.node_ok
    await miner.close()
    await newcomer.close()


async def test_http_500_and_initial_download(
    node: RegtestNode,
    proxy: FaultProxy,
    start_pool: PoolFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    mining = await start_pool(node, node_options={"rpc_url": proxy.url, "rpc_timeout_seconds": 2})
    user = node.new_address("bech32")
    client = await mining_client(mining.stratum.port, user)

    # HTTP 500 with a text body (a broken proxy or a node in trouble).
    proxy.http_500 = True
    figure("HTTP 500 noticed", await wait_for(lambda: not mining.source.node_ok, BOUND))
    await asyncio.sleep(1.5)
    lines = errors_from(caplog.records, SOURCE_LOG)
    assert len(lines) == 1 and "500" in lines[0], lines
    mark = len(client.notifications)
    proxy.http_500 = False
    started = time.monotonic()
    await next_notify(client, mark)
    figure("jobs resumed after HTTP 500s", time.monotonic() - started)

    # Initial block download: getblocktemplate answers -10 while a new block arrives.
    proxy.ibd = True
    mark = len(client.notifications)
    [new_tip] = node.generate(1)
    await wait_for(lambda: not mining.source.node_ok, BOUND)
    await asyncio.sleep(1.5)
    lines = errors_from(caplog.records, SOURCE_LOG)
    assert len(lines) == 2 and IBD_MESSAGE in lines[1] and "-10" in lines[1], lines
    assert len(client.notifications) == mark and not client.closed  # no job, still connected
    proxy.ibd = False
    started = time.monotonic()
    job = await next_notify(client, mark)
    figure("jobs resumed after initial download ended", time.monotonic() - started)
    assert job[1] == stratum_prevhash(new_tip) and job[8] is True
    assert await submit(client, user, job, block=True) is True
    await wait_for(lambda: accepted(mining), BOUND)
    await client.close()


async def test_node_on_another_network(
    node: RegtestNode,
    proxy: FaultProxy,
    start_pool: PoolFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    mining = await start_pool(node, node_options={"rpc_url": proxy.url, "rpc_timeout_seconds": 2})
    mining.source.identity_seconds = 0.5  # 10 s in production
    user = node.new_address("bech32")
    client = await mining_client(mining.stratum.port, user)

    for fault in ("chain", "genesis"):
        # The node now says it is on mainnet (or has another genesis block), and a block
        # arrives: no job may be built from it.
        if fault == "chain":
            proxy.chain = "main"
        else:
            proxy.genesis = "11" * 32
        started = time.monotonic()
        await wait_for(lambda: not mining.source.node_ok, BOUND)
        figure(f"other network ({fault}) noticed", time.monotonic() - started)
        mark = len(client.notifications)
        node.generate(1)
        await asyncio.sleep(2.0)
        assert len(client.notifications) == mark and not client.closed
        lines = [line for line in errors_from(caplog.records, SOURCE_LOG) if fault in line]
        assert len(lines) == 1 and lines[0].startswith("WRONG NETWORK"), lines
        proxy.chain = proxy.genesis = None
        job = await next_notify(client, mark)
        assert job[1] == stratum_prevhash(node.rpc("getbestblockhash")) and job[8] is True
    assert len(errors_from(caplog.records, SOURCE_LOG)) == 2
    await client.close()


async def test_node_restarted_with_a_wiped_chain(start_pool: PoolFactory) -> None:
    """Same network, same genesis, but a new chain five blocks shorter: the pool follows it
    with clean jobs (jobs on the old chain become stale) and mines on it."""
    with RegtestNode() as node:
        node.generate(5)
        mining = await start_pool(node)
        user = node.default_address()  # no wallet: the P2WPKH address of key 1
        client = await mining_client(mining.stratum.port, user)
        old = notifies(client)[-1]

        await asyncio.to_thread(node.stop)
        shutil.rmtree(node.chaindir)
        mark = len(client.notifications)
        await asyncio.to_thread(node.start)
        restarted = time.monotonic()
        assert node.rpc("getblockcount") == 0
        job = await clean_job_on(client, node.rpc("getbestblockhash"), mark)
        figure("clean job on the wiped chain", time.monotonic() - restarted)
        assert mining.source.template is not None and mining.source.template.height == 1

        en2 = bytes(8)
        nonce = find_nonce(old, client.extranonce1, en2, meets=True)
        stale = await client.request(
            "mining.submit", [user, old[0], en2.hex(), old[7], f"{nonce:08x}"]
        )
        assert stale["error"][0] == 21  # the old chain's job is gone
        assert await submit(client, user, job, block=True) is True
        await wait_for(lambda: accepted(mining), BOUND)
        assert node.rpc("getblockcount") == 1
        await client.close()
        await mining.stop()
