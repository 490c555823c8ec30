"""The bench's own line to a node: a small JSON-RPC client (to mine regtest blocks and read the
fake node's counters) and a ZMQ `hashblock` subscriber that timestamps each new block."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class BenchRPCError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"RPC error {code}: {message}")
        self.code = code
        self.message = message


class RPCClient:
    """Blocking JSON-RPC over HTTP (run it on a thread from async code)."""

    def __init__(
        self,
        url: str,
        user: str | None = None,
        password: str | None = None,
        cookie_file: Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"node RPC URL {url!r} is not an http:// URL")
        if user is None and parts.username:
            user, password = parts.username, parts.password or ""
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.url = urlunsplit((parts.scheme, netloc, parts.path or "/", "", ""))
        self._user = user
        self._password = password
        self._cookie_file = cookie_file
        self._timeout = timeout
        self._ids = itertools.count(1)

    def _auth(self) -> str | None:
        if self._cookie_file is not None:
            pair = self._cookie_file.read_text().strip()
        elif self._user is not None:
            pair = f"{self._user}:{self._password or ''}"
        else:
            return None
        return "Basic " + base64.b64encode(pair.encode()).decode()

    def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        body = json.dumps(
            {"jsonrpc": "1.0", "id": next(self._ids), "method": method, "params": list(params)}
        ).encode()
        headers = {"Content-Type": "application/json"}
        auth = self._auth()
        if auth is not None:
            headers["Authorization"] = auth
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self._timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()  # bitcoind sends JSON-RPC errors with HTTP 404/500 and a JSON body
            if not raw:
                raise BenchRPCError(exc.code, f"HTTP {exc.code} {exc.reason}") from None
        reply = json.loads(raw)
        error = reply.get("error")
        if error:
            raise BenchRPCError(int(error.get("code", 0)), str(error.get("message", "")))
        return reply.get("result")


class ZmqBlockWatcher:
    """Subscribes to a node's `hashblock` on a thread of its own and records, for each block
    hash, the CLOCK_MONOTONIC time its notice arrived (comparable across processes on Linux)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._arrivals: dict[str, float] = {}
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bench-zmq", daemon=True)

    def start(self, timeout: float = 5.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"ZMQ subscriber for {self.endpoint} did not start")
        if self._error is not None:
            raise RuntimeError(f"ZMQ subscriber for {self.endpoint}: {self._error}")
        time.sleep(0.2)  # a SUB socket drops what is published before its subscription lands

    def _run(self) -> None:
        try:
            import zmq

            context = zmq.Context()
            socket = context.socket(zmq.SUB)
            socket.setsockopt(zmq.RCVHWM, 0)
            socket.setsockopt(zmq.SUBSCRIBE, b"hashblock")
            socket.connect(self.endpoint)
        except Exception as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(100):
                    continue
                frames = socket.recv_multipart()
                arrived = time.monotonic()
                if len(frames) >= 2 and frames[0] == b"hashblock":
                    with self._lock:
                        self._arrivals[frames[1].hex()] = arrived
                        self._new.notify_all()
        finally:
            socket.close(linger=0)
            context.term()

    def arrival(self, block_hash: str, timeout: float) -> float | None:
        """When the notice of `block_hash` arrived (waiting up to `timeout`), or None."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while block_hash not in self._arrivals:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._new.wait(left)
            return self._arrivals.pop(block_hash)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)


def discover_zmq_hashblock(rpc: RPCClient) -> str | None:
    """The node's `hashblock` publisher (getzmqnotifications), with a wildcard host made
    connectable, or None."""
    try:
        notifications = rpc.call("getzmqnotifications", timeout=10.0)
    except (BenchRPCError, OSError, ValueError):
        return None
    for entry in notifications or []:
        if entry.get("type") == "pubhashblock":
            address = str(entry.get("address", ""))
            return address.replace("0.0.0.0", "127.0.0.1").replace("*", "127.0.0.1")
    return None


__all__ = ["BenchRPCError", "RPCClient", "ZmqBlockWatcher", "discover_zmq_hashblock"]
