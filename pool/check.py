"""`solopool check`: preflight checks, one line each with a fix."""

from __future__ import annotations

import argparse
import sys


def main_check(args: argparse.Namespace) -> int:
    print("solopool check: not implemented yet", file=sys.stderr)
    return 1
