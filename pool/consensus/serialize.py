"""Bitcoin wire serialization primitives and hashing (as in Core's serialize.h / hash.h)."""

from __future__ import annotations

import hashlib
import struct


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256d(data: bytes) -> bytes:
    """Double SHA-256, the hash of headers, txids and merkle nodes."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def ser_compact_size(n: int) -> bytes:
    """CompactSize ("varint") length prefix."""
    if n < 0:
        raise ValueError("compact size must be non-negative")
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def ser_uint32(n: int) -> bytes:
    return struct.pack("<I", n)


def ser_int32(n: int) -> bytes:
    return struct.pack("<i", n)


def ser_uint64(n: int) -> bytes:
    return struct.pack("<Q", n)


def ser_string(data: bytes) -> bytes:
    """Length-prefixed byte string."""
    return ser_compact_size(len(data)) + data


def display_to_internal(hash_hex: str) -> bytes:
    """RPC/display hash hex (big-endian) to internal byte order."""
    return bytes.fromhex(hash_hex)[::-1]


def internal_to_display(hash_bytes: bytes) -> str:
    return hash_bytes[::-1].hex()
