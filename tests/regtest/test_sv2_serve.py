"""The pool's own SV2 port, mined on by the Bitaxe firmware's SV2 client (ESP-Miner's code built
for Linux): a standard channel with the authority key checked finds regtest blocks that pay the
miner's address in full; a wrong authority key fails the handshake."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from pool.app import Pool
from pool.config import StratumV2Config
from pool.sv2.certificate import authority_pubkey_base58, load_authority_key, xonly_public_key
from tests.support.fixtures import pool_config
from tests.support.node import RegtestNode
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


async def test_standard_channel_mines_blocks_paying_the_miner(
    sv2_pool: Pool, fresh_node: RegtestNode, sv2_miner: Path
) -> None:
    cfg = sv2_pool.full_config.stratum_v2
    assert cfg.authority_key_file is not None
    key_file = cfg.authority_key_file
    assert key_file.stat().st_mode & 0o777 == 0o600  # made at first start
    authority = authority_pubkey_base58(xonly_public_key(load_authority_key(key_file)))
    assert sv2_pool.sv2 is not None
    rc, result, log = await run_miner(
        sv2_miner, sv2_pool.sv2.port, "--authority-pubkey", authority, "--max-blocks", "3"
    )
    assert rc == 0, log
    assert "Server certificate verified OK" in log
    assert result["channel"] == "standard" and result["channel_opened"]
    assert result["accepted"] >= 1 and result["rejected"] == 0, result
    assert result["blocks"], result
    script = fresh_node.rpc("validateaddress", ADDRESS)["scriptPubKey"]
    # the miner's last block may still be on its way to the node when the miner exits
    async with asyncio.timeout(30):
        while fresh_node.rpc("getblockcount") < 101 + len(result["blocks"]):
            await asyncio.sleep(0.1)
    for block_hash in result["blocks"]:
        block = fresh_node.rpc("getblock", block_hash, 2)
        assert block["confirmations"] >= 1  # in the best chain
        coinbase = block["tx"][0]
        paying = [o for o in coinbase["vout"] if o["value"] > 0]
        assert [o["scriptPubKey"]["hex"] for o in paying] == [script]
        # the whole reward (subsidy + fees) to the miner: 50 BTC on a young regtest chain
        assert paying[0]["value"] >= 50


async def test_wrong_authority_key_fails_the_handshake(sv2_pool: Pool, sv2_miner: Path) -> None:
    from pool.sv2.certificate import new_secret_key

    wrong = authority_pubkey_base58(xonly_public_key(new_secret_key()))
    assert sv2_pool.sv2 is not None
    rc, result, log = await run_miner(sv2_miner, sv2_pool.sv2.port, "--authority-pubkey", wrong)
    assert rc != 0
    assert result["handshake"] is False
    assert "Schnorr signature verification failed" in log
