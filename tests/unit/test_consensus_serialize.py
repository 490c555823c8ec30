"""Serialization, hashing and script numbers (pool.consensus.serialize, pool.consensus.script)."""

from __future__ import annotations

import hashlib
import struct

import pytest

from pool.consensus.script import bip34_height, push_data, push_int, script_num
from pool.consensus.serialize import (
    display_to_internal,
    internal_to_display,
    read_compact_size,
    ser_compact_size,
    ser_int32,
    ser_string,
    ser_uint32,
    ser_uint64,
    sha256,
    sha256d,
)

# --- hashing -----------------------------------------------------------------------------------


def test_sha256_empty() -> None:
    assert sha256(b"").hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_sha256d_known_vectors() -> None:
    assert sha256d(b"").hex() == "5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456"
    assert (
        sha256d(b"hello").hex()
        == "9595c9df90075148eb06860365df33584b75bff782a510c6cd4883a419833d50"
    )


def test_sha256d_is_sha256_twice() -> None:
    data = bytes(range(256)) * 3
    assert sha256d(data) == hashlib.sha256(hashlib.sha256(data).digest()).digest()
    assert sha256d(data) == sha256(sha256(data))


def test_sha256d_genesis_coinbase_txid() -> None:
    # The genesis block's only transaction; its txid is the genesis merkle root.
    genesis_coinbase = bytes.fromhex(
        "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d"
        "04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f"
        "6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2"
        "052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649"
        "f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000"
    )
    assert (
        internal_to_display(sha256d(genesis_coinbase))
        == "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    )


# --- CompactSize and fixed-width integers ------------------------------------------------------


# Every width and both edges of each (Core's serialize.h encodings).
COMPACT_SIZES = [
    (0, "00"),
    (1, "01"),
    (0xFC, "fc"),
    (0xFD, "fdfd00"),
    (0xFE, "fdfe00"),
    (0xFF, "fdff00"),
    (0x100, "fd0001"),
    (0xFFFF, "fdffff"),
    (0x10000, "fe00000100"),
    (0xFFFFFFFF, "feffffffff"),
    (0x100000000, "ff0000000001000000"),
    (0xFFFFFFFFFFFFFFFF, "ffffffffffffffffff"),
]


@pytest.mark.parametrize(("n", "expected"), COMPACT_SIZES)
def test_ser_compact_size(n: int, expected: str) -> None:
    assert ser_compact_size(n).hex() == expected


@pytest.mark.parametrize(("n", "encoded"), COMPACT_SIZES)
def test_read_compact_size_reads_what_ser_writes(n: int, encoded: str) -> None:
    raw = bytes.fromhex(encoded)
    assert read_compact_size(raw, range_check=False) == (n, len(raw))
    # Read in place: at an offset, with more data after it.
    assert read_compact_size(b"\xaa\xbb" + raw + b"\xcc", 2, range_check=False) == (
        n, 2 + len(raw)
    )


@pytest.mark.parametrize(
    "encoded",
    # Core's serialize_tests "noncanonical": a wider form than the number needs.
    ["fd0000", "fdfc00", "fe00000000", "feffff0000", "ff0000000000000000", "ffffffff0100000000"],
)
def test_read_compact_size_refuses_non_canonical(encoded: str) -> None:
    with pytest.raises(ValueError, match="non-canonical"):
        read_compact_size(bytes.fromhex(encoded), range_check=False)


def test_read_compact_size_range_check_is_core_max_size() -> None:
    assert read_compact_size(bytes.fromhex("fe00000002")) == (0x02000000, 5)
    with pytest.raises(ValueError, match="MAX_SIZE"):
        read_compact_size(bytes.fromhex("fe01000002"))
    with pytest.raises(ValueError, match="MAX_SIZE"):
        read_compact_size(bytes.fromhex("ff0000000001000000"))
    assert read_compact_size(bytes.fromhex("fe01000002"), range_check=False) == (0x02000001, 5)


@pytest.mark.parametrize("encoded", ["", "fd", "fd01", "fe000001", "ff00000000010000"])
def test_read_compact_size_truncated(encoded: str) -> None:
    with pytest.raises(ValueError, match="truncated"):
        read_compact_size(bytes.fromhex(encoded))
    with pytest.raises(ValueError, match="truncated"):
        read_compact_size(bytes.fromhex("00" + encoded), 1)


def test_ser_compact_size_negative_raises() -> None:
    with pytest.raises(ValueError):
        ser_compact_size(-1)


def test_ser_uint32() -> None:
    assert ser_uint32(0).hex() == "00000000"
    assert ser_uint32(1).hex() == "01000000"
    assert ser_uint32(0x1B04864C).hex() == "4c86041b"
    assert ser_uint32(0xFFFFFFFF).hex() == "ffffffff"
    with pytest.raises(struct.error):
        ser_uint32(-1)
    with pytest.raises(struct.error):
        ser_uint32(1 << 32)


def test_ser_int32() -> None:
    assert ser_int32(1).hex() == "01000000"
    assert ser_int32(2).hex() == "02000000"
    assert ser_int32(-1).hex() == "ffffffff"
    assert ser_int32(0x20000000).hex() == "00000020"
    assert ser_int32(-(1 << 31)).hex() == "00000080"


def test_ser_uint64() -> None:
    assert ser_uint64(0).hex() == "0000000000000000"
    assert ser_uint64(5_000_000_000).hex() == "00f2052a01000000"  # 50 BTC
    assert ser_uint64(312_500_000).hex() == "205fa01200000000"  # 3.125 BTC
    assert ser_uint64(0xFFFFFFFFFFFFFFFF).hex() == "ffffffffffffffff"


def test_ser_string() -> None:
    assert ser_string(b"").hex() == "00"
    assert ser_string(b"\xab").hex() == "01ab"
    long = bytes(300)
    assert ser_string(long) == bytes.fromhex("fd2c01") + long


# --- byte order helpers ------------------------------------------------------------------------


def test_display_internal_round_trip() -> None:
    display = "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506"
    internal = display_to_internal(display)
    assert internal.hex() == "06e533fd1ada86391f3f6c343204b0d278d4aaec1c0b20aa27ba030000000000"
    assert internal_to_display(internal) == display
    assert len(internal) == 32


# --- push_data ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "prefix"),
    [
        (0, "00"),
        (1, "01"),
        (75, "4b"),
        (76, "4c4c"),
        (255, "4cff"),
        (256, "4d0001"),
        (0xFFFF, "4dffff"),
    ],
)
def test_push_data_minimal(size: int, prefix: str) -> None:
    data = bytes([0xAB]) * size
    assert push_data(data) == bytes.fromhex(prefix) + data


def test_push_data_too_large() -> None:
    with pytest.raises(ValueError):
        push_data(bytes(0x10000))


# --- CScriptNum --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, ""),
        (1, "01"),
        (16, "10"),
        (127, "7f"),
        (128, "8000"),
        (255, "ff00"),
        (256, "0001"),
        (32767, "ff7f"),
        (32768, "008000"),
        (65535, "ffff00"),
        (500000, "20a107"),
        (840000, "40d10c"),
        (0x7FFFFFFF, "ffffff7f"),
        (0x80000000, "0000008000"),
        (-1, "81"),
        (-2, "82"),
        (-127, "ff"),
        (-128, "8080"),
        (-255, "ff80"),
        (-256, "0081"),
        (-32767, "ffff"),
        (-32768, "008080"),
        (-0x7FFFFFFF, "ffffffff"),
        (-0x80000000, "0000008080"),
    ],
)
def test_script_num(n: int, expected: str) -> None:
    assert script_num(n).hex() == expected


def _decode_script_num(data: bytes) -> int:
    """Independent decoder (Core's CScriptNum::set_vch) for round-trip checks."""
    if not data:
        return 0
    value = int.from_bytes(data, "little")
    if data[-1] & 0x80:
        return -(value & ~(0x80 << (8 * (len(data) - 1))))
    return value


def test_script_num_round_trip_and_minimal() -> None:
    for n in list(range(-70000, 70000, 7)) + [2**31 - 1, -(2**31) + 1, 2**39, -(2**39)]:
        enc = script_num(n)
        assert _decode_script_num(enc) == n
        # minimal: the top byte is never a bare sign byte unless the next byte needs it
        if len(enc) > 1 and enc[-1] & 0x7F == 0:
            assert enc[-2] & 0x80


# --- push_int / BIP34 height -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (-1, "4f"),
        (-2, "0182"),
        (-16, "0190"),
        (-128, "028080"),
        (0, "00"),
        (1, "51"),
        (16, "60"),
        (17, "0111"),
    ],
)
def test_push_int(n: int, expected: str) -> None:
    assert push_int(n).hex() == expected


@pytest.mark.parametrize(
    ("height", "expected"),
    [
        (0, "00"),
        (1, "51"),
        (2, "52"),
        (5, "55"),
        (16, "60"),
        (17, "0111"),
        (127, "017f"),
        (128, "028000"),
        (255, "02ff00"),
        (256, "020001"),
        (65535, "03ffff00"),
        (65536, "03000001"),
        (227931, "035b7a03"),  # BIP34 activation height on mainnet
        (500000, "0320a107"),
        (840000, "0340d10c"),
        (8388607, "03ffff7f"),
        (8388608, "0400008000"),
    ],
)
def test_bip34_height(height: int, expected: str) -> None:
    assert bip34_height(height).hex() == expected


def test_bip34_heights_1_to_16_are_single_opcodes() -> None:
    for h in range(1, 17):
        assert bip34_height(h) == bytes([0x50 + h])


def test_bip34_height_is_push_of_script_num_above_16() -> None:
    for h in [17, 100, 1000, 100_000, 1_000_000, 10_000_000]:
        num = script_num(h)
        assert bip34_height(h) == bytes([len(num)]) + num


def test_bip34_height_negative_raises() -> None:
    with pytest.raises(ValueError):
        bip34_height(-1)
