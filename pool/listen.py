"""Listening sockets, the same for every protocol: `::` is one dual-stack socket (IPv6 and
IPv4), and worker processes share a port with SO_REUSEPORT. Also what every protocol's
connections share: who they come from, dropping one that does not read, and how often their
server sweeps them for timeouts."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from .config import StratumConfig

log = logging.getLogger(__name__)

MAX_WRITE_BUFFER = 1 << 20  # a miner that does not read what we send is dropped, not buffered
TICK_SECONDS = 5.0  # a server's sweep period (shorter when a timeout is configured shorter)
MIN_TICK_SECONDS = 0.05


def peer_host(peername: Any) -> str:
    """The IP a connection comes from (the key of the per-IP limits)."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername)


def peer_name(host: str, transport: asyncio.BaseTransport | None) -> str:
    """`ip:port` of a connection, asked from the transport when a log line wants it rather
    than held per connection (just the IP once the transport no longer knows its peer)."""
    try:
        peername = transport.get_extra_info("peername") if transport is not None else None
    except Exception:  # a closed transport
        peername = None
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{host}:{peername[1]}"
    return host


def abort_soon(transport: asyncio.Transport | None) -> None:
    """Drop a connection whose miner is not reading (called from `pause_writing`): not from
    inside the transport's own write(), so on the next loop iteration."""
    if transport is not None:
        asyncio.get_running_loop().call_soon(transport.abort)


def sweep_seconds(cfg: StratumConfig) -> float:
    """How often a server sweeps its connections: TICK_SECONDS, or a quarter of the shortest
    timeout when that is shorter."""
    shortest = min(cfg.handshake_timeout_seconds, cfg.idle_timeout_seconds) / 4
    return max(MIN_TICK_SECONDS, min(TICK_SECONDS, shortest))


def dual_stack_socket(port: int, backlog: int, reuse_port: bool = False) -> socket.socket:
    """One IPv6 socket on `::` that also takes IPv4 (IPV6_V6ONLY off). asyncio's own
    create_server turns dual stack off and would need two sockets for the same thing."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def listen(
    factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    backlog: int = 1024,
    reuse_port: bool = False,
) -> asyncio.base_events.Server:
    """A listener on host:port; `reuse_port` lets several worker processes share the port
    (SO_REUSEPORT: the kernel spreads new connections over them)."""
    loop = asyncio.get_running_loop()
    if host in ("::", "[::]"):
        try:
            sock = dual_stack_socket(port, backlog, reuse_port)
        except OSError as exc:
            if socket.has_ipv6 and exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            log.warning("no IPv6 on this host (%s); listening on IPv4 0.0.0.0 only", exc)
            host = "0.0.0.0"
        else:
            return await loop.create_server(factory, sock=sock, ssl=ssl_context)
    return await loop.create_server(
        factory, host.strip("[]"), port, reuse_address=True, backlog=backlog, ssl=ssl_context,
        reuse_port=reuse_port or None,
    )
