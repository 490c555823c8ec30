"""`solopool status`: the pool, worker and odds summary, read from the running pool's API."""

from __future__ import annotations

import argparse
import sys


def main_status(args: argparse.Namespace) -> int:
    print("solopool status: not implemented yet", file=sys.stderr)
    return 1
