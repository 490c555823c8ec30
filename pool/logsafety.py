"""Keeping the node's RPC credentials out of logs and off other users' screens."""

from __future__ import annotations

import logging
import stat
import tomllib
from typing import Any
from urllib.parse import urlsplit

from .config import Config

# python-bitcoinrpc logs every request and answer at DEBUG under this name: whole templates and
# blocks, megabytes on mainnet. It never logs the Authorization header, but nothing it says is
# worth its size, so it only speaks from WARNING up.
RPC_LOGGER = "BitcoinRPC"


def quiet_rpc_logger() -> None:
    logging.getLogger(RPC_LOGGER).setLevel(logging.WARNING)


def _holds_password(table: Any) -> bool:
    if not isinstance(table, dict):
        return False
    if table.get("rpc_password"):
        return True
    url = table.get("rpc_url")
    if isinstance(url, str):
        try:
            return urlsplit(url).password is not None
        except ValueError:
            return False
    return False


def config_permission_warning(config: Config) -> str | None:
    """Like Bitcoin Core's warning about a world-readable bitcoin.conf: the config file holds
    the RPC password (in [node] or a [[backup_node]]) and group or others may read it."""
    path = config.source
    if path is None:
        return None
    try:
        mode = path.stat().st_mode
        if not mode & (stat.S_IRGRP | stat.S_IROTH):
            return None
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8 (load_config said so), not TOML
        return None
    tables = [data.get("node")]
    backups = data.get("backup_node")
    if isinstance(backups, list):
        tables += backups
    if not any(_holds_password(t) for t in tables):
        return None
    return (
        f"config file {path} is readable by other users; it holds your RPC password: "
        f"chmod 600 {path}"
    )
