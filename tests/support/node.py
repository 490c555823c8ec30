"""Test helper: run a real ``bitcoind -regtest`` node in a throw-away datadir.

The node is driven with a tiny, synchronous, stdlib-only JSON-RPC client so that
tests can set up chain state independently of the pool's own RPC adapter.

Usage::

    from tests.support.node import RegtestNode

    with RegtestNode() as node:
        node.create_wallet()
        node.generate(101)
        assert node.rpc("getblockcount") == 101

``find_bitcoind`` looks for the binary in ``$BITCOIND``, then on ``$PATH``, then
in ``<repo>/.node/bin`` (or ``$SOLOPOOL_NODE_PREFIX/bin``), where
``scripts/install-node.sh`` installs it.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from tests.support.paths import REPO_DIR

__all__ = [
    "REPO_DIR",
    "RPCError",
    "RegtestNode",
    "find_bitcoin_cli",
    "find_bitcoind",
    "free_port",
]

ADDRESS_TYPES = ("legacy", "p2sh-segwit", "bech32", "bech32m")

# Compressed public key of private key 1 (the secp256k1 generator point). Used
# to derive a deterministic payout address when no wallet is loaded.
_G_PUBKEY = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"

_RPC_IN_WARMUP = -28
_RPC_WALLET_ERROR = -4
_RPC_WALLET_ALREADY_LOADED = -35


class RPCError(Exception):
    """A JSON-RPC error returned by bitcoind."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"RPC error {code}: {message}")
        self.code = code
        self.message = message


class NodeError(RuntimeError):
    """The node could not be started or reached."""


# --------------------------------------------------------------------------- discovery


def _node_prefix() -> Path:
    prefix = os.environ.get("SOLOPOOL_NODE_PREFIX")
    return Path(prefix) if prefix else REPO_DIR / ".node"


def find_bitcoind() -> str:
    """Return the path of ``bitcoind``: ``$BITCOIND``, ``$PATH``, or the local install."""
    env = os.environ.get("BITCOIND")
    if env:
        found = shutil.which(env)
        if found is None:
            raise RuntimeError(f"$BITCOIND={env!r} is not an executable")
        return found
    found = shutil.which("bitcoind")
    if found is not None:
        return found
    local = _node_prefix() / "bin" / "bitcoind"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    raise RuntimeError(
        "bitcoind not found (looked at $BITCOIND, $PATH and "
        f"{local}); run scripts/install-node.sh to install a regtest node"
    )


def find_bitcoin_cli(bitcoind: str | None = None) -> str:
    """Return the path of ``bitcoin-cli``: ``$BITCOIN_CLI``, else beside ``bitcoind``."""
    env = os.environ.get("BITCOIN_CLI")
    if env:
        found = shutil.which(env)
        if found is None:
            raise RuntimeError(f"$BITCOIN_CLI={env!r} is not an executable")
        return found
    daemon = Path(bitcoind if bitcoind is not None else find_bitcoind())
    cli = daemon.with_name("bitcoin-cli")
    if cli.is_file() and os.access(cli, os.X_OK):
        return str(cli)
    found = shutil.which("bitcoin-cli")
    if found is not None:
        return found
    raise RuntimeError(
        f"bitcoin-cli not found beside {daemon}; run scripts/install-node.sh or set $BITCOIN_CLI"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now."""
    return _free_ports(1, host)[0]


def _free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    # Keep all sockets open until every port is picked so they are distinct.
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"<{path} not readable>"
    return "\n".join(text.splitlines()[-lines:])


def _json_default(obj: object) -> Any:
    if isinstance(obj, Decimal):
        return float(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


# --------------------------------------------------------------------------- the node

# Strong references: a node that was never closed is still stopped at exit.
_live_nodes: set[RegtestNode] = set()


@atexit.register
def _cleanup_all() -> None:
    for node in list(_live_nodes):
        with contextlib.suppress(Exception):
            node.close(timeout=5.0)


class RegtestNode:
    """A ``bitcoind -regtest`` process in a fresh temporary datadir.

    Ports are picked when the object is created and kept across ``restart()``,
    so ``rpc_url`` and ``zmq_url`` stay valid for the lifetime of the object.
    """

    def __init__(
        self,
        *,
        use_cookie: bool = False,
        zmq: bool = False,
        extra_args: Sequence[str] = (),
        bitcoind: str | None = None,
        rpc_user: str = "solopool",
        rpc_password: str | None = None,
        keep_datadir: bool = False,
    ) -> None:
        self.bitcoind = bitcoind if bitcoind is not None else find_bitcoind()
        self._bitcoin_cli: str | None = None
        self.use_cookie = use_cookie
        self.extra_args = list(extra_args)
        self.keep_datadir = keep_datadir
        self.datadir = Path(tempfile.mkdtemp(prefix="solopool-regtest-"))
        self.chaindir = self.datadir / "regtest"
        self.debug_log = self.chaindir / "debug.log"
        self.cookie_file = self.chaindir / ".cookie"
        self._stdout_log = self.datadir / "bitcoind.out"

        n_ports = 3 if zmq else 2
        ports = _free_ports(n_ports)
        self.rpc_port, self.p2p_port = ports[0], ports[1]
        self.rpc_url = f"http://127.0.0.1:{self.rpc_port}"
        self.zmq_port: int | None = ports[2] if zmq else None
        self.zmq_url: str | None = (
            f"tcp://127.0.0.1:{self.zmq_port}" if self.zmq_port is not None else None
        )

        self._user = rpc_user
        self._password = rpc_password if rpc_password is not None else secrets.token_hex(16)
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._ids = itertools.count(1)
        self._fallback_address: str | None = None
        self._closed = False
        _live_nodes.add(self)

    # ------------------------------------------------------------------ auth

    @property
    def rpc_user(self) -> str:
        """RPC user name (in cookie mode: read from the cookie file)."""
        return self._auth()[0]

    @property
    def rpc_password(self) -> str:
        """RPC password (in cookie mode: read from the cookie file)."""
        return self._auth()[1]

    def _auth(self) -> tuple[str, str]:
        if not self.use_cookie:
            return self._user, self._password
        try:
            cookie = self.cookie_file.read_text().strip()
        except OSError as exc:
            raise NodeError(f"cookie file {self.cookie_file} not readable: {exc}") from exc
        user, sep, password = cookie.partition(":")
        if not sep:
            raise NodeError(f"malformed cookie file {self.cookie_file}")
        return user, password

    # ------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def args(self) -> list[str]:
        """The command line used to start bitcoind."""
        args = [
            self.bitcoind,
            "-regtest",
            f"-datadir={self.datadir}",
            "-server",
            "-listen=0",
            "-discover=0",
            "-rpcbind=127.0.0.1",
            "-rpcallowip=127.0.0.1",
            f"-rpcport={self.rpc_port}",
            f"-port={self.p2p_port}",
            "-rpcthreads=16",
            "-fallbackfee=0.0002",
            "-txindex=0",
            "-printtoconsole=0",
            "-debug=0",
            "-keypool=10",
        ]
        if not self.use_cookie:
            args += [f"-rpcuser={self._user}", f"-rpcpassword={self._password}"]
        if self.zmq_url is not None:
            args.append(f"-zmqpubhashblock={self.zmq_url}")
        args += self.extra_args
        return args

    def start(self, timeout: float = 60.0) -> None:
        """Start bitcoind and wait until its RPC interface answers."""
        if self._closed:
            raise NodeError("node was closed")
        if self.running:
            return
        self.chaindir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.cookie_file.unlink()  # stale cookie of a previous run
        self._out = open(self._stdout_log, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self.args(),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self._kill()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise NodeError(
                    f"bitcoind exited with code {code} during startup\n{self.diagnostics()}"
                )
            if self.use_cookie and not self.cookie_file.exists():
                time.sleep(0.05)
                continue
            try:
                self.rpc("getblockchaininfo", timeout=5.0)
                return
            except RPCError as exc:
                if exc.code != _RPC_IN_WARMUP:
                    raise
                last_error = exc
            except (OSError, NodeError) as exc:  # refused, reset, cookie race...
                last_error = exc
            time.sleep(0.05)
        raise NodeError(
            f"bitcoind RPC did not answer within {timeout:.0f}s "
            f"(last error: {last_error!r})\n{self.diagnostics()}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop bitcoind via RPC; kill it if it does not exit within ``timeout``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                self.rpc("stop", timeout=min(timeout, 10.0))
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        self._proc = None
        self._close_out()

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None
        self._close_out()

    def _close_out(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def restart(self, extra_args: Sequence[str] | None = None) -> None:
        """Stop and start again with the same datadir and ports."""
        self.stop()
        if extra_args is not None:
            self.extra_args = list(extra_args)
        self.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the node and delete its datadir (unless ``keep_datadir``)."""
        if self._closed:
            return
        try:
            self.stop(timeout=timeout)
        finally:
            self._closed = True
            _live_nodes.discard(self)
            if not self.keep_datadir:
                shutil.rmtree(self.datadir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def diagnostics(self, lines: int = 40) -> str:
        """Tail of debug.log and of bitcoind's console output, for error messages."""
        parts = [f"--- tail of {self.debug_log} ---", _tail(self.debug_log, lines)]
        if self._stdout_log.exists() and self._stdout_log.stat().st_size:
            parts += [f"--- tail of {self._stdout_log} ---", _tail(self._stdout_log, lines)]
        return "\n".join(parts)

    # ------------------------------------------------------------------- RPC

    def rpc(
        self, method: str, *params: Any, wallet: str | None = None, timeout: float = 60.0
    ) -> Any:
        """Call ``method`` over JSON-RPC and return its result.

        Floats in the result are returned as ``Decimal``. Raises ``RPCError`` for
        JSON-RPC errors and ``OSError`` (e.g. ``ConnectionRefusedError``) if the
        node is unreachable.
        """
        url = self.rpc_url + "/"
        if wallet is not None:
            url = f"{self.rpc_url}/wallet/{urllib.parse.quote(wallet, safe='')}"
        body = json.dumps(
            {"jsonrpc": "1.0", "id": next(self._ids), "method": method, "params": list(params)},
            default=_json_default,
        ).encode()
        user, password = self._auth()
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            # bitcoind reports JSON-RPC errors with HTTP 404/500 and a JSON body.
            raw = exc.read()
            if not raw:
                raise NodeError(f"HTTP {exc.code} {exc.reason} from {url} ({method})") from exc
        try:
            reply = json.loads(raw, parse_float=Decimal)
        except ValueError as exc:
            raise NodeError(f"invalid JSON-RPC reply to {method}: {raw[:200]!r}") from exc
        error = reply.get("error")
        if error is not None:
            raise RPCError(int(error.get("code", 0)), str(error.get("message", "")))
        return reply.get("result")

    def cli(self, *args: str, wallet: str | None = None) -> str:
        """Run ``bitcoin-cli`` against this node and return its stripped stdout."""
        if self._bitcoin_cli is None:
            self._bitcoin_cli = find_bitcoin_cli(self.bitcoind)
        cmd = [
            self._bitcoin_cli,
            "-regtest",
            f"-datadir={self.datadir}",
            "-rpcconnect=127.0.0.1",
            f"-rpcport={self.rpc_port}",
        ]
        if not self.use_cookie:
            cmd += [f"-rpcuser={self._user}", f"-rpcpassword={self._password}"]
        if wallet is not None:
            cmd.append(f"-rpcwallet={wallet}")
        cmd += args
        result = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, cmd, output=result.stdout, stderr=result.stderr
            )
        return result.stdout.strip()

    # ------------------------------------------------------------ conveniences

    def create_wallet(self, name: str = "w") -> str:
        """Create (or load, if it exists on disk) the descriptor wallet ``name``.

        The wallet is marked load-on-startup, so it is loaded again by ``restart()``.
        """
        try:
            # name, disable_private_keys, blank, passphrase, avoid_reuse, descriptors,
            # load_on_startup
            self.rpc("createwallet", name, False, False, "", False, True, True)
        except RPCError as exc:
            if exc.code != _RPC_WALLET_ERROR or "already exists" not in exc.message:
                raise
            try:
                self.rpc("loadwallet", name, True)
            except RPCError as load_exc:
                if load_exc.code != _RPC_WALLET_ALREADY_LOADED:
                    raise
        return name

    def new_address(self, address_type: str | None = None, wallet: str = "w") -> str:
        """A new receiving address of ``wallet``.

        ``address_type`` is one of "legacy", "p2sh-segwit", "bech32", "bech32m";
        ``None`` uses the node's default (which is "legacy" on Bitcoin Knots).
        """
        if address_type is None:
            return str(self.rpc("getnewaddress", wallet=wallet))
        if address_type not in ADDRESS_TYPES:
            raise ValueError(f"unknown address type {address_type!r}")
        return str(self.rpc("getnewaddress", "", address_type, wallet=wallet))

    def default_address(self) -> str:
        """Payout address for ``generate()`` without an address.

        A bech32 address of wallet "w" if that wallet is loaded (so the coinbase
        outputs are spendable by it), else the P2WPKH address of private key 1.
        """
        if "w" in self.rpc("listwallets"):
            return self.new_address("bech32")
        if self._fallback_address is None:
            info = self.rpc("getdescriptorinfo", f"wpkh({_G_PUBKEY})")
            self._fallback_address = str(self.rpc("deriveaddresses", info["descriptor"])[0])
        return self._fallback_address

    def generate(self, n: int, address: str | None = None) -> list[str]:
        """Mine ``n`` blocks to ``address`` (see ``default_address``); return their hashes."""
        target = address if address is not None else self.default_address()
        hashes = self.rpc("generatetoaddress", n, target, timeout=max(60.0, n * 1.0))
        return [str(h) for h in hashes]

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RegtestNode {self.rpc_url} datadir={self.datadir} {state}>"
