"""The coinbase transaction a job hands out, split around the extranonces as Stratum needs.

Layout (non-witness serialization, what miners hash):

    version | 01 | 00*32 ffffffff | len | scriptSig | sequence | outputs | locktime
    scriptSig = BIP34 height | push(tag) | aux | push(job number) | push(extranonce1 + extranonce2)

The job number makes every job's coinbase, hence its merkle root, its own: firmware restarts
its extranonce2/nonce/version search on every new job, and two jobs with one coinbase would
give it the same headers again (duplicate shares).

coinb1 ends right before extranonce1; coinb2 starts right after extranonce2.
"""

from __future__ import annotations

from dataclasses import dataclass

from .script import bip34_height, push_data
from .serialize import ser_compact_size, ser_int32, ser_string, ser_uint32, ser_uint64

COINBASE_VERSION = 2
# Non-final sequence and locktime height-1: what BIP54 asks for and Core's assembler does today.
COINBASE_SEQUENCE = 0xFFFFFFFE
MAX_SCRIPTSIG = 100
WITNESS_RESERVED_VALUE = bytes(32)


@dataclass(frozen=True)
class TxOut:
    value: int
    script_pubkey: bytes

    def serialize(self) -> bytes:
        return ser_uint64(self.value) + ser_string(self.script_pubkey)


@dataclass(frozen=True)
class CoinbaseParts:
    coinb1: bytes
    coinb2: bytes
    outputs: tuple[TxOut, ...]

    def assemble(self, extranonce: bytes) -> bytes:
        """The full non-witness coinbase for one extranonce1 + extranonce2."""
        return self.coinb1 + extranonce + self.coinb2


def build_coinbase(
    *,
    height: int,
    outputs: list[TxOut],
    extranonce_size: int,
    tag: bytes = b"",
    aux: bytes = b"",
    job_number: bytes = b"",
) -> CoinbaseParts:
    """Split coinbase for `height` paying `outputs` (payout first, witness commitment last)."""
    prefix = (
        bip34_height(height)
        + (push_data(tag) if tag else b"")
        + aux
        + (push_data(job_number) if job_number else b"")
    )
    script_len = len(prefix) + 1 + extranonce_size
    if script_len > MAX_SCRIPTSIG:
        raise ValueError(f"coinbase scriptSig would be {script_len} bytes (max {MAX_SCRIPTSIG})")
    if extranonce_size >= 0x4C:
        raise ValueError("extranonce too large")
    coinb1 = (
        ser_int32(COINBASE_VERSION)
        + b"\x01"
        + bytes(32)
        + b"\xff\xff\xff\xff"
        + ser_compact_size(script_len)
        + prefix
        + bytes([extranonce_size])  # push opcode for the extranonce bytes
    )
    coinb2 = (
        ser_uint32(COINBASE_SEQUENCE)
        + ser_compact_size(len(outputs))
        + b"".join(o.serialize() for o in outputs)
        + ser_uint32(max(height - 1, 0))
    )
    return CoinbaseParts(coinb1, coinb2, tuple(outputs))


def add_witness_reserved_value(coinbase: bytes) -> bytes:
    """Witness serialization of a one-input coinbase: marker, flag, and the 32-zero reserved value
    that the witness commitment (BIP141) is computed with."""
    return (
        coinbase[:4]
        + b"\x00\x01"
        + coinbase[4:-4]
        + b"\x01"
        + ser_string(WITNESS_RESERVED_VALUE)
        + coinbase[-4:]
    )
