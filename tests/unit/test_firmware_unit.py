"""Firmware behaviour that needs no node: job uniqueness against firmware that restarts its
search at every job, the fractional-difficulty allowlist with the user agents the firmware
sources send, and NerdMiner's 4 KiB JSON document."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from pool.consensus.serialize import sha256d
from pool.jobs import NERDMINER_DOCUMENT_BYTES, JobManager, Template
from pool.stratum.session import fractional_difficulty_ok
from tests.support.session_fakes import (
    ADDRESS,
    ADDRESS_SCRIPT,
    EXTRANONCE1,
    MASK,
    OTHER_ADDRESS,
    TINY,
    FakePool,
    Miner,
    header_prefix,
    load_gbt,
    meets,
)
from tests.support.shares import increment_bitmask

# --- no two jobs give one header ---------------------------------------------------------------


def header_of(manager: JobManager, job_id: str, ntime: int) -> bytes:
    """The header a miner hashes for one job at fixed extranonce2, nonce, version and ntime."""
    job = manager.get(job_id)
    assert job is not None
    return job.header(EXTRANONCE1 + bytes(8), ntime, 0, job.version)


def test_no_two_jobs_give_one_header() -> None:
    """Fresh jobs after difficulty changes, jobs re-made after template refreshes with the same
    transactions, and jobs for another payout script: all headers differ for the same
    extranonce2, nonce, version bits and ntime."""
    manager = JobManager(b"/solopool/")
    template = Template.from_rpc(load_gbt())
    manager.set_template(template)
    other_script = bytes.fromhex("a914b472a266d0bd89c13706a4132ccfb16f7c3b9fcb87")
    ids = [manager.job_for(ADDRESS_SCRIPT).job_id]
    ids += [manager.job_for(ADDRESS_SCRIPT, fresh=True).job_id for _ in range(5)]
    for _ in range(3):  # template refreshes: the same template again
        assert manager.set_template(Template.from_rpc(load_gbt())) is False
        ids.append(manager.job_for(ADDRESS_SCRIPT).job_id)
        ids.append(manager.job_for(ADDRESS_SCRIPT, fresh=True).job_id)
    ids.append(manager.job_for(other_script).job_id)
    assert len(set(ids)) == len(ids)
    headers = {header_of(manager, job_id, template.ntime) for job_id in ids}
    assert len(headers) == len(ids)
    # The job number sits right before the extranonce push, little-endian.
    job = manager.get(ids[-1])
    assert job is not None
    coinb1 = job.coinbase.coinb1
    assert coinb1[-6:] == b"\x04" + int(ids[-1], 16).to_bytes(4, "little") + b"\x0c"


# --- firmware that restarts its search at every new job, across a difficulty change -------------


def shares_from(
    notify: list[Any], difficulty: float, en2: bytes, version: int, start: int, count: int
) -> list[int]:
    """The first `count` nonces from `start` up whose header meets `difficulty`, in the order a
    miner finds them."""
    prefix = header_prefix(notify, en2, int(notify[7], 16), version)
    accept = meets(difficulty)
    found: list[int] = []
    nonce = start
    while len(found) < count:
        digest = sha256d(prefix + nonce.to_bytes(4, "little"))
        if accept(int.from_bytes(digest, "little")):
            found.append(nonce)
        nonce += 1
    return found


async def replay_restart(
    agent: str, en2: bytes, nonce_start: int, versions: int, six_params: bool
) -> Miner:
    """Mine job A, then the pool changes the difficulty (a fresh job B), and the firmware
    restarts exactly as it does at every new job: the same extranonce2, the same nonces from
    the same start, the same version rolls. Every submit must be accepted."""
    m = Miner(start_difficulty=TINY, min_difficulty=TINY / 4)
    await m.call("mining.configure", [["version-rolling"], {"version-rolling.mask": "ffffffff"}])
    await m.call("mining.subscribe", [agent])
    await m.call("mining.authorize", [ADDRESS, "x"])
    for difficulty in (TINY, TINY / 2):
        if difficulty != TINY:
            m.session.set_difficulty(difficulty)  # what vardiff does
            m.take()
        notify = m.notify
        job_version = int(notify[5], 16)
        rolled = job_version
        for _ in range(versions):
            for nonce in shares_from(notify, difficulty, en2, rolled, nonce_start, 8):
                bits = rolled ^ job_version if six_params else None
                replies = await m.submit(notify, nonce, extranonce2=en2, version_bits=bits)
                assert replies[0]["result"] is True, replies
            rolled = increment_bitmask(rolled, MASK)
    assert m.pool.rejected == []
    return m


async def test_esp_miner_restart_after_difficulty_change_no_duplicates() -> None:
    """ESP-Miner (main/tasks/create_jobs_task.c) sets extranonce_2 = 0 on every new job and its
    ASIC restarts the nonce and version search: zero duplicates, and a true one is caught."""
    m = await replay_restart("bitaxe/BM1370/v2.14.0", bytes(8), 0, 3, six_params=True)
    assert len(m.pool.accepted) == 2 * 3 * 8
    share = m.pool.accepted[-1][1]
    job = [share.job.job_id, *m.notify[1:7], f"{share.ntime:08x}"]
    again = await m.submit(
        job, share.nonce, extranonce2=share.extranonce2,
        version_bits=share.version ^ share.job.version,
    )
    assert again[0]["error"][0] == 22


async def test_nerdminer_restart_after_difficulty_change_no_duplicates() -> None:
    """NerdMiner_v2 (src/mining.cpp) restarts every new job at nonce 0xDA54E700 with its fixed
    extranonce2 (0000000000000001 for size 8), five params: zero duplicates."""
    m = await replay_restart(
        "NerdMinerV2/1.7.0", bytes.fromhex("0000000000000001"), 0xDA54E700, 1, six_params=False
    )
    assert len(m.pool.accepted) == 2 * 8


# --- fractional difficulties only to firmware that reads them ----------------------------------


@pytest.mark.parametrize(
    ("agent", "fractional"),
    [
        # ESP-Miner: "bitaxe/%s/%s" with the ASIC and esp_app_desc version
        # (components/stratum/stratum_api.c); fractions from 2.14.0 (#1594)
        ("bitaxe/BM1366/v2.2.2", False),
        ("bitaxe/BM1370/v2.9.0", False),
        ("bitaxe/BM1368/v2.13.1", False),
        ("bitaxe/BM1370/v2.14.0", True),
        ("bitaxe/BM1370/v2.14.0b3", True),
        ("bitaxe/BM1370/v2.20.1", True),
        # NerdQAxe++: "%s/%s/%s" device/ASIC/version, reads params[0].as<uint32_t>()
        ("NerdQAxe++/BM1370/v1.0.30", False),
        ("NerdQAxe+/BM1368/v1.0.29", False),
        # NerdMiner_v2: "NerdMinerV2/%s", HAN build "HAN_SOLOminer/%s"; (double) params[0]
        ("NerdMinerV2/1.7.0", True),
        ("HAN_SOLOminer/1.6.3", True),
        # cgminer and cpuminer: json_number_value (a double)
        ("cgminer/4.11.1", True),
        ("cpuminer/2.5.1", True),
        ("cpuminer-opt/3.23.0", True),
        # Braiins (f32 as u32), stock Antminer bmminer, an empty or unknown agent: integers
        ("Braiins OS 2019-06-05", False),
        ("bosminer/0.2.0", False),
        ("bmminer/2.0.0", False),
        ("", False),
        ("my-own-miner/1.0", False),
    ],
)
def test_fractional_difficulty_allowlist(agent: str, fractional: bool) -> None:
    assert fractional_difficulty_ok(agent) is fractional


@pytest.mark.parametrize(
    ("suggested", "sent"), [(0.5, 1), (0.00015, 1), (1.4, 1), (2.6, 3), (4096, 4096)]
)
async def test_integer_only_firmware_gets_whole_numbers(suggested: float, sent: int) -> None:
    """NerdQAxe++ with a fractional start and suggestion: integers >= 1, below 1 rounded up."""
    m = Miner(start_difficulty=0.0001, min_difficulty=0.00001)
    await m.call("mining.subscribe", ["NerdQAxe++/BM1370/v1.0.30"])
    out = await m.call("mining.authorize", [ADDRESS, "x"])
    assert out[1] == {"id": None, "method": "mining.set_difficulty", "params": [1]}
    assert m.writer.raw[1] == b'{"id":null,"method":"mining.set_difficulty","params":[1]}'
    out = await m.call("mining.suggest_difficulty", [suggested])
    if sent != 1:
        assert out[1]["params"] == [sent] and isinstance(out[1]["params"][0], int)
    assert all(
        isinstance(x["params"][0], int) for x in out if x.get("method") == "mining.set_difficulty"
    )


# --- NerdMiner's 4 KiB JSON document ----------------------------------------------------------


def test_mainnet_sized_notify_fits_nerdminer() -> None:
    """A template of 4,000 transactions (12 merkle branches, about the most a mainnet block
    has) with the longest coinbase (60-byte tag, P2TR payout) fits NerdMiner's document."""
    gbt = load_gbt()
    gbt["transactions"] = [
        {"txid": sha256d(i.to_bytes(4, "little"))[::-1].hex(), "data": "00"}
        for i in range(4000)
    ]
    manager = JobManager(b"x" * 60)
    manager.set_template(Template.from_rpc(gbt))
    job = manager.job_for(bytes.fromhex("5120" + "11" * 32))
    assert len(job.branch) == 12
    assert job.nerdminer_bytes <= NERDMINER_DOCUMENT_BYTES
    assert job.nerdminer_bytes >= len(job.notify_line(True))  # strings are copied


async def test_notify_too_big_for_nerdminer_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A notify with more branches than NerdMiner's document holds: one clear warning per
    connection, and only for NerdMiner."""
    pool = FakePool(start_difficulty=TINY, min_difficulty=TINY)
    template = dataclasses.replace(
        pool.jobs.template, merkle_branch=tuple(sha256d(bytes([i])) for i in range(45))
    )
    nerd = Miner(pool)
    other = Miner(pool)
    with caplog.at_level(logging.WARNING, logger="pool.stratum.session"):
        await nerd.call("mining.subscribe", ["NerdMinerV2/1.7.0"])
        await nerd.call("mining.authorize", [ADDRESS, "x"])
        await other.call("mining.subscribe", ["cgminer/4.11.1"])
        await other.call("mining.authorize", [OTHER_ADDRESS, "x"])
        for _ in range(3):
            pool.jobs.set_template(template)
            for miner in (nerd, other):
                miner.session.send_job(clean=False)
                miner.take()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "NerdMiner's 4096-byte JSON document (45 merkle branches)" in warnings[0]
    assert nerd.session.peer in warnings[0]


# --- a short reason on every submit error --------------------------------------------------------


async def test_every_submit_error_has_a_short_reason() -> None:
    """ESP-Miner shows error[1] as the reject reason and counts reasons in 64-byte slots
    (main/global_state.h RejectedReasonStat); cgminer logs it; NerdMiner prints error[1]."""
    m = Miner(start_difficulty=1e6, min_difficulty=1)
    await m.start()
    notify = m.notify
    good = [m.username, notify[0], "00" * 8, notify[7], "00000000"]
    bad_params: list[list[Any]] = [
        [m.username, "ffffffff", *good[2:]],  # stale job
        [m.username, notify[0], "zz", *good[3:]],  # extranonce2
        [*good[:3], "00000001", good[4]],  # ntime
        [*good[:4], "xyz"],  # nonce
        [*good, "40000000"],  # version bits outside the mask
        good,  # low difficulty
        ["someone-else", *good[1:]],  # worker
        good[:3],  # param count
        [1, *good[1:]],  # types
    ]
    for params in bad_params:
        (reply,) = await m.call("mining.submit", params)
        code, reason, extra = reply["error"]
        assert reply["result"] is None and code in (20, 21, 22, 23, 24, 25), reply
        assert isinstance(reason, str) and 0 < len(reason) <= 63 and extra is None, reply
