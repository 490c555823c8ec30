"""`solopool` command line: run the pool (default), `status`, or `check`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .app import Pool
from .check import main_check
from .config import EXIT_CONFIG, ConfigError, config_file, load_config, unknown_environment
from .fdlimit import raise_open_file_limit
from .logsafety import config_permission_warning, quiet_rpc_logger
from .preflight import StartupError
from .status import main_status


def _add_common(parser: argparse.ArgumentParser, top_level: bool) -> None:
    # On subcommands the defaults are SUPPRESS, so `solopool --config X check` keeps X.
    default_config = None if top_level else argparse.SUPPRESS
    default_level = "INFO" if top_level else argparse.SUPPRESS
    parser.add_argument(
        "--config",
        type=Path,
        default=default_config,
        help="TOML config file (default: ./solopool.toml if present; SOLOPOOL_* environment "
        "variables override it)",
    )
    parser.add_argument(
        "--log-level",
        default=default_level,
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solopool", description="Stratum V1 solo-mining pool for your own Bitcoin node"
    )
    _add_common(parser, top_level=True)  # `solopool --config X` (no subcommand) runs the pool
    parser.add_argument("--version", action="version", version=f"solopool {__version__}")
    sub = parser.add_subparsers(dest="command")
    _add_common(sub.add_parser("run", help="run the pool (the default)"), top_level=False)
    status = sub.add_parser("status", help="print the pool, worker and odds summary from the API")
    _add_common(status, top_level=False)
    status.add_argument("--url", default=None, help="API base URL (default: from the config)")
    check = sub.add_parser("check", help="check node, chain, template, ports and data_dir")
    _add_common(check, top_level=False)
    check.add_argument(
        "--address", default=None, help="also check this payout address for the node's chain"
    )
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_pool(args: argparse.Namespace) -> int:
    unknown = unknown_environment(os.environ)
    try:
        config = load_config(config_file(args.config))
    except ConfigError as exc:
        for line in unknown:  # a misspelt variable may be the cause
            print(f"solopool: warning: {line}", file=sys.stderr)
        print(f"solopool: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(args.log_level)
    quiet_rpc_logger()
    warnings = [config_permission_warning(config), *unknown]
    for warning in warnings:
        if warning is not None:
            logging.getLogger("solopool").warning("%s", warning)
    raise_open_file_limit()
    install_uvloop()
    pool = Pool(config)
    try:
        asyncio.run(pool.run_forever())
    except StartupError as exc:
        print(f"solopool: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "status":
        return main_status(args)
    if args.command == "check":
        return main_check(args)
    return run_pool(args)


if __name__ == "__main__":
    sys.exit(main())
