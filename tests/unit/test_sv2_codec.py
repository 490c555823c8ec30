"""pool.sv2.codec: the SV2 data types against the spec's layouts, every message round-trips, and
the firmware's own bytes (as sv2_protocol.c builds them) decode."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest

from pool.sv2 import codec
from pool.sv2.codec import (
    B0_16M,
    B0_32,
    B0_64K,
    BOOL,
    F32,
    OPTION,
    SEQ0_64K,
    SEQ0_255,
    STR0_255,
    U8,
    U16,
    U24,
    U32,
    U64,
    U256,
    FrameHeader,
    Message,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    SubmitSharesSuccess,
    Sv2DecodeError,
    UnknownMessage,
    WireType,
    decode_frame,
    decode_message,
    decode_submit,
    submit_error_frame,
    submit_success_frame,
)
from tests.support.sv2_samples import SAMPLES
from tests.support.sv2_samples import H as SAMPLE_HASH

H = SAMPLE_HASH


def test_every_message_has_a_sample() -> None:
    assert {type(m) for m in SAMPLES} == set(codec.message_types())


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    frame = message.encode_frame()
    header = FrameHeader.decode(frame[:6])
    assert header.msg_type == message.MSG_TYPE
    assert header.channel_msg == message.CHANNEL_MSG
    assert header.msg_length == len(frame) - 6
    assert decode_frame(frame) == message


def test_message_type_numbers_are_the_specs() -> None:
    numbers = {type(m).__name__: m.MSG_TYPE for m in SAMPLES}
    assert numbers["SetupConnection"] == 0x00 and numbers["Reconnect"] == 0x04
    assert numbers["OpenStandardMiningChannel"] == 0x10
    assert numbers["OpenExtendedMiningChannelSuccess"] == 0x14
    assert numbers["SubmitSharesStandard"] == 0x1A and numbers["SubmitSharesError"] == 0x1D
    assert numbers["NewExtendedMiningJob"] == 0x1F and numbers["SetTarget"] == 0x21


@pytest.mark.parametrize(
    ("wire", "value", "encoded"),
    [
        (U8, 0xAB, "ab"),
        (U16, 0x1234, "3412"),
        (U24, 0x123456, "563412"),
        (U32, 0x12345678, "78563412"),
        (U64, 1, "0100000000000000"),
        (U256, bytes(31) + b"\x01", "00" * 31 + "01"),
        (F32, 1.0, "0000803f"),
        (BOOL, True, "01"),
        (STR0_255, "abc", "03616263"),
        (B0_32, b"\x01\x02", "020102"),
        (B0_64K, b"\x01", "010001"),
        (B0_16M, b"\x01", "01000001"),
        (SEQ0_255(U16), (1, 2), "0201000200"),
        (SEQ0_64K(U32), (1,), "010001000000"),
        (OPTION(U32), None, "00"),
        (OPTION(U32), 5, "0105000000"),
    ],
)
def test_data_type_layouts(wire: WireType[Any], value: Any, encoded: str) -> None:
    assert wire.encode(value).hex() == encoded
    assert wire.decode(bytes.fromhex(encoded), 0) == (value, len(encoded) // 2)


def test_bool_reads_only_the_lowest_bit() -> None:
    assert BOOL.decode(b"\xfe", 0) == (False, 1)
    assert BOOL.decode(b"\x03", 0) == (True, 1)


@pytest.mark.parametrize(
    ("wire", "data"),
    [
        (U32, b"\x01\x02\x03"),
        (B0_32, b"\x21" + bytes(33)),  # 33 > 32
        (B0_64K, b"\x05\x00abc"),  # shorter than its length
        (STR0_255, b"\x02\xff\xfe"),  # not UTF-8
        (OPTION(U32), b"\x02\x00\x00\x00\x00"),  # a count of 2
        (SEQ0_255(U256), b"\x02" + bytes(40)),
    ],
)
def test_bad_data_is_a_decode_error(wire: WireType[Any], data: bytes) -> None:
    with pytest.raises(Sv2DecodeError):
        wire.decode(data, 0)


def test_encoders_refuse_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        U16.encode(70000)
    with pytest.raises(ValueError):
        B0_32.encode(bytes(33))
    with pytest.raises(ValueError):
        codec.SetTarget(1, b"short").encode_payload()
    with pytest.raises(ValueError):
        codec.SubmitSharesStandard(1 << 32, 0, 0, 0, 0, 0).encode_payload()


def test_firmware_submit_shares_standard_bytes() -> None:
    # sv2_build_submit_shares_standard(channel 1, seq 2, job 3, nonce 4, ntime 5, version 6)
    frame = bytes.fromhex("00801a180000") + struct.pack("<6I", 1, 2, 3, 4, 5, 6)
    assert decode_frame(frame) == codec.SubmitSharesStandard(1, 2, 3, 4, 5, 6)


def test_firmware_setup_connection_bytes() -> None:
    payload = (
        b"\x00" + struct.pack("<HHI", 2, 2, 1) + b"\x09127.0.0.1" + struct.pack("<H", 3336)
        + b"\x06bitaxe" + b"\x06BM1370" + b"\x00" + b"\x00"
    )  # fmt: skip
    frame = FrameHeader(0, 0x00, len(payload)).encode() + payload
    assert decode_frame(frame) == codec.SetupConnection(
        0, 2, 2, 1, "127.0.0.1", 3336, "bitaxe", "BM1370", "", ""
    )


def test_header_layout_and_channel_bit() -> None:
    header = FrameHeader(0x8000, 0x1A, 0x030201)
    assert header.encode().hex() == "00801a010203"
    assert FrameHeader.decode(header.encode(), max_payload=1 << 24) == header
    assert header.channel_msg


def test_oversized_length_is_refused_from_the_header_alone() -> None:
    with pytest.raises(Sv2DecodeError, match="exceeds"):
        FrameHeader.decode(FrameHeader(0, 0x00, 65537).encode())
    assert FrameHeader.decode(FrameHeader(0, 0x00, 65536).encode()).msg_length == 65536
    with pytest.raises(Sv2DecodeError, match="exceeds"):
        FrameHeader.decode(FrameHeader(0, 0x00, 8193).encode(), max_payload=8192)


def test_unknown_type_and_extension_are_unknown_message() -> None:
    with pytest.raises(UnknownMessage) as info:
        decode_message(FrameHeader(0, 0x22, 0), b"")  # SetCustomMiningJob: not supported
    assert info.value.msg_type == 0x22
    with pytest.raises(UnknownMessage):
        decode_message(FrameHeader(0x4001, 0x1A, 24), bytes(24))


def test_trailing_and_missing_bytes_are_decode_errors() -> None:
    good = codec.SetupConnectionError(0, "x").encode_frame()
    with pytest.raises(Sv2DecodeError, match="left over"):
        decode_frame(good[:3] + bytes([good[3] + 1]) + good[4:] + b"\x00")
    with pytest.raises(Sv2DecodeError):
        decode_frame(codec.SubmitSharesStandard(1, 2, 3, 4, 5, 6).encode_frame()[:-1])
    with pytest.raises(Sv2DecodeError, match="must be 6 bytes"):
        decode_message(FrameHeader(0, 0x01, 7), bytes(7))  # fixed layout, one byte too many
    with pytest.raises(Sv2DecodeError):
        decode_message(FrameHeader(0, 0x01, 6), bytes(5))  # shorter than the header says


def test_targets_are_little_endian_u256() -> None:
    assert codec.int_to_u256(1) == b"\x01" + bytes(31)
    assert codec.u256_to_int(codec.int_to_u256(0xFFFF << 208)) == 0xFFFF << 208


def test_share_answers_are_the_messages_bytes() -> None:
    # The share path writes SubmitShares.Success/.Error without building message objects.
    for channel_id, sequence, count, total in [(1, 2, 3, 4), (0xFFFFFFFF, 0, 1, (1 << 64) - 1)]:
        assert submit_success_frame(channel_id, sequence, count, total) == (
            SubmitSharesSuccess(channel_id, sequence, count, total).encode_frame()
        )
    for code in ("difficulty-too-low", "stale-share", "", "x" * 255):
        for _ in range(2):  # the second time from the kept encoding
            assert submit_error_frame(7, 9, code) == SubmitSharesError(7, 9, code).encode_frame()


def test_decode_submit_reads_what_decode_message_reads() -> None:
    samples = [
        SubmitSharesStandard(1, 2, 3, 4, 5, 6),
        SubmitSharesStandard(0xFFFFFFFF, 0, 0xFFFFFFFF, 0, 0xFFFFFFFF, 0x20000000),
        SubmitSharesExtended(1, 2, 3, 4, 5, 6, b""),
        SubmitSharesExtended(1, 2, 3, 4, 5, 6, bytes(range(32))),
    ]
    for message in samples:
        frame = message.encode_frame()
        header = FrameHeader.decode(frame[:6])
        fields = decode_submit(header, frame[6:])
        extranonce = getattr(message, "extranonce", None)
        assert fields == (*dataclasses.astuple(message)[:6], extranonce)
        # the channel_msg bit is not checked (as the firmware does not check it)
        assert decode_submit(header._replace(extension_type=0), frame[6:]) == fields


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        (FrameHeader(0x8000, 0x1A, 23), bytes(23)),  # one byte short
        (FrameHeader(0x8000, 0x1A, 25), bytes(25)),  # one byte too many
        (FrameHeader(0x8000, 0x1A, 24), bytes(23)),  # shorter than the header says
        (FrameHeader(0x8001, 0x1A, 24), bytes(24)),  # an extension
        (FrameHeader(0x8000, 0x1B, 24), bytes(24)),  # no extranonce length
        (FrameHeader(0x8000, 0x1B, 26), bytes(24) + b"\x02\x00"),  # length says 2, has 1
        (FrameHeader(0x8000, 0x1B, 58), bytes(24) + b"\x21" + bytes(33)),  # over 32 bytes
    ],
)
def test_decode_submit_refuses_what_decode_message_refuses(
    header: FrameHeader, payload: bytes
) -> None:
    with pytest.raises(Sv2DecodeError) as expected:
        decode_message(header, payload)
    with pytest.raises(type(expected.value)):
        decode_submit(header, payload)
