"""`solopool` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from . import __version__
from .app import Pool, StartupError
from .config import ConfigError, load_config

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solopool", description="Stratum V1 solo-mining pool for your own Bitcoin node"
    )
    parser.add_argument("--config", type=Path, default=Path("solopool.toml"), help="TOML config")
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )
    parser.add_argument("--version", action="version", version=f"solopool {__version__}")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"solopool: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(args.log_level)
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


if __name__ == "__main__":
    sys.exit(main())
