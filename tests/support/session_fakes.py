"""Session test fakes, without a node, at mainnet difficulty: a `FakePool` (PoolServices), a
`FakeWriter` collecting what a session writes, a `Miner` driving a `Session` line by line, and
the mainnet template from `tests/data/gbt_mainnet.json` (block 840,000, nbits 17034219) with
helpers to find shares and blocks on it."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pool.config import StratumConfig, parse_config
from pool.consensus.address import AddressError, address_to_script
from pool.consensus.block import prevhash_from_stratum
from pool.consensus.merkle import merkle_root, merkle_root_from_branch
from pool.consensus.serialize import sha256d
from pool.consensus.target import difficulty_to_target, nbits_to_target
from pool.jobs import JobManager, Template
from pool.services import AddressRefused
from pool.shares import Share
from pool.stratum.session import Session, SessionCommons
from tests.support.paths import DATA_DIR

DATA = DATA_DIR / "gbt_mainnet.json"

ADDRESS = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"  # BIP173 P2WPKH
ADDRESS_SCRIPT = bytes.fromhex("0014751e76e8199196d454941c45d1b3a323f1433bd6")
P2PKH_ADDRESS = "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"
P2PKH_SCRIPT = bytes.fromhex("76a91477bff20c60e522dfaa3350c39b030a5d004e839a88ac")
OTHER_ADDRESS = "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"
REGTEST_ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
TESTNET_ADDRESS = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"  # BIP173 testnet vector
WORKER = ADDRESS + ".rig1"

EXTRANONCE1 = bytes.fromhex("f00dcafe")
EN2 = bytes.fromhex("0000000000000001")
MASK = 0x1FFFE000
MAINNET_BITS = 0x17034219
MAINNET_TARGET = nbits_to_target(MAINNET_BITS)
EASY_TARGET = 0x7FFFFF << 232  # nbits 207fffff (regtest)
TINY = 1e-9  # share target ~2**254: about one hash in four is a share

SET_DIFFICULTY_RE = re.compile(
    rb'^\{"id":null,"method":"mining.set_difficulty","params":\[(.*)\]\}$'
)


# --- template data -------------------------------------------------------------------------------


def load_gbt(**changes: Any) -> dict[str, Any]:
    gbt: dict[str, Any] = json.loads(DATA.read_text())
    gbt.update(changes)
    return gbt


def easy_gbt(**changes: Any) -> dict[str, Any]:
    """The same template, but with regtest's easy target: about half of all hashes are blocks."""
    return load_gbt(bits="207fffff", target=f"{EASY_TARGET:064x}", **changes)


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        assert len(chunk) == n, "truncated"
        self.pos += n
        return chunk

    def compact(self) -> int:
        first = self.take(1)[0]
        if first < 0xFD:
            return first
        return int.from_bytes(self.take({0xFD: 2, 0xFE: 4, 0xFF: 8}[first]), "little")

    @property
    def done(self) -> bool:
        return self.pos == len(self.data)


@dataclass
class ParsedTx:
    stripped: bytes  # non-witness serialization (what the txid hashes)
    full: bytes  # as serialized (what the wtxid hashes)
    outputs: list[tuple[int, bytes]]
    witness: list[list[bytes]]


def parse_tx(r: Reader) -> ParsedTx:
    start = r.pos
    version = r.take(4)
    segwit = r.data[r.pos : r.pos + 2] == b"\x00\x01"
    if segwit:
        r.take(2)
    body_start = r.pos
    n_in = r.compact()
    for _ in range(n_in):
        r.take(36)
        r.take(r.compact())
        r.take(4)
    outputs = []
    for _ in range(r.compact()):
        value = int.from_bytes(r.take(8), "little")
        outputs.append((value, r.take(r.compact())))
    body = r.data[body_start : r.pos]
    witness = []
    if segwit:
        for _ in range(n_in):
            witness.append([r.take(r.compact()) for _ in range(r.compact())])
    locktime = r.take(4)
    return ParsedTx(version + body + locktime, r.data[start : r.pos], outputs, witness)


def witness_commitment(wtxids: list[bytes]) -> bytes:
    """BIP141 commitment script over the non-coinbase wtxids (internal byte order)."""
    root = merkle_root([bytes(32)] + wtxids)
    return bytes.fromhex("6a24aa21a9ed") + sha256d(root + bytes(32))


# --- fakes ---------------------------------------------------------------------------------------


class FakeWriter:
    def __init__(self, peer: str = "192.0.2.7:41234") -> None:
        self.peer = peer
        self.buffer = bytearray()
        self.closed = False
        self.raw: list[bytes] = []  # the lines returned by the last take()

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        assert data.endswith(b"\n") and data.count(b"\n") == 1, data
        self.buffer += data

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[dict[str, Any]]:
        self.raw = bytes(self.buffer).split(b"\n")[:-1]
        self.buffer.clear()
        messages = [json.loads(line) for line in self.raw]
        assert all(isinstance(m, dict) for m in messages)
        return messages


class FakePool:
    """PoolServices for one mainnet node, recording what the session reports."""

    def __init__(self, gbt: dict[str, Any] | None = None, **stratum: Any) -> None:
        table = {"node": {"rpc_user": "user", "rpc_password": "secret"}, "stratum": stratum}
        self.config: StratumConfig = parse_config(table, Path(".")).stratum
        self.jobs = JobManager(b"/solopool/")
        self.jobs.set_template(Template.from_rpc(gbt if gbt is not None else load_gbt()))
        self.accepted: list[tuple[Session, Share, float]] = []
        self.rejected: list[tuple[Session, int, str]] = []
        self.blocks: list[tuple[Session, Share]] = []
        self.commons = SessionCommons()  # shared by its sessions, as a server's are

    async def resolve_payout(self, address: str) -> bytes:
        try:
            return address_to_script(address, "main")
        except AddressError as exc:
            raise AddressRefused(f"{address!r} is not a valid main address: {exc}") from None

    def share_accepted(self, session: Session, share: Share, difficulty: float) -> None:
        self.accepted.append((session, share, difficulty))

    def share_rejected(self, session: Session, code: int, reason: str) -> None:
        self.rejected.append((session, code, reason))

    def block_found(self, session: Session, share: Share) -> None:
        self.blocks.append((session, share))


class Miner:
    """One miner connection: a Session fed line by line, as the server does (awaiting
    authorize before the next line)."""

    def __init__(self, pool: FakePool | None = None, **stratum: Any) -> None:
        self.pool = pool if pool is not None else FakePool(**stratum)
        self.writer = FakeWriter()
        self.session = Session(self.pool, self.writer, EXTRANONCE1, self.pool.commons)
        self.next_id = 1
        self.username = WORKER
        self.notify: list[Any] = []  # params of the last mining.notify received

    def take(self) -> list[dict[str, Any]]:
        messages = self.writer.take()
        for m in messages:
            if m.get("method") == "mining.notify":
                self.notify = m["params"]
        return messages

    async def line(self, data: bytes) -> list[dict[str, Any]]:
        waiting = self.session.handle_line(data)
        if waiting is not None:
            await waiting
        return self.take()

    async def call(self, method: str, params: Any) -> list[dict[str, Any]]:
        msg_id = self.next_id
        self.next_id += 1
        return await self.line(encode({"id": msg_id, "method": method, "params": params}))

    async def start(self, username: str = WORKER) -> list[dict[str, Any]]:
        """subscribe + authorize; returns everything written after the authorize."""
        self.username = username
        # A CPU miner that reads fractional difficulties (the tests use tiny ones).
        await self.call("mining.subscribe", ["cpuminer/2.5.1"])
        return await self.call("mining.authorize", [username, "x"])

    async def submit(
        self,
        notify: list[Any],
        nonce: int,
        *,
        extranonce2: bytes = EN2,
        ntime: int | None = None,
        version_bits: int | None = None,
        worker: str | None = None,
    ) -> list[dict[str, Any]]:
        params = [
            self.username if worker is None else worker,
            notify[0],
            extranonce2.hex(),
            notify[7] if ntime is None else f"{ntime:08x}",
            f"{nonce:08x}",
        ]
        if version_bits is not None:
            params.append(f"{version_bits:08x}")
        return await self.call("mining.submit", params)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def header_prefix(
    notify: list[Any], extranonce2: bytes, ntime: int, version: int
) -> bytes:
    """The first 76 header bytes a miner builds from a notify (reference section 3)."""
    coinbase = bytes.fromhex(notify[2]) + EXTRANONCE1 + extranonce2 + bytes.fromhex(notify[3])
    root = merkle_root_from_branch(sha256d(coinbase), [bytes.fromhex(b) for b in notify[4]])
    return (
        struct.pack("<I", version)
        + prevhash_from_stratum(notify[1])
        + root
        + struct.pack("<II", ntime, int(notify[6], 16))
    )


def find_nonces(
    notify: list[Any],
    accept: Callable[[int], bool],
    count: int = 1,
    *,
    extranonce2: bytes = EN2,
    ntime: int | None = None,
    version_bits: int = 0,
    limit: int = 3_000_000,
) -> list[int]:
    """Nonces whose header hash (as an integer) satisfies `accept`, by brute force."""
    version = int(notify[5], 16) | version_bits
    prefix = header_prefix(
        notify, extranonce2, int(notify[7], 16) if ntime is None else ntime, version
    )
    midstate = hashlib.sha256(prefix)
    found: list[int] = []
    for nonce in range(limit):
        h = midstate.copy()
        h.update(struct.pack("<I", nonce))
        if accept(int.from_bytes(hashlib.sha256(h.digest()).digest(), "little")):
            found.append(nonce)
            if len(found) == count:
                return found
    raise AssertionError("no nonce found")


def meets(difficulty: float) -> Callable[[int], bool]:
    target = difficulty_to_target(difficulty)
    return lambda h: h <= target


def misses(difficulty: float) -> Callable[[int], bool]:
    target = difficulty_to_target(difficulty)
    return lambda h: h > target


def ok(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The one reply, which must be a success."""
    assert len(messages) == 1, messages
    (reply,) = messages
    assert reply["error"] is None, reply
    return reply


def error_code(messages: list[dict[str, Any]]) -> int:
    """The one reply, which must be an error; its code."""
    assert len(messages) == 1, messages
    (reply,) = messages
    assert set(reply) == {"id", "result", "error"}
    assert reply["result"] in (None, False)
    code, message, extra = reply["error"]
    assert isinstance(message, str) and message and extra is None
    assert isinstance(code, int)
    return code


def sent_difficulty(raw_line: bytes) -> bytes:
    """The difficulty literal of a raw mining.set_difficulty line, as sent."""
    match = SET_DIFFICULTY_RE.match(raw_line)
    assert match is not None, raw_line
    return match.group(1)


def assert_work(messages: list[dict[str, Any]], clean: bool = True) -> None:
    """Exactly set_difficulty followed by mining.notify."""
    assert [m.get("method") for m in messages] == ["mining.set_difficulty", "mining.notify"]
    assert all(m["id"] is None for m in messages)
    assert messages[1]["params"][8] is clean


async def still_usable(m: Miner) -> None:
    reply = ok(await m.call("mining.ping", []))
    assert reply["result"] == "pong"
    assert not m.writer.closed and not m.session.closed
