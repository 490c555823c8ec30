"""The one adapter between the node client and python-bitcoinrpc, changing nothing global.

`AuthServiceProxy` as shipped costs the pool three things, each remedied here through the
library's public constructor (`connection=`) and one overridden method:

- It re-serializes every answer for a DEBUG log line even when DEBUG is off: ~25 ms of GIL
  per full mainnet template (~4 MB of JSON), on the path to every new-block fan-out. Answers
  are read by `_get_response`, the library's only reader of answers; `RPCProxy` overrides it to
  log only when the library's logger ("BitcoinRPC") is enabled for DEBUG.
- It parses answers with `json` and Decimal floats; orjson parses a mainnet template several
  times faster (the pool keeps no amounts as floats, so plain floats do).
- It takes credentials only from the URL and does not unquote them, so some passwords cannot be
  given at all. The URL gets placeholders; our connection sets the real Authorization header.

Other users of python-bitcoinrpc in the process (none today) see the library unchanged.
"""

from __future__ import annotations

import http.client
import logging
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from bitcoinrpc import authproxy
from bitcoinrpc.authproxy import AuthServiceProxy, JSONRPCException

# TCP keepalive on connections without an answer timeout (longpoll): a dead peer is noticed
# after about 60 + 3 * 10 s.
KEEPALIVE = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))


class _Connection(http.client.HTTPConnection):
    """An HTTP connection that sends our Authorization header, with TCP keepalive if asked."""

    authorization = b""
    keepalive = False

    def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Mapping[str, Any] | None = None,
        *,
        encode_chunked: bool = False,
    ) -> None:
        headers = {**(headers or {}), "Authorization": self.authorization}
        super().request(method, url, body, headers, encode_chunked=encode_chunked)

    def connect(self) -> None:
        super().connect()
        if self.keepalive and self.sock is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for name, value in KEEPALIVE:
                if hasattr(socket, name):
                    self.sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


class _TLSConnection(_Connection, http.client.HTTPSConnection):
    """The same over https (a TLS proxy in front of the node)."""


class RPCProxy(AuthServiceProxy):  # type: ignore[misc]  # the library has no type hints
    """One JSON-RPC call to `method` at `url` (credentials in `authorization`, not the URL).

    `connect_timeout` bounds connecting; `answer_timeout` bounds the answer, None waiting as long
    as the node likes with TCP keepalive on (longpoll). Close it with `close()` after the call.
    """

    def __init__(
        self,
        url: str,
        method: str,
        authorization: bytes,
        connect_timeout: float,
        answer_timeout: float | None,
    ) -> None:
        parts = urlsplit(url)
        https = parts.scheme == "https"
        connection_class = _TLSConnection if https else _Connection
        self.connection = connection_class(
            parts.hostname or "127.0.0.1", parts.port or (443 if https else 80),
            timeout=connect_timeout,
        )
        self.connection.authorization = authorization
        self.connection.keepalive = answer_timeout is None
        placeholder_url = urlunsplit((parts.scheme, "u:p@" + parts.netloc, parts.path, "", ""))
        super().__init__(
            placeholder_url, service_name=method, timeout=answer_timeout,
            connection=self.connection,
        )

    def _get_response(self) -> Any:
        """The answer, parsed with orjson; logged only when the library's DEBUG log is on."""
        response = self.connection.getresponse()
        if response.getheader("Content-Type") != "application/json":
            raise JSONRPCException({
                "code": -342,
                "message": f"non-JSON HTTP response with '{response.status} {response.reason}' "
                "from server",
            })
        body = response.read()
        if authproxy.log.isEnabledFor(logging.DEBUG):
            authproxy.log.debug("<-- %s", body.decode("utf8", "replace"))
        return orjson.loads(body)

    def close(self) -> None:
        self.connection.close()
