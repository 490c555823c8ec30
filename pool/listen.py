"""Listening sockets, the same for every protocol: `::` is one dual-stack socket (IPv6 and
IPv4), and worker processes share a port with SO_REUSEPORT."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def peer_host(peername: Any) -> str:
    """The IP a connection comes from (the key of the per-IP limits)."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername)


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
