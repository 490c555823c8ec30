"""A fake bitcoind: JSON-RPC over HTTP serving one recorded mainnet-difficulty template.

On regtest about every second hash is a block, so a share benchmark there is a block storm. This
server lets the real pool process run against a mainnet-difficulty `getblocktemplate` answer,
talking to it over RPC exactly as to bitcoind. It answers what a pool needs:

- `getblockchaininfo` (the configured chain, never in initial block download),
- `getblocktemplate` (the template; a longpoll with the current `longpollid` is held open for
  `longpoll_seconds` and then answered with the same template, as bitcoind does when nothing
  changed),
- `getbestblockhash`, `getblockcount`, `getblockhash` (genesis, the template's parent, and
  blocks submitted here), `getdifficulty`, `getnetworkinfo`, `getmininginfo`,
  `getzmqnotifications` (none),
- `validateaddress`, computed with `pool.consensus.address`,
- `submitblock` (counted; answered null = accepted),
- `generatetoaddress`: a fake new block (random hash) on which the next template builds, with
  the same transactions; held longpolls are answered at once (for the fan-out test with a
  mainnet-sized template),
- `getfakeblocktime`: when a fake block's template was ready (CLOCK_MONOTONIC, which the
  bench in another process can compare with its own clock),
- `getfakenodestats`: how many calls of each method it has answered (for the benchmark).

`extra_transactions` appends synthetic, internally consistent transactions (txid = sha256d of
the data, default_witness_commitment recomputed) so the coinbase merkle branch has a realistic
mainnet length (about 12 for ~3,000 transactions).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pool.consensus.address import AddressError, address_to_script, script_to_address
from pool.consensus.merkle import merkle_root
from pool.consensus.serialize import sha256d
from pool.consensus.target import nbits_to_target, target_to_difficulty

log = logging.getLogger(__name__)

GENESIS = {
    "main": "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f",
    "test": "000000000933ea01ad0ee984209779baaec3ced90fa3f408719526f8d77f4943",
    "testnet4": "00000000da84f2bafbbc53dee25a72ae507ff4914b867c565be350b0da8bf043",
    "signet": "00000008819873e925422c1ff0f99f7cc9bbb232af63a077a480a3633bee1ef6",
    "regtest": "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206",
}
WITNESS_COMMITMENT_HEADER = bytes.fromhex("6a24aa21a9ed")

RPC_MISC_ERROR = -1
RPC_INVALID_PARAMETER = -8
RPC_METHOD_NOT_FOUND = -32601
RPC_PARSE_ERROR = -32700


class RawJSON(bytes):
    """An RPC result that is already JSON text (the template, serialized once per change)."""


class RPCFault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def load_template(path: Path) -> dict[str, Any]:
    """A recorded getblocktemplate answer (a bare result, or a whole JSON-RPC reply)."""
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "result" in data and isinstance(data["result"], dict):
        data = data["result"]
    if not isinstance(data, dict) or "previousblockhash" not in data or "bits" not in data:
        raise ValueError(f"{path} is not a getblocktemplate answer")
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _synthetic_tx(index: int) -> bytes:
    """A small, well-formed non-witness transaction, unique per index (never valid on chain:
    it spends an output that does not exist)."""
    prevout = hashlib.sha256(b"solopool-bench tx %d" % index).digest()
    return (
        (2).to_bytes(4, "little")
        + b"\x01"
        + prevout
        + (0).to_bytes(4, "little")
        + b"\x00"  # empty scriptSig
        + b"\xfd\xff\xff\xff"
        + b"\x01"
        + (1000).to_bytes(8, "little")
        + b"\x16\x00\x14"
        + prevout[:20]  # a P2WPKH output
        + (0).to_bytes(4, "little")
    )


def with_extra_transactions(template: dict[str, Any], count: int) -> dict[str, Any]:
    """The template plus `count` synthetic transactions, witness commitment recomputed."""
    if count <= 0:
        return template
    out = dict(template)
    txs = list(template.get("transactions", []))
    for i in range(count):
        data = _synthetic_tx(i)
        txid = sha256d(data)[::-1].hex()
        txs.append(
            {
                "data": data.hex(),
                "txid": txid,
                "hash": txid,  # no witness: wtxid = txid
                "depends": [],
                "fee": 0,
                "sigops": 4,
                "weight": 4 * len(data),
            }
        )
    out["transactions"] = txs
    wtxids = [bytes(32)] + [bytes.fromhex(tx.get("hash", tx["txid"]))[::-1] for tx in txs]
    commitment = sha256d(merkle_root(wtxids) + bytes(32))
    out["default_witness_commitment"] = (WITNESS_COMMITMENT_HEADER + commitment).hex()
    return out


class FakeNode:
    """The RPC logic (transport-free, thread-safe)."""

    def __init__(
        self,
        template: dict[str, Any],
        chain: str = "main",
        longpoll_seconds: float = 60.0,
        rpc_user: str | None = None,
        rpc_password: str | None = None,
    ) -> None:
        self.template = template
        self.template_json = RawJSON(json.dumps(template).encode())
        self.chain = chain
        self.longpoll_seconds = longpoll_seconds
        self.rpc_user = rpc_user
        self.rpc_password = rpc_password
        self.calls: Counter[str] = Counter()
        self.submitted: list[str] = []  # hashes of blocks given to submitblock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._mined = 0
        self.block_times: dict[str, float] = {}  # fake block hash -> when its template was ready
        self.height = int(template["height"])
        self.prev_hash = str(template["previousblockhash"])
        self.target = (
            int(template["target"], 16)
            if "target" in template
            else nbits_to_target(int(template["bits"], 16))
        )

    def close(self) -> None:
        """Release held longpolls."""
        self._closing.set()
        with self._changed:
            self._changed.notify_all()

    def advance(self) -> str:
        """Pretend a block was found on the template's parent: the next template builds on it
        (same transactions), and held longpolls are answered. Returns the new block's hash."""
        with self._changed:
            self._mined += 1
            digest = hashlib.sha256(b"solopool-bench fake block %d" % self._mined).digest()
            block_hash = (bytes(8) + digest[8:]).hex()
            template = dict(self.template)
            template["previousblockhash"] = block_hash
            template["height"] = self.height + 1
            template["curtime"] = int(template.get("curtime", 0)) + 600
            template["mintime"] = int(template.get("mintime", 0)) + 600
            template["longpollid"] = f"{block_hash}{self._mined}"
            self.template = template
            self.template_json = RawJSON(json.dumps(template).encode())
            self.height += 1
            self.prev_hash = block_hash
            # CLOCK_MONOTONIC: the bench (another process) times the fan-out from here.
            self.block_times[block_hash] = time.monotonic()
            self._changed.notify_all()
        return block_hash

    def authorized(self, header: str | None) -> bool:
        if self.rpc_user is None:
            return True
        expected = base64.b64encode(f"{self.rpc_user}:{self.rpc_password or ''}".encode())
        return header == "Basic " + expected.decode()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self.calls),
                "total_calls": sum(self.calls.values()),
                "submitted_blocks": len(self.submitted),
            }

    # --- dispatch -------------------------------------------------------------------------------

    def handle(self, method: str, params: list[Any]) -> Any:
        with self._lock:
            self.calls[method] += 1
        handler = getattr(self, "rpc_" + method, None)
        if handler is None:
            raise RPCFault(RPC_METHOD_NOT_FOUND, "Method not found")
        return handler(*params)

    # --- methods --------------------------------------------------------------------------------

    def rpc_getblockchaininfo(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "blocks": self.height - 1,
            "headers": self.height - 1,
            "bestblockhash": self.prev_hash,
            "difficulty": target_to_difficulty(self.target),
            "time": int(self.template.get("curtime", 0)),
            "mediantime": int(self.template.get("mintime", 0)),
            "verificationprogress": 1.0,
            "initialblockdownload": False,
            "pruned": False,
            "warnings": "",
        }

    def rpc_getblocktemplate(self, request: Any = None) -> RawJSON | None:
        if isinstance(request, dict):
            if request.get("mode") == "proposal":
                return None  # "valid", as bitcoind answers a proposal it accepts
            longpollid = request.get("longpollid")
            if longpollid is not None:
                # Held open until the template changes (a fake block) or the time is up, as
                # bitcoind does.
                deadline = time.monotonic() + self.longpoll_seconds
                with self._changed:
                    while (
                        longpollid == self.template.get("longpollid")
                        and not self._closing.is_set()
                    ):
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._changed.wait(left)
        with self._lock:
            return self.template_json

    def rpc_getbestblockhash(self) -> str:
        return self.prev_hash

    def rpc_getblockcount(self) -> int:
        return self.height - 1

    def rpc_getblockhash(self, height: int) -> str:
        if height == 0:
            return GENESIS.get(self.chain, GENESIS["main"])
        if height == self.height - 1:
            return self.prev_hash
        if height == self.height:
            with self._lock:
                if self.submitted:
                    return self.submitted[-1]
        raise RPCFault(RPC_INVALID_PARAMETER, "Block height out of range")

    def rpc_getdifficulty(self) -> float:
        return target_to_difficulty(self.target)

    def rpc_getnetworkinfo(self) -> dict[str, Any]:
        return {
            "version": 290000,
            "subversion": "/solopool-bench-fake-node:0.1/",
            "protocolversion": 70016,
            "connections": 8,
            "networkactive": True,
            "warnings": "",
        }

    def rpc_getmininginfo(self) -> dict[str, Any]:
        return {
            "blocks": self.height - 1,
            "difficulty": target_to_difficulty(self.target),
            "networkhashps": 0,
            "pooledtx": len(self.template.get("transactions", [])),
            "chain": self.chain,
            "warnings": "",
        }

    def rpc_getzmqnotifications(self) -> list[Any]:
        return []

    def rpc_validateaddress(self, address: str) -> dict[str, Any]:
        try:
            script = address_to_script(str(address), self.chain)
        except AddressError as exc:
            return {"isvalid": False, "error": str(exc)}
        canonical = script_to_address(script, self.chain) or str(address)
        is_witness = script[0] == 0 or 0x51 <= script[0] <= 0x60
        info: dict[str, Any] = {
            "isvalid": True,
            "address": canonical,
            "scriptPubKey": script.hex(),
            "isscript": script[:2] == b"\xa9\x14" or (script[0] == 0 and len(script) == 34),
            "iswitness": is_witness,
        }
        if is_witness:
            info["witness_version"] = 0 if script[0] == 0 else script[0] - 0x50
            info["witness_program"] = script[2:].hex()
        return info

    def rpc_submitblock(self, block_hex: str, *_: Any) -> None:
        header = bytes.fromhex(str(block_hex)[:160])
        if len(header) != 80:
            raise RPCFault(-22, "Block decode failed")
        with self._lock:
            self.submitted.append(sha256d(header)[::-1].hex())
        log.warning("submitblock %s (counted; answered as accepted)", self.submitted[-1])

    def rpc_generatetoaddress(self, count: int, address: str, *_: Any) -> list[str]:
        """Fake blocks for the fan-out test (the address is only checked)."""
        if not self.rpc_validateaddress(address)["isvalid"]:
            raise RPCFault(-5, "Error: Invalid address")
        return [self.advance() for _ in range(max(0, min(int(count), 1000)))]

    def rpc_getfakeblocktime(self, block_hash: str) -> float:
        """When the template on a fake block was ready (CLOCK_MONOTONIC seconds)."""
        with self._lock:
            if block_hash not in self.block_times:
                raise RPCFault(-5, "Block not found")
            return self.block_times[block_hash]

    def rpc_getfakenodestats(self) -> dict[str, Any]:
        return self.stats()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeNodeServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s - %s", self.address_string(), format % args)

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        node = self.server.node
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if not node.authorized(self.headers.get("Authorization")):
            self._send(401, b"", "text/plain")
            return
        try:
            request = json.loads(body)
        except ValueError:
            answer = {"result": None, "error": _error(RPC_PARSE_ERROR, "Parse error"), "id": None}
            self._send(500, _encode(answer), "application/json")
            return
        if isinstance(request, list):
            answers = [self._one(r)[1] for r in request]
            self._send(200, b"[" + b",".join(_encode(a) for a in answers) + b"]",
                       "application/json")
            return
        status, answer = self._one(request)
        self._send(status, _encode(answer), "application/json")

    def _one(self, request: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(request, dict):
            return 500, {"result": None, "error": _error(-32600, "Invalid Request"), "id": None}
        msg_id = request.get("id")
        params = request.get("params") or []
        if not isinstance(params, list):
            params = [params]
        try:
            result = self.server.node.handle(str(request.get("method")), params)
        except RPCFault as exc:
            status = 404 if exc.code == RPC_METHOD_NOT_FOUND else 500
            return status, {"result": None, "error": _error(exc.code, exc.message), "id": msg_id}
        except (TypeError, ValueError) as exc:
            return 500, {"result": None, "error": _error(RPC_MISC_ERROR, str(exc)), "id": msg_id}
        return 200, {"result": result, "error": None, "id": msg_id}

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _encode(answer: dict[str, Any]) -> bytes:
    result = answer.get("result")
    if isinstance(result, RawJSON):  # spliced in, not serialized again
        rest = json.dumps({k: v for k, v in answer.items() if k != "result"})
        return b'{"result":' + result + b"," + rest[1:].encode()
    return json.dumps(answer).encode()


def _error(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


class FakeNodeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, node: FakeNode, host: str = "127.0.0.1", port: int = 0) -> None:
        self.node = node
        super().__init__((host, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="fake-node", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.node.close()
        self.shutdown()
        self.server_close()


def serve(
    template_path: Path,
    host: str,
    port: int,
    chain: str,
    longpoll_seconds: float,
    extra_txs: int,
    rpc_user: str | None,
    rpc_password: str | None,
    max_seconds: float,
) -> int:
    """`solopool-bench fake-node`: serve until SIGINT/SIGTERM or `max_seconds`."""
    import signal

    template = with_extra_transactions(load_template(template_path), extra_txs)
    node = FakeNode(template, chain, longpoll_seconds, rpc_user, rpc_password)
    server = FakeNodeServer(node, host, port)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start_thread()
    print(
        f"fake-node: {chain} template at height {node.height} "
        f"({len(template.get('transactions', []))} transactions) on "
        f"http://{host}:{server.port}",
        flush=True,
    )
    deadline = time.monotonic() + max_seconds
    while not stop.is_set() and time.monotonic() < deadline:
        stop.wait(0.5)
    server.stop()
    print(f"fake-node: stopped; calls {node.stats()['calls']}", flush=True)
    return 0
