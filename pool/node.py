"""The node adapter: the only module that speaks RPC to bitcoind.

python-bitcoinrpc is synchronous, so every call runs on a worker thread, never on the event loop.
Each call opens its own `AuthServiceProxy` (its HTTP connection is not thread-safe); a longpoll
holds one thread for as long as the node keeps the request open.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import decimal
import http.client
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bitcoinrpc.authproxy import AuthServiceProxy, JSONRPCException

log = logging.getLogger(__name__)

# Codes bitcoind answers while it cannot give templates yet (rpc/protocol.h).
RPC_CLIENT_NOT_CONNECTED = -9
RPC_CLIENT_IN_INITIAL_DOWNLOAD = -10
RPC_IN_WARMUP = -28
RPC_METHOD_NOT_FOUND = -32601


class NodeError(Exception):
    """Any failure to get an answer from the node."""


class NodeUnreachable(NodeError):
    """Connection refused, reset or timed out: the node is down or the URL is wrong."""


class NodeAuthError(NodeError):
    """HTTP 401: wrong rpc_user/rpc_password or a stale cookie."""


class NodeRPCError(NodeError):
    """The node answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (RPC error {code})")
        self.code = code
        self.message = message

    @property
    def is_transient(self) -> bool:
        """Errors that go away by themselves (warm-up, initial sync, no peers)."""
        transient = (RPC_CLIENT_NOT_CONNECTED, RPC_CLIENT_IN_INITIAL_DOWNLOAD, RPC_IN_WARMUP)
        return self.code in transient


def _plain(value: Any) -> Any:
    """python-bitcoinrpc parses JSON floats as Decimal; hand the rest of the pool plain floats."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class NodeClient:
    """Asynchronous facade over bitcoind's JSON-RPC."""

    def __init__(
        self,
        rpc_url: str,
        *,
        rpc_user: str | None = None,
        rpc_password: str | None = None,
        cookie_file: Path | None = None,
        timeout: float = 30.0,
        max_threads: int = 8,
    ) -> None:
        parts = urlsplit(rpc_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"rpc_url {rpc_url!r} is not an http:// URL")
        # Credentials travel in our own Authorization header, not in the URL.
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:
            netloc = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
        self._base_url = urlunsplit((parts.scheme, netloc, parts.path or "/", "", ""))
        self.display_url = self._base_url
        self._user = rpc_user if rpc_user is not None else parts.username
        self._password = rpc_password if rpc_password is not None else parts.password
        self._cookie_file = cookie_file
        self._timeout = timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix="rpc"
        )
        self._auth_header: bytes | None = None
        self.last_latency = 0.0

    # --- auth ---------------------------------------------------------------------------------

    def _load_auth(self) -> bytes:
        if self._cookie_file is not None:
            try:
                cookie = self._cookie_file.read_text().strip()
            except OSError as exc:
                raise NodeAuthError(
                    f"cannot read the node's cookie file {self._cookie_file}: {exc.strerror}"
                ) from None
            pair = cookie
        else:
            pair = f"{self._user or ''}:{self._password or ''}"
        return b"Basic " + base64.b64encode(pair.encode())

    # --- calls ----------------------------------------------------------------------------------

    def _proxy(self, method: str, timeout: float) -> AuthServiceProxy:
        if self._auth_header is None:
            self._auth_header = self._load_auth()
        # AuthServiceProxy takes credentials only from the URL and does not unquote them; we
        # give it placeholders and set our own header, so any password works unchanged.
        parts = urlsplit(self._base_url)
        proxy = AuthServiceProxy(
            urlunsplit((parts.scheme, "u:p@" + parts.netloc, parts.path, "", "")),
            service_name=method,
            timeout=timeout,
        )
        proxy._AuthServiceProxy__auth_header = self._auth_header
        return proxy

    def call_sync(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """Blocking RPC call; only ever run on a worker thread (or before the loop starts)."""
        for attempt in (1, 2):
            try:
                proxy = self._proxy(method, timeout or self._timeout)
                return _plain(proxy(*params))
            except JSONRPCException as exc:
                message = str(exc.message or "")
                if exc.code == -342 and "401" in message:
                    # The cookie is rewritten at every node start: re-read it once.
                    self._auth_header = None
                    if attempt == 1 and self._cookie_file is not None:
                        continue
                    raise NodeAuthError(
                        "the node refused our RPC credentials (HTTP 401): check rpc_user/"
                        "rpc_password or rpc_cookie_file"
                    ) from None
                if exc.code == -342:
                    raise NodeUnreachable(
                        f"unexpected HTTP answer from the node: {message}"
                    ) from None
                raise NodeRPCError(int(exc.code or 0), message) from None
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                raise NodeUnreachable(
                    f"cannot reach the node at {self.display_url}: {exc or type(exc).__name__}"
                ) from None
        raise AssertionError("unreachable")

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            return await loop.run_in_executor(
                self._executor, lambda: self.call_sync(method, *params, timeout=timeout)
            )
        finally:
            self.last_latency = time.monotonic() - started

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- typed helpers --------------------------------------------------------------------------

    async def get_block_template(
        self, longpollid: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"rules": ["segwit"]}
        if longpollid is not None:
            request["longpollid"] = longpollid
        result: dict[str, Any] = await self.call("getblocktemplate", request, timeout=timeout)
        return result

    async def get_blockchain_info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("getblockchaininfo")
        return result

    async def get_best_block_hash(self) -> str:
        return str(await self.call("getbestblockhash"))

    async def get_block_hash(self, height: int) -> str:
        return str(await self.call("getblockhash", height))

    async def submit_block(self, block_hex: str) -> str | None:
        result = await self.call("submitblock", block_hex, timeout=max(self._timeout, 120.0))
        return None if result is None else str(result)

    async def validate_address(self, address: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("validateaddress", address)
        return result

    async def get_zmq_notifications(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.call("getzmqnotifications")
        return result

