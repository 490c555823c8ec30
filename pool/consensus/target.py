"""Compact nBits, targets and difficulty (pool difficulty 1 = 0xFFFF * 2**208, as cgminer)."""

from __future__ import annotations

from fractions import Fraction

DIFF1_TARGET = 0xFFFF << 208
MAX_TARGET = (1 << 256) - 1


def nbits_to_target(nbits: int) -> int:
    """Expand compact nBits (Core's arith_uint256::SetCompact)."""
    exponent = nbits >> 24
    mantissa = nbits & 0x007FFFFF
    if nbits & 0x00800000:
        raise ValueError("negative compact target")
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))


def target_to_nbits(target: int) -> int:
    """Compress a target to nBits (Core's GetCompact)."""
    size = (target.bit_length() + 7) // 8
    if size <= 3:
        compact = target << (8 * (3 - size))
    else:
        compact = target >> (8 * (size - 3))
    if compact & 0x00800000:
        compact >>= 8
        size += 1
    return compact | (size << 24)


def target_to_difficulty(target: int) -> float:
    if target <= 0:
        raise ValueError("target must be positive")
    return DIFF1_TARGET / target


def difficulty_to_target(difficulty: float | int | Fraction) -> int:
    """Share target for a pool difficulty, exact for fractional difficulties."""
    # str() first so a float like 0.00015 means the decimal the user wrote, not its binary value.
    d = Fraction(str(difficulty)) if isinstance(difficulty, float) else Fraction(difficulty)
    if d <= 0:
        raise ValueError("difficulty must be positive")
    return min(MAX_TARGET, int(Fraction(DIFF1_TARGET) / d))


def hash_to_int(header_hash: bytes) -> int:
    """A header hash (internal byte order) as the number compared against targets."""
    return int.from_bytes(header_hash, "little")


def hash_difficulty(header_hash: bytes) -> float:
    """The share difficulty a hash achieves (T1 / hash)."""
    value = hash_to_int(header_hash)
    return DIFF1_TARGET / value if value else float("inf")
