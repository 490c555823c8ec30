"""What the bench reads about the pool from /proc (Linux), and the file-descriptor limit.

A pool may be several processes (a coordinator and Stratum workers sharing the port with
SO_REUSEPORT): `PoolProcesses` measures a process and all its descendants, summing CPU, RSS,
open fds and bytes written. Everything here returns None instead of raising when /proc is not
there or a process is gone, so a benchmark pointed at a remote pool still runs (without the
pool-side figures), and a process that starts or exits during a run does not break it.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")

# A process is told apart from a later one that reuses its pid by its start time.
ProcKey = tuple[int, int]  # (pid, starttime in clock ticks since boot)


@dataclass(frozen=True)
class ProcSample:
    """One look at the pool: CPU seconds (user + system), RSS, open fds, bytes written, summed
    over its `processes`; per process (by `ProcKey`) the CPU seconds and bytes written, so that
    two samples can be subtracted process by process."""

    cpu_seconds: float | None
    rss_kib: int | None
    fds: int | None
    write_bytes: int | None
    processes: int | None = None
    cpu_by_process: Mapping[ProcKey, float] = field(default_factory=dict)
    writes_by_process: Mapping[ProcKey, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcDelta:
    """What the pool used between two samples. A process that exited in between is `exited`:
    what it used since the first sample is lost (not counted). One that started in between is
    `started`: counted from its start."""

    cpu_seconds: float | None
    write_bytes: int | None
    exited: int = 0
    started: int = 0

    def notes(self) -> list[str]:
        out = []
        if self.exited:
            out.append(
                f"{self.exited} pool process(es) exited during the run: their CPU and disk "
                "writes since the start of the run are not counted"
            )
        if self.started:
            out.append(
                f"{self.started} pool process(es) started during the run (counted from their "
                "start)"
            )
        return out


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (fields[0] is field 3, the state)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ")".
    return text[text.rfind(")") + 2 :].split()


def _ticks_to_seconds(fields: list[str]) -> float:
    # utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the whole process (all threads), from /proc/<pid>/stat."""
    fields = _stat_fields(pid)
    return None if fields is None else _ticks_to_seconds(fields)


def rss_kib(pid: int) -> int | None:
    """VmRSS from /proc/<pid>/status, in KiB."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(PROC / str(pid) / "fd"))
    except OSError:
        return None


def write_bytes(pid: int) -> int | None:
    """Bytes the process caused to be written to storage (/proc/<pid>/io write_bytes)."""
    try:
        for line in (PROC / str(pid) / "io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def parent_map() -> dict[int, int]:
    """pid -> parent pid of every process on the machine (empty without /proc)."""
    parents: dict[int, int] = {}
    try:
        entries = [e for e in os.listdir(PROC) if e.isdigit()]
    except OSError:
        return parents
    for name in entries:
        fields = _stat_fields(int(name))
        if fields is not None:
            parents[int(name)] = int(fields[1])  # field 4: ppid
    return parents


def ancestors(pid: int, parents: Mapping[int, int]) -> list[int]:
    """`pid`'s parent, grandparent, ... up to (and including) pid 1, from `parents`."""
    chain: list[int] = []
    seen = {pid}
    current = parents.get(pid)
    while current is not None and current > 0 and current not in seen:
        chain.append(current)
        seen.add(current)
        current = parents.get(current)
    return chain


def descendants(roots: Iterable[int], parents: Mapping[int, int],
                skip: Iterable[int] = ()) -> list[int]:
    """`roots` and every process below them, each once (roots first). A process in `skip` is
    left out with everything below it, unless it is itself a root (then only it is kept)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    root_list = list(dict.fromkeys(roots))
    skipped = set(skip)
    out: list[int] = []
    seen: set[int] = set()
    queue = list(root_list)
    while queue:
        pid = queue.pop(0)
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        if pid in skipped:
            continue
        queue.extend(c for c in sorted(children.get(pid, ())) if c not in skipped)
    return out


class PoolProcesses:
    """The pool's processes: `roots` and (with `tree`) all their descendants, found afresh at
    every sample so that workers started or restarted during a run are included.

    The bench's own process and everything below it (its client processes) are never counted
    as the pool's, unless the bench's process is itself the root (a pool run inside the
    bench, as in the tests: then only that one process is measured).
    """

    def __init__(self, roots: Sequence[int], tree: bool = True) -> None:
        if not roots:
            raise ValueError("no pool process given")
        self.roots = list(dict.fromkeys(roots))
        self.tree = tree
        self.own_pid = os.getpid()

    @property
    def pid(self) -> int:
        """The (first) root: the pool's main process."""
        return self.roots[0]

    def pids(self) -> list[int]:
        if not self.tree:
            return list(self.roots)
        parents = parent_map()
        if not parents:
            return list(self.roots)
        # The bench inside the pool's process tree (a pool in the test harness): the harness's
        # other children (nodes, the bench itself) are not the pool's.
        mine = set(ancestors(self.own_pid, parents)) | {self.own_pid}
        if any(root in mine for root in self.roots):
            return list(self.roots)
        return [p for p in descendants(self.roots, parents, skip=[self.own_pid]) if p in parents]

    def sample(self) -> ProcSample:
        cpu: dict[ProcKey, float] = {}
        writes: dict[ProcKey, int] = {}
        rss: list[int] = []
        fds: list[int] = []
        for pid in self.pids():
            fields = _stat_fields(pid)
            if fields is None:  # gone since the walk
                continue
            key = (pid, int(fields[19]))  # field 22: starttime
            cpu[key] = _ticks_to_seconds(fields)
            for value, values in ((rss_kib(pid), rss), (fd_count(pid), fds)):
                if value is not None:
                    values.append(value)
            written = write_bytes(pid)
            if written is not None:
                writes[key] = written
        if not cpu:
            return ProcSample(None, None, None, None, 0)
        return ProcSample(
            cpu_seconds=sum(cpu.values()),
            rss_kib=sum(rss) if rss else None,
            fds=sum(fds) if fds else None,
            write_bytes=sum(writes.values()) if writes else None,
            processes=len(cpu),
            cpu_by_process=cpu,
            writes_by_process=writes,
        )


def sample(pid: int | None) -> ProcSample:
    """One process on its own (no descendants)."""
    if pid is None:
        return ProcSample(None, None, None, None)
    return PoolProcesses([pid], tree=False).sample()


def delta(before: ProcSample, after: ProcSample) -> ProcDelta:
    """What the pool used from `before` to `after`, process by process: a process in both
    counts its difference, a new one all it used, one that exited nothing (see `ProcDelta`)."""
    if before.cpu_seconds is None or after.cpu_seconds is None:
        return ProcDelta(None, None)
    cpu = 0.0
    for key, value in after.cpu_by_process.items():
        cpu += value - before.cpu_by_process.get(key, 0.0)
    written: int | None = None
    if before.write_bytes is not None and after.write_bytes is not None:
        written = sum(
            value - before.writes_by_process.get(key, 0)
            for key, value in after.writes_by_process.items()
        )
    exited = sum(1 for key in before.cpu_by_process if key not in after.cpu_by_process)
    started = sum(1 for key in after.cpu_by_process if key not in before.cpu_by_process)
    return ProcDelta(cpu, written, exited, started)


def machine_cpu_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        with open(PROC / "stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    busy = user + nice + system + irq + softirq + steal
    return busy / tick, (busy + idle + iowait) / tick


def busy_cores(before: tuple[float, float] | None, after: tuple[float, float] | None,
               wall: float) -> float | None:
    """How many cores the whole machine kept busy between two `machine_cpu_seconds`."""
    if before is None or after is None or wall <= 0:
        return None
    return (after[0] - before[0]) / wall


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def listening_pids(port: int) -> list[int]:
    """Every process holding a socket listening on TCP `port` on this machine (several with
    SO_REUSEPORT, or when listening sockets are inherited), found via socket inodes."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != "0A":  # 0A = LISTEN
                continue
            if int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return []
    found: list[int] = []
    try:
        entries = sorted((e for e in os.listdir(PROC) if e.isdigit()), key=int)
    except OSError:
        return []
    for name in entries:
        fd_dir = PROC / name / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd_dir / fd) in inodes:
                    found.append(int(name))
                    break
            except OSError:
                continue
    return found


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(PROC / str(pid) / "exe")
    except OSError:
        return None


def pool_roots(pids: Sequence[int], parents: Mapping[int, int] | None = None) -> list[int]:
    """The processes to measure (with their descendants) for these listening processes.

    Listeners below another listener are dropped. Several left (Stratum workers each with
    their own SO_REUSEPORT socket): their nearest common ancestor, when it runs the same
    program as they do (the pool's coordinator, not the shell or init that started it);
    otherwise the listeners themselves. Never the bench's own process or one of its
    ancestors (pools started by a test harness that also runs the bench).
    """
    if parents is None:
        parents = parent_map()
    own = os.getpid()
    mine = {own, *ancestors(own, parents)}
    chains = {pid: ancestors(pid, parents) for pid in dict.fromkeys(pids)}
    roots = [pid for pid, chain in chains.items() if not any(a in chains for a in chain)]
    if len(roots) <= 1:
        return roots
    common = [a for a in chains[roots[0]] if all(a in chains[r] for r in roots[1:])]
    if common and common[0] > 1 and common[0] not in mine:
        exe = _exe(roots[0])
        if exe is not None and _exe(common[0]) == exe:
            return [common[0]]
    return roots


def listening_pid(port: int) -> int | None:
    """The pool process listening on TCP `port` (the common parent of several workers), or None."""
    roots = pool_roots(listening_pids(port))
    return roots[0] if roots else None


def raise_fd_limit(wanted: int | None = None) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (or to `wanted`); returns the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted is None else min(max(wanted, soft), hard)
    if hard == resource.RLIM_INFINITY and wanted is None:
        target = max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft
