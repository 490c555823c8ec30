"""Unit tests of solopool's CPU test miner (tools/solopool_tools/miner.py), plus in-process
end-to-end runs against a fake Stratum server defined here."""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import time
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from pool.consensus.address import address_to_script
from pool.consensus.block import build_header, prevhash_from_stratum, stratum_prevhash
from pool.consensus.coinbase import TxOut, build_coinbase
from pool.consensus.merkle import merkle_root_from_branch
from pool.consensus.serialize import sha256d
from pool.consensus.target import difficulty_to_target, hash_to_int, nbits_to_target
from solopool_tools import __version__
from solopool_tools.miner import (
    VERSION_ROLLING_MASK,
    Job,
    Miner,
    MinerConfig,
    Share,
    WorkSpec,
    _Session,
    _worker_main,
    build_job_header,
    build_parser,
    config_from_args,
    deposit_bits,
    extranonce2_for,
    header_prefix,
    main,
    parse_url,
    rolled_version,
    scan,
    scan_header,
    submit_params,
    version_bits_for,
    work_units,
)

# --- block 100,000 (reference section 3) ----------------------------------------------------------

COINB1 = "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff08"
COINB2 = (
    "ffffffff0100f2052a010000004341041b0e8c2567c12536aa13357b79a073dc4444acb83c4ec7a0e2f99dd7457"
    "516c5817242da796924ca4e99947d087fedf9ce467cb9f7c6287078f801df276fdf84ac00000000"
)
NOTIFY_100K: list[Any] = [
    "job100k",
    "1901125004612a1701c3a621d930d31d36b607df1fccc2160002d01c00000000",
    COINB1,
    COINB2,
    [
        "c40297f730dd7b5a99567eb8d27b78758f607507c52292d02d4031895b52f2ff",
        "49aef42d78e3e9999c9e6ec9e1dddd6cb880bf3b076a03be1318ca789089308e",
    ],
    "00000001",
    "1b04864c",
    "4d1b2237",
    True,
]
EN1_100K = bytes.fromhex("044c8604")
EN2_100K = bytes.fromhex("1b020602")
NONCE_100K = 0x10572B0F
HEADER_100K = (
    "0100000050120119172a610421a6c3011dd330d9df07b63616c2cc1f1cd0020000000000"
    "6657a9252aacd5c0b2940996ecff952228c3067cc38d4885efb5a4ac4247e9f3"
    "37221b4d4c86041b0f2b5710"
)
HASH_100K = "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506"


def test_block_100000_header_and_hash() -> None:
    job = Job.from_notify(NOTIFY_100K)
    assert job.version == 1 and job.nbits == 0x1B04864C and job.ntime == 0x4D1B2237
    header = build_job_header(job, EN1_100K, EN2_100K, job.version, job.ntime, NONCE_100K)
    assert header.hex() == HEADER_100K
    assert sha256d(header)[::-1].hex() == HASH_100K
    assert header_prefix(job, EN1_100K, EN2_100K, job.version, job.ntime) == header[:76]


def test_scan_finds_exactly_the_block_100000_nonce() -> None:
    job = Job.from_notify(NOTIFY_100K)
    network_target = nbits_to_target(job.nbits)
    found = scan(job, EN1_100K, EN2_100K, None, job.ntime, NONCE_100K - 3000, 6001, network_target)
    assert [s.nonce for s in found] == [NONCE_100K]
    share = found[0]
    assert share.display_hash == HASH_100K
    assert share.version_bits is None
    # reference section 3: submit = ["<addr>.<worker>", "<job>", "1b020602", "4d1b2237", "10572b0f"]
    assert submit_params("addr.worker", share) == [
        "addr.worker",
        "job100k",
        "1b020602",
        "4d1b2237",
        "10572b0f",
    ]
    # one nonce short of the winner: nothing
    assert scan(job, EN1_100K, EN2_100K, None, job.ntime, NONCE_100K - 10, 10, network_target) == []


def test_scan_header_reports_every_hash_under_target() -> None:
    prefix = bytes(range(76))
    everything = scan_header(prefix, 5, 50, (1 << 256) - 1)
    assert [n for n, _ in everything] == list(range(5, 55))
    for nonce, digest in everything:
        assert digest == sha256d(prefix + nonce.to_bytes(4, "little"))
    target = sorted(hash_to_int(d) for _, d in everything)[9]
    assert len(scan_header(prefix, 5, 50, target)) == 10
    # the nonce range is clamped to 32 bits
    assert [n for n, _ in scan_header(prefix, 2**32 - 2, 10, (1 << 256) - 1)] == [
        2**32 - 2,
        2**32 - 1,
    ]
    with pytest.raises(ValueError):
        scan_header(prefix[:75], 0, 1, 0)


# --- submit formatting and version rolling --------------------------------------------------------


def test_submit_params_padding_and_version_bits() -> None:
    digest = bytes(32)
    plain = Share("a1", bytes.fromhex("00000001"), 0x5, 0xAB, None, digest)
    assert submit_params("u", plain) == ["u", "a1", "00000001", "00000005", "000000ab"]
    rolled = Share("a1", bytes.fromhex("0000000000000001"), 0x5, 0xAB, 0x2000, digest)
    assert submit_params("u.w", rolled) == [
        "u.w",
        "a1",
        "0000000000000001",
        "00000005",
        "000000ab",
        "00002000",
    ]
    zero_bits = Share("a1", b"\x00\x01", 0x5, 0xAB, 0, digest)
    assert submit_params("u", zero_bits)[5] == "00000000"
    assert all(len(p) == 8 for p in submit_params("u.w", rolled)[3:])


def test_version_bits_stay_inside_the_mask() -> None:
    mask = VERSION_ROLLING_MASK
    values = {version_bits_for(i, mask) for i in range(1 << 16)}
    assert len(values) == 1 << 16  # every combination of the 16 BIP320 bits, no collisions
    assert all(v & ~mask == 0 for v in values)
    assert version_bits_for(1 << 16, mask) == version_bits_for(0, mask) == 0  # wraps
    narrow = 0x00006000  # a pool may grant fewer bits
    assert {version_bits_for(i, narrow) for i in range(10)} == {0, 0x2000, 0x4000, 0x6000}
    assert deposit_bits(0b101, 0b11100) == 0b10100
    # reference section 6 example
    assert rolled_version(0x20000000, 0x00B0C000, mask) == 0x20B0C000


def _spec(job: Job, *, mask: int | None, index: int = 0, count: int = 1, size: int = 4) -> WorkSpec:
    return WorkSpec(
        job=job,
        extranonce1=bytes.fromhex("deadbeef"),
        extranonce2_size=size,
        worker_index=index,
        worker_count=count,
        share_target=difficulty_to_target(1),
        version_mask=mask,
        received_at=1000.0,
    )


def test_work_units_roll_versions_within_mask_and_reconstruct() -> None:
    job = Job.from_notify(NOTIFY_100K[:5] + ["20000000"] + NOTIFY_100K[6:])
    units = work_units(_spec(job, mask=VERSION_ROLLING_MASK), now=lambda: 1000.0)
    seen = []
    for _ in range(300):
        unit = next(units)
        assert unit.version_bits is not None
        assert unit.version_bits & ~VERSION_ROLLING_MASK == 0
        version = int.from_bytes(unit.prefix76[:4], "little")
        # what a pool rebuilds from the 6th submit param (BIP310 formula)
        assert version == rolled_version(job.version, unit.version_bits, VERSION_ROLLING_MASK)
        assert version & ~VERSION_ROLLING_MASK == job.version
        seen.append(unit.version_bits)
    assert seen[0] != 0  # rolled bits show up from the first header
    assert len(set(seen)) == len(seen)


def test_job_version_bits_inside_mask_are_kept_and_reported() -> None:
    # regtest heights 144-431 signal testdummy (bit 28) inside the mask: keep the bit set and
    # report it, so both the BIP310 formula and ckpool's OR rebuild the same header version.
    job = Job.from_notify(NOTIFY_100K[:5] + ["30000000"] + NOTIFY_100K[6:])
    unit = next(work_units(_spec(job, mask=VERSION_ROLLING_MASK), now=lambda: 1000.0))
    assert unit.version_bits is not None
    version = int.from_bytes(unit.prefix76[:4], "little")
    assert version & 0x10000000
    assert version == rolled_version(job.version, unit.version_bits, VERSION_ROLLING_MASK)
    assert version == job.version | unit.version_bits


def test_work_units_without_rolling_and_ntime_cap() -> None:
    job = Job.from_notify(NOTIFY_100K)
    clock = [1000.0]
    units = work_units(_spec(job, mask=None), now=lambda: clock[0])
    first = next(units)
    assert first.version_bits is None
    assert (first.nonce_start, first.nonce_end) == (0, 1 << 32)
    assert first.ntime == job.ntime
    assert int.from_bytes(first.prefix76[:4], "little") == job.version
    clock[0] += 30.4
    second = next(units)
    assert second.ntime == job.ntime + 30
    assert second.extranonce2 != first.extranonce2
    clock[0] += 100000
    assert next(units).ntime == job.ntime + 600  # never beyond job ntime + 600


def test_extranonce2_spaces_are_disjoint_between_workers() -> None:
    job = Job.from_notify(NOTIFY_100K)
    spaces = [
        {extranonce2_for(_spec(job, mask=None, index=i, count=3), c) for c in range(500)}
        for i in range(3)
    ]
    assert all(len(s) == 500 for s in spaces)
    assert not (spaces[0] & spaces[1] or spaces[0] & spaces[2] or spaces[1] & spaces[2])
    assert all(e[0] == i for i, s in enumerate(spaces) for e in s)
    single = [extranonce2_for(_spec(job, mask=None, size=2), c) for c in range(3)]
    assert single == [b"\x00\x00", b"\x00\x01", b"\x00\x02"]


def test_notify_parsing_rejects_malformed() -> None:
    with pytest.raises(ValueError):
        Job.from_notify(NOTIFY_100K[:8])
    with pytest.raises(ValueError):
        Job.from_notify(NOTIFY_100K[:4] + [["abcd"]] + NOTIFY_100K[5:])
    with pytest.raises(ValueError):
        Job.from_notify(NOTIFY_100K[:1] + ["00"] + NOTIFY_100K[2:])
    job = Job.from_notify(NOTIFY_100K, difficulty=0.5)
    assert job.share_target == difficulty_to_target(0.5)
    assert job.network_target == nbits_to_target(0x1B04864C)


def test_cli_parsing() -> None:
    assert parse_url("stratum+tcp://127.0.0.1:3333") == ("127.0.0.1", 3333)
    assert parse_url("localhost:4000") == ("localhost", 4000)
    with pytest.raises(ValueError):
        parse_url("http://x:1")
    with pytest.raises(ValueError):
        parse_url("stratum+tcp://hostonly")
    args = build_parser().parse_args(
        [
            "--url",
            "stratum+tcp://h:1",
            "--user",
            "addr.w",
            "--threads",
            "2",
            "--blocks",
            "3",
            "--seconds",
            "9.5",
            "--suggest-difficulty",
            "0.001",
            "--no-version-rolling",
        ]
    )
    cfg = config_from_args(args)
    assert cfg == MinerConfig(
        host="h",
        port=1,
        user="addr.w",
        password="x",
        threads=2,
        blocks=3,
        seconds=9.5,
        suggest_difficulty=0.001,
        version_rolling=False,
    )


# --- the worker process -----------------------------------------------------------------------


def _regtest_job(job_id: str, difficulty: float) -> Job:
    return Job.from_notify(FakePool.notify_params_for(job_id, clean=True), difficulty)


def test_worker_switches_to_new_work_promptly() -> None:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
    proc.start()
    child.close()
    try:
        hopeless = _spec(_regtest_job("old", 1e9), mask=VERSION_ROLLING_MASK)
        parent.send(("work", hopeless))
        time.sleep(0.5)  # the worker is busy on a job it will never solve
        assert not parent.poll()
        easy_job = _regtest_job("new", 1 / 2**22)  # ~1 share per 1000 hashes
        easy = replace(hopeless, job=easy_job, share_target=easy_job.share_target)
        sent = time.monotonic()
        parent.send(("work", easy))
        share = None
        while share is None:
            assert parent.poll(10), "no share from the worker"
            msg = parent.recv()
            if msg[0] == "share":
                share = msg[1]
        latency = time.monotonic() - sent
        assert share.job_id == "new"
        assert latency < 2.0, latency  # typically a few ms
        header = build_job_header(
            easy_job,
            easy.extranonce1,
            share.extranonce2,
            rolled_version(easy_job.version, share.version_bits, VERSION_ROLLING_MASK),
            share.ntime,
            share.nonce,
        )
        assert sha256d(header) == share.hash
        assert hash_to_int(share.hash) <= easy_job.share_target
    finally:
        parent.send(("stop",))
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
        assert proc.exitcode is not None


# --- end to end against a fake pool ------------------------------------------------------------

USER = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080.rig1"
PREV_DISPLAY = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
OTHER_TXID = bytes.fromhex("11" * 32)
EN2_SIZE = 4


@dataclass
class Submitted:
    params: list[Any]
    valid: bool
    is_block: bool
    display_hash: str
    job_id: str


@dataclass
class FakePool:
    """A tiny Stratum server: answers configure/subscribe/authorize, then runs `script`."""

    version_rolling: bool = True
    authorize_ok: bool = True
    difficulty: float = 0.0001
    close_first_connection: bool = False
    script: Any = None  # async (pool, conn) -> None, run once subscribed and authorized
    requests: list[dict[str, Any]] = field(default_factory=list)
    submits: list[Submitted] = field(default_factory=list)
    jobs: dict[str, tuple[list[Any], float]] = field(default_factory=dict)
    connections: int = 0
    extranonce1: dict[int, str] = field(default_factory=dict)
    port: int = 0
    server: asyncio.Server | None = None
    _pending_diff: float = 1.0  # last set_difficulty sent, recorded with the next notify

    async def __aenter__(self) -> FakePool:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @staticmethod
    def notify_params_for(job_id: str, clean: bool, version: str = "20000000") -> list[Any]:
        script = address_to_script(USER.split(".")[0], "regtest")
        parts = build_coinbase(
            height=200, outputs=[TxOut(50 * 10**8, script)], extranonce_size=8, tag=b"/test/"
        )
        return [
            job_id,
            stratum_prevhash(PREV_DISPLAY),
            parts.coinb1.hex(),
            parts.coinb2.hex(),
            [OTHER_TXID.hex()],
            version,
            "207fffff",
            f"{int(time.time()):08x}",
            clean,
        ]

    async def send(self, writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        writer.write(json.dumps(obj).encode() + b"\n")
        await writer.drain()

    async def set_difficulty(self, writer: asyncio.StreamWriter, diff: float) -> None:
        self._pending_diff = diff
        await self.send(writer, {"id": None, "method": "mining.set_difficulty", "params": [diff]})

    async def notify(self, writer: asyncio.StreamWriter, job_id: str, clean: bool = True) -> None:
        params = self.notify_params_for(job_id, clean)
        self.jobs[job_id] = (params, self._pending_diff)
        await self.send(writer, {"id": None, "method": "mining.notify", "params": params})

    def check_submit(self, params: list[Any], conn: int) -> Submitted:
        job_id = params[1]
        notify, diff = self.jobs[job_id]
        version = int(notify[5], 16)
        if len(params) == 6:
            bits = int(params[5], 16)
            assert bits & ~VERSION_ROLLING_MASK == 0
            version = rolled_version(version, bits, VERSION_ROLLING_MASK)
        coinbase = (
            bytes.fromhex(notify[2])
            + bytes.fromhex(self.extranonce1[conn])
            + bytes.fromhex(params[2])
            + bytes.fromhex(notify[3])
        )
        root = merkle_root_from_branch(sha256d(coinbase), [bytes.fromhex(b) for b in notify[4]])
        header = build_header(
            version,
            prevhash_from_stratum(notify[1]),
            root,
            int(params[3], 16),
            int(notify[6], 16),
            int(params[4], 16),
        )
        digest = sha256d(header)
        value = hash_to_int(digest)
        return Submitted(
            params=params,
            valid=len(params[2]) == 2 * EN2_SIZE and value <= difficulty_to_target(diff),
            is_block=value <= nbits_to_target(int(notify[6], 16)),
            display_hash=digest[::-1].hex(),
            job_id=job_id,
        )

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        self.extranonce1[conn] = f"{0xA0000000 + conn:08x}"
        subscribed = authorized = False
        script_task: asyncio.Task[None] | None = None
        try:
            while line := await reader.readline():
                msg = json.loads(line)
                self.requests.append(msg)
                method, params, mid = msg["method"], msg["params"], msg["id"]
                assert isinstance(mid, int)
                if method == "mining.configure":
                    result: Any = {"version-rolling": self.version_rolling}
                    if self.version_rolling:
                        result["version-rolling.mask"] = "1fffe000"
                    await self.send(writer, {"id": mid, "result": result, "error": None})
                elif method == "mining.subscribe":
                    subscribed = True
                    sid = self.extranonce1[conn]
                    subs = [["mining.set_difficulty", sid], ["mining.notify", sid]]
                    reply = [subs, sid, EN2_SIZE]
                    await self.send(writer, {"id": mid, "result": reply, "error": None})
                    if self.close_first_connection and conn == 1:
                        writer.close()
                        return
                elif method == "mining.authorize":
                    if self.authorize_ok:
                        authorized = True
                        await self.send(writer, {"id": mid, "result": True, "error": None})
                    else:
                        err = [24, "invalid address for regtest", None]
                        await self.send(writer, {"id": mid, "result": None, "error": err})
                elif method == "mining.suggest_difficulty":
                    await self.send(writer, {"id": mid, "result": True, "error": None})
                elif method == "mining.submit":
                    sub = self.check_submit(params, conn)
                    self.submits.append(sub)
                    if sub.valid:
                        await self.send(writer, {"id": mid, "result": True, "error": None})
                    else:
                        err = [23, "Low difficulty share", None]
                        await self.send(writer, {"id": mid, "result": None, "error": err})
                else:
                    await self.send(writer, {"id": mid, "result": None, "error": [20, "?", None]})
                if subscribed and authorized and script_task is None:
                    script = self.script or FakePool.default_script
                    script_task = asyncio.create_task(script(self, writer))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if script_task is not None:
                script_task.cancel()
            writer.close()

    async def default_script(self, writer: asyncio.StreamWriter) -> None:
        await self.set_difficulty(writer, self.difficulty)
        await self.notify(writer, "1")


def _config(port: int, **kw: Any) -> MinerConfig:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "user": USER,
        "password": "pw",
        "blocks": 1,
        "seconds": 60,
    }
    base.update(kw)
    return MinerConfig(**base)


def _methods(pool: FakePool) -> list[str]:
    return [r["method"] for r in pool.requests]


async def test_end_to_end_one_block_with_version_rolling() -> None:
    out = io.StringIO()
    async with FakePool() as pool:
        miner = Miner(_config(pool.port, suggest_difficulty=1000), out=out)
        rc = await miner.run()
    assert rc == 0
    methods = _methods(pool)
    assert methods[:4] == [
        "mining.configure",
        "mining.subscribe",
        "mining.authorize",
        "mining.suggest_difficulty",
    ]
    assert pool.requests[0]["params"] == [
        ["version-rolling"],
        {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2},
    ]
    assert pool.requests[1]["params"] == [f"solopool-miner/{__version__}"]
    assert pool.requests[2]["params"] == [USER, "pw"]
    assert pool.requests[3]["params"] == [1000]
    ids = [r["id"] for r in pool.requests]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids)
    assert pool.submits, "no share submitted"
    first = pool.submits[0]
    assert first.valid and first.is_block
    assert len(first.params) == 6 and first.params[0] == USER and first.params[1] == "1"
    assert int(first.params[5], 16) & ~VERSION_ROLLING_MASK == 0
    assert all(len(p) == 8 for p in first.params[3:])
    lines = out.getvalue().splitlines()
    assert lines[0] == f"block {first.display_hash}"
    assert lines[-1] == "accepted=1 rejected=0 blocks=1"
    assert miner.blocks == 1 and miner.block_hashes == [first.display_hash]


@pytest.mark.parametrize("refuse", ["flag", "pool-refuses"])
async def test_end_to_end_without_version_rolling(refuse: str) -> None:
    out = io.StringIO()
    async with FakePool(version_rolling=False) as pool:
        cfg = _config(pool.port, version_rolling=refuse != "flag")
        rc = await Miner(cfg, out=out).run()
    assert rc == 0
    assert ("mining.configure" in _methods(pool)) == (refuse == "pool-refuses")
    assert pool.submits and all(len(s.params) == 5 for s in pool.submits)
    assert pool.submits[0].valid
    assert out.getvalue().splitlines()[-1] == "accepted=1 rejected=0 blocks=1"


async def test_difficulty_applies_to_next_notify_and_clean_job_switches() -> None:
    seen_before_b: list[int] = []

    async def script(pool: FakePool, writer: asyncio.StreamWriter) -> None:
        await pool.set_difficulty(writer, 1e9)  # job A: practically unsolvable
        await pool.notify(writer, "A")
        await asyncio.sleep(0.3)
        await pool.set_difficulty(writer, 0.0001)  # only for the next job
        await asyncio.sleep(0.7)
        seen_before_b.append(len(pool.submits))
        await pool.notify(writer, "B", clean=True)

    async with FakePool(script=script) as pool:
        rc = await Miner(_config(pool.port), out=io.StringIO()).run()
    assert rc == 0
    assert seen_before_b == [0]
    assert pool.submits and all(s.job_id == "B" and s.valid for s in pool.submits)


async def test_reconnects_after_the_pool_drops_the_connection() -> None:
    out = io.StringIO()
    async with FakePool(close_first_connection=True) as pool:
        rc = await Miner(_config(pool.port), out=out).run()
    assert rc == 0
    assert pool.connections == 2
    assert pool.submits[0].valid
    assert out.getvalue().splitlines()[-1] == "accepted=1 rejected=0 blocks=1"


async def test_two_worker_processes_use_disjoint_extranonce2() -> None:
    async with FakePool(difficulty=0.00005) as pool:
        rc = await Miner(_config(pool.port, threads=2, blocks=4), out=io.StringIO()).run()
    assert rc == 0
    assert len([s for s in pool.submits if s.valid]) >= 4
    prefixes = {s.params[2][:2] for s in pool.submits}
    assert prefixes <= {"00", "01"}
    assert len({tuple(s.params[2:]) for s in pool.submits}) == len(pool.submits)


async def test_authorize_failure_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    async with FakePool(authorize_ok=False) as pool:
        rc = await Miner(_config(pool.port), out=io.StringIO()).run()
    assert rc == 2
    assert "invalid address for regtest" in capsys.readouterr().err


async def test_seconds_limit_exit_codes() -> None:
    async def no_work(pool: FakePool, writer: asyncio.StreamWriter) -> None:
        return None

    async with FakePool(script=no_work) as pool:
        out = io.StringIO()
        assert await Miner(_config(pool.port, blocks=None, seconds=0.5), out=out).run() == 0
        assert out.getvalue() == "accepted=0 rejected=0 blocks=0\n"
        assert await Miner(_config(pool.port, blocks=1, seconds=0.5), out=out).run() == 1


async def test_session_ends_once_the_miner_is_done_even_if_lines_keep_coming() -> None:
    """Python 3.11's wait_for can lose a cancellation when the read it wraps completes at the
    same moment (seen as scripts/demo.sh hanging after its 3 blocks); the session must then still
    end by itself once the miner is done, not keep reading a live pool."""
    connected: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await connected.put(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    pool_side = await asyncio.wait_for(connected.get(), timeout=30)
    miner = Miner(_config(port), out=io.StringIO())
    session = _Session(writer)
    miner._session = session
    reading = asyncio.create_task(miner._run_session(reader, session))
    try:
        await asyncio.sleep(0)  # the session has sent its requests and waits for a line
        miner.stop()  # as on the last block; run() would now cancel the (lost) connection task
        line = {"id": None, "method": "mining.set_difficulty", "params": [0.5]}
        pool_side.write(json.dumps(line).encode() + b"\n")  # the pool keeps talking
        await asyncio.wait_for(reading, timeout=30)  # TimeoutError: still reading
        assert not writer.is_closing()  # it ended by itself; the caller closes the connection
    finally:
        reading.cancel()
        writer.close()
        pool_side.close()
        server.close()


async def test_main_cli_with_uvloop(capsys: pytest.CaptureFixture[str]) -> None:
    async with FakePool() as pool:
        argv = [
            "--url",
            f"stratum+tcp://127.0.0.1:{pool.port}",
            "--user",
            USER,
            "--blocks",
            "1",
            "--seconds",
            "60",
            "--log-level",
            "WARNING",
        ]
        rc = await asyncio.to_thread(main, argv)
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("block ") and len(lines[0]) == len("block ") + 64
    assert lines[-1] == "accepted=1 rejected=0 blocks=1"
