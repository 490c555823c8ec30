"""The bench measures a pool that is several processes: the whole process tree (CPU, RSS, fds,
disk writes summed), the workers found through their SO_REUSEPORT listening sockets, and
processes that start or exit during a run noted rather than breaking the arithmetic.

Real processes throughout: a small "pool" parent that forks children on command. No timing
is asserted; CPU is asserted against what the children report they burned.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from solopool_tools.bench import procfs
from solopool_tools.bench.procfs import PoolProcesses, ProcSample
from solopool_tools.bench.report import rows_for, table
from solopool_tools.bench.runs import ClientSettings, parse_url, resolve_pool

# The parent reads commands on stdin and answers one line each:
#   fork CPU MIB FDS [PORT]  a child that burns CPU seconds of its own CPU time, holds MIB MiB
#                            written memory and FDS extra fds (and listens on PORT with
#                            SO_REUSEPORT); answers "child PID CPU_BURNED" once it is idle
#   reserve                  binds (without listening) a SO_REUSEPORT port; answers it
#   stop PID                 kills and reaps that child; answers "stopped PID"
#   orphan                   a child that forks a grandchild and exits at once (reaped), the
#                            grandchild stays (re-parented away from the tree)
POOL_PARENT = textwrap.dedent(
    """
    import os, signal, socket, sys, time

    def listen(port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        return s

    def child(cpu, mib, fds, port, w):
        keep = [b"x" * (mib << 20)] if mib else []
        keep += [os.open(os.devnull, os.O_RDONLY) for _ in range(fds)]
        if port:
            keep.append(listen(port))
        while time.process_time() < cpu:
            pass
        os.write(w, f"{time.process_time()}\\n".encode())
        while True:
            time.sleep(60)

    children = []
    reserved = []
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "fork":
            cpu, mib, fds = float(args[0]), int(args[1]), int(args[2])
            port = int(args[3]) if len(args) > 3 else 0
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                try:
                    child(cpu, mib, fds, port, w)
                finally:
                    os._exit(0)
            os.close(w)
            with os.fdopen(r) as f:
                burned = f.readline().strip()
            children.append(pid)
            print("child", pid, burned, flush=True)
        elif cmd == "reserve":
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", 0))
            reserved.append(s)
            print(s.getsockname()[1], flush=True)
        elif cmd == "stop":
            pid = int(args[0])
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            children.remove(pid)
            print("stopped", pid, flush=True)
        elif cmd == "orphan":
            pid = os.fork()
            if pid == 0:
                if os.fork() == 0:
                    time.sleep(10)
                os._exit(0)
            os.waitpid(pid, 0)
            print("orphaned", flush=True)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    """
)


class PoolTree:
    """A running POOL_PARENT and what its children said."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", POOL_PARENT],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.burned: dict[int, float] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ask(self, line: str) -> list[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().split()
        assert answer, f"the pool parent died on {line!r}"
        return answer

    def fork(self, cpu: float = 0.0, mib: int = 0, fds: int = 0, port: int = 0) -> int:
        _, pid, burned = self.ask(f"fork {cpu} {mib} {fds} {port}")
        self.burned[int(pid)] = float(burned)
        return int(pid)

    def stop(self, pid: int) -> None:
        assert self.ask(f"stop {pid}") == ["stopped", str(pid)]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def tree() -> Iterator[PoolTree]:
    t = PoolTree()
    try:
        yield t
    finally:
        t.close()


def test_the_whole_tree_is_summed(tree: PoolTree) -> None:
    alone_before = PoolProcesses([tree.pid], tree=False).sample()
    a = tree.fork(cpu=0.3, mib=32, fds=40)
    b = tree.fork(cpu=0.3, mib=32, fds=40)
    pool = PoolProcesses([tree.pid])
    assert sorted(pool.pids()) == sorted([tree.pid, a, b])
    whole = pool.sample()
    alone = PoolProcesses([tree.pid], tree=False).sample()
    assert whole.processes == 3 and alone.processes == 1
    # The children are idle now: the sums are the per-process figures added up.
    parts = [tree.pid, a, b]
    assert whole.cpu_seconds == pytest.approx(sum(procfs.cpu_seconds(p) or 0 for p in parts))
    assert whole.rss_kib == sum(procfs.rss_kib(p) or 0 for p in parts)
    assert whole.fds == sum(procfs.fd_count(p) or 0 for p in parts)
    assert whole.cpu_seconds is not None and alone.cpu_seconds is not None
    # What the children burned is in the tree's CPU (stat counts in clock ticks: a little slack).
    burned = tree.burned[a] + tree.burned[b]
    assert burned >= 0.6
    assert whole.cpu_seconds - alone.cpu_seconds >= burned - 0.05
    assert alone.rss_kib is not None and whole.rss_kib is not None
    assert whole.rss_kib - alone.rss_kib >= 2 * 32 * 1024
    assert alone.fds is not None and whole.fds is not None
    assert whole.fds - alone.fds >= 2 * 40
    # Over a stretch in which the children started: all their CPU counts, noted as started.
    used = procfs.delta(alone_before, whole)
    assert used.cpu_seconds is not None and used.cpu_seconds >= burned - 0.05
    assert used.started == 2 and used.exited == 0
    assert any("2 pool process(es) started" in n for n in used.notes())


def test_a_single_process_is_measured_as_before(tree: PoolTree) -> None:
    # The process may still be settling (its RSS grows while it starts, and a loaded machine
    # schedules it between two reads): compare the sample with the single-process readers
    # until one round of readings agrees.
    for _ in range(50):
        one = procfs.sample(tree.pid)
        readers = (
            procfs.cpu_seconds(tree.pid), procfs.rss_kib(tree.pid),
            procfs.fd_count(tree.pid), procfs.write_bytes(tree.pid),
        )
        if (one.cpu_seconds, one.rss_kib, one.fds, one.write_bytes) == readers:
            break
        time.sleep(0.1)
    assert one.processes == 1
    assert one.cpu_seconds == readers[0]
    assert one.rss_kib == readers[1]
    assert one.fds == readers[2]
    assert one.write_bytes == readers[3]
    # The tree of a process without children is that process.
    assert PoolProcesses([tree.pid]).pids() == [tree.pid]
    assert procfs.sample(None) == ProcSample(None, None, None, None)


def test_processes_that_exit_or_start_during_a_run(tree: PoolTree) -> None:
    pool = PoolProcesses([tree.pid])
    stays = tree.fork(cpu=0.1)
    goes = tree.fork(cpu=0.2)
    before = pool.sample()
    assert before.processes == 3
    tree.stop(goes)
    late = tree.fork(cpu=0.25)
    after = pool.sample()
    assert after.processes == 3
    assert sorted(pid for pid, _ in after.cpu_by_process) == sorted([tree.pid, stays, late])
    used = procfs.delta(before, after)
    assert used.exited == 1 and used.started == 1
    notes = " ".join(used.notes())
    assert "1 pool process(es) exited" in notes and "not counted" in notes
    # `late` counts in full, `goes` not at all (and nothing of it is subtracted).
    assert used.cpu_seconds is not None
    assert used.cpu_seconds >= tree.burned[late] - 0.05
    assert used.cpu_seconds < tree.burned[late] + tree.burned[goes]


def test_a_pid_reused_by_a_new_process_is_a_new_process() -> None:
    before = ProcSample(5.0, 100, 10, 1000, 1, {(42, 7): 5.0}, {(42, 7): 1000})
    after = ProcSample(0.5, 100, 10, 200, 1, {(42, 9): 0.5}, {(42, 9): 200})
    used = procfs.delta(before, after)
    assert used.cpu_seconds == 0.5 and used.write_bytes == 200
    assert used.exited == 1 and used.started == 1
    # The pool gone (nothing left to read): no figure rather than a negative one.
    gone = procfs.delta(before, ProcSample(None, None, None, None, 0))
    assert gone.cpu_seconds is None and gone.write_bytes is None


def test_orphans_are_not_the_pools(tree: PoolTree) -> None:
    kept = tree.fork()
    assert tree.ask("orphan") == ["orphaned"]
    # The grandchild was re-parented out of the tree: not counted, and nothing breaks.
    assert sorted(PoolProcesses([tree.pid]).pids()) == sorted([tree.pid, kept])


def test_reuseport_workers_are_found_through_their_parent(tree: PoolTree) -> None:
    port = int(tree.ask("reserve")[0])  # the parent holds the port but does not listen
    w1 = tree.fork(port=port)
    w2 = tree.fork(port=port)
    assert sorted(procfs.listening_pids(port)) == sorted([w1, w2])
    assert procfs.pool_roots([w1, w2]) == [tree.pid]
    assert procfs.listening_pid(port) == tree.pid
    pool = resolve_pool(ClientSettings(url=f"127.0.0.1:{port}"), parse_url(f"127.0.0.1:{port}"))
    assert pool is not None and pool.roots == [tree.pid]
    assert pool.sample().processes == 3
    # --pool-pid wins, and takes that process's descendants too.
    given = resolve_pool(
        ClientSettings(url=f"127.0.0.1:{port}", pool_pid=w1), parse_url(f"127.0.0.1:{port}")
    )
    assert given is not None and given.roots == [w1] and given.sample().processes == 1


def test_unrelated_listeners_are_not_merged_through_the_bench() -> None:
    """Two processes started by the bench's own process (here: pytest) on one port: their
    common ancestor is the bench, which is never the pool; they are measured as a set."""
    reserve = socket.socket()
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserve.bind(("127.0.0.1", 0))
    port = reserve.getsockname()[1]
    code = textwrap.dedent(
        f"""
        import socket, sys, time
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", {port}))
        s.listen()
        print("ok", flush=True)
        sys.stdin.read()
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ok"
        pids = sorted(p.pid for p in procs)
        assert sorted(procfs.listening_pids(port)) == pids
        assert sorted(procfs.pool_roots(pids)) == pids
        pool = PoolProcesses(procfs.pool_roots(pids))
        assert pool.sample().processes == 2
    finally:
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
            p.wait(timeout=30)
        reserve.close()


def test_a_pool_around_the_bench_is_measured_alone(tree: PoolTree) -> None:
    """The pool in the bench's own process, or in an ancestor of it (a test harness): the
    harness's other children (nodes, client processes, the bench) are not the pool's."""
    assert PoolProcesses([os.getpid()]).pids() == [os.getpid()]  # `tree` is our child
    assert PoolProcesses([os.getppid()]).pids() == [os.getppid()]
    # Below a measured tree, the bench's own process and its children are left out.
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 12, 14: 13}
    assert procfs.descendants([10], parents, skip=[12]) == [10, 11]
    assert procfs.descendants([12], parents, skip=[12]) == [12]
    assert procfs.ancestors(14, parents) == [13, 12, 10, 1]


def test_the_report_shows_processes_and_notes() -> None:
    def submit(processes: int | None, notes: list[str]) -> dict[str, Any]:
        return {
            "bench": "submit", "label": "workers=2, random nonces", "valid_ratio": 0,
            "connected": 200, "window": 8, "client_procs": 1, "responses": 10, "sent": 10,
            "accepted": 0, "rejected": 10, "submits_per_second": 1000.0,
            "pool": {"processes": processes, "cpu_seconds_per_1000": 0.033,
                     "cpu_utilization": 1.85, "notes": notes},
            "client": {"cpu_utilization": [0.5]},
        }

    rows = dict(rows_for(submit(3, ["1 pool process(es) exited during the run"])))
    assert rows["  pool CPU"] == "0.033 s per 1,000 submits (1.85 cores, 3 processes)"
    assert rows["  note"] == "1 pool process(es) exited during the run"
    assert "[workers=2, random nonces]" in table([submit(3, [])])
    single = dict(rows_for(submit(1, [])))
    assert single["  pool CPU"] == "0.033 s per 1,000 submits (1.85 cores)"
    assert "  note" not in single
    # Results saved before the process count existed read as before.
    old = submit(None, [])
    del old["pool"]["processes"], old["pool"]["notes"]
    assert dict(rows_for(old))["  pool CPU"] == "0.033 s per 1,000 submits (1.85 cores)"
    conns = {
        "bench": "connections", "label": "workers=2", "requested": 10, "ready": 10, "held": 10,
        "hold_seconds": 5, "pool_fds": 40, "pool_processes": 3, "rss_per_connection_bytes": 900,
        "rss_before_kib": 100, "rss_after_kib": 110, "pool_notes": [],
        "load": {"machine_busy_cores": 1.0, "pool_cores": 0.5, "client_cores": 0.4,
                 "other_cores": 0.1, "pool_processes": 3, "notes": []},
    }
    rows = dict(rows_for(conns))
    assert rows["  held"].endswith("pool has 40 fds in 3 processes")
    assert "summed over the processes" in rows["  pool RSS per connection"]
    assert "pool 0.5 in 3 processes" in rows["  load while connecting"]
