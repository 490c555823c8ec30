"""Merkle trees, coinbase construction, headers and blocks (pool.consensus.merkle/coinbase/block).

Vectors: mainnet genesis and block 100,000 (reference section 3).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from pool.consensus.block import (
    BlockParseError,
    block_problem,
    block_txids,
    build_header,
    coinbase_value,
    header_hash,
    prevhash_from_stratum,
    serialize_block,
    stratum_prevhash,
)
from pool.consensus.coinbase import (
    CoinbaseParts,
    TxOut,
    add_witness_reserved_value,
    build_coinbase,
)
from pool.consensus.merkle import coinbase_merkle_branch, merkle_root, merkle_root_from_branch
from pool.consensus.script import bip34_height, push_data
from pool.consensus.serialize import (
    display_to_internal,
    internal_to_display,
    ser_compact_size,
    sha256d,
)
from pool.consensus.target import hash_to_int, nbits_to_target

# --- block 100,000 (reference section 3) --------------------------------------------------------

B100K_PREV = "000000000002d01c1fccc21636b607dfd930d31d01c3a62104612a1719011250"
B100K_STRATUM_PREV = "1901125004612a1701c3a621d930d31d36b607df1fccc2160002d01c00000000"
B100K_COINB1 = (
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff08"
)
B100K_EXTRANONCE1 = "044c8604"
B100K_EXTRANONCE2 = "1b020602"
B100K_COINB2 = (
    "ffffffff0100f2052a010000004341041b0e8c2567c12536aa13357b79a073dc4444acb83c4ec7a0e2f99dd7457516"
    "c5817242da796924ca4e99947d087fedf9ce467cb9f7c6287078f801df276fdf84ac00000000"
)
B100K_BRANCH = [
    "c40297f730dd7b5a99567eb8d27b78758f607507c52292d02d4031895b52f2ff",
    "49aef42d78e3e9999c9e6ec9e1dddd6cb880bf3b076a03be1318ca789089308e",
]
B100K_TXIDS_DISPLAY = [
    "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87",
    "fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4",
    "6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4",
    "e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d",
]
B100K_MERKLE_ROOT_INTERNAL = "6657a9252aacd5c0b2940996ecff952228c3067cc38d4885efb5a4ac4247e9f3"
B100K_MERKLE_ROOT_DISPLAY = "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766"
B100K_HEADER = (
    "0100000050120119172a610421a6c3011dd330d9df07b63616c2cc1f1cd0020000000000"
    "6657a9252aacd5c0b2940996ecff952228c3067cc38d4885efb5a4ac4247e9f3"
    "37221b4d4c86041b0f2b5710"
)
B100K_HASH = "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506"

GENESIS_COINBASE = (
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d"
    "04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f"
    "6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2"
    "052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649"
    "f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000"
)
GENESIS_MERKLE_ROOT = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"

WITNESS_COMMITMENT = bytes.fromhex(
    "6a24aa21a9ed" + "e2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9"
)


# --- a tiny transaction parser (independent of the code under test) -----------------------------


@dataclass
class ParsedTx:
    version: int
    segwit: bool
    inputs: list[tuple[bytes, int, bytes, int]]  # (prev txid, prev index, scriptSig, sequence)
    outputs: list[tuple[int, bytes]]  # (value, scriptPubKey)
    witnesses: list[list[bytes]]
    locktime: int


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated transaction")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def varint(self) -> int:
        first = self.uint(1)
        if first < 0xFD:
            return first
        return self.uint({0xFD: 2, 0xFE: 4, 0xFF: 8}[first])


def parse_tx(raw: bytes) -> ParsedTx:
    r = _Reader(raw)
    version = r.uint(4)
    segwit = raw[4:6] == b"\x00\x01"
    if segwit:
        r.take(2)
    inputs = []
    for _ in range(r.varint()):
        prev = r.take(32)
        index = r.uint(4)
        script = r.take(r.varint())
        sequence = r.uint(4)
        inputs.append((prev, index, script, sequence))
    outputs = []
    for _ in range(r.varint()):
        value = r.uint(8)
        outputs.append((value, r.take(r.varint())))
    witnesses: list[list[bytes]] = []
    if segwit:
        for _ in inputs:
            witnesses.append([r.take(r.varint()) for _ in range(r.varint())])
    locktime = r.uint(4)
    if r.pos != len(raw):
        raise ValueError("trailing bytes after transaction")
    return ParsedTx(version, segwit, inputs, outputs, witnesses, locktime)


def strip_witness(tx: ParsedTx) -> bytes:
    """Re-serialize without marker, flag and witness (the txid form)."""
    out = tx.version.to_bytes(4, "little") + ser_compact_size(len(tx.inputs))
    for prev, index, script, sequence in tx.inputs:
        out += prev + index.to_bytes(4, "little") + ser_compact_size(len(script)) + script
        out += sequence.to_bytes(4, "little")
    out += ser_compact_size(len(tx.outputs))
    for value, spk in tx.outputs:
        out += value.to_bytes(8, "little") + ser_compact_size(len(spk)) + spk
    return out + tx.locktime.to_bytes(4, "little")


def test_parser_on_genesis_coinbase() -> None:
    raw = bytes.fromhex(GENESIS_COINBASE)
    tx = parse_tx(raw)
    assert tx.version == 1
    assert not tx.segwit
    assert len(tx.inputs) == 1 and len(tx.outputs) == 1
    assert tx.inputs[0][:2] == (bytes(32), 0xFFFFFFFF)
    assert tx.outputs[0][0] == 5_000_000_000
    assert strip_witness(tx) == raw


# --- naive reference merkle (recursive, Core's duplicate-last rule) -----------------------------


def _naive_root(level: list[bytes]) -> bytes:
    if len(level) == 1:
        return level[0]
    if len(level) % 2:
        level = level + [level[-1]]
    return _naive_root([sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)])


def _naive_proof(leaves: list[bytes], index: int) -> list[bytes]:
    proof: list[bytes] = []
    level = list(leaves)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        proof.append(level[index ^ 1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        index //= 2
    return proof


# --- stratum prevhash ---------------------------------------------------------------------------


def test_stratum_prevhash_block_100000() -> None:
    assert stratum_prevhash(B100K_PREV) == B100K_STRATUM_PREV
    assert prevhash_from_stratum(B100K_STRATUM_PREV) == display_to_internal(B100K_PREV)


def test_stratum_prevhash_word_order() -> None:
    display = "".join(f"{i:08x}" for i in range(8))  # words 0..7
    assert stratum_prevhash(display) == "".join(f"{i:08x}" for i in reversed(range(8)))


def test_stratum_prevhash_round_trip_random() -> None:
    rng = random.Random(7)
    for _ in range(200):
        internal = rng.randbytes(32)
        field = stratum_prevhash(internal_to_display(internal))
        assert len(field) == 64
        assert prevhash_from_stratum(field) == internal


def test_stratum_prevhash_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        stratum_prevhash("00" * 31)
    with pytest.raises(ValueError):
        stratum_prevhash("00" * 33)


# --- header ------------------------------------------------------------------------------------


def test_genesis_header() -> None:
    header = build_header(
        1, bytes(32), display_to_internal(GENESIS_MERKLE_ROOT), 1231006505, 0x1D00FFFF, 2083236893
    )
    assert len(header) == 80
    assert internal_to_display(header_hash(header)) == GENESIS_HASH
    assert hash_to_int(header_hash(header)) <= nbits_to_target(0x1D00FFFF)


def test_genesis_merkle_root_is_coinbase_txid() -> None:
    txid = sha256d(bytes.fromhex(GENESIS_COINBASE))
    assert internal_to_display(txid) == GENESIS_MERKLE_ROOT
    assert merkle_root([txid]) == txid
    assert coinbase_merkle_branch([]) == []
    assert merkle_root_from_branch(txid, []) == txid


def test_block_100000_header_field_layout() -> None:
    header = build_header(
        1,
        display_to_internal(B100K_PREV),
        bytes.fromhex(B100K_MERKLE_ROOT_INTERNAL),
        1293623863,
        0x1B04864C,
        274148111,
    )
    assert header.hex() == B100K_HEADER
    assert internal_to_display(header_hash(header)) == B100K_HASH


def test_build_header_version_rolled_and_high_bit() -> None:
    header = build_header(0x20B0C000, bytes(32), bytes(32), 0, 0, 0)
    assert header[:4].hex() == "00c0b020"
    # negative versions (as signed int32) serialize as their two's complement
    assert build_header(-1, bytes(32), bytes(32), 0, 0, 0)[:4].hex() == "ffffffff"
    assert build_header(0xFFFFFFFF, bytes(32), bytes(32), 0, 0, 0)[:4].hex() == "ffffffff"


def test_rebuild_block_100000_from_stratum_job() -> None:
    """The full path a share takes: notify fields + submit fields -> header -> hash."""
    coinbase = bytes.fromhex(B100K_COINB1 + B100K_EXTRANONCE1 + B100K_EXTRANONCE2 + B100K_COINB2)
    coinbase_txid = sha256d(coinbase)
    assert coinbase_txid.hex() == "876dd0a3ef4a2816ffd1c12ab649825a958b0ff3bb3d6f3e1250f13ddbf0148c"
    assert internal_to_display(coinbase_txid) == B100K_TXIDS_DISPLAY[0]

    root = merkle_root_from_branch(coinbase_txid, [bytes.fromhex(b) for b in B100K_BRANCH])
    assert root.hex() == B100K_MERKLE_ROOT_INTERNAL
    assert internal_to_display(root) == B100K_MERKLE_ROOT_DISPLAY

    # notify: version "00000001", nbits "1b04864c", ntime "4d1b2237"; submit nonce "10572b0f"
    header = build_header(
        int("00000001", 16),
        prevhash_from_stratum(B100K_STRATUM_PREV),
        root,
        int("4d1b2237", 16),
        int("1b04864c", 16),
        int("10572b0f", 16),
    )
    assert header.hex() == B100K_HEADER
    h = header_hash(header)
    assert h.hex() == "06e533fd1ada86391f3f6c343204b0d278d4aaec1c0b20aa27ba030000000000"
    assert internal_to_display(h) == B100K_HASH
    assert hash_to_int(h) <= nbits_to_target(0x1B04864C)


def test_block_100000_coinbase_parses() -> None:
    coinbase = bytes.fromhex(B100K_COINB1 + B100K_EXTRANONCE1 + B100K_EXTRANONCE2 + B100K_COINB2)
    tx = parse_tx(coinbase)
    assert tx.version == 1
    assert tx.inputs == [(bytes(32), 0xFFFFFFFF, bytes.fromhex("044c86041b020602"), 0xFFFFFFFF)]
    assert [value for value, _ in tx.outputs] == [5_000_000_000]
    assert tx.locktime == 0


# --- merkle ------------------------------------------------------------------------------------


def test_block_100000_merkle_root_over_all_txids() -> None:
    txids = [display_to_internal(t) for t in B100K_TXIDS_DISPLAY]
    assert merkle_root(txids).hex() == B100K_MERKLE_ROOT_INTERNAL


def test_block_100000_coinbase_merkle_branch() -> None:
    rest = [display_to_internal(t) for t in B100K_TXIDS_DISPLAY[1:]]
    branch = coinbase_merkle_branch(rest)
    assert [b.hex() for b in branch] == B100K_BRANCH
    # branch[0] is tx1's txid reversed; branch[1] is sha256d(txid2 || txid3)
    assert branch[0] == rest[0]
    assert branch[1] == sha256d(rest[1] + rest[2])


def test_merkle_root_empty_raises() -> None:
    with pytest.raises(ValueError):
        merkle_root([])


def test_merkle_root_odd_levels_duplicate_last() -> None:
    a, b, c = (sha256d(bytes([i])) for i in range(3))
    ab = sha256d(a + b)
    cc = sha256d(c + c)
    assert merkle_root([a, b]) == ab
    assert merkle_root([a, b, c]) == sha256d(ab + cc)
    # CVE-2012-2459: duplicating the last leaf yields the same root
    assert merkle_root([a, b, c]) == merkle_root([a, b, c, c])


def test_coinbase_branch_small_cases() -> None:
    t1, t2, t3, t4 = (sha256d(bytes([i])) for i in range(1, 5))
    assert coinbase_merkle_branch([t1]) == [t1]
    assert coinbase_merkle_branch([t1, t2]) == [t1, sha256d(t2 + t2)]
    assert coinbase_merkle_branch([t1, t2, t3]) == [t1, sha256d(t2 + t3)]
    h44 = sha256d(t4 + t4)
    assert coinbase_merkle_branch([t1, t2, t3, t4]) == [
        t1,
        sha256d(t2 + t3),
        sha256d(h44 + h44),
    ]


@pytest.mark.parametrize("seed", range(5))
def test_merkle_branch_property_random(seed: int) -> None:
    rng = random.Random(seed)
    for n in range(1, 21):
        leaves = [rng.randbytes(32) for _ in range(n)]
        root = merkle_root(leaves)
        assert root == _naive_root(leaves)
        branch = coinbase_merkle_branch(leaves[1:])
        assert branch == _naive_proof(leaves, 0)
        assert merkle_root_from_branch(leaves[0], branch) == root
        # the branch does not depend on the coinbase: any coinbase hash works with it
        other = rng.randbytes(32)
        assert merkle_root_from_branch(other, branch) == merkle_root([other] + leaves[1:])
        # depth is ceil(log2(n))
        assert len(branch) == (n - 1).bit_length()


# --- coinbase ----------------------------------------------------------------------------------

PAYOUT_SCRIPT = bytes.fromhex("0014751e76e8199196d454941c45d1b3a323f1433bd6")


def _outputs(value: int = 312_500_000) -> list[TxOut]:
    return [TxOut(value, PAYOUT_SCRIPT), TxOut(0, WITNESS_COMMITMENT)]


def test_txout_serialize() -> None:
    assert TxOut(5_000_000_000, PAYOUT_SCRIPT).serialize().hex() == (
        "00f2052a01000000" + "16" + PAYOUT_SCRIPT.hex()
    )
    assert TxOut(0, WITNESS_COMMITMENT).serialize().hex() == (
        "0000000000000000" + "26" + WITNESS_COMMITMENT.hex()
    )


@pytest.mark.parametrize(
    "height", [0, 1, 2, 16, 17, 127, 128, 255, 256, 65535, 227931, 500000, 840000, 8388608]
)
@pytest.mark.parametrize("tag", [b"", b"/solopool/"])
def test_build_coinbase_parses(height: int, tag: bytes) -> None:
    extranonce = bytes(range(0xA0, 0xAC))  # extranonce1 (4) + extranonce2 (8) = 12 bytes
    outputs = _outputs()
    parts = build_coinbase(height=height, outputs=outputs, extranonce_size=12, tag=tag)
    assert isinstance(parts, CoinbaseParts)
    assert parts.outputs == tuple(outputs)
    raw = parts.coinb1 + extranonce + parts.coinb2
    assert parts.assemble(extranonce) == raw

    tx = parse_tx(raw)
    assert not tx.segwit
    assert tx.version in (1, 2)
    assert len(tx.inputs) == 1
    prev, index, script_sig, sequence = tx.inputs[0]
    assert prev == bytes(32)
    assert index == 0xFFFFFFFF
    assert sequence == 0xFFFFFFFE
    assert tx.locktime == max(height - 1, 0)
    assert tx.outputs == [(o.value, o.script_pubkey) for o in outputs]

    assert script_sig.startswith(bip34_height(height))
    assert 2 <= len(script_sig) <= 100
    assert extranonce in script_sig
    if tag:
        assert push_data(tag) in script_sig
    # coinb1 ends right before the extranonce; coinb2 starts right after it
    assert raw.index(extranonce) == len(parts.coinb1)
    assert parts.coinb2.startswith(bytes.fromhex("feffffff"))


def test_build_coinbase_height_1_and_17_prefixes() -> None:
    for height, prefix in [(1, "51"), (17, "0111"), (128, "028000")]:
        parts = build_coinbase(height=height, outputs=_outputs(), extranonce_size=8)
        script_sig = parse_tx(parts.assemble(bytes(8))).inputs[0][2]
        assert script_sig.hex().startswith(prefix)
        # BIP34 in Core: a height-1 scriptSig starting 0101 is "bad-cb-height"
        assert not script_sig.startswith(b"\x01\x01")


def test_build_coinbase_extranonce_is_pushed() -> None:
    parts = build_coinbase(height=17, outputs=_outputs(), extranonce_size=8)
    assert parts.coinb1[-1] == 8  # push opcode for the 8 extranonce bytes
    script_sig = parse_tx(parts.assemble(bytes(range(8)))).inputs[0][2]
    assert script_sig == bytes.fromhex("0111") + b"\x08" + bytes(range(8))


def test_build_coinbase_value_serialization() -> None:
    value = 625_000_000 + 12_345
    parts = build_coinbase(height=840000, outputs=_outputs(value), extranonce_size=8)
    expected_outputs = (
        "02"
        + value.to_bytes(8, "little").hex()
        + "16"
        + PAYOUT_SCRIPT.hex()
        + "0000000000000000"
        + "26"
        + "6a24aa21a9ed"
        + WITNESS_COMMITMENT[6:].hex()
    )
    locktime = (840000 - 1).to_bytes(4, "little").hex()
    assert parts.coinb2.hex() == "feffffff" + expected_outputs + locktime
    assert locktime == "3fd10c00"


def test_build_coinbase_coinb1_layout() -> None:
    parts = build_coinbase(height=840000, outputs=_outputs(), extranonce_size=8, tag=b"abc")
    script_len = 4 + 4 + 1 + 8  # height push, push("abc"), push opcode, extranonce
    assert parts.coinb1.hex() == (
        "02000000"  # version
        + "01"  # one input
        + "00" * 32
        + "ffffffff"  # null prevout
        + f"{script_len:02x}"
        + "0340d10c"
        + "03616263"
        + "08"
    )


def test_build_coinbase_script_sig_limit() -> None:
    # height 840000 push (4) + push(tag) + push opcode (1) + extranonce (8)
    ok = build_coinbase(height=840000, outputs=_outputs(), extranonce_size=8, tag=b"x" * 85)
    script_sig = parse_tx(ok.assemble(bytes(8))).inputs[0][2]
    assert len(script_sig) == 100  # 4 + (2 + 85) + 1 + 8, accepted at exactly 100
    with pytest.raises(ValueError):
        build_coinbase(height=840000, outputs=_outputs(), extranonce_size=8, tag=b"x" * 86)
    with pytest.raises(ValueError):
        build_coinbase(height=840000, outputs=_outputs(), extranonce_size=8, tag=b"x" * 200)
    with pytest.raises(ValueError):
        build_coinbase(height=1, outputs=_outputs(), extranonce_size=8, aux=bytes(91))
    assert build_coinbase(height=1, outputs=_outputs(), extranonce_size=8, aux=bytes(90))


def test_build_coinbase_smallest_script_sig() -> None:
    parts = build_coinbase(height=1, outputs=_outputs(), extranonce_size=0)
    script_sig = parse_tx(parts.assemble(b"")).inputs[0][2]
    assert script_sig == bytes.fromhex("5100")  # 2 bytes: the minimum Core accepts
    assert len(script_sig) >= 2


def test_build_coinbase_aux_after_tag() -> None:
    parts = build_coinbase(
        height=17, outputs=_outputs(), extranonce_size=4, tag=b"t", aux=b"\x02\xbe\xef"
    )
    script_sig = parse_tx(parts.assemble(b"\x11\x22\x33\x44")).inputs[0][2]
    assert script_sig.hex() == "0111" + "0174" + "02beef" + "04" + "11223344"


def test_add_witness_reserved_value() -> None:
    parts = build_coinbase(height=500000, outputs=_outputs(), extranonce_size=12, tag=b"pool")
    stripped = parts.assemble(bytes(range(12)))
    with_witness = add_witness_reserved_value(stripped)

    assert with_witness[4:6] == b"\x00\x01"  # marker, flag
    assert with_witness[:4] == stripped[:4]
    assert with_witness[-4:] == stripped[-4:]
    # witness: one stack item of 32 zero bytes, right before the locktime
    assert with_witness[-4 - 34 : -4] == bytes.fromhex("0120") + bytes(32)
    assert len(with_witness) == len(stripped) + 2 + 1 + 1 + 32

    tx = parse_tx(with_witness)
    assert tx.segwit
    assert tx.witnesses == [[bytes(32)]]
    assert strip_witness(tx) == stripped

    txid = sha256d(stripped)
    wtxid = sha256d(with_witness)
    assert txid != wtxid
    assert sha256d(strip_witness(tx)) == txid


# --- block ---------------------------------------------------------------------------------------


def test_serialize_genesis_block() -> None:
    header = build_header(
        1, bytes(32), display_to_internal(GENESIS_MERKLE_ROOT), 1231006505, 0x1D00FFFF, 2083236893
    )
    coinbase = bytes.fromhex(GENESIS_COINBASE)
    block = serialize_block(header, coinbase, [])
    assert len(block) == 285  # the genesis block's size
    assert block == header + b"\x01" + coinbase


def test_serialize_block_count_and_concatenation() -> None:
    header = bytes(range(80))
    coinbase = b"COINBASE"
    txs = [b"tx1", b"tx-two", b"t3"]
    block = serialize_block(header, coinbase, txs)
    assert block == header + b"\x04" + coinbase + b"tx1tx-twot3"


@pytest.mark.parametrize(("n", "count_hex"), [(251, "fc"), (252, "fdfd00"), (300, "fd2d01")])
def test_serialize_block_count_varint(n: int, count_hex: str) -> None:
    header = bytes(80)
    txs = [bytes([i % 256]) for i in range(n)]
    block = serialize_block(header, b"CB", txs)
    prefix = bytes.fromhex(count_hex)
    assert block[80 : 80 + len(prefix)] == prefix
    assert block[80 + len(prefix) :] == b"CB" + b"".join(txs)


def test_full_block_from_template_like_parts() -> None:
    """Coinbase (witness form) + template txs: the block's merkle root uses the txid form."""
    rng = random.Random(99)
    template_txids = [rng.randbytes(32) for _ in range(4)]
    template_data = [rng.randbytes(60) for _ in range(4)]
    parts = build_coinbase(height=17, outputs=_outputs(), extranonce_size=8)
    stripped = parts.assemble(bytes(8))
    branch = coinbase_merkle_branch(template_txids)
    root = merkle_root_from_branch(sha256d(stripped), branch)
    assert root == merkle_root([sha256d(stripped)] + template_txids)

    header = build_header(0x20000000, bytes(32), root, 1700000000, 0x207FFFFF, 0)
    block = serialize_block(header, add_witness_reserved_value(stripped), template_data)
    assert block[:80] == header
    assert block[80] == 5
    coinbase_len = len(stripped) + 36
    assert parse_tx(block[81 : 81 + coinbase_len]).witnesses == [[bytes(32)]]
    assert block[81 + coinbase_len :] == b"".join(template_data)


# --- whole blocks: parsing and completeness (what spool recovery trusts) -------------------------

GENESIS_BLOCK = (
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b2"
    "7ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c01010000000100"
    "00000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104"
    "455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b20"
    "6f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104"
    "678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504"
    "e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000"
)
GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
GENESIS_MERKLE_DISPLAY = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"


def test_genesis_block_is_complete() -> None:
    raw = bytes.fromhex(GENESIS_BLOCK)
    assert [internal_to_display(t) for t in block_txids(raw)] == [GENESIS_MERKLE_DISPLAY]
    assert block_problem(raw) is None
    assert block_problem(raw, GENESIS_HASH) is None


def test_coinbase_value_of_genesis_is_50_btc() -> None:
    raw = bytes.fromhex(GENESIS_BLOCK)
    assert coinbase_value(raw) == 5_000_000_000
    for cut in (80, 81, 200, 284):
        with pytest.raises(BlockParseError):
            coinbase_value(raw[:cut])


def test_a_non_canonical_compact_size_does_not_parse() -> None:
    raw = bytes.fromhex(GENESIS_BLOCK)
    # The transaction count 1 written as fd0100: the node refuses such a block, and so does this.
    wide = raw[:80] + bytes.fromhex("fd0100") + raw[81:]
    assert "non-canonical" in (block_problem(wide) or "")
    with pytest.raises(BlockParseError, match="non-canonical"):
        coinbase_value(wide)


@pytest.mark.parametrize("cut", [1, 4, 60, 200, 284])
def test_a_truncated_block_is_incomplete(cut: int) -> None:
    raw = bytes.fromhex(GENESIS_BLOCK)[:cut]
    problem = block_problem(raw)
    assert problem is not None and "parse" in problem


def test_trailing_bytes_wrong_hash_merkle_and_nbits_are_named() -> None:
    raw = bytes.fromhex(GENESIS_BLOCK)
    assert "after the last transaction" in (block_problem(raw + b"\x00") or "")
    assert "hashes to" in (block_problem(raw, "00" * 32) or "")
    # A changed transaction byte: the header still hashes fine but the root no longer matches.
    tampered = bytearray(raw)
    tampered[-10] ^= 1
    assert "merkle root" in (block_problem(bytes(tampered)) or "")
    # A changed nonce: the hash no longer meets the genesis nbits.
    renonced = bytearray(raw)
    renonced[76] ^= 1
    assert "does not meet" in (block_problem(bytes(renonced)) or "")


def test_segwit_coinbase_txid_ignores_the_witness() -> None:
    plain = bytes.fromhex(GENESIS_BLOCK)[81:]
    witness = add_witness_reserved_value(plain)
    assert witness != plain
    root = sha256d(plain)
    nbits = 0x207FFFFF
    for nonce in range(1000):
        header = build_header(0x20000000, bytes(32), root, 1700000000, nbits, nonce)
        if hash_to_int(header_hash(header)) <= nbits_to_target(nbits):
            break
    raw = header + ser_compact_size(1) + witness
    assert block_txids(raw) == [root]
    assert block_problem(raw) is None
    assert "parse" in (block_problem(raw[:-3]) or "")
