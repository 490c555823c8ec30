"""The Stratum session state machine and share validation, without a node, at mainnet difficulty.

A `Session` is driven line by line through `handle_line`, with a `FakePool` (PoolServices) and a
`FakeWriter` collecting what it writes. Work comes from `tests/data/gbt_mainnet.json`, a
getblocktemplate answer at the difficulty of block 840,000 (nbits 17034219), so "share" and
"block" are different things here, unlike on regtest. A block is made without mainnet work by
installing the same template with regtest's easy nbits.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest

from pool import shares
from pool.consensus.block import prevhash_from_stratum
from pool.consensus.merkle import merkle_root, merkle_root_from_branch
from pool.consensus.serialize import sha256d
from pool.consensus.target import difficulty_to_target
from pool.jobs import Template
from pool.stratum.session import MAX_JOBS_PER_SESSION
from pool.vardiff import RETARGET_SHARES
from tests.support.session_fakes import (
    ADDRESS,
    ADDRESS_SCRIPT,
    EASY_TARGET,
    EN2,
    EXTRANONCE1,
    MAINNET_TARGET,
    MASK,
    OTHER_ADDRESS,
    P2PKH_ADDRESS,
    P2PKH_SCRIPT,
    REGTEST_ADDRESS,
    TESTNET_ADDRESS,
    TINY,
    WORKER,
    FakePool,
    Miner,
    Reader,
    assert_work,
    easy_gbt,
    encode,
    error_code,
    find_nonces,
    load_gbt,
    meets,
    misses,
    ok,
    parse_tx,
    sent_difficulty,
    still_usable,
    witness_commitment,
)

# --- the template file ---------------------------------------------------------------------------


def test_mainnet_template_data_is_consistent() -> None:
    gbt = load_gbt()
    assert gbt["bits"] == "17034219"
    assert int(gbt["target"], 16) == MAINNET_TARGET
    assert gbt["version"] == 0x20000000
    assert gbt["rules"] == ["csv", "!segwit", "taproot"]
    wtxids = []
    for tx in gbt["transactions"]:
        r = Reader(bytes.fromhex(tx["data"]))
        parsed = parse_tx(r)
        assert r.done
        assert sha256d(parsed.stripped)[::-1].hex() == tx["txid"]
        assert sha256d(parsed.full)[::-1].hex() == tx["hash"]
        assert tx["weight"] == 3 * len(parsed.stripped) + len(parsed.full)
        wtxids.append(bytes.fromhex(tx["hash"])[::-1])
    assert any(tx["txid"] == tx["hash"] for tx in gbt["transactions"])  # a legacy one
    assert any(tx["txid"] != tx["hash"] for tx in gbt["transactions"])  # and segwit ones
    assert gbt["default_witness_commitment"] == witness_commitment(wtxids).hex()

    template = Template.from_rpc(gbt)
    assert template.network_difficulty == pytest.approx(86388558925171.01)
    assert template.height == 840000
    assert len(template.merkle_branch) == 3  # coinbase + 5 transactions
    assert template.ntime == gbt["curtime"] > gbt["mintime"]
    assert template.job_version == 0x20000000


# --- handshakes ----------------------------------------------------------------------------------


async def test_handshake_esp_miner_pipelined() -> None:
    """configure, subscribe, authorize back to back (ESP-Miner)."""
    m = Miner()
    lines = [
        {"id": 1, "method": "mining.configure",
         "params": [["version-rolling"], {"version-rolling.mask": "ffffffff"}]},
        {"id": 2, "method": "mining.subscribe", "params": ["bitaxe/BM1370/v2.9.0"]},
        {"id": 3, "method": "mining.authorize", "params": [ADDRESS + ".bitaxe", "x"]},
    ]
    out: list[dict[str, Any]] = []
    raw: list[bytes] = []
    for message in lines:
        out += await m.line(encode(message))
        raw += m.writer.raw
    assert out[0] == {
        "id": 1,
        "result": {"version-rolling": True, "version-rolling.mask": "1fffe000"},
        "error": None,
    }
    assert out[1] == {
        "id": 2,
        "result": [
            [["mining.set_difficulty", "f00dcafe"], ["mining.notify", "f00dcafe"]],
            "f00dcafe",
            8,
        ],
        "error": None,
    }
    assert out[2] == {"id": 3, "result": True, "error": None}
    assert_work(out[3:])
    assert sent_difficulty(raw[3]) == b"1024"
    assert m.session.user_agent == "bitaxe/BM1370/v2.9.0"
    assert m.session.version_mask == MASK
    assert m.session.mining


async def test_handshake_nerdqaxe_subscribe_first() -> None:
    """subscribe, configure, authorize, suggest_difficulty pipelined (NerdQAxe++)."""
    m = Miner()
    sub = ok(await m.call("mining.subscribe", ["NerdQAxe++/BM1370/v1.0.30"]))
    assert sub["result"][1] == "f00dcafe"
    configure = ok(await m.call(
        "mining.configure",
        [["version-rolling"],
         {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 16}],
    ))
    assert configure["result"] == {"version-rolling": True, "version-rolling.mask": "1fffe000"}
    out = await m.call("mining.authorize", [ADDRESS + ".nerdqaxe", "x"])
    assert out[0] == {"id": 3, "result": True, "error": None}
    assert_work(out[1:])
    first_job = m.notify[0]
    out = await m.call("mining.suggest_difficulty", [1000])
    assert out[0] == {"id": 4, "result": True, "error": None}
    assert_work(out[1:])
    assert sent_difficulty(m.writer.raw[1]) == b"1000"
    assert m.notify[0] != first_job


async def test_authorize_before_subscribe_starts_work_after_both() -> None:
    m = Miner()
    out = await m.call("mining.authorize", [WORKER, "x"])
    assert out == [{"id": 1, "result": True, "error": None}]
    assert not m.session.mining
    out = await m.call("mining.subscribe", ["cgminer/4.11.1"])
    assert out[0]["id"] == 2 and out[0]["error"] is None
    assert_work(out[1:])


async def test_subscribe_alone_sends_no_work() -> None:
    m = Miner()
    assert len(await m.call("mining.subscribe", [])) == 1
    assert not m.session.mining


@pytest.mark.parametrize("before", ["subscribe", "authorize"])
async def test_suggest_difficulty_before_authorize_is_applied(before: str) -> None:
    m = Miner()
    if before == "authorize":
        ok(await m.call("mining.subscribe", []))
    reply = ok(await m.call("mining.suggest_difficulty", [1000]))
    assert reply["result"] is True
    if before == "subscribe":
        ok(await m.call("mining.subscribe", []))
    out = await m.call("mining.authorize", [WORKER])
    assert out[0]["result"] is True
    assert_work(out[1:])
    assert sent_difficulty(m.writer.raw[1]) == b"1000"  # a JSON integer, not 1000.0


@pytest.mark.parametrize(
    ("suggested", "literal"),
    [
        (1000, b"1000"),
        (1000.0, b"1000"),
        ("2048", b"2048"),
        (0.00015, b"0.00015"),
        (1e20, b"86388558925171"),  # network difficulty is the ceiling
        (1e-12, b"0.00001"),  # the configured floor, written without an exponent
    ],
)
async def test_suggest_difficulty_after_authorize(suggested: Any, literal: bytes) -> None:
    m = Miner(min_difficulty=0.00001)
    await m.start()
    first_job = m.notify[0]
    out = await m.call("mining.suggest_difficulty", [suggested])
    assert out[0]["result"] is True and out[0]["error"] is None
    assert_work(out[1:])
    assert sent_difficulty(m.writer.raw[1]) == literal
    assert m.notify[0] != first_job


async def test_repeated_suggest_difficulty_is_only_answered() -> None:
    """NerdMiner repeats its suggestion as a keepalive: no new job each time."""
    m = Miner(min_difficulty=0.00001)
    await m.start()
    assert len(await m.call("mining.suggest_difficulty", [0.00015])) == 3
    for _ in range(3):
        assert ok(await m.call("mining.suggest_difficulty", [0.00015]))["result"] is True


@pytest.mark.parametrize(
    "params",
    [["abc"], [-5], [0], [True], [None], [[]], [{}], [], ["inf"], ["nan"]],
)
async def test_bad_suggest_difficulty(params: list[Any]) -> None:
    m = Miner()
    await m.start()
    assert error_code(await m.call("mining.suggest_difficulty", params)) == 20
    assert m.session.difficulty == 1024
    await still_usable(m)


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1" + b"0" * 400])
async def test_huge_suggest_difficulty(number: bytes) -> None:
    m = Miner()
    await m.start()
    line = b'{"id":7,"method":"mining.suggest_difficulty","params":[' + number + b"]}"
    assert error_code(await m.line(line)) == 20
    assert m.session.difficulty == 1024
    await still_usable(m)


# --- mining.configure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"version-rolling.mask": "ffffffff"}, {"version-rolling": True,
                                                "version-rolling.mask": "1fffe000"}),
        ({}, {"version-rolling": True, "version-rolling.mask": "1fffe000"}),
        ({"version-rolling.mask": "00fff000", "version-rolling.min-bit-count": 2},
         {"version-rolling": True, "version-rolling.mask": "00ffe000"}),
        ({"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": "10"},
         {"version-rolling": True, "version-rolling.mask": "1fffe000"}),
        ({"version-rolling.mask": "e0000000"},
         {"version-rolling": False, "version-rolling.mask": "00000000"}),
    ],
)
async def test_configure_version_rolling(options: dict[str, Any], expected: dict[str, Any]) -> None:
    m = Miner()
    reply = ok(await m.call("mining.configure", [["version-rolling"], options]))
    assert reply["result"] == expected
    assert m.session.version_mask == int(expected["version-rolling.mask"], 16)


async def test_configure_unknown_extensions_get_false() -> None:
    m = Miner()
    reply = ok(await m.call(
        "mining.configure",
        [["minimum-difficulty", "version-rolling", "subscribe-extranonce", "info"],
         {"version-rolling.mask": "ffffffff", "minimum-difficulty.value": 2048}],
    ))
    assert reply["result"] == {
        "minimum-difficulty": False,
        "version-rolling": True,
        "version-rolling.mask": "1fffe000",
        "subscribe-extranonce": False,
        "info": False,
    }


async def test_configure_without_params_and_bad_mask() -> None:
    m = Miner()
    assert ok(await m.call("mining.configure", []))["result"] == {}
    bad = [["version-rolling"], {"version-rolling.mask": "not hex"}]
    assert error_code(await m.call("mining.configure", bad)) == 20
    await still_usable(m)


# --- the first job -------------------------------------------------------------------------------


async def test_first_work_is_difficulty_then_clean_notify() -> None:
    gbt = load_gbt()
    m = Miner()
    out = await m.start()
    assert out[0] == {"id": 2, "result": True, "error": None}
    work = out[1:]
    assert_work(work)
    assert work[0] == {"id": None, "method": "mining.set_difficulty", "params": [1024]}
    notify = work[1]
    assert set(notify) == {"id", "method", "params"}
    params = notify["params"]
    assert len(params) == 9
    job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, clean = params
    assert isinstance(job_id, str) and job_id
    for field in (version, nbits, ntime):
        assert re.fullmatch("[0-9a-f]{8}", field), field
    assert int(version, 16) & MASK == 0
    assert version == "20000000"
    assert nbits == "17034219"
    assert ntime == f"{gbt['curtime']:08x}"
    assert clean is True
    assert prevhash_from_stratum(prevhash) == bytes.fromhex(gbt["previousblockhash"])[::-1]

    # The coinbase a miner assembles: non-witness, BIP34 height, pays us, commits to witnesses.
    coinbase = bytes.fromhex(coinb1) + EXTRANONCE1 + EN2 + bytes.fromhex(coinb2)
    r = Reader(coinbase)
    parsed = parse_tx(r)
    assert r.done and parsed.stripped == coinbase
    assert coinbase[42:46] == bytes.fromhex("0340d10c")  # push of height 840000
    assert parsed.outputs == [
        (gbt["coinbasevalue"], ADDRESS_SCRIPT),
        (0, bytes.fromhex(gbt["default_witness_commitment"])),
    ]
    # The branch leads to the root over all txids.
    txids = [bytes.fromhex(tx["txid"])[::-1] for tx in gbt["transactions"]]
    root = merkle_root_from_branch(sha256d(coinbase), [bytes.fromhex(b) for b in branch])
    assert root == merkle_root([sha256d(coinbase)] + txids)


async def test_template_version_bits_inside_mask_are_not_sent() -> None:
    m = Miner(FakePool(load_gbt(version=0x30000000)))
    await m.start()
    assert m.notify[5] == "20000000"


# --- mining.authorize ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "network"), [(REGTEST_ADDRESS, "regtest"), (TESTNET_ADDRESS, "test")]
)
async def test_authorize_other_network_address_refused(address: str, network: str) -> None:
    m = Miner()
    ok(await m.call("mining.subscribe", []))
    out = await m.call("mining.authorize", [address + ".rig1", "x"])
    assert len(out) == 2
    reply, show = out
    assert reply["id"] == 2 and reply["result"] is False
    code, message, _ = reply["error"]
    assert code == 24
    assert network in message and "main" in message
    assert show == {"id": None, "method": "client.show_message", "params": [message]}
    assert not m.session.mining and m.session.address is None
    # no work, and a submit is unauthorized
    submit = ["x", "1", "00" * 8, "00000000", "00000000"]
    assert error_code(await m.call("mining.submit", submit)) == 24
    await still_usable(m)


@pytest.mark.parametrize(
    "params", [[""], ["   "], [], [None], [12345], ["not-an-address.rig"]]
)
async def test_authorize_bad_username(params: list[Any]) -> None:
    m = Miner()
    ok(await m.call("mining.subscribe", []))
    out = await m.call("mining.authorize", params)
    assert out[0]["result"] is False
    assert out[0]["error"][0] == 24
    assert all(msg.get("method") != "mining.notify" for msg in out)
    assert not m.session.mining


@pytest.mark.parametrize(
    ("username", "address", "script"),
    [
        (ADDRESS + ".rig1", ADDRESS, ADDRESS_SCRIPT),
        (ADDRESS + "_rig1", ADDRESS, ADDRESS_SCRIPT),
        (ADDRESS, ADDRESS, ADDRESS_SCRIPT),
        (ADDRESS + ".", ADDRESS, ADDRESS_SCRIPT),
        (ADDRESS.upper() + ".RIG", ADDRESS.upper(), ADDRESS_SCRIPT),
        (P2PKH_ADDRESS + ".s9", P2PKH_ADDRESS, P2PKH_SCRIPT),
    ],
)
async def test_authorize_username_formats_one_param(
    username: str, address: str, script: bytes
) -> None:
    m = Miner()
    ok(await m.call("mining.subscribe", []))
    out = await m.call("mining.authorize", [username])  # password omitted
    assert out[0] == {"id": 2, "result": True, "error": None}
    assert_work(out[1:])
    assert m.session.address == address
    assert m.session.payout_script == script
    assert m.pool.jobs.get(m.notify[0]) is not None
    assert m.pool.jobs.get(m.notify[0]).payout_script == script  # type: ignore[union-attr]
    # The worker name as authorized, and the bare address, may both submit (job 21, not 24).
    for worker in (username, address):
        params = [worker, "deadbeef", "00" * 8, m.notify[7], "00000000"]
        assert error_code(await m.call("mining.submit", params)) == 21


async def test_second_authorize_same_address_other_address() -> None:
    m = Miner()
    await m.start()
    assert ok(await m.call("mining.authorize", [ADDRESS + ".rig2", "x"]))["result"] is True
    out = await m.call("mining.authorize", [OTHER_ADDRESS + ".rig3", "x"])
    assert out[0]["result"] is False and out[0]["error"][0] == 24
    assert m.session.payout_script == ADDRESS_SCRIPT
    # a worker of another address may not submit on this connection
    params = [OTHER_ADDRESS + ".rig3", m.notify[0], "00" * 8, m.notify[7], "00000000"]
    assert error_code(await m.call("mining.submit", params)) == 24
    assert m.pool.rejected[-1][1] == 24


# --- other requests ------------------------------------------------------------------------------


async def test_small_requests_and_ids() -> None:
    m = Miner()
    assert await m.line(b'{"id":"a1","method":"mining.extranonce.subscribe","params":[]}') == [
        {"id": "a1", "result": True, "error": None}
    ]
    line = b'{"jsonrpc":"2.0","id":5,"method":"mining.multi_version","params":[1]}'
    assert await m.line(line) == [{"id": 5, "result": True, "error": None}]
    assert await m.line(b'{"id":6,"method":"mining.ping"}') == [
        {"id": 6, "result": "pong", "error": None}
    ]
    # a reply to something we sent is not answered
    assert await m.line(b'{"id":9,"result":"pong","error":null}') == []
    # an id that is not a number or string is answered with null
    assert error_code(await m.line(b'{"id":1.5,"method":"nope","params":[]}')) == 20
    assert m.writer.take() == [] and m.writer.raw == []


async def test_unknown_method_keeps_connection() -> None:
    m = Miner()
    await m.start()
    out = await m.call("mining.get_transactions", ["1"])
    assert error_code(out) == 20 and out[0]["id"] == 3
    assert error_code(await m.line(b'{"id":4,"params":[]}')) == 20  # no method
    assert error_code(await m.line(b'{"id":5,"method":7,"params":[]}')) == 20
    await still_usable(m)


@pytest.mark.parametrize(
    "line",
    [
        b'{"id": 1, "method": "mining.subscribe", ',
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'"mining.subscribe"',
        b"null",
        b"42",
        b'{"id":1,"method":"mining.subscribe","params":{"a":1}}',
        b'{"id":1,"method":"mining.subscribe","params":"x"}',
        b"1" * 5000,
    ],
)
async def test_invalid_json_answered_and_session_usable(line: bytes) -> None:
    m = Miner()
    assert error_code(await m.line(line)) == 20
    await m.start()
    assert m.session.mining
    await still_usable(m)


# --- mining.submit: errors -----------------------------------------------------------------------


async def test_submit_before_subscribe() -> None:
    m = Miner()
    params = [WORKER, "1", "00" * 8, "00000000", "00000000"]
    assert error_code(await m.call("mining.submit", params)) == 25
    ok(await m.call("mining.authorize", [WORKER]))
    assert error_code(await m.call("mining.submit", params)) == 25


async def test_submit_before_authorize() -> None:
    m = Miner()
    ok(await m.call("mining.subscribe", []))
    params = [WORKER, "1", "00" * 8, "00000000", "00000000"]
    assert error_code(await m.call("mining.submit", params)) == 24


async def test_submit_unknown_job() -> None:
    m = Miner()
    await m.start()
    params = [WORKER, "deadbeef", "00" * 8, m.notify[7], "00000000"]
    assert error_code(await m.call("mining.submit", params)) == 21
    assert [(code, reason) for _, code, reason in m.pool.rejected] == [
        (21, "job not found (stale)")
    ]


async def test_submit_on_job_of_old_previous_block_is_stale() -> None:
    m = Miner(start_difficulty=TINY, min_difficulty=TINY)
    await m.start()
    old = m.notify
    (nonce,) = find_nonces(old, meets(TINY))
    # a new block arrives: the pool installs the template and broadcasts a clean job
    new_tip = load_gbt(
        previousblockhash="00000000000000000002a7c4c1e48d76c5a37902165a270156b7a8d72728a054",
        height=840001,
        transactions=[],
        default_witness_commitment=witness_commitment([]).hex(),
    )
    assert m.pool.jobs.set_template(Template.from_rpc(new_tip)) is True
    m.session.assign(m.pool.jobs.job_for(ADDRESS_SCRIPT), clean=True)
    (notify,) = m.take()
    assert notify["params"][8] is True and notify["params"][0] != old[0]
    assert error_code(await m.submit(old, nonce)) == 21
    assert m.pool.accepted == []
    # the new job is good
    (nonce,) = find_nonces(m.notify, meets(TINY))
    assert ok(await m.submit(m.notify, nonce))["result"] is True


async def test_job_survives_template_refresh_on_same_block() -> None:
    m = Miner(start_difficulty=TINY, min_difficulty=TINY)
    await m.start()
    old = m.notify
    refreshed = load_gbt(coinbasevalue=load_gbt()["coinbasevalue"] + 1000)
    assert m.pool.jobs.set_template(Template.from_rpc(refreshed)) is False
    m.session.assign(m.pool.jobs.job_for(ADDRESS_SCRIPT), clean=False)
    (notify,) = m.take()
    assert notify["params"][8] is False and notify["params"][0] != old[0]
    (nonce,) = find_nonces(old, meets(TINY))
    assert ok(await m.submit(old, nonce))["result"] is True


async def test_duplicate_share() -> None:
    m = Miner(start_difficulty=TINY, min_difficulty=TINY)
    await m.start()
    (nonce,) = find_nonces(m.notify, meets(TINY))
    assert ok(await m.submit(m.notify, nonce))["result"] is True
    assert error_code(await m.submit(m.notify, nonce)) == 22
    assert error_code(await m.submit(m.notify, nonce, worker=ADDRESS)) == 22
    # the same nonce with another extranonce2 is different work
    other_en2 = bytes.fromhex("0000000000000002")
    hash_ok = meets(TINY)
    (nonce2,) = find_nonces(m.notify, hash_ok, extranonce2=other_en2)
    assert ok(await m.submit(m.notify, nonce2, extranonce2=other_en2))["result"] is True
    assert len(m.pool.accepted) == 2
    assert [code for _, code, _ in m.pool.rejected] == [22, 22]


def test_remembered_headers_forget_the_oldest_past_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One rule for V1 connections and SV2 channels: a bounded memory that keeps the newest.
    monkeypatch.setattr(shares, "MAX_SEEN_SHARES", 3)
    seen: dict[bytes, None] = {}
    assert all(shares.first_submission(seen, bytes([n])) for n in range(4))
    assert not shares.first_submission(seen, bytes([3]))  # the newest are still known
    assert list(seen) == [bytes([1]), bytes([2]), bytes([3])]
    assert shares.first_submission(seen, bytes([0]))  # the oldest was forgotten


async def test_share_above_target() -> None:
    m = Miner()  # difficulty 1024
    await m.start()
    (nonce,) = find_nonces(m.notify, misses(1024))
    assert error_code(await m.submit(m.notify, nonce)) == 23
    assert m.pool.accepted == [] and m.pool.blocks == []
    assert [code for _, code, _ in m.pool.rejected] == [23]
    assert m.session.rejected == 1
    await still_usable(m)


async def test_ntime_range() -> None:
    gbt = load_gbt()
    m = Miner(start_difficulty=TINY, min_difficulty=TINY)
    await m.start()
    notify = m.notify
    job_ntime = int(notify[7], 16)
    assert job_ntime == gbt["curtime"]
    for ntime in (gbt["mintime"] - 1, job_ntime + 601, 0, 0xFFFFFFFF):
        (nonce,) = find_nonces(notify, meets(TINY), ntime=ntime)
        assert error_code(await m.submit(notify, nonce, ntime=ntime)) == 20, ntime
    # the edges are fine: down to mintime, up to the job's ntime + 600
    for ntime in (gbt["mintime"], job_ntime + 1, job_ntime + 600):
        (nonce,) = find_nonces(notify, meets(TINY), ntime=ntime)
        assert ok(await m.submit(notify, nonce, ntime=ntime))["result"] is True, ntime
        assert m.pool.accepted[-1][1].ntime == ntime


@pytest.mark.parametrize("bits", ["40000000", "80000000", "e0000000", "00001000", "ffffffff"])
async def test_version_bits_outside_mask(bits: str) -> None:
    m = Miner()
    await m.start()
    params = [WORKER, m.notify[0], EN2.hex(), m.notify[7], "00000000", bits]
    assert error_code(await m.call("mining.submit", params)) == 20
    await still_usable(m)


@pytest.mark.parametrize("bits", [0, 0x00B0C000, 0x1FFFE000, 0x00002000])
async def test_version_bits_without_configure_are_applied(bits: int) -> None:
    m = Miner(start_difficulty=TINY, min_difficulty=TINY)
    await m.start()
    assert not m.session.version_rolling_configured
    (nonce,) = find_nonces(m.notify, meets(TINY), version_bits=bits)
    assert ok(await m.submit(m.notify, nonce, version_bits=bits))["result"] is True
    (_, share, _) = m.pool.accepted[-1]
    assert share.version == 0x20000000 | bits
    assert share.header[:4] == struct.pack("<I", 0x20000000 | bits)


async def test_version_bits_with_negotiated_mask() -> None:
    m = Miner(start_difficulty=TINY, min_difficulty=TINY)
    configure = [["version-rolling"], {"version-rolling.mask": "00fff000"}]
    assert ok(await m.call("mining.configure", configure))["result"]["version-rolling.mask"] == (
        "00ffe000"
    )
    await m.start()
    # inside the pool's mask but outside the negotiated one
    params = [WORKER, m.notify[0], EN2.hex(), m.notify[7], "00000000", "10000000"]
    assert error_code(await m.call("mining.submit", params)) == 20
    (nonce,) = find_nonces(m.notify, meets(TINY), version_bits=0x00ABE000)
    assert ok(await m.submit(m.notify, nonce, version_bits=0x00ABE000))["result"] is True


SubmitParams = Callable[[str, str, str], list[Any]]

MALFORMED_SUBMITS: list[Any] = [
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, "zzzzzzzz"], id="non-hex nonce"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, "-1"], id="negative nonce"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, "-0000001"], id="negative nonce padded"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, "123456789"], id="9-digit nonce"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, "+0000001"], id="signed nonce"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, " 0000001"], id="space in nonce"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, "0000_001"], id="underscore in nonce"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, ""], id="empty nonce"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, 12345], id="integer nonce"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, 2**70], id="huge integer nonce"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, 1.5e300], id="huge float nonce"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, None], id="null nonce"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, None, "00000000"], id="null ntime"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, "123456789abcdef0", "00000000"],
                 id="long ntime"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, "-" + t[1:], "00000000"], id="negative ntime"),
    pytest.param(lambda w, j, t: [w, j, "abc", t, "00000000"], id="odd extranonce2"),
    pytest.param(lambda w, j, t: [w, j, "zz" * 8, t, "00000000"], id="non-hex extranonce2"),
    pytest.param(lambda w, j, t: [w, j, "00" * 9, t, "00000000"], id="long extranonce2"),
    pytest.param(lambda w, j, t: [w, j, 1, t, "00000000"], id="integer extranonce2"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, "00000000", "zz"], id="non-hex version"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, "00000000", 8192], id="integer version"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, "00000000", "-1"], id="negative version"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t], id="4 params"),
    pytest.param(lambda w, j, t: [w, j, "00" * 8, t, "00000000", "00000000", "x"], id="7 params"),
    pytest.param(lambda w, j, t: [], id="no params"),
    pytest.param(lambda w, j, t: [123, j, "00" * 8, t, "00000000"], id="integer worker"),
    pytest.param(lambda w, j, t: [w, int(j, 16), "00" * 8, t, "00000000"], id="integer job id"),
    pytest.param(lambda w, j, t: [w, [j], "00" * 8, t, "00000000"], id="list job id"),
]


@pytest.mark.parametrize("make_params", MALFORMED_SUBMITS)
async def test_malformed_submit_is_code_20_and_harmless(make_params: SubmitParams) -> None:
    m = Miner()
    await m.start()
    out = await m.call("mining.submit", make_params(WORKER, m.notify[0], m.notify[7]))
    assert error_code(out) == 20
    assert out[0]["id"] == 3
    assert m.pool.accepted == [] and m.pool.blocks == []
    await still_usable(m)


@pytest.mark.parametrize(
    "tail",
    [b'"00000000",1e400]}', b'"00000000",-1e400]}', b'"00000000",' + b"9" * 400 + b"]}"],
)
async def test_submit_with_huge_json_numbers(tail: bytes) -> None:
    m = Miner()
    await m.start()
    fields = ",".join(json.dumps(f) for f in (WORKER, m.notify[0], EN2.hex(), m.notify[7]))
    head = b'{"id":3,"method":"mining.submit","params":[' + fields.encode() + b","
    assert error_code(await m.line(head + tail)) == 20
    await still_usable(m)


# --- share or block, at mainnet difficulty -------------------------------------------------------


async def test_share_at_mainnet_difficulty_is_not_a_block() -> None:
    m = Miner(start_difficulty=0.00001, min_difficulty=0.00001)
    out = await m.start()
    assert sent_difficulty(m.writer.raw[1]) == b"0.00001"
    assert out[1]["params"] == [0.00001]
    notify = m.notify
    share_target = difficulty_to_target(0.00001)

    (nonce,) = find_nonces(notify, meets(0.00001))
    reply = ok(await m.submit(notify, nonce))
    assert reply == {"id": 3, "result": True, "error": None}
    assert m.pool.blocks == []
    ((session, share, difficulty),) = m.pool.accepted
    assert session is m.session and difficulty == 0.00001
    assert MAINNET_TARGET < share.hash_int <= share_target
    assert not share.is_block
    assert (share.nonce, share.extranonce2, share.version) == (nonce, EN2, 0x20000000)
    assert share.header[:4] == bytes.fromhex("00000020")
    assert share.header[72:76] == bytes.fromhex("19420317")  # nbits, little-endian
    assert sha256d(share.header) == share.hash

    (miss,) = find_nonces(notify, misses(0.00001))
    assert error_code(await m.submit(notify, miss)) == 23
    assert m.pool.blocks == [] and len(m.pool.accepted) == 1


async def test_suggested_tiny_difficulty_share_is_not_a_block() -> None:
    m = Miner(min_difficulty=0.00001)
    await m.start()
    await m.call("mining.suggest_difficulty", [0.00001])
    (nonce,) = find_nonces(m.notify, meets(0.00001))
    assert ok(await m.submit(m.notify, nonce))["result"] is True
    assert m.pool.blocks == [] and len(m.pool.accepted) == 1


def check_block(block: bytes, gbt: dict[str, Any]) -> None:
    """A whole block as it would go to submitblock: consistent header, merkle root, witness."""
    r = Reader(block)
    header = r.take(80)
    count = r.compact()
    coinbase = parse_tx(r)
    txs = [parse_tx(r) for _ in range(count - 1)]
    assert r.done
    assert count == 1 + len(gbt["transactions"])
    assert [tx.full.hex() for tx in txs] == [tx["data"] for tx in gbt["transactions"]]
    assert header[4:36] == bytes.fromhex(gbt["previousblockhash"])[::-1]
    assert header[72:76] == bytes.fromhex(gbt["bits"])[::-1]
    txids = [sha256d(coinbase.stripped)] + [sha256d(tx.stripped) for tx in txs]
    assert header[36:68] == merkle_root(txids)
    assert coinbase.witness == [[bytes(32)]]  # the witness reserved value
    commitment = witness_commitment([sha256d(tx.full) for tx in txs])
    assert coinbase.outputs[-1] == (0, commitment)
    assert coinbase.outputs[0] == (gbt["coinbasevalue"], ADDRESS_SCRIPT)
    assert int.from_bytes(sha256d(header), "little") <= int(gbt["target"], 16)


async def test_block_found_even_when_below_share_difficulty() -> None:
    m = Miner(start_difficulty=1_000_000)
    await m.start()
    assert sent_difficulty(m.writer.raw[1]) == b"1000000"
    # The same block template, but with an easy target (no mainnet work needed to solve it).
    gbt = easy_gbt()
    assert m.pool.jobs.set_template(Template.from_rpc(gbt)) is False  # same previous block
    m.session.assign(m.pool.jobs.job_for(ADDRESS_SCRIPT), clean=False)
    (msg,) = m.take()
    notify = msg["params"]
    assert notify[6] == "207fffff"
    share_target = difficulty_to_target(1_000_000)

    (nonce,) = find_nonces(notify, lambda h: share_target < h <= EASY_TARGET)
    assert ok(await m.submit(notify, nonce))["result"] is True
    ((session, block),) = m.pool.blocks
    assert session is m.session
    assert block.is_block and block.hash_int > share_target
    assert block.job.job_id == notify[0]
    assert block.block_hash == sha256d(block.header)[::-1].hex()
    assert [(s, d) for _, s, d in m.pool.accepted] == [(block, 1_000_000)]
    check_block(block.job.block(block.header, EXTRANONCE1 + EN2), gbt)

    # A hash above the network target is no block, and far from the share target.
    (miss,) = find_nonces(notify, lambda h: h > EASY_TARGET)
    assert error_code(await m.submit(notify, miss)) == 23
    assert len(m.pool.blocks) == 1


async def test_block_with_rolled_version_and_ntime() -> None:
    m = Miner(start_difficulty=1_000_000)
    configure = [["version-rolling"], {"version-rolling.mask": "ffffffff"}]
    ok(await m.call("mining.configure", configure))
    await m.start()
    gbt = easy_gbt()
    m.pool.jobs.set_template(Template.from_rpc(gbt))
    m.session.assign(m.pool.jobs.job_for(ADDRESS_SCRIPT), clean=False)
    m.take()
    ntime = gbt["curtime"] + 30
    bits = 0x1FFFE000
    (nonce,) = find_nonces(m.notify, lambda h: h <= EASY_TARGET, ntime=ntime, version_bits=bits)
    assert ok(await m.submit(m.notify, nonce, ntime=ntime, version_bits=bits))["result"] is True
    ((_, block),) = m.pool.blocks
    assert block.version == 0x3FFFE000 and block.ntime == ntime
    check_block(block.job.block(block.header, EXTRANONCE1 + EN2), gbt)


# --- difficulty changes --------------------------------------------------------------------------


LOW, HIGH = 1e-8, 1e-6


def between(low: float, high: float) -> Callable[[int], bool]:
    """Hashes that meet difficulty `low` but not `high`."""
    low_target, high_target = difficulty_to_target(low), difficulty_to_target(high)
    return lambda h: high_target < h <= low_target


async def test_share_on_job_before_increase_judged_at_old_difficulty() -> None:
    m = Miner(start_difficulty=LOW, min_difficulty=TINY)
    await m.start()
    old = m.notify
    out = await m.call("mining.suggest_difficulty", [HIGH])
    assert out[0]["result"] is True
    assert_work(out[1:])
    assert out[1]["params"] == [HIGH]
    new = m.notify
    assert new[0] != old[0]

    (nonce,) = find_nonces(old, between(LOW, HIGH))
    assert ok(await m.submit(old, nonce))["result"] is True
    assert m.pool.accepted[-1][2] == LOW
    (nonce,) = find_nonces(new, between(LOW, HIGH), extranonce2=bytes.fromhex("00000000000000aa"))
    out = await m.submit(new, nonce, extranonce2=bytes.fromhex("00000000000000aa"))
    assert error_code(out) == 23
    (nonce,) = find_nonces(new, meets(HIGH))
    assert ok(await m.submit(new, nonce))["result"] is True
    assert m.pool.accepted[-1][2] == HIGH


async def test_share_on_job_before_decrease_judged_at_new_difficulty() -> None:
    m = Miner(start_difficulty=HIGH, min_difficulty=TINY)
    await m.start()
    old = m.notify
    out = await m.call("mining.suggest_difficulty", [LOW])
    assert_work(out[1:])
    assert out[1]["params"] == [LOW]
    (nonce,) = find_nonces(old, between(LOW, HIGH))
    assert ok(await m.submit(old, nonce))["result"] is True
    assert m.pool.accepted[-1][2] == LOW


# --- vardiff through the session -----------------------------------------------------------------


async def test_vardiff_raises_difficulty_after_fast_shares() -> None:
    m = Miner(start_difficulty=TINY, min_difficulty=TINY, share_interval_seconds=10)
    await m.start()
    notify = m.notify
    nonces = find_nonces(notify, meets(TINY), count=RETARGET_SHARES + 1)
    for nonce in nonces[: RETARGET_SHARES - 1]:
        assert ok(await m.submit(notify, nonce))["result"] is True
    out = await m.submit(notify, nonces[RETARGET_SHARES - 1])
    assert len(out) == 3
    assert out[0]["result"] is True and out[0]["error"] is None
    assert_work(out[1:])
    new_difficulty = out[1]["params"][0]
    assert new_difficulty == pytest.approx(4 * TINY)  # one step of at most x4
    assert m.session.difficulty == new_difficulty
    assert m.notify[0] != notify[0]
    # The old job is still judged at the old difficulty.
    assert ok(await m.submit(notify, nonces[RETARGET_SHARES]))["result"] is True
    assert m.pool.accepted[-1][2] == TINY
    assert len(m.pool.accepted) == RETARGET_SHARES + 1


async def test_quiet_miner_lowered_with_integer_difficulty() -> None:
    m = Miner()  # 1024, one share per 10 s wanted
    await m.start()
    first = m.notify[0]
    m.session.tick(time.monotonic() + 30)
    assert m.take() == []
    m.session.tick(time.monotonic() + 61)
    out = m.take()
    assert_work(out)
    assert sent_difficulty(m.writer.raw[0]) == b"256"
    assert m.notify[0] != first
    assert m.session.difficulty == 256 and type(m.session.difficulty) is int


async def test_tick_before_mining_does_nothing() -> None:
    m = Miner()
    ok(await m.call("mining.subscribe", []))
    m.session.tick(time.monotonic() + 1000)
    assert m.take() == []


async def test_difficulties_at_or_above_one_are_sent_as_integers() -> None:
    m = Miner(min_difficulty=0.001)
    await m.start()
    for suggested in (1.0, 3.7, 65536.0, 0.5, 1e9):
        await m.call("mining.suggest_difficulty", [suggested])
        literal = sent_difficulty(m.writer.raw[1])
        if suggested >= 1:
            assert literal.isdigit(), literal
        else:
            assert literal == b"0.5"


async def test_same_work_on_the_job_after_a_difficulty_change_is_a_new_share() -> None:
    """The job sent after a difficulty change has its own coinbase (its job number), so the same
    extranonce2, nonce, version and ntime on it is a new header, not a duplicate; the same
    submit on the same job again still is one."""
    m = Miner(start_difficulty=TINY, min_difficulty=TINY / 4)
    await m.start()
    old = m.notify
    replies = await m.call("mining.suggest_difficulty", [TINY / 2])
    assert replies[0]["result"] is True and replies[1]["method"] == "mining.set_difficulty"
    new = m.notify
    assert new[0] != old[0] and new[2] != old[2] and new[3] == old[3]
    on_new = set(find_nonces(new, meets(TINY / 2), 40))
    nonce = next(n for n in find_nonces(old, meets(TINY), 40) if n in on_new)
    assert ok(await m.submit(old, nonce))["result"] is True
    assert ok(await m.submit(new, nonce))["result"] is True
    assert error_code(await m.submit(new, nonce)) == 22
    assert error_code(await m.submit(old, nonce)) == 22
    assert len(m.pool.accepted) == 2


async def test_refused_authorize_closes_after_a_moment() -> None:
    m = Miner()
    ok(await m.call("mining.subscribe", []))
    out = await m.call("mining.authorize", ["tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "x"])
    assert out[0]["result"] is False
    assert not m.writer.closed
    await asyncio.sleep(1.2)
    assert m.writer.closed and m.session.closed


# --- memory per connection: structures made when first needed ------------------------------------


async def test_idle_session_holds_no_per_share_structures() -> None:
    m = Miner()
    await m.start()
    s = m.session
    assert s.seen is None and s.roots is None and s.more_workers is None
    assert s.older_jobs is None
    assert s.newest_job_id == m.notify[0] and s.newest_job_difficulty == 1024
    assert s.workers == {WORKER}
    await m.call("mining.authorize", [ADDRESS + ".rig2", "x"])
    assert s.workers == {WORKER, ADDRESS + ".rig2"}


async def test_jobs_remembered_per_session_are_the_pools_live_ones() -> None:
    """Through many template refreshes on one block, a connection remembers only the jobs the
    pool still keeps (a few templates' worth), not MAX_JOBS_PER_SESSION of them."""
    m = Miner(start_difficulty=TINY, min_difficulty=TINY)
    await m.start()
    first = m.notify
    sent = []
    for i in range(MAX_JOBS_PER_SESSION + 5):
        refreshed = load_gbt(coinbasevalue=load_gbt()["coinbasevalue"] + 1000 + i)
        m.pool.jobs.set_template(Template.from_rpc(refreshed))
        job = m.pool.jobs.job_for(ADDRESS_SCRIPT)
        m.session.assign(job, clean=False)
        sent.append(job.job_id)
    notifies = [msg["params"] for msg in m.take() if msg.get("method") == "mining.notify"]
    s = m.session
    live = [j for j in sent if m.pool.jobs.get(j) is not None]
    assert 1 < len(live) < MAX_JOBS_PER_SESSION
    assert [*(s.older_jobs or {}), s.newest_job_id] == live  # oldest first, the newest last
    (nonce,) = find_nonces(first, meets(TINY))
    assert error_code(await m.submit(first, nonce)) == 21  # forgotten: stale
    # What the miner sees: every job the pool still keeps is accepted at its difficulty (the
    # oldest first), and the newest one it dropped is stale.
    dropped = [n for n in notifies if n[0] not in live]
    for params in [n for n in notifies if n[0] in live] + dropped[-1:]:
        (nonce,) = find_nonces(params, meets(TINY))
        (reply,) = await m.submit(params, nonce)
        if params[0] in live:
            assert reply["result"] is True, reply
        else:
            assert reply["error"][0] == 21, reply
    assert dropped and len(m.pool.accepted) == len(live)


async def test_sessions_share_equal_address_and_agent_strings() -> None:
    pool = FakePool()
    a, b = Miner(pool), Miner(pool)
    await a.start(ADDRESS + ".a")
    await b.start(ADDRESS + ".b")
    assert a.session.address is b.session.address
    assert a.session.user_agent is b.session.user_agent
