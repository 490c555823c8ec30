"""Zero-config help: what the node offers that the config did not name (its cookie, its ZMQ
hashblock)."""

from __future__ import annotations

import base64
import dataclasses
import logging
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..config import NodeConfig
from .errors import NodeAuthError, NodeError

log = logging.getLogger(__name__)

WILDCARD_HOSTS = {"0.0.0.0", "*", "::", "[::]", ""}


def basic_auth(cookie_file: Path | None, user: str | None, password: str | None) -> bytes:
    """The Authorization header value: from the node's cookie file (rewritten at every node
    start, so the client reads it again after a refused login), else from the configured user
    and password."""
    if cookie_file is not None:
        try:
            pair = cookie_file.read_text().strip()
        except OSError as exc:
            raise NodeAuthError(
                f"cannot read the node's cookie file {cookie_file}: {exc.strerror}"
            ) from None
    else:
        pair = f"{user or ''}:{password or ''}"
    return b"Basic " + base64.b64encode(pair.encode())


def connectable(published: str, rpc_url: str) -> str:
    """The address to connect to for a ZMQ endpoint the node *binds*: a wildcard host
    (tcp://0.0.0.0:28332) means "the node's own address", i.e. the host of its RPC URL."""
    if not published.startswith("tcp://"):
        return published  # ipc:// paths are used as they are
    rest = published[len("tcp://") :]
    host, sep, port = rest.rpartition(":")
    if not sep or host not in WILDCARD_HOSTS:
        return published
    rpc_host = urlsplit(rpc_url).hostname or "127.0.0.1"
    if ":" in rpc_host:
        rpc_host = f"[{rpc_host}]"
    return f"tcp://{rpc_host}:{port}"


def published_hashblock(notifications: Any, rpc_url: str) -> str | None:
    """From a `getzmqnotifications` answer: where the node publishes `hashblock`, if it does."""
    if not isinstance(notifications, list):
        return None
    for entry in notifications:
        if isinstance(entry, dict) and entry.get("type") == "pubhashblock":
            address = entry.get("address")
            if isinstance(address, str) and address:
                return connectable(address, rpc_url)
    return None


class ZmqAsker(Protocol):
    """A node client (typed structurally: the client itself imports this module)."""

    async def get_zmq_notifications(self) -> list[dict[str, Any]]: ...


async def with_discovered_zmq(node: ZmqAsker, config: NodeConfig) -> NodeConfig:
    """`config` with `zmq_hashblock` filled in from the node when it was not configured and the
    node publishes hashblock; unchanged otherwise (a node without ZMQ is fine: longpoll and
    polling still notice new blocks)."""
    if config.zmq_hashblock is not None:
        return config
    try:
        found = published_hashblock(await node.get_zmq_notifications(), config.rpc_url)
    except NodeError as exc:
        log.debug("getzmqnotifications failed: %s", exc)
        return config
    if found is None:
        log.info("the node publishes no ZMQ hashblock; new blocks come by longpoll and polling")
        return config
    log.info("using the node's ZMQ hashblock at %s (found with getzmqnotifications)", found)
    return dataclasses.replace(config, zmq_hashblock=found)
