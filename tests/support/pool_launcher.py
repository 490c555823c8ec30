"""Runs the real pool (`pool.cli.main`) with a fault injected from the tests' side, so the
product carries no test hooks (tests start it through `PoolProcess.start(..., fault=...)`):

    python -m tests.support.pool_launcher --fault kill-after-spool -- --config FILE

kill-after-spool: the pool SIGKILLs itself right after a newly found block's spool file is
fsynced (and before `submitblock`, and before the miner's answer).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from pool import cli
from pool.blocks import BlockSpool
from pool.found import PENDING, FoundBlock

KILL_AFTER_SPOOL = "kill-after-spool"
FAULTS = (KILL_AFTER_SPOOL,)


def install_kill_after_spool() -> None:
    write = BlockSpool.write

    def write_then_die(self: BlockSpool, block: FoundBlock) -> object:
        path = write(self, block)
        if block.status == PENDING and block.attempts == 0:
            logging.getLogger("tests.support.pool_launcher").critical(
                "%s: killing the pool with SIGKILL after spooling block %s",
                KILL_AFTER_SPOOL, block.hash,
            )
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    BlockSpool.write = write_then_die  # type: ignore[method-assign,assignment]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.pool_launcher")
    parser.add_argument("--fault", choices=FAULTS, default=None)
    parser.add_argument("pool_args", nargs=argparse.REMAINDER, help="-- then solopool's args")
    args = parser.parse_args(argv)
    pool_args = args.pool_args[1:] if args.pool_args[:1] == ["--"] else args.pool_args
    if args.fault == KILL_AFTER_SPOOL:
        install_kill_after_spool()
    return cli.main(pool_args)


if __name__ == "__main__":
    sys.exit(main())
