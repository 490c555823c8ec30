"""Every message between the main process and a Stratum worker survives the trip over the
worker's channel whole: same type, same fields."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, get_args

import pytest

from pool import messages
from pool.config import StratumConfig, StratumV2Config
from pool.found import FoundBlock
from pool.ipc import Channel, encode
from pool.jobs import Template
from pool.sv2.certificate import ServerIdentity
from tests.support.paths import DATA_DIR

GBT = DATA_DIR / "gbt_mainnet.json"
TEMPLATE = Template.from_rpc(json.loads(GBT.read_text()))
CONFIG = StratumConfig(port=3334, start_difficulty=0.5, allowed_addresses=("bc1qexample",))
BLOCK = FoundBlock(
    height=840_000, hash="00" * 32, hex="ab" * 100, worker="bc1qx.rig", address="bc1qx",
    found_at=1_700_000_000.5, answers={"node": "null"},
)
SID = bytes.fromhex("01abcdef")
SV2 = messages.Sv2Setup(
    StratumV2Config(port=3336, host="0.0.0.0", authority_key_file=Path("/d/sv2_authority.key")),
    ServerIdentity.issue(bytes(31) + b"\x01", 365 * 86_400, 1_700_000_000),
)

SAMPLES: list[Any] = [
    messages.Start(CONFIG, Path("/var/lib/solopool"), 3, TEMPLATE, b"/solopool/", 20),
    messages.Start(CONFIG, Path("/tmp/x"), 0, None, b"", 10),
    messages.Start(CONFIG, Path("/tmp/x"), 1, TEMPLATE, b"", 20, SV2),
    messages.NewTemplate(TEMPLATE, b"/tag/"),
    messages.NewConfig(CONFIG),
    messages.PayoutResolved(7, script=bytes.fromhex("0014" + "11" * 20)),
    messages.PayoutResolved(8, refusal="'x' is not a valid main address"),
    messages.PayoutResolved(9, error="the pool could not check the address"),
    messages.RememberDifficulties((("bc1qx.rig", 512.0), ("bc1qy", 0.001))),
    messages.Stop(),
    messages.Ready(4242),
    messages.Failed(98, "Address already in use"),
    messages.Stopped(),
    messages.ResolvePayout(7, "bc1qexample"),
    messages.BlockFound(BLOCK),
    messages.Connected(SID, 1234.5),
    messages.Connected(SID, 1234.5, "sv2"),
    messages.Disconnected(SID),
    messages.Disconnected(SID, ("bc1qx.rig", 2048.0)),
    messages.MinerChanged(SID, "bc1qx", "bc1qx.rig", 1024.0, "bitaxe/BM1370/v2.4.0", True),
    messages.MinerChanged(SID, None, "", 0.0, "", False),
    messages.MinerChanged(SID, "bc1qx", "rig", 1.0, "bitaxe v2.4 (SV2)", True, "sv2"),
    messages.ShareAccepted(SID, "bc1qx", "bc1qx.rig", 5000.25, False, 1024.0),
    messages.ShareRejected(SID, None, "", 24, "unauthorized worker"),
    messages.Events((
        messages.Connected(SID, 1.0),
        messages.ShareAccepted(SID, "bc1qx", "bc1qx.rig", 1e9, True, 1024.0),
        messages.Disconnected(SID, ("bc1qx.rig", 1024.0)),
    )),
]


def round_trip(message: Any) -> Any:
    """`message` sent whole through the channel's own encoding and decoding."""
    received: list[Any] = []
    channel = Channel(received.append)
    data = encode(message)
    # Byte by byte at the end: the decoder must wait for a whole message.
    channel.data_received(data[:-3])
    assert received == []
    for i in range(len(data) - 3, len(data)):
        channel.data_received(data[i : i + 1])
    (decoded,) = received
    return decoded


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_message_round_trip(message: Any) -> None:
    decoded = round_trip(message)
    assert type(decoded) is type(message)
    assert decoded == message
    assert decoded is not message


def test_every_message_type_has_a_sample() -> None:
    kinds = {
        *get_args(messages.ToWorker), *get_args(messages.FromWorker),
        *get_args(messages.SessionEvent),
    }
    assert kinds == {type(m) for m in SAMPLES}


@pytest.mark.parametrize("kind", sorted(
    {*get_args(messages.ToWorker), *get_args(messages.FromWorker),
     *get_args(messages.SessionEvent)}, key=lambda k: k.__name__,
), ids=lambda k: k.__name__)
def test_messages_are_frozen(kind: type) -> None:
    params = getattr(kind, "__dataclass_params__")  # noqa: B009
    assert dataclasses.is_dataclass(kind) and params.frozen


def test_share_accepted_is_the_share_observers_read() -> None:
    share = messages.ShareAccepted(SID, "bc1qx", "bc1qx.rig", 5000.25, True, 1024.0)
    # What stats and alerts read of an accepted share (a ShareView).
    assert (share.difficulty, share.is_block) == (5000.25, True)


def test_sv2_setup_survives_whole() -> None:
    """Every worker gets the same identity: a miner that reconnects to another worker meets
    the same static key and certificate."""
    start = round_trip(messages.Start(CONFIG, Path("/tmp/x"), 1, None, b"", 20, SV2))
    assert start.sv2 == SV2 and type(start.sv2.identity) is ServerIdentity
    assert start.sv2.identity.static_secret == SV2.identity.static_secret
    assert start.sv2.identity.certificate.encode() == SV2.identity.certificate.encode()
    assert start.sv2.config.port == 3336
    assert round_trip(messages.Connected(SID, 1.0, "sv2")).protocol == "sv2"
    assert round_trip(messages.Connected(SID, 1.0)).protocol == "v1"


def test_found_block_fields_survive() -> None:
    decoded = round_trip(messages.BlockFound(BLOCK)).block
    assert dataclasses.asdict(decoded) == dataclasses.asdict(BLOCK)
    assert decoded.filename == BLOCK.filename
