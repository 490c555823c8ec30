"""Replays of what real miner firmware sends, byte for byte, against the real pool and a real
regtest node, each ending in a block the node accepts.

Every transcript below was taken from the firmware's own Stratum client code (see
docs/miners.md for the sources): the exact request lines (key order, spacing, id numbering,
param types), the order in which the firmware sends them and what it waits for, and how it
computes the share it submits (extranonce2 encoding, nonce formatting, the version-rolling sixth
parameter). Where the firmware is strict about what it reads, solopool's answers are compared
byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from pool.consensus.serialize import sha256d
from pool.stratum.server import StratumServer
from tests.support.fixtures import PoolFactory
from tests.support.node import RegtestNode
from tests.support.shares import find_nonce, header_for, increment_bitmask

MASK = 0x1FFFE000
HEX8 = re.compile(r"^[0-9a-f]{8}$")


class Wire:
    """A raw miner socket: exact lines out, lines in, in arrival order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received: list[bytes] = []

    @classmethod
    async def open(cls, server: StratumServer) -> Wire:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1 << 20)
        return cls(reader, writer)

    def send(self, *lines: str) -> None:
        """Write lines in one go (pipelined, as ESP-Miner and NerdQAxe++ do)."""
        self.writer.write("".join(line + "\n" for line in lines).encode())

    async def line(self, timeout: float = 10.0) -> bytes:
        raw = await asyncio.wait_for(self.reader.readline(), timeout)
        assert raw.endswith(b"\n"), f"connection closed or line unterminated: {raw!r}"
        self.received.append(raw[:-1])
        return raw[:-1]

    async def message(self, timeout: float = 10.0) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(await self.line(timeout))
        return parsed

    async def expect(self, exact: str | bytes) -> None:
        want = exact.encode() if isinstance(exact, str) else exact
        got = await self.line()
        assert got == want, f"\n got: {got!r}\nwant: {want!r}"

    async def reply_to(self, msg_id: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Read until the reply to `msg_id` (cgminer's auth_stratum loop: notifications first
        are parsed, the first non-method line is taken as the reply)."""
        notes: list[dict[str, Any]] = []
        while True:
            message = await self.message()
            if message.get("method") is None:
                assert message["id"] == msg_id, f"reply to {message['id']} before {msg_id}"
                return message, notes
            notes.append(message)

    async def until_notify(self) -> tuple[list[dict[str, Any]], list[Any]]:
        """Messages up to and including the next mining.notify; returns (all, notify params)."""
        seen: list[dict[str, Any]] = []
        while True:
            message = await self.message()
            seen.append(message)
            if message.get("method") == "mining.notify":
                return seen, message["params"]

    async def quiet(self, seconds: float = 0.4) -> None:
        """Nothing arrives for `seconds`."""
        try:
            raw = await asyncio.wait_for(self.reader.readline(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected line: {raw!r}")

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


# --- what every firmware relies on --------------------------------------------------------------


def check_subscribe_reply(line: bytes, msg_id: int) -> bytes:
    """The exact subscribe answer: both subscription tuples with the extranonce1 as id, then
    extranonce1 (4 bytes) and extranonce2_size 8 (cgminer needs 2..8 to submit, NerdMiner 2/4/8,
    bOS deserializes exactly three elements). Returns extranonce1."""
    reply = json.loads(line)
    sid = reply["result"][1]
    assert re.fullmatch(r"[0-9a-f]{8}", sid), sid
    expected = (
        f'{{"id":{msg_id},"result":[[["mining.set_difficulty","{sid}"],["mining.notify","{sid}"]],'
        f'"{sid}",8],"error":null}}'
    )
    assert line == expected.encode()
    return bytes.fromhex(sid)


def check_notify(params: list[Any]) -> None:
    """Exactly 9 params (ESP-Miner reads clean_jobs from the last), 8-hex-digit version, nbits
    and ntime (cgminer concatenates them into a 256-char header string, bOS parses 4 bytes),
    a 64-hex prevhash and 32-byte merkle branches."""
    assert len(params) == 9, params
    job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, clean = params
    assert isinstance(job_id, str) and 0 < len(job_id) <= 64
    assert re.fullmatch(r"[0-9a-f]{64}", prevhash)
    assert re.fullmatch(r"([0-9a-f]{2})+", coinb1) and re.fullmatch(r"([0-9a-f]{2})+", coinb2)
    assert all(re.fullmatch(r"[0-9a-f]{64}", b) for b in branch)
    for field in (version, nbits, ntime):
        assert HEX8.match(field), field
    assert isinstance(clean, bool)
    assert int(version, 16) & MASK == 0, "job version must have the rolling bits cleared"
    header = version + prevhash + "0" * 64 + ntime + nbits + "00000000" + "0" * 96
    assert len(header) == 256  # cgminer's parse_notify header buffer


def difficulty_line(value: int | float) -> bytes:
    return json.dumps(
        {"id": None, "method": "mining.set_difficulty", "params": [value]}, separators=(",", ":")
    ).encode()


async def wait_best(node: RegtestNode, block_hash: str, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while node.rpc("getbestblockhash") != block_hash:
            await asyncio.sleep(0.05)


def solve(
    notify: list[Any], en1: bytes, en2: bytes, version: int | None = None, start: int = 0
) -> tuple[int, str]:
    """A nonce whose header meets the network target; returns (nonce, display block hash)."""
    nonce = find_nonce(notify, en1, en2, meets=True, version=version, start=start)
    header = header_for(notify, en1, en2, int(notify[7], 16), nonce, version)
    return nonce, sha256d(header)[::-1].hex()


async def realistic_pool(start_pool: PoolFactory, node: RegtestNode, **overrides: Any) -> Any:
    """Difficulties as on a real home pool (regtest blocks are accepted at any share
    difficulty: a block is never a low-difficulty share)."""
    settings: dict[str, Any] = {"start_difficulty": 1024, "min_difficulty": 0.0001}
    settings.update(overrides)
    return await start_pool(node, **settings)


# --- ESP-Miner (Bitaxe, NerdAxe) ----------------------------------------------------------------


async def test_esp_miner_bitaxe(node: RegtestNode, start_pool: PoolFactory) -> None:
    """ESP-Miner >= 2.9 (main/tasks/stratum_v1_task.c, components/stratum/stratum_api.c at
    bitaxeorg/ESP-Miner 5c27713; byte for byte, "{\"id\":%d,..." without spaces):
    configure, subscribe and authorize written back to back; suggest_difficulty (uint16 from
    the settings, default 1000) only after authorize answered true; always six submit params,
    the sixth = rolled version XOR job version; extranonce2 = a little-endian counter."""
    pool = await realistic_pool(start_pool, node)
    address = node.new_address("bech32")
    user = f"{address}.bitaxe"
    wire = await Wire.open(pool.stratum)
    wire.send(
        '{"id":1,"method":"mining.configure","params":[["version-rolling"],'
        '{"version-rolling.mask":"ffffffff"}]}',
        '{"id":2,"method":"mining.subscribe","params":["bitaxe/BM1370/v2.9.0"]}',
        f'{{"id":3,"method":"mining.authorize","params":["{user}","x"]}}',
    )
    # parse_configure_result needs version-rolling true and a mask string.
    await wire.expect('{"id":1,"result":{"version-rolling":true,'
                      '"version-rolling.mask":"1fffe000"},"error":null}')
    en1 = check_subscribe_reply(await wire.line(), 2)
    await wire.expect('{"id":3,"result":true,"error":null}')
    assert await wire.line() == difficulty_line(1024)
    _, first = await wire.until_notify()
    check_notify(first)
    assert first[8] is True

    # After the authorize result: the suggestion (an integer) and, when enabled in its settings,
    # mining.extranonce.subscribe, back to back (stratum_v1_task.c at 5c27713).
    wire.send('{"id":4,"method":"mining.suggest_difficulty","params":[1000]}',
              '{"id":5,"method":"mining.extranonce.subscribe","params":[]}')
    await wire.expect('{"id":4,"result":true,"error":null}')
    await wire.expect('{"id":null,"method":"mining.set_difficulty","params":[1000]}')
    seen, notify = await wire.until_notify()
    assert len(seen) == 1 and notify[8] is True, "a new difficulty comes with a clean job"
    await wire.expect('{"id":5,"result":true,"error":null}')
    assert notify[0] != first[0], "ESP-Miner ignores a job id it has seen since the last clean"
    check_notify(notify)

    # The chip rolled the version 5 times from the job's; ESP-Miner's 6th param is the XOR.
    job_version = int(notify[5], 16)
    rolled = job_version
    for _ in range(5):
        rolled = increment_bitmask(rolled, MASK)
    assert rolled != job_version and rolled & ~MASK == job_version
    en2 = (7).to_bytes(8, "little")  # extranonce_2_generate(7, 8): "0700000000000000"
    nonce, block_hash = solve(notify, en1, en2, version=rolled)
    wire.send(
        f'{{"id":6,"method":"mining.submit","params":["{user}","{notify[0]}",'
        f'"{en2.hex()}","{int(notify[7], 16):08x}","{nonce:08x}",'
        f'"{rolled ^ job_version:08x}"]}}'
    )
    await wire.expect('{"id":6,"result":true,"error":null}')
    await wait_best(node, block_hash)
    assert node.rpc("getblockheader", block_hash)["version"] == rolled

    # ESP-Miner >= 2.13 answers mining.ping with a request-shaped pong: no error may come back
    # (its parse_result would count an error under that id as a rejected share).
    wire.send('{"id":7,"method":"pong","params":[]}')
    # Its answer to client.get_version (a result line) is ignored as well.
    wire.send('{"id":8,"result":"v2.9.0","error":null}')
    seen_after: list[dict[str, Any]] = []
    try:
        while True:
            seen_after.append(await wire.message(timeout=0.6))
    except TimeoutError:
        pass
    methods = {m.get("method") for m in seen_after}
    assert methods <= {"mining.notify", "mining.set_difficulty"}, seen_after
    assert not any(b"set_version_mask" in line for line in wire.received)
    await wire.close()


@pytest.mark.parametrize(
    ("agent", "integer_only"),
    [("bitaxe/BM1366/v2.2.2", True), ("bitaxe/BM1368/v2.13.1", True),
     ("bitaxe/BM1370/v2.14.0", False)],
)
async def test_esp_miner_difficulty_below_one(
    node: RegtestNode, start_pool: PoolFactory, agent: str, integer_only: bool
) -> None:
    """ESP-Miner before 2.14 reads set_difficulty with cJSON `valueint` (#1594): 0.0001 would
    become 0 and every nonce a share. Such agents get at least 1; 2.14+ gets the fraction.
    Also the < 2.3 order: suggest_difficulty before authorize, stored and applied after it."""
    pool = await start_pool(node, start_difficulty=0.0001, min_difficulty=0.00001)
    user = node.new_address("bech32") + ".old"
    wire = await Wire.open(pool.stratum)
    wire.send(
        '{"id":1,"method":"mining.configure","params":[["version-rolling"],'
        '{"version-rolling.mask":"ffffffff"}]}',
        f'{{"id":2,"method":"mining.subscribe","params":["{agent}"]}}',
    )
    await wire.line()
    en1 = check_subscribe_reply(await wire.line(), 2)
    wire.send(f'{{"id":3,"method":"mining.authorize","params":["{user}","x"]}}')
    await wire.expect('{"id":3,"result":true,"error":null}')
    assert await wire.line() == difficulty_line(1 if integer_only else 0.0001)
    _, notify = await wire.until_notify()

    # ESP-Miner 2.2.2 on the next connection, byte for byte (main/tasks/stratum_task.c and
    # components/stratum/stratum_api.c at tag v2.2.2): subscribe 1, configure 2, suggest 3 (%ld),
    # authorize 4, written back to back as spaced JSON; answers with id < 5 are setup answers
    # matched by id. The suggestion before authorize is stored and applied after it.
    early = await Wire.open(pool.stratum)
    early.send(
        f'{{"id": 1, "method": "mining.subscribe", "params": ["{agent}"]}}',
        '{"id": 2, "method": "mining.configure", "params": [["version-rolling"], '
        '{"version-rolling.mask": "ffffffff"}]}',
        '{"id": 3, "method": "mining.suggest_difficulty", "params": [512]}',
        f'{{"id": 4, "method": "mining.authorize", "params": ["{user}2", "x"]}}',
    )
    check_subscribe_reply(await early.line(), 1)
    await early.expect('{"id":2,"result":{"version-rolling":true,'
                       '"version-rolling.mask":"1fffe000"},"error":null}')
    await early.expect('{"id":3,"result":true,"error":null}')
    await early.expect('{"id":4,"result":true,"error":null}')
    assert await early.line() == difficulty_line(512)
    await early.until_notify()
    await early.close()

    en2 = (1).to_bytes(8, "little")
    nonce, block_hash = solve(notify, en1, en2)
    wire.send(
        f'{{"id":5,"method":"mining.submit","params":["{user}","{notify[0]}","{en2.hex()}",'
        f'"{notify[7]}","{nonce:08x}","00000000"]}}'
    )
    await wire.expect('{"id":5,"result":true,"error":null}')
    await wait_best(node, block_hash)
    await wire.close()


async def test_nerdqaxe_plus(node: RegtestNode, start_pool: PoolFactory) -> None:
    """NerdQAxe++ (shufps/ESP-Miner-NerdQAxePlus 6a5b5b5 main/stratum/stratum_api.cpp, byte for
    byte, spaced JSON; answers with id <= 5 go to parseSetupResponses): subscribe
    BEFORE configure, then authorize, suggest and extranonce.subscribe, all pipelined with ids
    1..5 (setup answers are matched by id); mask 1fffe000 without min-bit-count."""
    pool = await realistic_pool(start_pool, node)
    user = node.new_address("p2sh-segwit") + ".nerdqaxe"
    wire = await Wire.open(pool.stratum)
    wire.send(
        '{"id": 1, "method": "mining.subscribe", "params": ["NerdQAxe++/BM1370/v1.0.30"]}',
        '{"id": 2, "method": "mining.configure", "params": [["version-rolling"], '
        '{"version-rolling.mask": "1fffe000"}]}',
        f'{{"id": 3, "method": "mining.authorize", "params": ["{user}", "x"]}}',
        '{"id": 4, "method": "mining.suggest_difficulty", "params": [4096]}',
        '{"id": 5, "method": "mining.extranonce.subscribe", "params": []}',
    )
    en1 = check_subscribe_reply(await wire.line(), 1)
    await wire.expect('{"id":2,"result":{"version-rolling":true,'
                      '"version-rolling.mask":"1fffe000"},"error":null}')
    await wire.expect('{"id":3,"result":true,"error":null}')
    replies: dict[int, Any] = {}
    notifies: list[list[Any]] = []
    difficulties: list[Any] = []
    while len(replies) < 2 or len(notifies) < 2:
        message = await wire.message()
        if message.get("method") == "mining.notify":
            notifies.append(message["params"])
        elif message.get("method") == "mining.set_difficulty":
            difficulties.append(message["params"][0])
        else:
            replies[message["id"]] = message
    assert list(replies) == [4, 5] and all(r["result"] is True for r in replies.values())
    assert difficulties == [1024, 4096]
    notify = notifies[-1]
    check_notify(notify)

    job_version = int(notify[5], 16)
    rolled = job_version | 0x00AB6000  # bits the chip rolled, inside the mask
    en2 = (3).to_bytes(8, "little")
    nonce, block_hash = solve(notify, en1, en2, version=rolled)
    wire.send(
        f'{{"id": 6, "method": "mining.submit", "params": ["{user}", "{notify[0]}", '
        f'"{en2.hex()}", "{int(notify[7], 16):08x}", "{nonce:08x}", '
        f'"{rolled ^ job_version:08x}"]}}'
    )
    await wire.expect('{"id":6,"result":true,"error":null}')
    await wait_best(node, block_hash)

    # NerdQAxe++ logs client.reconnect and does nothing else (stratum_manager.cpp): at shutdown
    # solopool closes the socket itself after sending it, so the miner does reconnect.
    await pool.stratum.close()
    while (line := await wire.line()) != b'{"id":null,"method":"client.reconnect","params":[]}':
        assert b'"mining.notify"' in line or b'"mining.set_difficulty"' in line, line
    assert await asyncio.wait_for(wire.reader.read(), 10) == b""
    await wire.close()


# --- NerdMiner ----------------------------------------------------------------------------------


async def test_nerdminer_v2(node: RegtestNode, start_pool: PoolFactory) -> None:
    """NerdMiner_v2 (src/stratum.cpp, src/mining.cpp, src/utils.cpp): no configure; subscribe
    then read exactly one line as its answer; authorize without waiting for the reply;
    suggest_difficulty %.10g (0.00015), repeated every 30 s as a keepalive; five submit params
    with the wallet as worker, the fixed extranonce2 for size 8 and the nonce printed by
    String(nonce, HEX), i.e. without leading zeros. The coinbase is assembled in a 512-char
    buffer."""
    pool = await realistic_pool(start_pool, node)
    address = node.new_address("bech32m")  # P2TR: the longest payout script
    wire = await Wire.open(pool.stratum)
    wire.send('{"id": 1, "method": "mining.subscribe", "params": ["NerdMinerV2/1.7.0"]}')
    en1 = check_subscribe_reply(await wire.line(), 1)  # read once, 200 ms later
    wire.send(f'{{"params": ["{address}", "x"], "id": 2, "method": "mining.authorize"}}')
    wire.send('{"id":3,"method":"mining.suggest_difficulty","params":[0.00015]}')
    await wire.expect('{"id":2,"result":true,"error":null}')
    assert await wire.line() == difficulty_line(1024)
    await wire.until_notify()
    await wire.expect('{"id":3,"result":true,"error":null}')
    await wire.expect('{"id":null,"method":"mining.set_difficulty","params":[0.00015]}')
    _, notify = await wire.until_notify()
    check_notify(notify)

    # Keepalive: the same suggestion again. Answered, and nothing else changes.
    wire.send('{"id":4,"method":"mining.suggest_difficulty","params":[0.00015]}')
    await wire.expect('{"id":4,"result":true,"error":null}')
    await wire.quiet(0.5)

    en2_hex = "0000000000000001"  # calculateMiningData for extranonce2_size 8
    coinbase_hex = notify[2] + en1.hex() + en2_hex + notify[3]
    # static char coinbase_buffer[512]; snprintf truncates anything longer. A 60-byte
    # coinbase_tag (the maximum) adds 50 bytes to the default one used here.
    assert len(coinbase_hex) + 2 * 50 < 512, len(coinbase_hex)
    nonce, block_hash = solve(notify, en1, bytes.fromhex(en2_hex))
    unpadded = f"{nonce:x}"
    assert len(unpadded) < 8, "search from 0 gives a small nonce, to replay the missing zeros"
    wire.send(
        f'{{"id":5,"method":"mining.submit","params":["{address}","{notify[0]}","{en2_hex}",'
        f'"{notify[7]}","{unpadded}"]}}'
    )
    await wire.expect('{"id":5,"result":true,"error":null}')
    await wait_best(node, block_hash)
    await wire.close()


# --- cgminer: Avalon Nano 3/3s, and the cgminer lineage ----------------------------------------


async def cgminer_configure(wire: Wire, msg_id: int) -> None:
    """configure_stratum_mining: sends, then reads exactly one line as the answer (60 s);
    anything else written first would break the handshake."""
    wire.send(
        f'{{"id": {msg_id}, "method": "mining.configure", "params": [["version-rolling"], '
        '{"version-rolling.mask": "ffffffff"}]}'
    )
    await wire.expect(f'{{"id":{msg_id},"result":{{"version-rolling":true,'
                      f'"version-rolling.mask":"1fffe000"}},"error":null}}')
    await wire.quiet(0.3)


def cgminer_subscribe_result(reply: dict[str, Any]) -> tuple[str | None, bytes, int]:
    """initiate_stratum's checks: session id from the mining.notify tuple, hex nonce1,
    2 <= n2size <= 16 (and <= 8 or stratum_sthread refuses to submit)."""
    result = reply["result"]
    assert reply["error"] is None
    session = next((t[1] for t in result[0] if t[0].lower().startswith("mining.notify")), None)
    nonce1 = result[1]
    assert re.fullmatch(r"([0-9a-f]{2})+", nonce1)
    n2size = result[2]
    assert isinstance(n2size, int) and 2 <= n2size <= 8
    return session, bytes.fromhex(nonce1), n2size


def avalon_vmask(mask: int) -> list[int]:
    """set_vmask of the Avalon Nano 3s firmware (Canaan-Creative/Avalon_Nano3s util.c): micro
    job 0 unrolled, 1 the whole mask, then one job per mask bit from 15 to 28."""
    masks = [0, mask] + [1 << i for i in range(15, 29) if mask >> i & 1]
    return masks


async def test_cgminer_avalon_nano3s(node: RegtestNode, start_pool: PoolFactory) -> None:
    """Avalon Nano 3s firmware, cgminer 4.11.1 built with USE_VMASK: configure first (reply read
    as exactly one line), subscribe with user agent, authorize and read until its answer,
    suggest_difficulty %d after success; submits carry the micro job's mask bits as the sixth
    param; nonce2 is the little-endian work counter. Then a reconnect that offers the old
    session id, and the no-resume retry whose subscribe has no params at all."""
    pool = await realistic_pool(start_pool, node)
    user = node.new_address("bech32") + ".nano3s"
    wire = await Wire.open(pool.stratum)
    await cgminer_configure(wire, 0)
    wire.send('{"id": 1, "method": "mining.subscribe", "params": ["cgminer/4.11.1"]}')
    reply = await wire.message()
    session, en1, n2size = cgminer_subscribe_result(reply)
    assert session == en1.hex()
    wire.send(f'{{"id": 2, "method": "mining.authorize", "params": ["{user}", "x"]}}')
    auth, before = await wire.reply_to(2)
    assert auth == {"id": 2, "result": True, "error": None} and not before
    wire.send('{"id": 3, "method": "mining.suggest_difficulty", "params": [512]}')
    seen, notify = await wire.until_notify()
    check_notify(notify)
    while True:  # the suggestion's answer and the clean job that applies it
        message = await wire.message()
        if message.get("method") == "mining.notify":
            notify = message["params"]
            break
        seen.append(message)
    assert {"id": 3, "result": True, "error": None} in seen
    assert [m["params"] for m in seen if m.get("method") == "mining.set_difficulty"] == [
        [1024], [512]]

    micro = 3  # vmask_002[3]: one rolled bit
    bits = avalon_vmask(0x1FFFE000)[micro]
    assert bits == 1 << 16
    version = int(notify[5], 16) | bits
    en2 = (41).to_bytes(8, "little")[:n2size]
    nonce, block_hash = solve(notify, en1, en2, version=version)
    wire.send(
        f'{{"params": ["{user}", "{notify[0]}", "{en2.hex()}", "{notify[7]}", '
        f'"{nonce:08x}", "{bits:08x}"], "id": 4, "method": "mining.submit"}}'
    )
    result, _ = await wire.reply_to(4)
    assert result == {"id": 4, "result": True, "error": None}
    await wait_best(node, block_hash)
    await wire.close()

    # Reconnect: cgminer offers its session id as the second subscribe param.
    again = await Wire.open(pool.stratum)
    await cgminer_configure(again, 5)
    again.send(f'{{"id": 6, "method": "mining.subscribe", "params": ["cgminer/4.11.1", '
               f'"{session}"]}}')
    _, en1_again, _ = cgminer_subscribe_result(await again.message())
    await again.close()

    # The no-resume retry (after an error to the resume attempt): `"params": []`.
    retry = await Wire.open(pool.stratum)
    await cgminer_configure(retry, 7)
    retry.send('{"id": 8, "method": "mining.subscribe", "params": []}')
    _, en1_retry, _ = cgminer_subscribe_result(await retry.message())
    retry.send(f'{{"id": 9, "method": "mining.authorize", "params": ["{user}", "x"]}}')
    auth, _ = await retry.reply_to(9)
    assert auth["result"] is True
    _, notify = await retry.until_notify()
    bits = avalon_vmask(0x1FFFE000)[1]  # micro job 1: the whole mask
    version = int(notify[5], 16) | bits
    en2 = (1).to_bytes(8, "little")
    nonce, block_hash = solve(notify, en1_retry, en2, version=version)
    retry.send(
        f'{{"params": ["{user}", "{notify[0]}", "{en2.hex()}", "{notify[7]}", '
        f'"{nonce:08x}", "{bits:08x}"], "id": 10, "method": "mining.submit"}}'
    )
    result, _ = await retry.reply_to(10)
    assert result["result"] is True, result
    await wait_best(node, block_hash)
    await retry.close()


async def test_bmminer_antminer_s9(node: RegtestNode, start_pool: PoolFactory) -> None:
    """Antminer S9 stock bmminer 2.0.0 (bitmaintech/bmminer-mix): no configure; after the
    authorize result, suggest_difficulty (--suggest-diff) and `mining.multi_version [1]`
    (opt_multi_version defaults to 1). It submits five params unless the POOL sends
    mining.multi_version, after which the sixth would be the whole rolled version, which no
    BIP310 pool accepts: solopool answers true and never sends it. ADDRESS_worker username."""
    pool = await realistic_pool(start_pool, node)
    user = node.new_address("legacy") + "_s9"
    wire = await Wire.open(pool.stratum)
    wire.send('{"id": 0, "method": "mining.subscribe", "params": ["bmminer/2.0.0"]}')
    session, en1, n2size = cgminer_subscribe_result(await wire.message())
    wire.send(f'{{"id": 1, "method": "mining.authorize", "params": ["{user}", "123"]}}')
    auth, _ = await wire.reply_to(1)
    assert auth["result"] is True
    wire.send('{"id": 2, "method": "mining.suggest_difficulty", "params": [2048]}',
              '{"id": 3, "method": "mining.multi_version", "params": [1]}')
    replies: dict[int, Any] = {}
    notify: list[Any] = []
    while len(replies) < 2 or not notify or notify[8] is not True:
        message = await wire.message()
        if message.get("method") == "mining.notify":
            notify = message["params"]
        elif message.get("method") is None:
            replies[message["id"]] = message
    assert replies[2]["result"] is True and replies[3] == {"id": 3, "result": True, "error": None}
    en2 = (9).to_bytes(8, "little")[:n2size]
    nonce, block_hash = solve(notify, en1, en2)
    wire.send(
        f'{{"params": ["{user}", "{notify[0]}", "{en2.hex()}", "{notify[7]}", '
        f'"{nonce:08x}"], "id": 4, "method": "mining.submit"}}'
    )
    result, _ = await wire.reply_to(4)
    assert result["result"] is True, result
    await wait_best(node, block_hash)
    assert not any(b'"mining.multi_version"' in line for line in wire.received)
    await wire.close()


@pytest.mark.parametrize("negotiated", [True, False], ids=["configure", "no-configure-proxy"])
async def test_antminer_s19_s21_stock(
    node: RegtestNode, start_pool: PoolFactory, negotiated: bool
) -> None:
    """Antminer S19/S21 stock firmware (closed; cgminer-derived, user agent bmminer/x): BIP310
    configure then six submit params, OR-style bits. Behind a rental proxy an S21 was seen
    sending the sixth param with no configure reaching the pool (DATUM issue "Intended
    behavior when a miner submits version bits without mining.configure"): the bits are
    applied when they lie inside the mask, so the block still builds."""
    pool = await realistic_pool(start_pool, node)
    user = node.new_address("bech32") + ".s21"
    wire = await Wire.open(pool.stratum)
    if negotiated:
        await cgminer_configure(wire, 0)
    wire.send('{"id": 1, "method": "mining.subscribe", "params": ["bmminer/1.0.0"]}')
    _, en1, n2size = cgminer_subscribe_result(await wire.message())
    wire.send(f'{{"id": 2, "method": "mining.authorize", "params": ["{user}", "x"]}}')
    auth, _ = await wire.reply_to(2)
    assert auth["result"] is True
    _, notify = await wire.until_notify()
    bits = 0x1FFF0000  # cgminer's vmask_003[1] for mask 1fffe000
    version = int(notify[5], 16) | bits
    en2 = (2).to_bytes(8, "little")[:n2size]
    nonce, block_hash = solve(notify, en1, en2, version=version)
    # Bits outside the mask are refused with a reason (code 20), never silently dropped.
    wire.send(
        f'{{"params": ["{user}", "{notify[0]}", "{en2.hex()}", "{notify[7]}", '
        f'"{nonce:08x}", "40000000"], "id": 3, "method": "mining.submit"}}'
    )
    bad, _ = await wire.reply_to(3)
    assert bad["result"] is None and bad["error"][0] == 20, bad
    assert "version bits" in bad["error"][1]
    wire.send(
        f'{{"params": ["{user}", "{notify[0]}", "{en2.hex()}", "{notify[7]}", '
        f'"{nonce:08x}", "{bits:08x}"], "id": 4, "method": "mining.submit"}}'
    )
    result, _ = await wire.reply_to(4)
    assert result["result"] is True, result
    await wait_best(node, block_hash)
    assert node.rpc("getblockheader", block_hash)["version"] == version
    await wire.close()


# --- Braiins OS -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "min_bits", ['"version-rolling.min-bit-count":16', "", '"version-rolling.min-bit-count":"16"'],
    ids=["bos", "no-min-bit-count", "string-min-bit-count"],
)
async def test_braiins_os(node: RegtestNode, start_pool: PoolFactory, min_bits: str) -> None:
    """Braiins OS (braiins-open stratum-proxy/src/translation.rs, protocols/stratum/src/v1):
    configure with mask 1fffe000 and min-bit-count 16 (once omitted; proxies send it as a
    string); the answer must say version-rolling true with mask exactly 1fffe000 or the
    connection is dropped. Then subscribe [agent, null, "host:port", null] and authorize,
    pipelined; the channel opens only once set_difficulty arrived, which bOS truncates to an
    integer (`as u32`). Submit: extranonce2 = channel id 0 little-endian, padded; the sixth
    param is the rolled version AND the mask."""
    pool = await realistic_pool(start_pool, node)
    user = node.new_address("bech32") + ".bos"
    options = '{"version-rolling.mask":"1fffe000"' + ("," + min_bits if min_bits else "") + "}"
    wire = await Wire.open(pool.stratum)
    wire.send(f'{{"id":0,"method":"mining.configure","params":[["version-rolling"],{options}]}}')
    await wire.expect('{"id":0,"result":{"version-rolling":true,'
                      '"version-rolling.mask":"1fffe000"},"error":null}')
    port = pool.stratum.port
    wire.send(
        f'{{"id":1,"method":"mining.subscribe","params":["Braiins OS 2019-06-05",null,'
        f'"127.0.0.1:{port}",null]}}',
        f'{{"id":2,"method":"mining.authorize","params":["{user}","x"]}}',
    )
    en1 = check_subscribe_reply(await wire.line(), 1)
    await wire.expect('{"id":2,"result":true,"error":null}')
    seen, notify = await wire.until_notify()
    difficulties = [m["params"][0] for m in seen if m.get("method") == "mining.set_difficulty"]
    assert difficulties and isinstance(difficulties[0], int) and difficulties[0] >= 1
    check_notify(notify)

    rolled = int(notify[5], 16) | 0x0F0F0000
    en2 = (0).to_bytes(4, "little") + bytes(4)  # channel_to_extra_nonce2_bytes(0, 8)
    nonce, block_hash = solve(notify, en1, en2, version=rolled)
    wire.send(
        f'{{"id":3,"method":"mining.submit","params":["{user}","{notify[0]}","{en2.hex()}",'
        f'"{int(notify[7], 16):08x}","{nonce:08x}","{rolled & MASK:08x}"]}}'
    )
    await wire.expect('{"id":3,"result":true,"error":null}')
    await wait_best(node, block_hash)
    await wire.close()


async def test_configure_answers_every_requested_extension(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    """BIP310: a value for every extension asked for; unknown ones false. Nothing else (no
    set_version_mask, no notification) is written before the configure answer."""
    pool = await realistic_pool(start_pool, node)
    wire = await Wire.open(pool.stratum)
    wire.send(
        '{"id":1,"method":"mining.configure","params":[["minimum-difficulty","version-rolling",'
        '"subscribe-extranonce","info"],{"version-rolling.mask":"00fff000",'
        '"minimum-difficulty.value":2048,"info.connection-url":"x"}]}'
    )
    await wire.expect(
        '{"id":1,"result":{"minimum-difficulty":false,"version-rolling":true,'
        '"version-rolling.mask":"00ffe000","subscribe-extranonce":false,"info":false},'
        '"error":null}'
    )
    await wire.quiet(0.3)
    await wire.close()


# --- integer-only firmware on a pool with fractional difficulties -------------------------------


@pytest.mark.parametrize("firmware", ["nerdqaxe", "braiins"])
async def test_integer_only_firmware_on_fractional_difficulties(
    node: RegtestNode, start_pool: PoolFactory, firmware: str
) -> None:
    """NerdQAxe++ reads set_difficulty as uint32 (stratum_api.cpp), Braiins OS as f32 as u32
    (braiins-open stratum-proxy): with start_difficulty 0.5 and a fractional suggestion (0.25,
    as a proxy or a hand-edited setting could send) they get 1, a JSON integer."""
    pool = await start_pool(node, start_difficulty=0.5, min_difficulty=0.0001)
    user = node.new_address("bech32") + "." + firmware
    wire = await Wire.open(pool.stratum)
    if firmware == "nerdqaxe":
        wire.send(
            '{"id": 1, "method": "mining.subscribe", "params": ["NerdQAxe++/BM1370/v1.0.30"]}',
            '{"id": 2, "method": "mining.configure", "params": [["version-rolling"], '
            '{"version-rolling.mask": "1fffe000"}]}',
            f'{{"id": 3, "method": "mining.authorize", "params": ["{user}", "x"]}}',
            '{"id": 4, "method": "mining.suggest_difficulty", "params": [0.25]}',
        )
        en1 = check_subscribe_reply(await wire.line(), 1)
        await wire.line()
    else:
        wire.send('{"id":0,"method":"mining.configure","params":[["version-rolling"],'
                  '{"version-rolling.mask":"1fffe000","version-rolling.min-bit-count":16}]}')
        await wire.line()
        wire.send(
            f'{{"id":1,"method":"mining.subscribe","params":["Braiins OS 2019-06-05",null,'
            f'"127.0.0.1:{pool.stratum.port}",null]}}',
            f'{{"id":2,"method":"mining.authorize","params":["{user}","x"]}}',
            '{"id":3,"method":"mining.suggest_difficulty","params":[0.25]}',
        )
        en1 = check_subscribe_reply(await wire.line(), 1)
    await wire.expect(f'{{"id":{3 if firmware == "nerdqaxe" else 2},"result":true,"error":null}}')
    assert await wire.line() == b'{"id":null,"method":"mining.set_difficulty","params":[1]}'
    _, notify = await wire.until_notify()
    await wire.expect(f'{{"id":{4 if firmware == "nerdqaxe" else 3},"result":true,"error":null}}')
    await wire.quiet(0.5)  # 0.25 rounds up to 1, the difficulty already in force: nothing new
    assert not any(b"0.5" in line or b"0.25" in line for line in wire.received[1:])
    en2 = (0).to_bytes(8, "little")
    nonce, block_hash = solve(notify, en1, en2)
    wire.send(
        f'{{"id":7,"method":"mining.submit","params":["{user}","{notify[0]}","{en2.hex()}",'
        f'"{notify[7]}","{nonce:08x}","00000000"]}}'
    )
    await wire.expect('{"id":7,"result":true,"error":null}')
    await wait_best(node, block_hash)
    await wire.close()


# --- cgminer's auth loop against a refused authorize -------------------------------------------


async def test_cgminer_refused_authorize(node: RegtestNode, start_pool: PoolFactory) -> None:
    """cgminer's auth_stratum (util.c at ckolivas/cgminer b8491c6) parses notifications until the
    first line without a method and takes that as the answer: solopool's refusal must be that
    line (error 24 with the reason), then client.show_message, then the pool closes the socket
    (cgminer suspends the pool and retries later on a fresh connection)."""
    pool = await realistic_pool(start_pool, node)
    wire = await Wire.open(pool.stratum)
    await cgminer_configure(wire, 0)
    wire.send('{"id": 1, "method": "mining.subscribe", "params": ["cgminer/4.11.1"]}')
    cgminer_subscribe_result(await wire.message())
    mainnet = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
    wire.send(f'{{"id": 2, "method": "mining.authorize", "params": ["{mainnet}.nano3", "x"]}}')
    reply, before = await wire.reply_to(2)
    assert not before
    assert reply["result"] is False and reply["error"][0] == 24, reply
    assert isinstance(reply["error"][1], str) and reply["error"][1]
    shown = await wire.message()
    assert shown["method"] == "client.show_message" and shown["params"][0] == reply["error"][1]
    assert await asyncio.wait_for(wire.reader.read(), 10) == b""
    await wire.close()

    # cgminer's retry, with the right address, mines.
    again = await Wire.open(pool.stratum)
    await cgminer_configure(again, 3)
    again.send('{"id": 4, "method": "mining.subscribe", "params": ["cgminer/4.11.1"]}')
    cgminer_subscribe_result(await again.message())
    user = node.new_address("bech32") + ".nano3"
    again.send(f'{{"id": 5, "method": "mining.authorize", "params": ["{user}", "x"]}}')
    auth, _ = await again.reply_to(5)
    assert auth["result"] is True
    await again.close()


# --- no two jobs give one header, on the real pool ---------------------------------------------


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "worker-mode"])
async def test_no_two_jobs_give_one_header(
    node: RegtestNode, start_pool: PoolFactory, workers: int
) -> None:
    """Jobs after difficulty changes and jobs re-sent after template refreshes with the same
    transactions: for one extranonce2, nonce, version and ntime, every header differs, so
    ESP-Miner (extranonce_2 = 0 at each job) never re-sends a share."""
    pool = await realistic_pool(
        start_pool, node, workers=workers, node_options={"template_refresh_seconds": 1}
    )
    wire = await Wire.open(pool.stratum)
    user = node.new_address("bech32") + ".bitaxe"
    wire.send(
        '{"id":1,"method":"mining.configure","params":[["version-rolling"],'
        '{"version-rolling.mask":"ffffffff"}]}',
        '{"id":2,"method":"mining.subscribe","params":["bitaxe/BM1370/v2.14.0"]}',
        f'{{"id":3,"method":"mining.authorize","params":["{user}","x"]}}',
    )
    await wire.line()
    en1 = check_subscribe_reply(await wire.line(), 2)
    notifies: list[list[Any]] = []
    for msg_id, difficulty in ((4, 1000), (5, 2000), (6, 500)):
        wire.send(f'{{"id":{msg_id},"method":"mining.suggest_difficulty","params":[{difficulty}]}}')
        while not notifies or notifies[-1][8] is not True or len(notifies) < msg_id - 3:
            _, params = await wire.until_notify()
            notifies.append(params)
    refreshed = 0
    while refreshed < 2:  # template refreshes: jobs re-sent, not clean, same transactions
        _, params = await wire.until_notify()
        notifies.append(params)
        refreshed += params[8] is False
    assert len({n[1] for n in notifies}) == 1, "one previous block throughout"
    assert len({tuple(n[4]) for n in notifies}) == 1, "the same transactions throughout"
    ntime = max(int(n[7], 16) for n in notifies)
    en2 = bytes(8)
    headers = {header_for(n, en1, en2, ntime, 0, int(n[5], 16)) for n in notifies}
    assert len({n[0] for n in notifies}) == len(notifies)
    assert len(headers) == len(notifies), "two jobs give the same header"
    await wire.close()
