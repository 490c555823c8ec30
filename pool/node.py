"""The node adapter: the only module that speaks RPC to bitcoind.

python-bitcoinrpc is synchronous, so every call runs on a worker thread, never on the event loop.
Each call opens its own `AuthServiceProxy` (its HTTP connection is not thread-safe). Calls are
kept apart so that one that hangs cannot hold up the others: ordinary calls share a small pool
of threads, `submitblock` has its own, and every longpoll (which the node may hold open for
minutes) gets a thread of its own. Every ordinary call times out twice over: the socket's
timeout, and an event-loop deadline a little later in case a thread is stuck anyway.

A longpoll has no timeout by default: bitcoind keeps one of its RPC worker threads (`-rpcthreads`)
inside a longpoll until the tip changes, even after the client hung up, so a client that gives
up and asks again would use up the node's RPC threads on a quiet chain. A dead connection is
noticed by TCP keepalive instead, and a hung node by the ordinary calls that watch it.

`NodeSet` puts several nodes behind one face: the first healthy one gives templates, the others
are failovers, and a found block goes to all of them.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from bitcoinrpc import authproxy
from bitcoinrpc.authproxy import AuthServiceProxy, JSONRPCException

log = logging.getLogger(__name__)


class _LazyDebugJson:
    """python-bitcoinrpc re-serializes every request's params and every answer for a DEBUG log
    line even when DEBUG is off: ~47 ms of GIL for a full mainnet template, on the path to
    every new-block fan-out. This stands in for its `json` module and skips that work unless
    its logger would print it; the request body itself (a dict with a method) is always built.
    """

    @staticmethod
    def loads(text: str | bytes, **kwargs: Any) -> Any:
        # orjson instead of json with Decimal floats: a mainnet template parses several times
        # faster, and the pool gets plain floats (it keeps no amounts as floats).
        return orjson.loads(text)

    @staticmethod
    def dumps(obj: Any, **kwargs: Any) -> str:
        is_request = isinstance(obj, dict) and "method" in obj or isinstance(obj, list)
        if is_request or authproxy.log.isEnabledFor(logging.DEBUG):
            return json.dumps(obj, **kwargs)
        return ""


authproxy.json = _LazyDebugJson()

# Codes bitcoind answers while it cannot give templates yet (rpc/protocol.h).
RPC_INVALID_PARAMETER = -8  # getblockhash: no block at that height
RPC_CLIENT_NOT_CONNECTED = -9
RPC_CLIENT_IN_INITIAL_DOWNLOAD = -10
RPC_IN_WARMUP = -28
RPC_METHOD_NOT_FOUND = -32601

# Grace on top of a call's own socket timeout before the event loop gives up on its thread.
DEADLINE_GRACE = 5.0
SUBMIT_TIMEOUT = 120.0  # submitblock validates the whole block; give it time
# TCP keepalive on longpoll connections: a dead peer is noticed after about 60 + 3 * 10 s.
KEEPALIVE = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))


class NodeError(Exception):
    """Any failure to get an answer from the node."""


class NodeUnreachable(NodeError):
    """Connection refused, reset or timed out: the node is down or the URL is wrong."""


class NodeTimeout(NodeUnreachable):
    """The node took longer than the call's timeout to answer."""


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


class NodeWrongChain(NodeError):
    """The node is on another network (or another chain with another genesis block) than the
    one the pool started on: its templates would pay addresses of the wrong network."""


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

    def _proxy(self, method: str, timeout: float | None) -> AuthServiceProxy:
        """A one-call proxy; `timeout` None waits as long as the node likes (longpoll), with
        TCP keepalive on so that a dead connection still ends."""
        if self._auth_header is None:
            self._auth_header = self._load_auth()
        # AuthServiceProxy takes credentials only from the URL and does not unquote them; we
        # give it placeholders and set our own header, so any password works unchanged.
        parts = urlsplit(self._base_url)
        connection: http.client.HTTPConnection | None = None
        if timeout is None:
            connection = self._keepalive_connection()
        proxy = AuthServiceProxy(
            urlunsplit((parts.scheme, "u:p@" + parts.netloc, parts.path, "", "")),
            service_name=method,
            timeout=timeout,
            connection=connection,
        )
        proxy._AuthServiceProxy__auth_header = self._auth_header
        return proxy

    def _keepalive_connection(self) -> http.client.HTTPConnection:
        parts = urlsplit(self._base_url)
        host = parts.hostname or "127.0.0.1"
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(host, parts.port or 443, timeout=self._timeout)
        else:
            connection = http.client.HTTPConnection(host, parts.port or 80, timeout=self._timeout)
        connection.connect()  # within the ordinary timeout; then no timeout for the answer
        sock = connection.sock
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for name, value in KEEPALIVE:
                if hasattr(socket, name):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
        return connection

    def call_sync(
        self, method: str, *params: Any, timeout: float | None = None, forever: bool = False
    ) -> Any:
        """Blocking RPC call; only ever run on a worker thread (or before the loop starts).
        `forever`: no timeout for the answer (longpoll)."""
        for attempt in (1, 2):
            proxy: AuthServiceProxy | None = None
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
                    connection = getattr(proxy, "_AuthServiceProxy__conn", None)
                    if connection is not None:
                        connection.close()
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



# --- several nodes --------------------------------------------------------------------------------


@dataclass
class NodeHealth:
    """What the pool currently knows about one node."""

    up: bool = True
    wrong_chain: bool = False
    last_error: str | None = None
    down_since: float | None = None  # time.monotonic() of the first failure of this outage
    height: int | None = None  # tip height at the last look
    best_hash: str | None = None
    next_probe: float = 0.0
    retry_delay: float = 0.0


class NodeSet:
    """Several nodes in priority order: `[node]` first, then each `[[backup_node]]`.

    The first healthy node supplies templates (`active`; chosen by the template source, which
    watches health); a found block is submitted to all of them at once, and its acceptance may
    be confirmed by any. Every node must be on the network the pool started on (`chain`, and the
    genesis block hash): a node that turns out to be on another one is never used for templates.
    """

    def __init__(self, clients: Sequence[NodeClient]) -> None:
        if not clients:
            raise ValueError("a NodeSet needs at least one node")
        self.clients = tuple(clients)
        self.health = {id(c): NodeHealth() for c in self.clients}
        self.active: NodeClient | None = self.clients[0]
        self.chain: str | None = None
        self.genesis: str | None = None
        self._changed = asyncio.Event()

    @property
    def primary(self) -> NodeClient:
        return self.clients[0]

    def state(self, client: NodeClient) -> NodeHealth:
        return self.health[id(client)]

    def rank(self, client: NodeClient) -> int:
        return self.clients.index(client)

    def usable(self) -> list[NodeClient]:
        """Nodes that may give templates now, best first."""
        return [c for c in self.clients if self.state(c).up]

    def submit_targets(self) -> list[NodeClient]:
        """Nodes a found block goes to: all but those known to be on another network."""
        return [c for c in self.clients if not self.state(c).wrong_chain]

    # --- health --------------------------------------------------------------------------------

    def mark_down(self, client: NodeClient, exc: BaseException) -> bool:
        """Record a failure; True if the node was up until now (the caller logs once)."""
        state = self.state(client)
        was_up = state.up
        state.up = False
        state.wrong_chain = isinstance(exc, NodeWrongChain)
        state.last_error = str(exc)
        if was_up:
            state.down_since = time.monotonic()
        return was_up

    def mark_up(self, client: NodeClient) -> float | None:
        """Record that a node answers; returns how long it was down, or None if it was up."""
        state = self.state(client)
        if state.up:
            return None
        down_for = time.monotonic() - (state.down_since or time.monotonic())
        state.up = True
        state.wrong_chain = False
        state.last_error = None
        state.down_since = None
        state.retry_delay = 0.0
        self._notify_change()
        return down_for

    def _notify_change(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait_for_change(self, timeout: float) -> None:
        """Sleep up to `timeout`, waking early when a node comes back."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    def set_identity(self, chain: str, genesis: str | None) -> None:
        self.chain = chain
        self.genesis = genesis

    async def identify(self, client: NodeClient) -> dict[str, Any]:
        """getblockchaininfo, checked against the network the pool started on.

        Raises NodeWrongChain for another network or another genesis block (a node restarted
        with `-testnet`, `-signet` with another challenge, or pointed at another datadir)."""
        info = await client.get_blockchain_info()
        chain = str(info.get("chain"))
        if self.chain is not None and chain != self.chain:
            raise NodeWrongChain(
                f"{client} is now on chain {chain!r}, but this pool mines on {self.chain!r}"
            )
        if self.genesis is not None:
            genesis = await client.get_block_hash(0)
            if genesis != self.genesis:
                raise NodeWrongChain(
                    f"{client} now has genesis block {genesis[:16]}…, not {self.genesis[:16]}… "
                    f"of the {self.chain} chain this pool started on"
                )
        state = self.state(client)
        if isinstance(info.get("blocks"), int):
            state.height = int(info["blocks"])
        if isinstance(info.get("bestblockhash"), str):
            state.best_hash = str(info["bestblockhash"])
        return info

    def status(self) -> list[dict[str, Any]]:
        """One entry per node, for status pages."""
        rows = []
        for client in self.clients:
            state = self.state(client)
            rows.append(
                {
                    "name": client.name,
                    "url": client.display_url,
                    "up": state.up,
                    "active": client is self.active,
                    "wrong_chain": state.wrong_chain,
                    "height": state.height,
                    "last_error": state.last_error,
                    "latency": client.last_latency,
                }
            )
        return rows

    # --- blocks --------------------------------------------------------------------------------

    async def confirm(self, height: int, block_hash: str) -> bool | None:
        """Is `block_hash` at `height` on the best chain of any node? None if no node answered.
        Returns at the first node that says yes; a slow node does not hold up the answer."""
        tasks = [
            asyncio.create_task(c.get_block_hash(height)) for c in self.submit_targets()
        ]
        answered = False
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    found = await next_done
                except NodeRPCError as exc:
                    # -8: no block at that height on its best chain. Anything else (-28, still
                    # starting after a restart) is no answer: asked again, not taken as "no".
                    answered = answered or exc.code == RPC_INVALID_PARAMETER
                    continue
                except NodeError:
                    continue
                answered = True
                if found == block_hash:
                    return True
        finally:
            for task in tasks:
                task.cancel()
        return False if answered else None

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """A read-only call to the node currently supplying templates (else the primary)."""
        client = self.active or self.primary
        return await client.call(method, *params, timeout=timeout)

    def close(self) -> None:
        for client in self.clients:
            client.close()
