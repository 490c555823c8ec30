"""Block headers and blocks, and the Stratum encodings of header fields."""

from __future__ import annotations

import struct

from .serialize import ser_compact_size, sha256d


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
