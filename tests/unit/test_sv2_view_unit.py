"""SV2 beside V1 in what people read: one connection list for every protocol, the authority key
and each worker's protocol in `solopool status`."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from pool.services import AllMiners
from pool.snapshot import Sv2Endpoint
from pool.status import render
from pool.sv2.server import Sv2Server

KEY = "9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh"  # the spec's example key


def miner(name: str, protocol: str) -> Any:
    return SimpleNamespace(worker=name, protocol=protocol)


def test_the_connection_list_has_v1_sessions_and_sv2_channels_read_live() -> None:
    v1 = [miner("a.v1", "v1")]
    stratum = SimpleNamespace(sessions=v1)
    miners = AllMiners(cast(Any, stratum))
    connections = miners.sessions
    assert list(connections) == v1 and len(connections) == 1

    standard, extended = miner("a.axe", "sv2"), miner("a.qaxe", "sv2")
    sv2 = Sv2Server.__new__(Sv2Server)  # only its connection bookkeeping is read here
    idle = SimpleNamespace(channels={})  # handshake done, no channel open yet: no miner
    sv2.connections = cast(Any, [
        SimpleNamespace(channels={1: standard}), idle, SimpleNamespace(channels={2: extended}),
    ])  # fmt: skip
    miners.parts.append(sv2)  # as app.py does once the SV2 port listens
    assert len(connections) == 3
    assert sorted(m.worker for m in connections) == ["a.axe", "a.qaxe", "a.v1"]
    assert extended in connections and miner("a.gone", "sv2") not in connections
    v1.append(miner("a.v1b", "v1"))  # live: no copy was taken
    assert len(miners.sessions) == 4


def test_sv2_endpoint_json() -> None:
    assert Sv2Endpoint(3336, KEY).to_json() == {"port": 3336, "authority_pubkey": KEY}


def summary(**changes: Any) -> dict[str, Any]:
    return {"version": "1", "network": "regtest", "uptime": 60, "time": 1000.0, **changes}


def test_status_shows_the_authority_key_and_each_workers_protocol() -> None:
    workers = [
        {"name": "bcrt1qaaa.axe", "online": True, "protocol": "sv2"},
        {"name": "bcrt1qaaa.nerd", "online": False, "protocol": "v1"},
    ]
    text = render(summary(stratum_v2={"port": 3336, "authority_pubkey": KEY}), workers)
    assert f"stratum v2  port 3336, authority public key {KEY}" in text
    assert "online  bcrt1qaaa.axe (SV2)" in text and "offline bcrt1qaaa.nerd (V1)" in text
    # SV2 off (or an older pool's API without the fields): no SV2 line, workers read as V1.
    text = render(summary(stratum_v2=None), [{"name": "bcrt1qaaa.old", "online": True}])
    assert "stratum v2" not in text and "online  bcrt1qaaa.old (V1)" in text
