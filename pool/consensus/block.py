"""Block headers and blocks, and the Stratum encodings of header fields."""

from __future__ import annotations

import struct

from .merkle import merkle_root
from .serialize import internal_to_display, read_compact_size, ser_compact_size, sha256d
from .target import hash_to_int, nbits_to_target


def stratum_prevhash(prev_display_hex: str) -> str:
    """mining.notify field 1: internal byte order with each 4-byte word byte-reversed,
    i.e. the display hash with its eight 4-byte words in reverse order."""
    raw = bytes.fromhex(prev_display_hex)
    if len(raw) != 32:
        raise ValueError("previous block hash must be 32 bytes")
    return b"".join(raw[i : i + 4] for i in range(28, -4, -4)).hex()


def prevhash_from_stratum(field: str) -> bytes:
    """Inverse of `stratum_prevhash`, returning the internal byte order."""
    raw = bytes.fromhex(field)
    return b"".join(raw[i : i + 4][::-1] for i in range(0, 32, 4))


def build_header(
    version: int, prev_hash: bytes, merkle_root: bytes, ntime: int, nbits: int, nonce: int
) -> bytes:
    """80-byte header; `prev_hash` and `merkle_root` in internal byte order."""
    return (
        struct.pack("<I", version & 0xFFFFFFFF)
        + prev_hash
        + merkle_root
        + struct.pack("<III", ntime, nbits, nonce)
    )


def header_hash(header: bytes) -> bytes:
    return sha256d(header)


def serialize_block(header: bytes, coinbase: bytes, transactions: list[bytes]) -> bytes:
    """Block for submitblock: header, tx count, coinbase (witness form), template transactions."""
    return header + ser_compact_size(1 + len(transactions)) + coinbase + b"".join(transactions)


class BlockParseError(ValueError):
    """Bytes that are not a whole, well-formed block."""


def _read_compact_size(raw: bytes, pos: int) -> tuple[int, int]:
    try:
        return read_compact_size(raw, pos)
    except ValueError as exc:
        raise BlockParseError(str(exc)) from None


def _skip(raw: bytes, pos: int, n: int) -> int:
    if n < 0 or pos + n > len(raw):
        raise BlockParseError("truncated")
    return pos + n


def _read_transaction(raw: bytes, pos: int) -> tuple[bytes, int, int]:
    """One transaction at `pos`: its txid (internal order), the sum of its outputs (satoshis)
    and where the next one starts."""
    start = pos
    pos = _skip(raw, pos, 4)  # version
    segwit = raw[pos : pos + 2] == b"\x00\x01"
    if segwit:
        pos += 2
    body_start = pos
    inputs, pos = _read_compact_size(raw, pos)
    for _ in range(inputs):
        pos = _skip(raw, pos, 36)  # outpoint
        length, pos = _read_compact_size(raw, pos)
        pos = _skip(raw, pos, length + 4)  # script, sequence
    outputs, pos = _read_compact_size(raw, pos)
    value = 0
    for _ in range(outputs):
        amount_end = _skip(raw, pos, 8)
        value += int.from_bytes(raw[pos:amount_end], "little")
        length, pos = _read_compact_size(raw, amount_end)
        pos = _skip(raw, pos, length)
    body_end = pos
    if segwit:
        for _ in range(inputs):
            items, pos = _read_compact_size(raw, pos)
            for _ in range(items):
                length, pos = _read_compact_size(raw, pos)
                pos = _skip(raw, pos, length)
    end = _skip(raw, pos, 4)  # lock time
    if not segwit:
        return sha256d(raw[start:end]), value, end
    stripped = raw[start : start + 4] + raw[body_start:body_end] + raw[pos:end]
    return sha256d(stripped), value, end


def _first_transaction(raw: bytes) -> tuple[int, int]:
    """A block's transaction count and where its first (the coinbase) starts."""
    if len(raw) < 81:
        raise BlockParseError("shorter than a header and a transaction count")
    count, pos = _read_compact_size(raw, 80)
    if count == 0:
        raise BlockParseError("no transactions")
    return count, pos


def block_txids(raw: bytes) -> list[bytes]:
    """The txids (internal byte order) of a serialized block; BlockParseError unless the bytes
    are exactly one block."""
    count, pos = _first_transaction(raw)
    txids = []
    for _ in range(count):
        txid, _, pos = _read_transaction(raw, pos)
        txids.append(txid)
    if pos != len(raw):
        raise BlockParseError(f"{len(raw) - pos} bytes after the last transaction")
    return txids


def coinbase_value(raw: bytes) -> int:
    """What a serialized block's coinbase pays (subsidy plus fees, satoshis); BlockParseError
    unless its coinbase parses."""
    _, pos = _first_transaction(raw)
    return _read_transaction(raw, pos)[1]


def block_problem(raw: bytes, expected_hash: str | None = None) -> str | None:
    """Why `raw` is not a complete, mined block (None when it is): it must parse to the last
    byte, its header hash must meet the header's own nbits (and be `expected_hash`, display
    order, when given), and its merkle root must match its transactions."""
    try:
        txids = block_txids(raw)
    except BlockParseError as exc:
        return f"does not parse ({exc})"
    header = raw[:80]
    digest = header_hash(header)
    if expected_hash is not None and internal_to_display(digest) != expected_hash:
        return f"its header hashes to {internal_to_display(digest)}, not {expected_hash}"
    nbits = struct.unpack_from("<I", header, 72)[0]
    try:
        target = nbits_to_target(nbits)
    except ValueError:
        return f"invalid nbits {nbits:08x}"
    if hash_to_int(digest) > target:
        return f"its header hash does not meet its nbits {nbits:08x}"
    if merkle_root(txids) != header[36:68]:
        return "its merkle root does not match its transactions"
    return None
