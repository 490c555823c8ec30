"""The pool's own SV2 port, mined on by the Bitaxe firmware's SV2 client (ESP-Miner's code built
for Linux): standard and extended channels with the authority key checked find regtest blocks
that pay the miner's address in full; a wrong authority key fails the handshake; bad input
closes only its own connection."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from pool.app import Pool
from pool.config import StratumV2Config
from pool.reload import reload_config
from pool.shares import share_target
from pool.sv2.certificate import (
    authority_pubkey_base58,
    load_authority_key,
    new_secret_key,
    xonly_public_key,
)
from pool.sv2.codec import (
    CloseChannel,
    NewMiningJob,
    OpenMiningChannelError,
    OpenStandardMiningChannelSuccess,
    Reconnect,
    SetNewPrevHash,
    SetTarget,
    u256_to_int,
)
from pool.sv2.noise import ACT2_SIZE
from tests.support.fixtures import pool_config
from tests.support.node import RegtestNode, RPCError
from tests.support.pool_process import write_config
from tests.support.sv2_client import Sv2TestClient, open_standard
from tests.support.sv2_miner import USER, run_miner, sv2_miner

__all__ = ["sv2_miner"]  # the fixture, shared with the firmware interop tests

ADDRESS = USER.partition(".")[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture
async def sv2_pool(fresh_node: RegtestNode, tmp_path: Path) -> AsyncIterator[Pool]:
    fresh_node.generate(101)
    config = pool_config(fresh_node, tmp_path / "data")
    sv2 = StratumV2Config(
        port=free_port(), host="127.0.0.1",
        authority_key_file=tmp_path / "data" / "sv2_authority.key",
    )  # fmt: skip
    pool = Pool(dataclasses.replace(config, stratum_v2=sv2))
    await pool.start()
    try:
        yield pool
    finally:
        await pool.stop()


@pytest.mark.parametrize("channel", ["standard", "extended"])
async def test_firmware_mines_blocks_paying_the_miner(
    sv2_pool: Pool, fresh_node: RegtestNode, sv2_miner: Path, channel: str
) -> None:
    cfg = sv2_pool.full_config.stratum_v2
    assert cfg.authority_key_file is not None
    key_file = cfg.authority_key_file
    assert key_file.stat().st_mode & 0o777 == 0o600  # made at first start
    authority = authority_pubkey_base58(xonly_public_key(load_authority_key(key_file)))
    assert sv2_pool.sv2 is not None
    rc, result, log = await run_miner(
        sv2_miner, sv2_pool.sv2.port, "--authority-pubkey", authority, "--max-blocks", "3",
        *(["--extended"] if channel == "extended" else []),
    )  # fmt: skip
    assert rc == 0, log
    assert "Server certificate verified OK" in log
    assert result["channel"] == channel and result["channel_opened"]
    assert result["warnings"] == []  # nothing the firmware would mishandle
    assert result["submitted"] >= 1 and result["blocks"], result
    # On regtest every share is a block: a share sent before the miner heard of the pool's
    # last block is a sibling of it (the node keeps it off the best chain) or a stale share.
    assert set(result["errors"]) <= {"stale-share"}, result
    # The blocks the pool took (spooled): the firmware's last one may have been cut off by
    # its exit, or been a stale share after the pool's own previous block.
    taken = [json.loads(p.read_text())["hash"] for p in sv2_pool.spool.directory.glob("*.json")]
    assert taken and set(taken) <= set(result["blocks"]), (taken, result["blocks"])
    script = fresh_node.rpc("validateaddress", ADDRESS)["scriptPubKey"]
    best = 0
    for block_hash in taken:
        async with asyncio.timeout(30):  # submitted just after it was spooled
            while not known(fresh_node, block_hash):
                await asyncio.sleep(0.1)
        block = fresh_node.rpc("getblock", block_hash, 2)
        best += block["confirmations"] >= 1
        paying = [o for o in block["tx"][0]["vout"] if o["value"] > 0]
        assert [o["scriptPubKey"]["hex"] for o in paying] == [script]
        # the whole reward (subsidy + fees) to the miner: 50 BTC on a young regtest chain
        assert paying[0]["value"] >= 50
    assert best >= 1


def known(node: RegtestNode, block_hash: str) -> bool:
    try:
        node.rpc("getblockheader", block_hash)
    except RPCError:
        return False
    return True


async def test_wrong_authority_key_fails_the_handshake(sv2_pool: Pool, sv2_miner: Path) -> None:
    wrong = authority_pubkey_base58(xonly_public_key(new_secret_key()))
    assert sv2_pool.sv2 is not None
    rc, result, log = await run_miner(sv2_miner, sv2_pool.sv2.port, "--authority-pubkey", wrong)
    assert rc != 0
    assert result["handshake"] is False
    assert "Schnorr signature verification failed" in log


async def test_refused_address_gets_open_mining_channel_error(sv2_pool: Pool) -> None:
    assert sv2_pool.sv2 is not None
    client = await Sv2TestClient.connect(sv2_pool.sv2.port)
    await client.setup()
    client.send(open_standard("not-an-address.rig"))
    reply = await client.receive()
    assert isinstance(reply, OpenMiningChannelError) and reply.request_id == 1
    # the connection stays usable: a good address then gets its channel and a job
    client.send(open_standard(USER))
    opened = await client.receive()
    assert isinstance(opened, OpenStandardMiningChannelSuccess)
    job, prevhash = await client.receive(), await client.receive()
    assert isinstance(job, NewMiningJob) and job.min_ntime is None  # a future job ...
    assert isinstance(prevhash, SetNewPrevHash) and prevhash.job_id == job.job_id  # ... started
    client.close()


async def test_bad_input_closes_only_that_connection(
    sv2_pool: Pool, fresh_node: RegtestNode
) -> None:
    assert sv2_pool.sv2 is not None
    port = sv2_pool.sv2.port
    good = await Sv2TestClient.connect(port)
    await good.setup()
    good.send(open_standard(USER))
    assert isinstance(await good.receive(), OpenStandardMiningChannelSuccess)
    await good.receive(), await good.receive()  # its job and prevhash

    # a channel message before SetupConnection
    early = await Sv2TestClient.connect(port)
    early.send(open_standard(USER))
    assert await early.closed_by_pool()
    # handshake garbage: 64 random bytes are a valid key, so the first frame fails to decrypt
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(bytes(range(64)))
    await reader.readexactly(ACT2_SIZE)
    writer.write(b"\x01" * 200)
    async with asyncio.timeout(20):
        assert await reader.read(65536) == b""
    writer.close()
    # a frame header announcing more than the pool accepts
    big = await Sv2TestClient.connect(port)
    assert big.session is not None
    big.writer.write(big.session.send.encrypt(b"\x00\x00\x00\xff\xff\xff"))
    assert await big.closed_by_pool()

    # the good miner is untouched: a new block reaches it as a future job + SetNewPrevHash
    [block_hash] = await asyncio.to_thread(fresh_node.generate, 1)
    while True:
        message = await good.receive()
        if isinstance(message, SetNewPrevHash) and message.prev_hash[::-1].hex() == block_hash:
            break
    good.close()


async def open_channel(pool: Pool, user: str) -> Sv2TestClient:
    assert pool.sv2 is not None
    client = await Sv2TestClient.connect(pool.sv2.port)
    await client.setup()
    client.send(open_standard(user))
    await client.receive_type(OpenStandardMiningChannelSuccess)
    await client.receive_type(NewMiningJob)
    await client.receive_type(SetNewPrevHash)
    return client


async def test_stopping_the_pool_sends_reconnect(sv2_pool: Pool) -> None:
    client = await open_channel(sv2_pool, USER)
    await sv2_pool.stop()
    # the spec's "this same pool": empty host, port 0 (the firmware reconnects on the close)
    assert await client.rest_until_closed() == [Reconnect("", 0)]


async def test_reload_reaches_sv2_channels(
    sv2_pool: Pool, fresh_node: RegtestNode, tmp_path: Path
) -> None:
    keep = fresh_node.new_address("bech32")
    kept = await open_channel(sv2_pool, keep + ".kept")
    dropped = await open_channel(sv2_pool, USER)
    config = write_config(
        tmp_path / "solopool.toml", fresh_node, sv2_pool.stratum.port,
        allowed_addresses=[keep], start_difficulty=0.001, min_difficulty=0.001,
    )  # fmt: skip
    sv2_pool.full_config = dataclasses.replace(sv2_pool.full_config, source=config)
    applied = await reload_config(sv2_pool)
    assert f"[stratum] allowed_addresses: () -> ('{keep}',)" in applied
    # the address no longer allowed: its channel closed, and its connection with it
    # (a template refresh may send a job at any time: jobs are not what this is about)
    rest = [m for m in await dropped.rest_until_closed() if not isinstance(m, NewMiningJob)]
    assert rest == [CloseChannel(1, "address-not-allowed")]
    # the kept channel: the new minimum difficulty, with a job it applies to
    while not isinstance(target := await kept.receive(), SetTarget):
        assert isinstance(target, NewMiningJob)
    assert u256_to_int(target.maximum_target) == share_target(0.001)
    assert (await kept.receive_type(NewMiningJob)).min_ntime is not None
    kept.close()
