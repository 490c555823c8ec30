"""Stats without a node: hashrate windows and bands on a fake clock, persistence, migrations."""

from __future__ import annotations

import ast
import math
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import pool.stats
from pool.consensus.block import serialize_block
from pool.consensus.coinbase import TxOut, add_witness_reserved_value, build_coinbase
from pool.found import ACCEPTED, ORPHANED, PENDING, FoundBlock
from pool.notify import Alert, webhook_request
from pool.shares import ERR_DUPLICATE, ERR_STALE
from pool.stats import (
    MATURITY,
    SCHEMA_VERSION,
    BlockRecord,
    Estimate,
    Stats,
    StatsError,
    WorkerStats,
    coinbase_value,
    combine,
    estimate,
)
from pool.stats.confirmations import MAX_WATCHED, WATCH_ORPHANED_SECONDS, depth_change, watched
from pool.stats.store import MIGRATIONS

T0 = 1_700_000_040.0  # a whole minute


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def session(address: str, worker: str, protocol: str = "v1") -> Any:
    return SimpleNamespace(
        address=address, worker=f"{address}.{worker}" if worker else address,
        connected_at=time.monotonic(), protocol=protocol,
    )


def share(difficulty: float, block: bool = False) -> Any:
    return SimpleNamespace(difficulty=difficulty, is_block=block)


def test_estimate_and_band() -> None:
    e = estimate(diff_sum=100 * 1000.0, diff_sq=100 * 1000.0**2, shares=100, seconds=1000)
    assert e.hashrate == pytest.approx(100 * 1000 * 2**32 / 1000)
    assert e.band == pytest.approx(0.1)  # 100 shares: ±10 %
    assert estimate(0, 0, 0, 60) == Estimate(0.0, None, 0, 60)
    # Unequal difficulties: fewer effective shares, a wider band.
    mixed = estimate(1000.0 + 1.0, 1000.0**2 + 1.0, 2, 10)
    assert mixed.band is not None and mixed.band > 1 / math.sqrt(2)
    both = combine([Estimate(3.0, 0.1, 100, 60), Estimate(4.0, 0.2, 25, 60)])
    assert both.hashrate == 7.0 and both.shares == 125
    assert both.band == pytest.approx(math.sqrt(0.3**2 + 0.8**2) / 7)


async def test_windows_divide_by_observed_time(tmp_path: Path) -> None:
    clock = Clock(T0)
    stats = Stats(tmp_path / "s.sqlite3", clock=clock)
    await stats.open()
    s = session("bcrt1qexample", "rig")
    d = 1000.0
    # One share every 10 s for two hours.
    for i in range(720):
        clock.t = T0 + 10 * (i + 1)
        stats.on_share(s, share(d), d)
    w = stats.workers[s.worker]
    assert w.first_seen == pytest.approx(T0 + 10, abs=1)
    w.first_seen = T0  # the connection opened at T0
    now = clock.t + 5
    rates = stats.worker_rates(w, now)
    per_second = d * 2**32 / 10
    assert rates["1m"].shares == 6 and rates["1m"].hashrate == pytest.approx(per_second)
    assert rates["1m"].band == pytest.approx(1 / math.sqrt(6))
    assert rates["10m"].shares == 60 and rates["10m"].hashrate == pytest.approx(per_second)
    # Longer windows come from 1-minute buckets: the window starts at a whole minute.
    assert rates["1h"].shares == 355 and rates["1h"].seconds == 3545
    assert rates["1h"].hashrate == pytest.approx(per_second, rel=0.01)
    # Two hours observed: the 24 h estimate is the same rate, not 1/12 of it.
    assert rates["24h"].shares == 720 and rates["24h"].seconds == pytest.approx(7205)
    assert rates["24h"].hashrate == pytest.approx(per_second, rel=0.01)
    assert rates["24h"].band == pytest.approx(1 / math.sqrt(720))
    history = stats.history(w, now)
    assert len(history) == 144 and history[-1] == pytest.approx(per_second, rel=0.05)
    assert history[0] is None  # before the worker started: no data, not zero
    assert history[-12] == pytest.approx(per_second, rel=0.05)
    await stats.close()


async def test_persisted_and_restored(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    clock = Clock(T0)
    first = Stats(path, clock=clock)
    await first.open()
    a = session("bcrt1qaaa", "one")
    b = session("bcrt1qaaa", "two")
    for i, diff in enumerate([3.0, 9.0, 5.0]):
        clock.t = T0 + i
        first.on_share(a, share(diff * 10), 1.0)
    first.on_share(b, share(50.0, block=True), 1.0)  # a block: rounds start again
    first.on_share(a, share(7.0), 1.0)
    first.on_reject(a, ERR_STALE, "stale")
    first.on_reject(a, ERR_DUPLICATE, "duplicate")
    first.on_reject(SimpleNamespace(address=None, worker=""), 24, "unauthorized")
    block = FoundBlock(height=5, hash="ab" * 32, hex="", worker=b.worker, address="bcrt1qaaa",
                       found_at=T0)
    first.on_block_found(block)
    block.status, block.answer, block.in_best_chain = ACCEPTED, "null", True
    first.on_block_final(block)
    await first.close()

    second = Stats(path, clock=clock)
    await second.open()
    one, two = second.workers[a.worker], second.workers[b.worker]
    assert (one.accepted, one.stale, one.rejected) == (4, 1, 1)
    assert one.diff_sum == 4.0
    assert one.best.ever == 90.0 and one.best.round == 90.0  # one never found a block
    assert two.best.ever == 50.0 and two.best.round == 0.0
    address = second.addresses["bcrt1qaaa"]
    assert address.best.ever == 90.0 and address.best.round == 7.0
    assert second.pool_best.ever == 90.0 and second.pool_best.round == 7.0
    [record] = second.blocks.values()
    assert record.status == ACCEPTED and record.confirmations == 1 and record.worker == b.worker
    assert sum(bk.accepted for bk in one.buckets.values()) == 4
    assert second.worker_rates(one, T0 + 30)["24h"].shares == 4
    await second.close()

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
        rows = db.execute("SELECT SUM(accepted), SUM(stale), SUM(rejected) FROM share_buckets")
        assert rows.fetchone() == (5, 1, 1)


async def test_schema_migrates_and_refuses_newer(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite3"
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (0)")
    stats = Stats(old)
    await stats.open()
    await stats.close()
    with sqlite3.connect(old) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("SELECT COUNT(*) FROM blocks").fetchone() == (0,)

    newer = tmp_path / "newer.sqlite3"
    with sqlite3.connect(newer) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (99)")
    with pytest.raises(StatsError, match="newer"):
        await Stats(newer).open()


async def test_a_version_1_database_keeps_its_workers_as_v1_and_learns_sv2(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v1.sqlite3"
    with sqlite3.connect(path) as db:  # as solopool wrote it before workers had a protocol
        db.executescript(MIGRATIONS[0])
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (1)")
        db.execute(
            "INSERT INTO workers (name, address, first_seen, last_share_at, accepted, diff_sum) "
            "VALUES ('bcrt1qaaa.old', 'bcrt1qaaa', ?, ?, 3, 3.0)", (T0 - 60, T0 - 30),
        )
    clock = Clock(T0)
    first = Stats(path, clock=clock)
    await first.open()
    old = first.workers["bcrt1qaaa.old"]
    assert (old.accepted, old.protocol) == (3, "v1")
    first.on_share(session("bcrt1qaaa", "bitaxe", protocol="sv2"), share(2.0), 1.0)
    first.on_share(session("bcrt1qaaa", "nerd"), share(2.0), 1.0)
    await first.close()

    second = Stats(path, clock=clock)
    await second.open()
    assert {n: w.protocol for n, w in second.workers.items()} == {
        "bcrt1qaaa.old": "v1", "bcrt1qaaa.bitaxe": "sv2", "bcrt1qaaa.nerd": "v1",
    }
    # The protocol it last mined with: the same name back on V1 is shown as V1.
    second.on_share(session("bcrt1qaaa", "bitaxe"), share(2.0), 1.0)
    assert second.workers["bcrt1qaaa.bitaxe"].protocol == "v1"
    await second.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute(
            "SELECT protocol FROM workers WHERE name = 'bcrt1qaaa.bitaxe'"
        ).fetchone() == ("v1",)


def test_coinbase_value_of_a_block() -> None:
    payout = TxOut(312_500_000 + 12_345, bytes.fromhex("0014" + "11" * 20))
    commitment = TxOut(0, bytes.fromhex("6a24aa21a9ed" + "22" * 32))
    parts = build_coinbase(height=840_000, outputs=[payout, commitment], extranonce_size=12)
    coinbase = add_witness_reserved_value(parts.assemble(bytes(12)))
    block = serialize_block(bytes(80), coinbase, [])
    assert coinbase_value(block.hex()) == 312_512_345
    assert coinbase_value("00" * 10) is None


def test_webhook_shapes() -> None:
    alert = Alert("block_found", "Block 5 found!", "details", {"hash": "ab" * 32})
    url, body = webhook_request("https://discord.com/api/webhooks/1/xyz", alert)
    assert url.endswith("/xyz") and body["content"].startswith("**Block 5 found!**")
    url, body = webhook_request("https://ntfy.sh/my-miners", alert)
    assert url == "https://ntfy.sh/" and body["topic"] == "my-miners"
    assert body["title"] == "Block 5 found!" and body["message"] == "details"
    url, body = webhook_request("http://127.0.0.1:9/hook", alert)
    assert url == "http://127.0.0.1:9/hook"
    assert body["hash"] == "ab" * 32 and body["content"] and body["message"] == "details"


# --- bounded state --------------------------------------------------------------------------------


def worker_rows(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return sorted(row[0] for row in db.execute("SELECT name FROM workers"))


async def test_rejects_alone_make_no_worker(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    stats = Stats(path, clock=Clock(T0))
    await stats.open()
    for i in range(50):
        stats.on_reject(session(f"bcrt1qstranger{i}", "x"), ERR_STALE, "stale")
        stats.on_reject(session(f"bcrt1qstranger{i}", "y"), ERR_DUPLICATE, "duplicate")
    assert stats.workers == {} and stats.addresses == {}
    assert stats.totals([], unattributed=True) | {"difficulty": 0} == {
        "accepted": 0, "rejected": 50, "stale": 50, "difficulty": 0
    }
    # Once it has an accepted share, a worker's rejects are its own.
    honest = session("bcrt1qhonest", "rig")
    stats.on_share(honest, share(5.0), 1.0)
    stats.on_reject(honest, ERR_STALE, "stale")
    assert stats.workers[honest.worker].stale == 1
    await stats.flush()
    assert worker_rows(path) == [honest.worker]
    await stats.close()


async def test_workers_beyond_the_limit_forget_the_least_recently_active(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    clock = Clock(T0)
    stats = Stats(path, clock=clock, max_workers=20)
    await stats.open()
    names = []
    for i in range(100):
        clock.t = T0 + i
        s = session(f"bcrt1qaddr{i}", "rig")
        names.append(s.worker)
        stats.on_share(s, share(2.0), 1.0)
        if i == 10:
            await stats.flush()  # some of those forgotten later were already on disk
    assert len(stats.workers) <= 20
    assert names[-1] in stats.workers and names[0] not in stats.workers
    assert len(stats.addresses) == len(stats.workers)  # empty addresses go with their workers
    await stats.close()
    on_disk = worker_rows(path)
    assert len(on_disk) <= 20 and names[-1] in on_disk and names[0] not in on_disk
    with sqlite3.connect(path) as db:
        owners = {row[0] for row in db.execute("SELECT DISTINCT worker FROM share_buckets")}
        bests = {row[0] for row in db.execute("SELECT name FROM best_shares WHERE kind != 'pool'")}
    assert owners <= set(on_disk)
    assert bests <= set(on_disk) | {n.split(".")[0] for n in on_disk}


async def test_load_drops_shareless_and_old_workers(tmp_path: Path) -> None:
    """A database written before these limits (100,000 shareless workers, one 40 days idle):
    the next start keeps only workers with shares, recent, at most max_workers of them."""
    path = tmp_path / "s.sqlite3"
    clock = Clock(T0)
    stats = Stats(path, clock=clock)
    await stats.open()
    keep = session("bcrt1qkeep", "rig")
    stats.on_share(keep, share(3.0), 1.0)
    await stats.close()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO workers (name, address, first_seen, stale) VALUES (?, ?, ?, 4)",
            [(f"bcrt1qjunk{i}.w", f"bcrt1qjunk{i}", T0) for i in range(100_000)],
        )
        db.execute(
            "INSERT INTO workers (name, address, first_seen, last_share_at, accepted) "
            "VALUES ('bcrt1qold.w', 'bcrt1qold', ?, ?, 9)", (T0 - 50 * 86_400, T0 - 40 * 86_400),
        )
    again = Stats(path, clock=clock, retention_seconds=30 * 86_400)
    await again.open()
    assert list(again.workers) == [keep.worker]
    await again.close()
    assert worker_rows(path) == [keep.worker]


def test_a_worker_short_name_is_what_follows_its_address() -> None:
    for name, short in [("bc1qa", ""), ("bc1qa.rig", "rig"), ("bc1qa_rig.2", "rig.2"),
                        ("bc1qa._other", "_other")]:
        assert WorkerStats(name, "bc1qa", T0).short_name == short


def block_record(status: str, confirmations: int | None, found_at: float = T0) -> BlockRecord:
    return BlockRecord("00" * 32, 100, found_at, "w", "a", None, status,
                       in_best_chain=bool(confirmations and confirmations > 0),
                       confirmations=confirmations)


def test_depth_change_names_orphans_returns_and_maturity() -> None:
    accepted = block_record(ACCEPTED, 5)
    assert depth_change(accepted, -1) == "orphaned"
    assert depth_change(accepted, 6) is None
    assert depth_change(accepted, MATURITY) == "matured"
    assert depth_change(block_record(ACCEPTED, MATURITY), MATURITY + 1) is None
    assert depth_change(block_record(ORPHANED, -1), 3) == "back_in_chain"
    assert depth_change(block_record(ORPHANED, -1), -1) is None
    assert depth_change(block_record(PENDING, None), 1) is None


def test_watched_blocks_are_the_unsettled_newest() -> None:
    now = T0 + 2 * WATCH_ORPHANED_SECONDS
    blocks = {
        "pending": block_record(PENDING, None),
        "young": block_record(ACCEPTED, 3),
        "mature": block_record(ACCEPTED, MATURITY),
        "old orphan": block_record(ORPHANED, -1),
        "new orphan": block_record(ORPHANED, -1, found_at=now - 60),
    }
    assert [b for b in watched(blocks, now)] == [
        blocks["pending"], blocks["young"], blocks["new orphan"]
    ]
    many = {str(i): block_record(PENDING, None, found_at=T0 + i) for i in range(3 * MAX_WATCHED)}
    assert [b.found_at for b in watched(many, now)] == [
        T0 + i for i in range(2 * MAX_WATCHED, 3 * MAX_WATCHED)
    ]


def test_stats_does_not_reach_up_to_the_stratum_side_or_the_app() -> None:
    """Stats reads miners through pool.events; nothing in it imports the layers above it, not
    even for type checking, and importing it loads none of them."""
    higher = ("stratum", "app", "api", "metrics", "snapshot", "worker", "workers", "cli")
    stats_dir = Path(pool.stats.__file__).parent
    files = sorted(stats_dir.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        for stmt in ast.walk(ast.parse(path.read_text())):
            if isinstance(stmt, ast.ImportFrom) and stmt.level:
                module = (stmt.module or "").split(".")[0]
                assert module not in higher, f"{path.name} imports {stmt.module}"
            elif isinstance(stmt, ast.Import | ast.ImportFrom):
                names = [stmt.module or ""] if isinstance(stmt, ast.ImportFrom) else [
                    a.name for a in stmt.names
                ]
                assert not any(n.startswith("pool.") for n in names), f"{path.name}: {names}"
    program = "import sys, pool.stats; print(*(m for m in sys.modules if m.startswith('pool.')))"
    loaded = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "pool.stats.tracker" in loaded
    assert not [m for m in loaded if m.split(".")[1] in higher], loaded
