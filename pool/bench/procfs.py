"""What the bench reads about a process from /proc (Linux), and the file-descriptor limit.

Everything here returns None instead of raising when /proc is not there or the process is gone,
so a benchmark pointed at a remote pool still runs (without the pool-side figures).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcSample:
    """One look at a process: CPU seconds (user + system), RSS, open fds, bytes written."""

    cpu_seconds: float | None
    rss_kib: int | None
    fds: int | None
    write_bytes: int | None


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the whole process (all threads), from /proc/<pid>/stat."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ")".
    fields = text[text.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


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


def sample(pid: int | None) -> ProcSample:
    if pid is None:
        return ProcSample(None, None, None, None)
    return ProcSample(cpu_seconds(pid), rss_kib(pid), fd_count(pid), write_bytes(pid))


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


def listening_pid(port: int) -> int | None:
    """The process listening on TCP `port` on this machine, or None (found via socket inodes)."""
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
        return None
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.listdir(entry / "fd"):
                try:
                    if os.readlink(entry / "fd" / fd) in inodes:
                        return int(entry.name)
                except OSError:
                    continue
        except OSError:
            continue
    return None


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
