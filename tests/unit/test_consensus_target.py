"""Compact nBits, targets and difficulty (pool.consensus.target)."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from pool.consensus.serialize import display_to_internal
from pool.consensus.target import (
    DIFF1_TARGET,
    MAX_TARGET,
    difficulty_to_target,
    hash_difficulty,
    hash_to_int,
    nbits_to_target,
    target_to_difficulty,
    target_to_nbits,
)

BLOCK_100000_HASH = "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506"


def test_diff1_target() -> None:
    assert DIFF1_TARGET == 0xFFFF << 208
    assert f"{DIFF1_TARGET:064x}" == "00000000ffff" + "0" * 52
    # cgminer's / public-pool's "truediffone"
    assert DIFF1_TARGET == (26959535291011309493156476344723991336010898738574164086137773096960)
    assert MAX_TARGET == 2**256 - 1


# Reference section 4 table.
NBITS_TABLE: list[tuple[int, str, float]] = [
    (0x1D00FFFF, "00000000ffff" + "0" * 52, 1.0),
    (0x1B04864C, "000000000004864c" + "0" * 48, 14484.16236122540),
    (0x17034219, "000000000000000000034219" + "0" * 40, 86388558925171.01),
    (0x207FFFFF, "7fffff" + "0" * 58, 4.656542373906925e-10),
]


@pytest.mark.parametrize(("nbits", "target_hex", "difficulty"), NBITS_TABLE)
def test_nbits_table(nbits: int, target_hex: str, difficulty: float) -> None:
    target = nbits_to_target(nbits)
    assert f"{target:064x}" == target_hex
    assert target_to_difficulty(target) == pytest.approx(difficulty, rel=1e-13)
    assert target_to_nbits(target) == nbits


# Core's src/test/arith_uint256_tests.cpp SetCompact/GetCompact cases (non-negative, no overflow).
@pytest.mark.parametrize(
    ("nbits", "target", "compact"),
    [
        (0x00000000, 0, 0x00000000),
        (0x00123456, 0, 0x00000000),
        (0x01003456, 0, 0x00000000),
        (0x02000056, 0, 0x00000000),
        (0x03000000, 0, 0x00000000),
        (0x04000000, 0, 0x00000000),
        (0x01123456, 0x12, 0x01120000),
        (0x02123456, 0x1234, 0x02123400),
        (0x03123456, 0x123456, 0x03123456),
        (0x04123456, 0x12345600, 0x04123456),
        (0x05009234, 0x92340000, 0x05009234),
        (0x20123456, 0x123456 << (8 * 29), 0x20123456),
    ],
)
def test_compact_core_vectors(nbits: int, target: int, compact: int) -> None:
    assert nbits_to_target(nbits) == target
    assert target_to_nbits(target) == compact


def test_target_to_nbits_sign_bit_moves_to_next_byte() -> None:
    # Core: GetCompact of 0x80 is 0x02008000 (mantissa would otherwise look negative).
    assert target_to_nbits(0x80) == 0x02008000
    assert nbits_to_target(0x02008000) == 0x80
    assert target_to_nbits(0x800000) == 0x04008000
    assert target_to_nbits(0xFFFF << 208) == 0x1D00FFFF


@pytest.mark.parametrize("nbits", [0x04923456, 0x01FEDCBA, 0x1D80FFFF])
def test_negative_compact_rejected(nbits: int) -> None:
    with pytest.raises(ValueError):
        nbits_to_target(nbits)


def test_target_to_nbits_round_trip_random() -> None:
    rng = random.Random(20240101)
    for _ in range(2000):
        exponent = rng.randint(4, 32)
        mantissa = rng.randint(0x8000, 0x7FFFFF)  # normalized: top byte non-zero, no sign bit
        nbits = (exponent << 24) | mantissa
        target = nbits_to_target(nbits)
        assert target_to_nbits(target) == nbits
    for _ in range(2000):
        target = rng.getrandbits(rng.randint(1, 255))
        nbits = target_to_nbits(target)
        assert not nbits & 0x00800000
        # compacting truncates: the expansion is <= target and agrees in the top 2-3 bytes
        expanded = nbits_to_target(nbits)
        assert expanded <= target
        assert target - expanded < max(1, target >> 15)
        assert target_to_nbits(expanded) == nbits


# --- difficulty -> share target ----------------------------------------------------------------


def test_difficulty_to_target_one() -> None:
    assert difficulty_to_target(1) == DIFF1_TARGET


def test_difficulty_to_target_1024() -> None:
    assert f"{difficulty_to_target(1024):064x}" == "00000000003fffc" + "0" * 49


def test_difficulty_to_target_fractional() -> None:
    exact = difficulty_to_target(Fraction("0.00015"))
    assert f"{exact:064x}" == "00001a0a90a" + "0" * 53
    assert exact == DIFF1_TARGET * 20000 // 3
    # a float argument lands on (nearly) the same target: same leading digits
    assert f"{difficulty_to_target(0.00015):064x}".startswith("00001a0a90a00000")
    assert difficulty_to_target(0.00015) == pytest.approx(exact, rel=1e-12)


def test_difficulty_to_target_is_floor_exact() -> None:
    for d in (3, 7, 1000, 65536, 123456789):
        assert difficulty_to_target(d) == DIFF1_TARGET // d
    assert difficulty_to_target(Fraction(1, 3)) == DIFF1_TARGET * 3
    assert difficulty_to_target(0.5) == DIFF1_TARGET * 2
    assert difficulty_to_target(Fraction(2, 3)) == (DIFF1_TARGET * 3) // 2


def test_difficulty_to_target_monotonic() -> None:
    diffs: list[int | Fraction] = [
        Fraction(1, 100000),
        Fraction(15, 100000),
        Fraction(1, 2),
        1,
        2,
        512,
        10**6,
        10**12,
    ]
    targets = [difficulty_to_target(d) for d in diffs]
    assert targets == sorted(targets, reverse=True)


def test_difficulty_to_target_tiny_clamps_to_max() -> None:
    assert difficulty_to_target(Fraction(1, 2**40)) == MAX_TARGET


@pytest.mark.parametrize("bad", [0, -1, 0.0, Fraction(-1, 2)])
def test_difficulty_to_target_non_positive_raises(bad: float | int | Fraction) -> None:
    with pytest.raises(ValueError):
        difficulty_to_target(bad)


def test_target_to_difficulty_non_positive_raises() -> None:
    with pytest.raises(ValueError):
        target_to_difficulty(0)
    with pytest.raises(ValueError):
        target_to_difficulty(-5)


def test_target_to_difficulty_inverse() -> None:
    for d in (1, 2, 1024, 65536, 10**9):
        assert target_to_difficulty(difficulty_to_target(d)) == pytest.approx(d, rel=1e-12)


# --- hashes ------------------------------------------------------------------------------------


def test_hash_to_int_is_little_endian() -> None:
    h = display_to_internal(BLOCK_100000_HASH)
    assert hash_to_int(h) == int(BLOCK_100000_HASH, 16)
    assert hash_to_int(b"\x01" + bytes(31)) == 1
    assert hash_to_int(bytes(31) + b"\x01") == 1 << 248


def test_hash_difficulty_block_100000() -> None:
    h = display_to_internal(BLOCK_100000_HASH)
    assert hash_difficulty(h) == pytest.approx(17583.05627604086, rel=1e-12)
    # above its network difficulty (it is a real block) ...
    assert hash_difficulty(h) > target_to_difficulty(nbits_to_target(0x1B04864C))
    # ... and the exact integer comparison agrees
    assert hash_to_int(h) <= nbits_to_target(0x1B04864C)


def test_hash_difficulty_zero_hash_is_infinite() -> None:
    assert hash_difficulty(bytes(32)) == float("inf")


def test_hash_difficulty_at_diff1_target() -> None:
    h = DIFF1_TARGET.to_bytes(32, "little")
    assert hash_difficulty(h) == 1.0
    assert hash_to_int(h) <= difficulty_to_target(1)
    one_more = (DIFF1_TARGET + 1).to_bytes(32, "little")
    assert hash_to_int(one_more) > difficulty_to_target(1)


def test_share_vs_block_discrimination_mainnet() -> None:
    network_target = nbits_to_target(0x17034219)
    share_target = difficulty_to_target(1)
    # block 100,000's real hash: a fine share at difficulty 1 and even 17583, not a block today
    h = display_to_internal(BLOCK_100000_HASH)
    assert hash_to_int(h) <= share_target
    assert hash_to_int(h) <= difficulty_to_target(17583)
    assert hash_to_int(h) > difficulty_to_target(17584)
    assert hash_to_int(h) > network_target
    # a hash exactly at the network target is a block, one above it is not
    at = network_target.to_bytes(32, "little")
    above = (network_target + 1).to_bytes(32, "little")
    assert hash_to_int(at) <= network_target
    assert hash_to_int(above) > network_target
    assert hash_to_int(above) <= share_target


def test_regtest_any_diff1_share_is_a_block() -> None:
    network_target = nbits_to_target(0x207FFFFF)
    assert difficulty_to_target(1) < network_target
    assert target_to_difficulty(network_target) < 1e-9
