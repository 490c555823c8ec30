"""Ways to damage an SV2 frame or handshake message, shared by the decoder fuzzing
(tests/unit/test_sv2_fuzz.py) and the live fuzzing (tests/regtest/test_sv2_fuzz_live.py)."""

from __future__ import annotations

import random
from collections.abc import Callable

from pool.sv2 import codec

Mutation = Callable[[random.Random, bytes], bytes]


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def extend(rng: random.Random, data: bytes) -> bytes:
    return data + rng.randbytes(rng.randrange(1, 40))


def flip(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def overwrite(rng: random.Random, data: bytes) -> bytes:
    """A random byte set to an extreme: length prefixes and counts become huge or zero."""
    if not data:
        return data
    out = bytearray(data)
    out[rng.randrange(len(out))] = rng.choice([0x00, 0x01, 0x02, 0x20, 0x21, 0x7F, 0xFF])
    return bytes(out)


def retype(rng: random.Random, data: bytes) -> bytes:
    """Another message type or extension in the header, the payload unchanged."""
    if len(data) < 6:
        return data
    ext = rng.choice([0, 0x8000, 0x0001, 0x4000, rng.randrange(1 << 16)])
    msg_type = rng.choice([*codec.MESSAGES, rng.randrange(256)])
    return ext.to_bytes(2, "little") + bytes([msg_type]) + data[3:]


def fix_length(rng: random.Random, data: bytes) -> bytes:
    """The header's length made to match the (mutated) payload, so the payload decoder runs."""
    if len(data) < 6:
        return data
    return data[:3] + (len(data) - 6).to_bytes(3, "little") + data[6:]


def random_payload(rng: random.Random, data: bytes) -> bytes:
    return data[:3] + rng.randbytes(rng.randrange(0, 120))


MUTATIONS: list[Mutation] = [truncate, extend, flip, overwrite, retype, fix_length, random_payload]
