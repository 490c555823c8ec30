"""The open-file limit: every miner connection is a file descriptor, and so is every spool
write, RPC connection, ZMQ socket, API client, the SQLite files and the TLS listener. Stratum
connections get what the limit leaves after a reserve for those, so a crowd of connections
can never make a found block's spool write or `submitblock` fail with EMFILE."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

# Descriptors kept back from Stratum for the spool, RPC, ZMQ, API, SQLite, TLS and logs.
FD_RESERVE = 128
NR_OPEN_PATH = "/proc/sys/fs/nr_open"  # the kernel's ceiling for any process's limit
NR_OPEN_DEFAULT = 1 << 20


def _nr_open() -> int:
    try:
        with open(NR_OPEN_PATH) as f:
            return int(f.read())
    except (OSError, ValueError):
        return NR_OPEN_DEFAULT


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (a shell's `ulimit -n` is often 1024
    while the hard limit allows far more); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _nr_open() if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, wanted, exc)
    return soft


def open_file_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return _nr_open() if soft == resource.RLIM_INFINITY else soft


def connection_limit(configured: int, open_files: int) -> int:
    """How many Stratum connections fit in `open_files` descriptors next to the reserve (at
    most half of them for a very low limit), and never more than `configured`."""
    reserve = min(FD_RESERVE, open_files // 2)
    return max(1, min(configured, open_files - reserve))
