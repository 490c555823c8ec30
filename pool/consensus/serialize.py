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


# Core's MAX_SIZE: the largest length any serialized vector or string may state.
MAX_SIZE = 0x02000000

# CompactSize prefix byte -> (width of the number after it, smallest number that needs it).
_WIDE = {0xFD: (2, 0xFD), 0xFE: (4, 0x10000), 0xFF: (8, 0x100000000)}


def read_compact_size(data: bytes, pos: int = 0, range_check: bool = True) -> tuple[int, int]:
    """The CompactSize at `pos` and the position after it, read as Core's ReadCompactSize does:
    ValueError when it is truncated, when it is not in its shortest form (non-canonical, which
    Core refuses) or, with `range_check` (Core's default), when it exceeds MAX_SIZE."""
    if pos >= len(data):
        raise ValueError("truncated")
    first = data[pos]
    if first not in _WIDE:
        return first, pos + 1
    width, smallest = _WIDE[first]
    end = pos + 1 + width
    if end > len(data):
        raise ValueError("truncated")
    n = int.from_bytes(data[pos + 1 : end], "little")
    if n < smallest:
        raise ValueError(f"non-canonical CompactSize {data[pos:end].hex()}")
    if range_check and n > MAX_SIZE:
        raise ValueError(f"CompactSize {n} exceeds MAX_SIZE")
    return n, end


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
