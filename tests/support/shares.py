"""Test-side share construction from a mining.notify, using only the consensus helpers; and the
version roll ESP-Miner firmware does."""

from __future__ import annotations

from typing import Any

from pool.consensus.block import build_header, prevhash_from_stratum
from pool.consensus.merkle import merkle_root_from_branch
from pool.consensus.serialize import sha256d
from pool.consensus.target import hash_to_int, nbits_to_target


def header_for(
    notify: list[Any], extranonce1: bytes, extranonce2: bytes, ntime: int, nonce: int,
    version: int | None = None,
) -> bytes:
    coinbase = bytes.fromhex(notify[2]) + extranonce1 + extranonce2 + bytes.fromhex(notify[3])
    root = merkle_root_from_branch(sha256d(coinbase), [bytes.fromhex(b) for b in notify[4]])
    return build_header(
        int(notify[5], 16) if version is None else version,
        prevhash_from_stratum(notify[1]),
        root,
        ntime,
        int(notify[6], 16),
        nonce,
    )


def find_nonce(
    notify: list[Any], extranonce1: bytes, extranonce2: bytes, *, meets: bool,
    target: int | None = None, version: int | None = None, start: int = 0,
) -> int:
    """A nonce whose hash meets (or, with meets=False, misses) `target` (default: network)."""
    if target is None:
        target = nbits_to_target(int(notify[6], 16))
    ntime = int(notify[7], 16)
    prefix = header_for(notify, extranonce1, extranonce2, ntime, 0, version)[:76]
    for nonce in range(start, start + 20_000_000):
        h = hash_to_int(sha256d(prefix + nonce.to_bytes(4, "little")))
        if (h <= target) == meets:
            return nonce
    raise AssertionError("no nonce found")


def increment_bitmask(value: int, mask: int) -> int:
    """ESP-Miner's `increment_bitmask` (components/stratum/mining.c): the chip's version roll."""
    if mask == 0:
        return value
    carry = (value & mask) + (mask & -mask)
    overflow = carry & ~mask & 0xFFFFFFFF
    new_value = (value & ~mask) | (carry & mask)
    if overflow:
        new_value = increment_bitmask(new_value, overflow << 1)
    return new_value & 0xFFFFFFFF
