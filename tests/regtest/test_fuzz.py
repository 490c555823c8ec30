"""Bad input, generated: the session and the framer against well over 100,000 inputs, and a live
pool against random bytes while a real miner keeps mining.

Hypothesis spends 0.7-6 ms per example on this 2-core machine (its engine, not our code), so
100,000 separate examples would take minutes. Each example therefore draws the *shape* of a
batch (session state, method, which mutations, a seed, or an arbitrary JSON value) and throws a
batch of inputs built from it; a failure shrinks to the smallest shape and is reproducible
(`derandomize=True`, no example database). `COUNTS` tallies what was thrown and each test
checks its share of the total.

Properties, for every line a session gets:
- `handle_line` never raises, and no answer is our catch-all "internal error";
- a request gets exactly one answer carrying its id (null when the line is not a JSON object or
  the id is not a number or string); a reply-shaped line (or ESP-Miner's request-shaped
  "pong") gets none;
- an answer is a result, or an error [code, text, null] with 20 <= code <= 25;
- afterwards the session still answers `mining.ping`.
For the framer: the lines out are those of a reference split whatever the chunking, and it
raises LineTooLong exactly when a line exceeds the limit, never holding more than that.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from pool.stratum.framing import LineTooLong
from pool.stratum.session import Session
from tests.support.fixtures import PoolFactory
from tests.support.framing import ProtocolFeed
from tests.support.fuzz import FUZZ
from tests.support.node import RegtestNode
from tests.support.session_fakes import (
    ADDRESS,
    EXTRANONCE1,
    OTHER_ADDRESS,
    FakePool,
    FakeWriter,
    easy_gbt,
)
from tests.support.stratum_client import StratumTestClient

COUNTS: Counter[str] = Counter()


# --- sessions in every state -----------------------------------------------------------------

_POOLS: dict[str, FakePool] = {}


def fake_pool(kind: str) -> FakePool:
    """Pools are costly to build (template parsing); one per kind, reused."""
    pool = _POOLS.get(kind)
    if pool is None:
        if kind == "mainnet":
            pool = FakePool()
        elif kind == "tiny":  # about one hash in four is a share: accepted shares, vardiff
            pool = FakePool(start_difficulty=1e-9, min_difficulty=1e-10)
        elif kind == "easy":  # regtest's target: about every second hash is a block
            pool = FakePool(easy_gbt(), start_difficulty=1e-9, min_difficulty=1e-10)
        elif kind == "allowlist":
            pool = FakePool(allowed_addresses=[OTHER_ADDRESS])
        else:
            raise AssertionError(kind)
        _POOLS[kind] = pool
    pool.accepted.clear()
    pool.rejected.clear()
    pool.blocks.clear()
    return pool


STATES = {
    "new": ("mainnet", ()),
    "subscribed": ("mainnet", ("subscribe",)),
    "authorized": ("mainnet", ("authorize",)),
    "mining": ("mainnet", ("configure", "subscribe", "authorize")),
    "mining-tiny": ("tiny", ("subscribe", "authorize")),
    "mining-easy": ("easy", ("configure", "subscribe", "authorize")),
    "allowlist": ("allowlist", ("subscribe",)),
}

SETUP = {
    "configure": [["version-rolling"], {"version-rolling.mask": "ffffffff"}],
    "subscribe": ["fuzz/1.0"],
    "authorize": [ADDRESS + ".fuzz", "x"],
}


class Harness:
    """One session, fed line by line; checks every answer."""

    def __init__(self, state: str) -> None:
        kind, steps = STATES[state]
        self.pool = fake_pool(kind)
        self.writer = FakeWriter("198.51.100.1:3333")
        self.session = Session(self.pool, self.writer, EXTRANONCE1)
        self.notify: list[Any] | None = None
        self.ids = 0
        self.steps = steps

    async def setup(self) -> None:
        for step in self.steps:
            self.ids += 1
            line = json.dumps({"id": self.ids, "method": f"mining.{step}", "params": SETUP[step]})
            out = await self.feed(line.encode())
            assert out and out[0]["error"] is None, out

    async def feed(self, line: bytes) -> list[dict[str, Any]]:
        COUNTS["session lines"] += 1
        pool = self.pool
        accepted, blocks = len(pool.accepted), len(pool.blocks)
        waiting = self.session.handle_line(line)  # must not raise, whatever the line
        if waiting is not None:
            await waiting
        COUNTS["accepted shares"] += len(pool.accepted) - accepted
        COUNTS["blocks"] += len(pool.blocks) - blocks
        out = self.writer.take()
        for m in out:
            if m.get("method") == "mining.notify":
                self.notify = m["params"]
        check_answers(line, out)
        return out

    async def still_usable(self) -> None:
        assert not self.session.closed, self.session.close_reason
        self.ids += 1
        out = await self.feed(b'{"id":"ping-%d","method":"mining.ping","params":[]}' % self.ids)
        assert [m for m in out if "method" not in m] == [
            {"id": f"ping-{self.ids}", "result": "pong", "error": None}
        ]


def expected_id(line: bytes) -> tuple[bool, Any]:
    """(answered?, id to expect) for a line, from the wire rules alone."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return True, None
    if not isinstance(message, dict):
        return True, None
    method = message.get("method")
    if method is None and ("result" in message or "error" in message):
        return False, None
    if method == "pong":  # ESP-Miner's request-shaped answer to mining.ping
        return False, None
    msg_id = message.get("id")
    return True, msg_id if msg_id is None or isinstance(msg_id, int | str) else None


def check_answers(line: bytes, out: list[dict[str, Any]]) -> None:
    replies = [m for m in out if "method" not in m]
    for m in out:
        if "method" in m:
            assert m["id"] is None and isinstance(m["params"], list), m
    answered, msg_id = expected_id(line)
    if not answered:
        assert replies == [], (line[:300], out)
        return
    assert len(replies) == 1, (line[:300], out)
    (reply,) = replies
    assert set(reply) == {"id", "result", "error"}, reply
    assert reply["id"] == msg_id and type(reply["id"]) is type(msg_id), (line[:300], reply)
    error = reply["error"]
    if error is None:
        assert reply["result"] is not None, reply
        COUNTS["results"] += 1
    else:
        assert reply["result"] in (None, False), reply
        code, text, extra = error
        assert isinstance(code, int) and 20 <= code <= 25, reply
        assert isinstance(text, str) and text and extra is None, reply
        assert text != "internal error", (line[:300], reply)  # the catch-all must never fire
        COUNTS[f"error {code}"] += 1


_LOOP: asyncio.AbstractEventLoop | None = None


def run(coro: Any) -> Any:
    """Hypothesis tests are synchronous; sessions want a running loop (authorize awaits)."""
    global _LOOP
    if _LOOP is None:
        _LOOP = uvloop.new_event_loop()
    return _LOOP.run_until_complete(coro)


@pytest.fixture(scope="module", autouse=True)
def _close_loop() -> Iterator[None]:
    yield
    global _LOOP
    if _LOOP is not None:
        _LOOP.close()
        _LOOP = None


async def throw(state: str, lines: list[bytes]) -> Harness:
    h = Harness(state)
    await h.setup()
    for line in lines:
        await h.feed(line.replace(b"\n", b" "))
    await h.still_usable()
    return h


# --- 1. arbitrary JSON values in every position ----------------------------------------------

METHODS = [
    "mining.configure", "mining.subscribe", "mining.authorize", "mining.suggest_difficulty",
    "mining.extranonce.subscribe", "mining.multi_version", "mining.ping", "mining.submit",
    "mining.get_transactions", "pong",
]

VALID_PARAMS: dict[str, list[Any]] = {
    "mining.configure": [["version-rolling"], {"version-rolling.mask": "1fffe000"}],
    "mining.subscribe": ["fuzz/1.0", "f00dcafe"],
    "mining.authorize": [ADDRESS + ".w", "x"],
    "mining.suggest_difficulty": [1000],
    "mining.extranonce.subscribe": [],
    "mining.multi_version": [1],
    "mining.ping": [],
    "mining.submit": [ADDRESS + ".fuzz", "1", "00" * 8, "00000000", "00000000", "00000000"],
    "mining.get_transactions": ["1"],
    "pong": [],
}

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=8,
)


def placements(value: Any) -> Iterator[bytes]:
    """`value` as the whole line, as params, as each parameter, as id, as method, as members."""
    def dumps(message: Any) -> bytes:
        return json.dumps(message).encode()

    yield dumps(value)
    yield dumps({"id": value, "method": "mining.ping", "params": []})
    yield dumps({"id": 1, "method": value, "params": []})
    yield dumps({"id": value})
    if isinstance(value, dict):
        yield dumps({**value, "id": 2, "method": "mining.ping"})
        yield dumps({"id": 3, "method": "mining.submit", **value})
    for method in METHODS:
        yield dumps({"id": 4, "method": method, "params": value})
        valid = VALID_PARAMS[method]
        for i in range(len(valid) + 1):
            params = list(valid)
            if i < len(params):
                params[i] = value
            else:
                params.append(value)
            yield dumps({"id": 5, "method": method, "params": params})


@settings(FUZZ, max_examples=800)
@given(st.sampled_from(sorted(STATES)), json_values)
def _fuzz_json_values(state: str, value: Any) -> None:
    run(throw(state, list(placements(value))))


def test_fuzz_session_with_arbitrary_json_values() -> None:
    before = COUNTS["session lines"]
    _fuzz_json_values()
    assert COUNTS["session lines"] - before >= 25_000


# --- 2. well-formed requests with mutated params ---------------------------------------------

HUGE = "@@HUGE@@"  # replaced after serializing: json.dumps refuses ints over 4300 digits
DEEP = "@@DEEP@@"

NASTY: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**32, 2**63, -(2**63), 2**64 + 1, 10**100, 10**4000,
    1.5, -0.0, 1e-320, 1e308, -1e308, float("nan"), float("inf"), float("-inf"),
    "", " ", "0", "zz", "0x1f", "-1", "+1", "1e3", "ffffffff", "FFFFFFFF", "fffffffff",
    "00000000", "0" * 64, "g" * 8, "\u0000", "\u00e9t\u00e9", "\U0001f600", "\u0663\u0663",
    "\uff10" * 8, "\ud800", "x" * 3000, "mining.submit", ADDRESS, ADDRESS.upper(),
    [], [[]], [None], [1, 2, 3], {}, {"a": 1}, {"version-rolling.mask": None},
    HUGE, DEEP,
]

MUTATIONS = [
    "value", "random_value", "drop", "extra", "truncate", "params_not_list", "no_params",
    "bad_id", "no_id", "bad_method", "hex", "members", "swap", "text_cut", "byte_flip",
    "valid",
]


def random_value(rng: random.Random) -> Any:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randint(-(2**70), 2**70)
    if kind == 1:
        return rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-300, 300)
    if kind == 2:
        return "".join(rng.choice("0123456789abcdefABCDEFxz -+.") for _ in range(rng.randrange(20)))
    if kind == 3:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(12)))
    if kind == 4:
        value: Any = rng.choice(NASTY)
        for _ in range(rng.randrange(6)):
            value = [value] if rng.random() < 0.5 else {"k": value}
        return value
    if kind == 5:
        return rng.randrange(1 << 32).to_bytes(4, "big").hex()[: rng.randrange(1, 9)]
    if kind == 6:
        return [random_value(rng) for _ in range(rng.randrange(3))]
    return rng.choice(NASTY)


def hex_tweak(rng: random.Random, value: Any) -> Any:
    if not isinstance(value, str):
        return rng.randrange(1 << 32)
    choice = rng.randrange(8)
    if choice == 0:
        return value[:-1]
    if choice == 1:
        return value + rng.choice("0fz")
    if choice == 2:
        return value.upper()
    if choice == 3:
        return " " + value
    if choice == 4:
        return "0x" + value
    if choice == 5:
        return value.lstrip("0") or "0"
    if choice == 6:
        i = rng.randrange(len(value) + 1)
        return value[:i] + rng.choice("g-_\u0663") + value[i:]
    return value * 2


def valid_request(h: Harness, method: str, rng: random.Random, msg_id: int) -> dict[str, Any]:
    params = list(VALID_PARAMS[method])
    if method == "mining.submit" and h.notify is not None:
        en2 = rng.randrange(1 << 64).to_bytes(8, "big").hex()
        nonce = f"{rng.randrange(1 << 32):08x}"
        bits = f"{rng.randrange(1 << 16) << 13:08x}"
        params = [ADDRESS + ".fuzz", h.notify[0], en2, h.notify[7], nonce, bits]
        if rng.random() < 0.3:
            params.pop()
    elif method == "mining.suggest_difficulty":
        params = [rng.choice([1000, 0.001, 1e-9, "2048", 3])]
    return {"id": msg_id, "method": method, "params": params}


def mutate(
    h: Harness, method: str, plan: list[str], rng: random.Random, msg_id: int
) -> bytes:
    message = valid_request(h, method, rng, msg_id)
    params: list[Any] = message["params"]
    text_level: list[str] = []
    for mutation in plan:
        if mutation == "value" and params:
            params[rng.randrange(len(params))] = rng.choice(NASTY)
        elif mutation == "random_value" and params:
            params[rng.randrange(len(params))] = random_value(rng)
        elif mutation == "drop" and params:
            del params[rng.randrange(len(params))]
        elif mutation == "extra":
            params.extend(random_value(rng) for _ in range(rng.randint(1, 3)))
        elif mutation == "truncate":
            del params[rng.randrange(len(params) + 1) :]
        elif mutation == "params_not_list":
            message["params"] = random_value(rng) if rng.random() < 0.5 else rng.choice(NASTY)
        elif mutation == "no_params":
            message.pop("params", None)
        elif mutation == "bad_id":
            message["id"] = rng.choice(
                [1.5, None, True, [1], {"id": 1}, -1, 2**80, "", "x" * 500, random_value(rng)]
            )
        elif mutation == "no_id":
            message.pop("id", None)
        elif mutation == "bad_method":
            message["method"] = rng.choice(
                [None, 7, [], method.upper(), method + " ", "mining." + "x" * 300, "",
                 random_value(rng), "client.get_version", "mining.set_difficulty"]
            )
        elif mutation == "hex" and params:
            i = rng.randrange(len(params))
            params[i] = hex_tweak(rng, params[i])
        elif mutation == "members":
            message[rng.choice(["jsonrpc", "result", "error", "extra", "id2"])] = random_value(rng)
        elif mutation == "swap" and len(params) > 1:
            i, j = rng.sample(range(len(params)), 2)
            params[i], params[j] = params[j], params[i]
        elif mutation in ("text_cut", "byte_flip"):
            text_level.append(mutation)
    line = json.dumps(message).encode()
    if HUGE.encode() in line:
        digits = b"9" * rng.randint(4200, 6000)
        line = line.replace(b'"' + HUGE.encode() + b'"', digits)
    if DEEP.encode() in line:
        depth = rng.choice([10, 500, 990, 1100, 5000])
        line = line.replace(b'"' + DEEP.encode() + b'"', b"[" * depth + b"]" * depth)
    for mutation in text_level:
        if mutation == "text_cut" and line:
            line = line[: rng.randrange(len(line))] or b"{"
        elif mutation == "byte_flip" and line:
            data = bytearray(line)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            line = bytes(data)
    return line


BATCH = 50
# One or two mutations per request (one draw: Hypothesis charges per draw, not per value).
PLANS = [(a,) for a in MUTATIONS] + [
    (a, b) for i, a in enumerate(MUTATIONS) for b in MUTATIONS[i + 1 :]
]


async def throw_mutations(state: str, method: str, plan: tuple[str, ...], seed: int) -> None:
    h = Harness(state)
    await h.setup()
    rng = random.Random(seed)
    line = b""
    for i in range(BATCH):
        if line and rng.random() < 0.1:
            pass  # the same line again: duplicates of accepted shares
        else:
            line = mutate(h, method, list(plan), rng, 1000 + i).replace(b"\n", b" ")
        await h.feed(line)
    await h.still_usable()


@settings(FUZZ, max_examples=1500)
@given(
    st.sampled_from(sorted(STATES)),
    st.sampled_from(METHODS),
    st.sampled_from(PLANS),
    st.integers(0, 2**32),
)
def _fuzz_mutated_requests(state: str, method: str, plan: tuple[str, ...], seed: int) -> None:
    run(throw_mutations(state, method, plan, seed))


def test_fuzz_session_with_mutated_requests() -> None:
    before = Counter(COUNTS)
    _fuzz_mutated_requests()
    assert COUNTS["session lines"] - before["session lines"] >= 75_000
    # The batch reaches the deep states: accepted shares and blocks, and every error code.
    assert COUNTS["results"] > before["results"]
    for code in range(20, 26):
        assert COUNTS[f"error {code}"] > before[f"error {code}"], code


# --- 3. raw bytes as lines ------------------------------------------------------------------


SAMPLES = [
    b'{"id":1,"method":"mining.subscribe","params":["bitaxe/BM1370/v2.9.0"]}',
    b'{"id":2,"method":"mining.authorize","params":["' + ADDRESS.encode() + b'.w","x"]}',
    b'{"id":3,"method":"mining.submit","params":["w","1","0000000000000000","66233fb7",'
    b'"1d2e3f40","00b0c000"]}',
    b'{"id":4,"method":"mining.configure","params":[["version-rolling"],'
    b'{"version-rolling.mask":"ffffffff"}]}',
    b'{"id":5,"method":"mining.suggest_difficulty","params":[0.00015]}',
    b'{"id":6,"result":"pong","error":null}',
]


async def throw_bytes(state: str, data: bytes, seed: int) -> None:
    rng = random.Random(seed)
    lines = [data]
    for _ in range(9):
        base = bytearray(rng.choice(SAMPLES))
        op = rng.randrange(6)
        if op == 0:
            base[rng.randrange(len(base))] = rng.randrange(256)
        elif op == 1:
            i = rng.randrange(len(base))
            base[i:i] = data
        elif op == 2:
            base = base[: rng.randrange(len(base))]
        elif op == 3:
            base = bytearray(b"\xef\xbb\xbf") + base  # a UTF-8 byte order mark
        elif op == 4:
            base = bytearray(base.decode().encode(rng.choice(["utf-16", "utf-32", "latin-1"])))
        else:
            base += data
        lines.append(bytes(base) or b"\x00")
    await throw(state, lines)


@settings(FUZZ, max_examples=1200)
@given(st.sampled_from(sorted(STATES)), st.binary(min_size=1, max_size=200), st.integers(0, 2**32))
def _fuzz_raw_lines(state: str, data: bytes, seed: int) -> None:
    run(throw_bytes(state, data, seed))


def test_fuzz_session_with_raw_bytes() -> None:
    before = COUNTS["session lines"]
    _fuzz_raw_lines()
    assert COUNTS["session lines"] - before >= 12_000


# --- 4. the framer ----------------------------------------------------------------------------


def reference_feed(
    framer: ProtocolFeed, tail: bytes, chunk: bytes, max_line: int
) -> tuple[bytes, list[bytes] | None]:
    """Feed one chunk and check it against a plain split; returns the new tail, and the lines
    (None when the framer rightly refused the stream)."""
    COUNTS["framer chunks"] += 1
    parts = (tail + chunk).split(b"\n")
    complete, rest = parts[:-1], parts[-1]
    if any(len(p) > max_line for p in complete) or len(rest) > max_line:
        with pytest.raises(LineTooLong):
            framer.feed(chunk)
        return rest, None
    got = framer.feed(chunk)
    assert got == [p.strip() for p in complete if p.strip()]
    assert all(type(line) is bytes and line for line in got)
    assert framer.held == len(rest) <= max_line  # never more than one line held
    return rest, got


def run_framer(chunks: list[bytes], max_line: int) -> tuple[list[bytes], bool]:
    framer = ProtocolFeed(max_line)
    tail = b""
    lines: list[bytes] = []
    for chunk in chunks:
        tail, got = reference_feed(framer, tail, chunk, max_line)
        if got is None:
            return lines, True
        lines += got
    return lines, False


chunk_strategy = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\n", b"\r\n", b"\r", b" ", b"\n\n", b"{}\n", b"x" * 70, b"\t\n",
                         b'{"id":1,"method":"mining.ping"}\n']),
    ),
    max_size=16,
)


@settings(FUZZ, max_examples=1500)
@given(chunk_strategy, st.sampled_from([1, 8, 64, 100, 256]), st.integers(0, 2**32))
def _fuzz_framer(chunks: list[bytes], max_line: int, seed: int) -> None:
    lines, refused = run_framer(chunks, max_line)
    # Any other chunking of the same stream gives the same lines and the same verdict.
    stream = b"".join(chunks)
    whole = [p for p in stream.split(b"\n")]
    too_long = any(len(p) > max_line for p in whole)
    assert refused == too_long
    rng = random.Random(seed)
    for _ in range(8):
        cuts = sorted(rng.sample(range(len(stream) + 1), min(len(stream) + 1, rng.randint(0, 12))))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        again, refused_again = run_framer(pieces, max_line)
        assert refused_again == refused
        if not refused:
            assert again == lines


def test_fuzz_framer_chunkings() -> None:
    before = COUNTS["framer chunks"]
    _fuzz_framer()
    assert COUNTS["framer chunks"] - before >= 50_000


# --- 5. a live pool: random bytes on many connections while a real miner mines ----------------


def garbage(rng: random.Random) -> Iterator[bytes]:
    """What one hostile connection sends: random bytes, random lines, mutated requests, and
    sometimes a line over the limit."""
    for _ in range(rng.randint(1, 12)):
        kind = rng.randrange(6)
        if kind == 0:
            yield rng.randbytes(rng.randint(1, 4096))
        elif kind == 1:
            yield b"\n".join(rng.randbytes(rng.randint(0, 80)) for _ in range(20)) + b"\n"
        elif kind == 2:
            yield b"\n".join(rng.choice(SAMPLES) for _ in range(10)) + b"\n"
        elif kind == 3:
            line = bytearray(rng.choice(SAMPLES))
            for _ in range(3):
                line[rng.randrange(len(line))] = rng.randrange(256)
            yield bytes(line) + b"\n"
        elif kind == 4:
            yield b"[" * 3000 + b"\n" + b"9" * 5000 + b"\n"
        else:
            yield b"x" * 17000  # over the 16 KiB default: closes this connection only


async def hostile_connection(port: int, rng: random.Random, stats: Counter[str]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        stats["connect failed"] += 1
        return
    stats["connections"] += 1
    try:
        for chunk in garbage(rng):
            if writer.is_closing() or reader.at_eof():
                raise ConnectionResetError("closed by the pool")
            writer.write(chunk)
            stats["bytes"] += len(chunk)
            await writer.drain()
            if rng.random() < 0.3:
                try:
                    async with asyncio.timeout(0.05):
                        stats["bytes back"] += len(await reader.read(65536))
                except TimeoutError:
                    pass
        if rng.random() < 0.5:
            writer.transport.abort()  # a reset instead of a clean close
        else:
            writer.close()
    except (ConnectionError, OSError, RuntimeError):  # uvloop: RuntimeError on a closed handle
        stats["closed by pool"] += 1
        writer.transport.abort()


async def test_random_bytes_on_a_live_pool_do_not_disturb_a_miner(
    node: RegtestNode, start_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # Shares every half second or so (each one a block on regtest).
    pool = await start_pool(node, start_difficulty=0.00002, share_interval_seconds=0.5)
    port = pool.stratum.port
    address = node.new_address("bech32")
    miner = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "solopool_tools.miner", "--url", f"stratum+tcp://127.0.0.1:{port}",
        "--user", f"{address}.steady", "--blocks", "100000", "--seconds", "120",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(30):
            while not (steady := [s for s in pool.stratum.sessions if s.accepted > 0]):
                await asyncio.sleep(0.05)
        (session,) = steady
        stats: Counter[str] = Counter()
        rng = random.Random(20240605)
        started = time.monotonic()
        accepted_before = session.accepted
        blocks_before = len(pool.submitter.history)
        # Bounded: 3,000 connections, 8 at a time, or 20 s.
        while stats["connections"] + stats["connect failed"] < 3000 and (
            time.monotonic() - started < 20
        ):
            batch = [hostile_connection(port, random.Random(rng.random()), stats)
                     for _ in range(8)]
            await asyncio.gather(*batch)
        elapsed = time.monotonic() - started
        shares = session.accepted - accepted_before
        # The same connection mined all along: never dropped, shares accepted during the
        # barrage, and still mining after it (its next share is accepted too).
        assert session in pool.stratum.sessions and not session.closed
        assert shares > 0, stats
        after = session.accepted
        async with asyncio.timeout(30):
            while session.accepted == after:
                await asyncio.sleep(0.05)
        found = pool.submitter.history[blocks_before:]
        assert found, "no block found during or right after the barrage"
    finally:
        if miner.returncode is None:
            miner.terminate()
        await miner.wait()
    await pool.submitter.drain(10)
    statuses = [b.status for b in pool.submitter.history]
    assert "rejected" not in statuses, statuses

    # Nothing crashed: no tracebacks, no Stratum errors, and every connection was let go.
    # (A regtest sibling block at the same height is logged as an ERROR by pool.blocks.)
    errors = [
        r for r in caplog.records
        if r.exc_info or (r.levelno >= logging.ERROR and r.name.startswith("pool.stratum"))
    ]
    assert errors == [], [r.getMessage() for r in errors[:5]]
    async with asyncio.timeout(10):
        while pool.stratum.sessions:
            await asyncio.sleep(0.05)
    assert pool.stratum.per_host == {} and not pool.stratum._extranonces
    assert stats["connections"] >= 400, stats

    # And the pool still takes new miners.
    client = await StratumTestClient.connect("127.0.0.1", port)
    await client.handshake(address + ".after")
    await client.notification("mining.notify")
    await client.close()
    stats["miner shares"] = shares
    stats["miner blocks"] = len(found)
    logging.getLogger(__name__).warning("live fuzz: %s in %.1f s", dict(stats), elapsed)
