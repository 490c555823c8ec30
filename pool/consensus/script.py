"""Script building helpers (Core's script.h: CScript << int, push data)."""

from __future__ import annotations

OP_0 = 0x00
OP_PUSHDATA1 = 0x4C
OP_PUSHDATA2 = 0x4D
OP_1 = 0x51
OP_RETURN = 0x6A


def push_data(data: bytes) -> bytes:
    """Minimal push of a byte string."""
    n = len(data)
    if n < OP_PUSHDATA1:
        return bytes([n]) + data
    if n <= 0xFF:
        return bytes([OP_PUSHDATA1, n]) + data
    if n <= 0xFFFF:
        return bytes([OP_PUSHDATA2]) + n.to_bytes(2, "little") + data
    raise ValueError("push too large")


def script_num(n: int) -> bytes:
    """CScriptNum serialization: little-endian magnitude with a sign bit in the top byte."""
    if n == 0:
        return b""
    negative = n < 0
    magnitude = -n if negative else n
    out = bytearray()
    while magnitude:
        out.append(magnitude & 0xFF)
        magnitude >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if negative else 0x00)
    elif negative:
        out[-1] |= 0x80
    return bytes(out)


def push_int(n: int) -> bytes:
    """`CScript() << n`: OP_0, OP_1..OP_16 (and OP_1NEGATE) as opcodes, else a minimal push.

    BIP34 is enforced by comparing the coinbase scriptSig prefix against exactly this, so heights
    1-16 must be the single opcodes 0x51-0x60, not `01 nn` pushes.
    """
    if n == 0:
        return bytes([OP_0])
    if n == -1:
        return bytes([0x4F])
    if 1 <= n <= 16:
        return bytes([OP_1 + n - 1])
    return push_data(script_num(n))


def bip34_height(height: int) -> bytes:
    """The scriptSig prefix BIP34 requires for a coinbase at `height`."""
    if height < 0:
        raise ValueError("height must be non-negative")
    return push_int(height)
