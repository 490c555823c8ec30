"""Helpers for the node-fault, failover and crash tests.

`FaultProxy` is a JSON-RPC proxy in front of a *real* regtest node. It passes every call through
untouched, and on demand injects the faults a real node cannot show when asked to: an RPC that
never answers, HTTP 500 with a non-JSON body, `getblocktemplate` failing with -10 (initial block
download), and a node reporting another network (chain name or genesis block).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.node import RegtestNode
from tests.support.stratum_client import StratumTestClient

MAINNET_GENESIS = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
IBD_MESSAGE = "Bitcoin Knots is in initial sync and waiting for blocks..."


class FaultProxy:
    """Forwards JSON-RPC to `node`; the attributes below switch faults on and off at any time."""

    def __init__(self, node: RegtestNode) -> None:
        self.node = node
        self.hang: set[str] = set()  # methods that never answer; "*" for all
        self.http_500 = False  # answer everything with HTTP 500 and a text body
        self.ibd = False  # getblocktemplate fails with -10, as during initial block download
        self.chain: str | None = None  # report this chain (and, for "main", its genesis)
        self.genesis: str | None = None  # report this genesis block hash
        self.calls: collections.Counter[str] = collections.Counter()
        self.hung = 0
        self._release = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                proxy.handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    # --- the proxy --------------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        try:
            request = json.loads(body)
            method = str(request.get("method"))
            params = request.get("params") or []
        except ValueError:
            method, params, request = "?", [], {}
        with self._lock:
            self.calls[method] += 1
        if "*" in self.hang or method in self.hang:
            with self._lock:
                self.hung += 1
            self._release.wait()  # never answered while the test runs
            return
        if self.http_500:
            self._reply(handler, 500, b"Internal Server Error\n", "text/plain")
            return
        status, raw = self._forward(body)
        if method == "getblocktemplate" and self.ibd:  # checked again after a longpoll returns
            error = {"code": -10, "message": IBD_MESSAGE}
            raw = json.dumps({"result": None, "error": error, "id": request.get("id")}).encode()
            status = 500
        elif method == "getblockchaininfo" and self.chain is not None:
            reply = json.loads(raw)
            reply["result"]["chain"] = self.chain
            raw = json.dumps(reply).encode()
        elif method == "getblockhash" and params == [0]:
            genesis = self.genesis or (MAINNET_GENESIS if self.chain == "main" else None)
            if genesis is not None:
                raw = json.dumps({"result": genesis, "error": None, "id": request.get("id")})\
                    .encode()
        self._reply(handler, status, raw, "application/json")

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        token = base64.b64encode(f"{self.node.rpc_user}:{self.node.rpc_password}".encode())
        request = urllib.request.Request(
            self.node.rpc_url + "/",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": "Basic " + token.decode(),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())
        except OSError:
            return 503, b""

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, raw: bytes, ctype: str) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", ctype)
            handler.send_header("Content-Length", str(len(raw)))
            handler.end_headers()
            handler.wfile.write(raw)
        except OSError:
            pass  # the pool gave up on this call


# --- shared test helpers ------------------------------------------------------------------------


async def wait_for(predicate: Callable[[], object], timeout: float = 20.0) -> float:
    """Wait until `predicate()` is true; returns how long that took."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)
    return time.monotonic() - started


def notifies(client: StratumTestClient) -> list[list[Any]]:
    return [m["params"] for m in client.notifications if m["method"] == "mining.notify"]


def spooled(data_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((data_dir / "blocks").glob("*.json"))]


def errors_from(records: list[logging.LogRecord], logger: str) -> list[str]:
    """The ERROR lines one logger wrote."""
    return [r.getMessage() for r in records if r.name == logger and r.levelno >= logging.ERROR]
