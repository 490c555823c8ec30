"""Interop with the Bitaxe firmware's own SV2 client (ESP-Miner's sv2_noise.c and sv2_protocol.c
built for Linux from the shared peers folder) against pool.sv2's responder side: the handshake
with the authority key checked (base58check and hex), the firmware's SetupConnection and
Open*MiningChannel decoded, our answers parsed by it, and a wrong authority key refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pool.sv2.certificate import authority_pubkey_base58, new_secret_key, xonly_public_key
from pool.sv2.codec import (
    PROTOCOL_MINING,
    REQUIRES_STANDARD_JOBS,
    OpenExtendedMiningChannel,
    OpenStandardMiningChannel,
    SetupConnection,
)
from tests.support.sv2_miner import USER, run_miner, sv2_miner
from tests.support.sv2_responder import EXTRANONCE_PREFIX, EXTRANONCE_SIZE, responder

__all__ = ["sv2_miner"]  # the fixture

def test_firmware_reads_our_base58_authority_key(sv2_miner: Path) -> None:
    key = xonly_public_key(new_secret_key())
    out = subprocess.run(
        [str(sv2_miner), "--decode-authority-key", authority_pubkey_base58(key)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert out.stdout.strip() == key.hex()


@pytest.mark.parametrize("key_form", ["base58check", "hex"])
async def test_standard_channel_with_authority_key(sv2_miner: Path, key_form: str) -> None:
    authority = new_secret_key()
    xonly = xonly_public_key(authority)
    key = authority_pubkey_base58(xonly) if key_form == "base58check" else xonly.hex()
    async with responder(authority) as (port, seen):
        rc, result, log = await run_miner(sv2_miner, port, "--authority-pubkey", key)
    assert rc == 0, log
    assert result["handshake"] and result["setup"] and result["channel_opened"]
    assert result["channel"] == "standard" and result["channel_id"] == 1
    assert "Server certificate verified OK" in log
    assert "group=0, diff 1\n" in log  # our target was read little-endian: difficulty 1
    assert seen.handshakes == 1 and seen.errors == []
    setup, channel = seen.messages
    assert isinstance(setup, SetupConnection)
    assert (setup.protocol, setup.min_version, setup.max_version) == (PROTOCOL_MINING, 2, 2)
    assert setup.flags == REQUIRES_STANDARD_JOBS
    assert setup.vendor == "bitaxe" and setup.endpoint_port == port
    assert isinstance(channel, OpenStandardMiningChannel)
    assert channel.user_identity == USER and channel.request_id == 1
    assert channel.max_target == b"\xff" * 32
    assert channel.nominal_hash_rate == pytest.approx(1e12, rel=1e-7)  # an F32


async def test_extended_channel_with_authority_key(sv2_miner: Path) -> None:
    authority = new_secret_key()
    async with responder(authority) as (port, seen):
        rc, result, log = await run_miner(
            sv2_miner, port, "--extended", "--authority-pubkey",
            authority_pubkey_base58(xonly_public_key(authority)),
        )  # fmt: skip
    assert rc == 0, log
    assert result["channel"] == "extended" and result["channel_opened"]
    assert result["extranonce_size"] == EXTRANONCE_SIZE
    assert result["extranonce_prefix_len"] == len(EXTRANONCE_PREFIX)
    assert result["warnings"] == []
    setup, channel = seen.messages
    assert isinstance(setup, SetupConnection) and setup.flags == 0
    assert isinstance(channel, OpenExtendedMiningChannel)
    assert channel.min_extranonce_size == 2 and channel.user_identity == USER


async def test_wrong_authority_key_fails_the_handshake(sv2_miner: Path) -> None:
    authority = new_secret_key()
    wrong = authority_pubkey_base58(xonly_public_key(new_secret_key()))
    async with responder(authority) as (port, seen):
        rc, result, log = await run_miner(sv2_miner, port, "--authority-pubkey", wrong)
    assert rc != 0
    assert result["handshake"] is False and result["reason"] == "noise handshake failed"
    assert "Schnorr signature verification failed" in log
    assert seen.messages == []


async def test_without_authority_key_the_firmware_skips_the_check(sv2_miner: Path) -> None:
    async with responder(new_secret_key()) as (port, _seen):
        rc, result, log = await run_miner(sv2_miner, port)
    assert rc == 0 and result["channel_opened"], log
    assert "Skipping certificate verification" in log
