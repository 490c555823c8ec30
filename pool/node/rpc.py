"""The node client: the only place that speaks RPC to bitcoind.

python-bitcoinrpc is synchronous, so every call runs on a worker thread, never on the event loop.
Each call opens its own proxy and connection (`pool.node.proxy`; an HTTP connection is not
thread-safe). Calls are kept apart so that one that hangs cannot hold up the others: ordinary
calls share a small pool of threads, `submitblock` has its own, and every longpoll (which the
node may hold open for minutes) gets a thread of its own. Every ordinary call times out twice
over: the socket's timeout, and an event-loop deadline a little later in case a thread is stuck
anyway.

A longpoll has no timeout by default: bitcoind keeps one of its RPC worker threads (`-rpcthreads`)
inside a longpoll until the tip changes, even after the client hung up, so a client that gives
up and asks again would use up the node's RPC threads on a quiet chain. A dead connection is
noticed by TCP keepalive instead, and a hung node by the ordinary calls that watch it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bitcoinrpc.authproxy import JSONRPCException

from .discovery import basic_auth
from .errors import NodeAuthError, NodeRPCError, NodeTimeout, NodeUnreachable
from .proxy import RPCProxy

# Grace on top of a call's own socket timeout before the event loop gives up on its thread.
DEADLINE_GRACE = 5.0
SUBMIT_TIMEOUT = 120.0  # submitblock validates the whole block; give it time


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
        name: str = "node",
        zmq_hashblock: str | None = None,
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
        self.name = name  # the config section it came from: "node", "backup_node 1", ...
        self.zmq_hashblock = zmq_hashblock
        self._user = rpc_user if rpc_user is not None else parts.username
        self._password = rpc_password if rpc_password is not None else parts.password
        self._cookie_file = cookie_file
        self._timeout = timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_threads, thread_name_prefix=f"rpc-{name}"
        )
        # A found block never waits behind ordinary calls to a slow node.
        self._submit_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix=f"submit-{name}"
        )
        self._auth_header: bytes | None = None
        self.last_latency = 0.0

    def __str__(self) -> str:
        return f"{self.name} ({self.display_url})"

    @property
    def timeout(self) -> float:
        """Seconds an ordinary call may take."""
        return self._timeout

    # --- calls ----------------------------------------------------------------------------------

    def _proxy(self, method: str, timeout: float | None) -> RPCProxy:
        """A one-call proxy; `timeout` None waits as long as the node likes (longpoll), with
        TCP keepalive on so that a dead connection still ends."""
        if self._auth_header is None:
            self._auth_header = basic_auth(self._cookie_file, self._user, self._password)
        connect_timeout = self._timeout if timeout is None else timeout
        return RPCProxy(self._base_url, method, self._auth_header, connect_timeout, timeout)

    def call_sync(
        self, method: str, *params: Any, timeout: float | None = None, forever: bool = False
    ) -> Any:
        """Blocking RPC call; only ever run on a worker thread (or before the loop starts).
        `forever`: no timeout for the answer (longpoll)."""
        for attempt in (1, 2):
            proxy: RPCProxy | None = None
            try:
                proxy = self._proxy(method, None if forever else timeout or self._timeout)
                return proxy(*params)
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
                        f"unexpected HTTP answer from the node at {self.display_url}: {message}"
                    ) from None
                raise NodeRPCError(int(exc.code or 0), message) from None
            except TimeoutError:
                raise NodeTimeout(
                    f"the node at {self.display_url} did not answer {method} within "
                    f"{timeout or self._timeout:g} s"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                raise NodeUnreachable(
                    f"cannot reach the node at {self.display_url}: {exc or type(exc).__name__}"
                ) from None
            except (ValueError, AttributeError, TypeError) as exc:
                # Not JSON, or JSON of the wrong shape: something other than bitcoind answered.
                raise NodeUnreachable(
                    f"the node at {self.display_url} gave an unreadable answer to {method}: {exc}"
                ) from None
            finally:
                if proxy is not None:
                    proxy.close()
        raise AssertionError("unreachable")

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        return await self._run(self._executor, method, params, timeout)

    async def _run(
        self,
        executor: concurrent.futures.Executor,
        method: str,
        params: tuple[Any, ...],
        timeout: float | None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        limit = timeout or self._timeout
        started = time.monotonic()
        future = loop.run_in_executor(
            executor, lambda: self.call_sync(method, *params, timeout=limit)
        )
        try:
            return await asyncio.wait_for(future, limit + DEADLINE_GRACE)
        except TimeoutError:
            # Queued behind stuck calls, or stuck itself: give up on it (a queued call is
            # dropped; a running one finishes on its own thread and is ignored).
            raise self._timed_out(method, limit + DEADLINE_GRACE) from None
        finally:
            self.last_latency = time.monotonic() - started

    async def call_own_thread(
        self, method: str, *params: Any, timeout: float | None = None
    ) -> Any:
        """A call on a thread of its own (longpoll): it may be held open for minutes, and
        abandoning it (cancelling the await) leaves no pool thread blocked. `timeout` None:
        wait as long as the node holds it (see the module docstring)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def deliver(setter: Any, value: Any) -> None:
            if not future.done():
                setter(value)

        def run() -> None:
            try:
                result = self.call_sync(
                    method, *params, timeout=timeout, forever=timeout is None
                )
            except BaseException as exc:  # handed to the awaiting coroutine
                setter, value = future.set_exception, exc
            else:
                setter, value = future.set_result, result
            try:
                loop.call_soon_threadsafe(deliver, setter, value)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more

        threading.Thread(target=run, name=f"longpoll-{self.name}", daemon=True).start()
        if timeout is None:
            return await future
        try:
            return await asyncio.wait_for(future, timeout + DEADLINE_GRACE)
        except TimeoutError:
            raise self._timed_out(method, timeout + DEADLINE_GRACE) from None

    def _timed_out(self, method: str, seconds: float) -> NodeTimeout:
        return NodeTimeout(
            f"the node at {self.display_url} did not answer {method} within {seconds:g} s"
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._submit_executor.shutdown(wait=False, cancel_futures=True)

    # --- typed helpers --------------------------------------------------------------------------

    async def get_block_template(
        self, longpollid: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """A template; with `longpollid`, a BIP22 longpoll on its own thread, waiting as long
        as the node holds it unless `timeout` is given."""
        request: dict[str, Any] = {"rules": ["segwit"]}
        result: dict[str, Any]
        if longpollid is not None:
            request["longpollid"] = longpollid
            result = await self.call_own_thread("getblocktemplate", request, timeout=timeout)
        else:
            result = await self.call("getblocktemplate", request, timeout=timeout)
        return result

    async def get_blockchain_info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("getblockchaininfo")
        return result

    async def get_best_block_hash(self) -> str:
        return str(await self.call("getbestblockhash"))

    async def get_block_hash(self, height: int) -> str:
        return str(await self.call("getblockhash", height))

    async def submit_block(self, block_hex: str) -> str | None:
        result = await self._run(
            self._submit_executor, "submitblock", (block_hex,), max(self._timeout, SUBMIT_TIMEOUT)
        )
        return None if result is None else str(result)

    async def validate_address(
        self, address: str, timeout: float | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("validateaddress", address, timeout=timeout)
        return result

    async def get_zmq_notifications(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.call("getzmqnotifications")
        return result
