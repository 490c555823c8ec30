"""What reaches logs and screens: the node's RPC credentials kept out, and text from miners
made harmless (the one place it is cleaned; the session applies it as the text arrives)."""

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


# Longest user agent or worker name kept (a Bitaxe's agent is ~20 characters, a worker ~80).
MINER_TEXT_MAX = 128


def is_plain(text: str) -> bool:
    """No character that could forge or hide a log line, alert or web page: str.isprintable()
    is False for control characters (C0 including tab, CR and LF; DEL; C1 including NEL), line
    and paragraph separators, format characters (bidi overrides, zero-width ones), lone
    surrogates (which also make a log handler or JSON encoder fail) and spaces other than ' '."""
    return text.isprintable()


def miner_text(text: str, limit: int = MINER_TEXT_MAX) -> str:
    """Text a miner sent, safe for a log line, an alert, a webhook and the dashboard: the
    characters is_plain refuses removed, at most `limit` characters left."""
    if text.isprintable():
        return text[:limit]  # the usual case: the same string object when short enough
    return "".join(ch for ch in text if ch.isprintable())[:limit]


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
