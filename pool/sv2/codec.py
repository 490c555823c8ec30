"""Stratum V2 binary codec: data types, the frame header, and the Common and Mining messages.

Every multi-byte value is little-endian. A message is a frozen dataclass whose field
annotations name their wire types (``Annotated[int, U32]``), so each layout is written once
and drives both directions. Anything wrong in received bytes raises `Sv2DecodeError` (or its
subclass `UnknownMessage`) and nothing else; wrong values given to an encoder raise ValueError.

U256 fields (hashes, targets) stay as the 32 bytes on the wire; `u256_to_int` and
`int_to_u256` convert targets.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Sequence
from typing import (
    Annotated,
    Any,
    ClassVar,
    Generic,
    NamedTuple,
    TypeVar,
    dataclass_transform,
    get_type_hints,
)

T = TypeVar("T")

HEADER_SIZE = 6
CHANNEL_MSG_BIT = 0x8000
MAX_U24 = (1 << 24) - 1
# The most a pool reads in one frame from a miner. The largest message a miner sends
# (SetupConnection, six short strings) is under 1.3 KiB; the bound stops a forged length
# from making the reader wait for, or allocate, megabytes.
MAX_INBOUND_PAYLOAD = 64 * 1024

# SetupConnection.flags (Mining Protocol)
REQUIRES_STANDARD_JOBS = 1 << 0
REQUIRES_WORK_SELECTION = 1 << 1
REQUIRES_VERSION_ROLLING = 1 << 2
# SetupConnection.Success.flags (Mining Protocol)
REQUIRES_FIXED_VERSION = 1 << 0
REQUIRES_EXTENDED_CHANNELS = 1 << 1

PROTOCOL_MINING = 0


class Sv2DecodeError(ValueError):
    """Received bytes that are not a valid Stratum V2 frame or message."""


class UnknownMessage(Sv2DecodeError):
    """A well-framed message of a type this codec does not know (the frame itself is fine)."""

    def __init__(self, extension_type: int, msg_type: int) -> None:
        super().__init__(
            f"unknown message type 0x{msg_type:02x} (extension 0x{extension_type:04x})"
        )
        self.extension_type = extension_type
        self.msg_type = msg_type


# --- data types ---------------------------------------------------------------------------------


class WireType(Generic[T]):
    """One SV2 data type: `encode` a value, `decode` from `data` at `pos` -> (value, next pos).

    `fmt` is the struct code of fixed-size types, so all-fixed messages pack in one call.
    """

    name: str = ""
    fmt: str | None = None

    def encode(self, value: T) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, pos: int) -> tuple[T, int]:
        raise NotImplementedError


def _need(data: bytes, pos: int, n: int, what: str) -> None:
    if pos + n > len(data):
        have = len(data) - pos
        raise Sv2DecodeError(f"truncated {what}: need {n} bytes at offset {pos}, have {have}")


class _Int(WireType[int]):
    def __init__(self, name: str, size: int, fmt: str | None) -> None:
        self.name, self.size, self.fmt = name, size, fmt
        self._max = (1 << (8 * size)) - 1

    def encode(self, value: int) -> bytes:
        if not 0 <= value <= self._max:
            raise ValueError(f"{self.name} out of range: {value}")
        return value.to_bytes(self.size, "little")

    def decode(self, data: bytes, pos: int) -> tuple[int, int]:
        _need(data, pos, self.size, self.name)
        end = pos + self.size
        return int.from_bytes(data[pos:end], "little"), end


class _Fixed(WireType[bytes]):
    def __init__(self, name: str, size: int) -> None:
        self.name, self.size, self.fmt = name, size, f"{size}s"

    def encode(self, value: bytes) -> bytes:
        if len(value) != self.size:
            raise ValueError(f"{self.name} must be {self.size} bytes, got {len(value)}")
        return bytes(value)

    def decode(self, data: bytes, pos: int) -> tuple[bytes, int]:
        _need(data, pos, self.size, self.name)
        end = pos + self.size
        return data[pos:end], end


class _F32(WireType[float]):
    name, fmt = "F32", "f"
    _S = struct.Struct("<f")

    def encode(self, value: float) -> bytes:
        try:
            return self._S.pack(value)
        except (struct.error, OverflowError) as e:
            raise ValueError(f"F32: {e}") from None

    def decode(self, data: bytes, pos: int) -> tuple[float, int]:
        _need(data, pos, 4, "F32")
        return float(self._S.unpack_from(data, pos)[0]), pos + 4


class _Bool(WireType[bool]):
    name = "BOOL"

    def encode(self, value: bool) -> bytes:
        return b"\x01" if value else b"\x00"

    def decode(self, data: bytes, pos: int) -> tuple[bool, int]:
        _need(data, pos, 1, "BOOL")
        # only the lowest bit means anything; senders may set the others
        return bool(data[pos] & 1), pos + 1


class _Bytes(WireType[bytes]):
    """B0_32, B0_255, B0_64K, B0_16M: a length prefix of `prefix` bytes, at most `limit` bytes."""

    def __init__(self, name: str, prefix: int, limit: int) -> None:
        self.name, self.prefix, self.limit = name, prefix, limit

    def encode(self, value: bytes) -> bytes:
        if len(value) > self.limit:
            raise ValueError(f"{self.name} holds at most {self.limit} bytes, got {len(value)}")
        return len(value).to_bytes(self.prefix, "little") + bytes(value)

    def decode(self, data: bytes, pos: int) -> tuple[bytes, int]:
        _need(data, pos, self.prefix, f"{self.name} length")
        n = int.from_bytes(data[pos : pos + self.prefix], "little")
        if n > self.limit:
            raise Sv2DecodeError(f"{self.name} length {n} exceeds {self.limit}")
        pos += self.prefix
        _need(data, pos, n, self.name)
        return data[pos : pos + n], pos + n


class _Str(WireType[str]):
    """STR0_255: UTF-8 text (the firmware sends ASCII) with a one-byte length."""

    name = "STR0_255"
    _raw = _Bytes("STR0_255", 1, 255)

    def encode(self, value: str) -> bytes:
        return self._raw.encode(value.encode())

    def decode(self, data: bytes, pos: int) -> tuple[str, int]:
        raw, pos = self._raw.decode(data, pos)
        try:
            return raw.decode(), pos
        except UnicodeDecodeError:
            raise Sv2DecodeError("STR0_255 is not valid UTF-8") from None


class _Seq(WireType[tuple[Any, ...]]):
    """SEQ0_255[T], SEQ0_64K[T], OPTION[T] (a sequence of at most one)."""

    def __init__(self, name: str, item: WireType[Any], prefix: int, limit: int) -> None:
        self.name, self.item, self.prefix, self.limit = name, item, prefix, limit

    def encode(self, value: tuple[Any, ...]) -> bytes:
        if len(value) > self.limit:
            raise ValueError(f"{self.name} holds at most {self.limit} items, got {len(value)}")
        return len(value).to_bytes(self.prefix, "little") + b"".join(map(self.item.encode, value))

    def decode(self, data: bytes, pos: int) -> tuple[tuple[Any, ...], int]:
        _need(data, pos, self.prefix, f"{self.name} length")
        n = int.from_bytes(data[pos : pos + self.prefix], "little")
        if n > self.limit:
            raise Sv2DecodeError(f"{self.name} length {n} exceeds {self.limit}")
        pos += self.prefix
        items = []
        for _ in range(n):
            value, pos = self.item.decode(data, pos)
            items.append(value)
        return tuple(items), pos


class _Option(WireType[Any]):
    """OPTION[T]: None, or one T (on the wire a SEQ0_1: a 0/1 count then the value)."""

    def __init__(self, item: WireType[Any]) -> None:
        self.name, self.item = f"OPTION[{item.name}]", item

    def encode(self, value: Any) -> bytes:
        return b"\x00" if value is None else b"\x01" + self.item.encode(value)

    def decode(self, data: bytes, pos: int) -> tuple[Any, int]:
        _need(data, pos, 1, self.name)
        flag = data[pos]
        if flag == 0:
            return None, pos + 1
        if flag != 1:
            raise Sv2DecodeError(f"{self.name} count {flag} is not 0 or 1")
        return self.item.decode(data, pos + 1)


U8 = _Int("U8", 1, "B")
U16 = _Int("U16", 2, "H")
U24 = _Int("U24", 3, None)
U32 = _Int("U32", 4, "I")
U64 = _Int("U64", 8, "Q")
U256 = _Fixed("U256", 32)
PUBKEY = _Fixed("PUBKEY", 32)
SIGNATURE = _Fixed("SIGNATURE", 64)
F32 = _F32()
BOOL = _Bool()
STR0_255 = _Str()
B0_32 = _Bytes("B0_32", 1, 32)
B0_255 = _Bytes("B0_255", 1, 255)
B0_64K = _Bytes("B0_64K", 2, 0xFFFF)
B0_16M = _Bytes("B0_16M", 3, MAX_U24)


def SEQ0_255(item: WireType[Any]) -> _Seq:  # noqa: N802 - named as the spec names the type
    return _Seq(f"SEQ0_255[{item.name}]", item, 1, 255)


def SEQ0_64K(item: WireType[Any]) -> _Seq:  # noqa: N802
    return _Seq(f"SEQ0_64K[{item.name}]", item, 2, 0xFFFF)


def OPTION(item: WireType[Any]) -> _Option:  # noqa: N802
    return _Option(item)


def u256_to_int(value: bytes) -> int:
    return int.from_bytes(value, "little")


def int_to_u256(value: int) -> bytes:
    return value.to_bytes(32, "little")


# --- frame header -------------------------------------------------------------------------------


HEADER_LAYOUT = struct.Struct("<HBHB")  # extension_type, msg_type, msg_length (U24: low, high)


class FrameHeader(NamedTuple):
    """A frame's 6-byte header (a tuple: one is made for every frame received)."""

    extension_type: int
    msg_type: int
    msg_length: int

    @property
    def channel_msg(self) -> bool:
        return bool(self.extension_type & CHANNEL_MSG_BIT)

    def encode(self) -> bytes:
        if not 0 <= self.msg_length <= MAX_U24:
            raise ValueError(f"msg_length out of range: {self.msg_length}")
        return HEADER_LAYOUT.pack(
            self.extension_type, self.msg_type, self.msg_length & 0xFFFF, self.msg_length >> 16
        )

    @classmethod
    def decode(cls, data: bytes, max_payload: int = MAX_INBOUND_PAYLOAD) -> FrameHeader:
        """The header, refusing a payload longer than `max_payload` before anything reads it."""
        if len(data) != HEADER_SIZE:
            raise Sv2DecodeError(f"frame header must be {HEADER_SIZE} bytes, got {len(data)}")
        ext, msg_type, low, high = HEADER_LAYOUT.unpack(data)
        length = low | high << 16
        if length > max_payload:
            raise Sv2DecodeError(
                f"frame payload of {length} bytes exceeds the {max_payload}-byte limit"
            )
        return cls(ext, msg_type, length)


# --- messages -----------------------------------------------------------------------------------


class Message:
    """Base of every message; `message()` fills the class attributes."""

    MSG_TYPE: ClassVar[int]
    CHANNEL_MSG: ClassVar[bool]
    _wire: ClassVar[tuple[tuple[str, WireType[Any]], ...]]
    _struct: ClassVar[struct.Struct | None]
    _fixed_sizes: ClassVar[tuple[tuple[int, int], ...]]

    def encode_payload(self) -> bytes:
        values = [getattr(self, name) for name, _ in self._wire]
        if self._struct is not None:
            for index, size in self._fixed_sizes:
                if len(values[index]) != size:
                    raise ValueError(f"{self._wire[index][0]} must be {size} bytes")
            try:
                return self._struct.pack(*values)
            except (struct.error, OverflowError) as e:
                raise ValueError(f"{type(self).__name__}: {e}") from None
        pairs = zip(self._wire, values, strict=True)
        return b"".join(wire.encode(value) for (_, wire), value in pairs)

    def encode_frame(self) -> bytes:
        """Header and payload, in plaintext (the Noise transport encrypts them separately)."""
        payload = self.encode_payload()
        ext = CHANNEL_MSG_BIT if self.CHANNEL_MSG else 0
        return FrameHeader(ext, self.MSG_TYPE, len(payload)).encode() + payload

    @classmethod
    def decode_payload(cls, payload: bytes) -> Message:
        if cls._struct is not None:
            if len(payload) != cls._struct.size:
                raise Sv2DecodeError(
                    f"{cls.__name__} payload must be {cls._struct.size} bytes, got {len(payload)}"
                )
            return cls(*cls._struct.unpack(payload))
        pos = 0
        values = []
        for _, wire in cls._wire:
            value, pos = wire.decode(payload, pos)
            values.append(value)
        if pos != len(payload):
            raise Sv2DecodeError(f"{cls.__name__}: {len(payload) - pos} bytes left over")
        return cls(*values)


MESSAGES: dict[int, type[Message]] = {}

M = TypeVar("M", bound=type[Message])


@dataclass_transform(frozen_default=True)
def message(msg_type: int, channel_msg: bool) -> Callable[[M], M]:
    """Make `cls` a frozen dataclass whose annotated wire types define its payload."""

    def wrap(plain: M) -> M:
        cls: Any = dataclasses.dataclass(frozen=True, slots=True)(plain)
        hints = get_type_hints(cls, include_extras=True)
        wire = tuple((f.name, hints[f.name].__metadata__[0]) for f in dataclasses.fields(cls))
        cls.MSG_TYPE, cls.CHANNEL_MSG, cls._wire = msg_type, channel_msg, wire
        fmts = [w.fmt for _, w in wire]
        all_fixed = all(f is not None for f in fmts)
        cls._struct = struct.Struct("<" + "".join(f for f in fmts if f)) if all_fixed else None
        cls._fixed_sizes = tuple(
            (i, w.size) for i, (_, w) in enumerate(wire) if isinstance(w, _Fixed)
        )
        if msg_type in MESSAGES:
            raise RuntimeError(f"message type 0x{msg_type:02x} defined twice")
        MESSAGES[msg_type] = cls
        return cls  # type: ignore[no-any-return]

    return wrap


def decode_message(header: FrameHeader, payload: bytes) -> Message:
    """The message a frame carries. Only core messages exist here (extension_type 0 once the
    channel_msg bit is masked off); the channel_msg bit itself is not checked, as the firmware
    does not check it either."""
    cls = MESSAGES.get(header.msg_type)
    if cls is None or header.extension_type & ~CHANNEL_MSG_BIT:
        raise UnknownMessage(header.extension_type, header.msg_type)
    if len(payload) != header.msg_length:
        raise Sv2DecodeError(f"payload is {len(payload)} bytes, header says {header.msg_length}")
    return cls.decode_payload(payload)


def decode_frame(frame: bytes, max_payload: int = MAX_INBOUND_PAYLOAD) -> Message:
    """One whole plaintext frame (header + payload) -> its message."""
    header = FrameHeader.decode(frame[:HEADER_SIZE], max_payload)
    return decode_message(header, frame[HEADER_SIZE:])


# Common messages


@message(0x00, channel_msg=False)
class SetupConnection(Message):
    protocol: Annotated[int, U8]
    min_version: Annotated[int, U16]
    max_version: Annotated[int, U16]
    flags: Annotated[int, U32]
    endpoint_host: Annotated[str, STR0_255]
    endpoint_port: Annotated[int, U16]
    vendor: Annotated[str, STR0_255]
    hardware_version: Annotated[str, STR0_255]
    firmware: Annotated[str, STR0_255]
    device_id: Annotated[str, STR0_255]


@message(0x01, channel_msg=False)
class SetupConnectionSuccess(Message):
    used_version: Annotated[int, U16]
    flags: Annotated[int, U32]


@message(0x02, channel_msg=False)
class SetupConnectionError(Message):
    flags: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@message(0x03, channel_msg=True)
class ChannelEndpointChanged(Message):
    channel_id: Annotated[int, U32]


@message(0x04, channel_msg=False)
class Reconnect(Message):
    new_host: Annotated[str, STR0_255]
    new_port: Annotated[int, U16]


# Mining Protocol


@message(0x10, channel_msg=False)
class OpenStandardMiningChannel(Message):
    request_id: Annotated[int, U32]
    user_identity: Annotated[str, STR0_255]
    nominal_hash_rate: Annotated[float, F32]
    max_target: Annotated[bytes, U256]


@message(0x11, channel_msg=False)
class OpenStandardMiningChannelSuccess(Message):
    request_id: Annotated[int, U32]
    channel_id: Annotated[int, U32]
    target: Annotated[bytes, U256]
    extranonce_prefix: Annotated[bytes, B0_32]
    group_channel_id: Annotated[int, U32]


@message(0x12, channel_msg=False)
class OpenMiningChannelError(Message):
    request_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@message(0x13, channel_msg=False)
class OpenExtendedMiningChannel(Message):
    request_id: Annotated[int, U32]
    user_identity: Annotated[str, STR0_255]
    nominal_hash_rate: Annotated[float, F32]
    max_target: Annotated[bytes, U256]
    min_extranonce_size: Annotated[int, U16]


@message(0x14, channel_msg=False)
class OpenExtendedMiningChannelSuccess(Message):
    request_id: Annotated[int, U32]
    channel_id: Annotated[int, U32]
    target: Annotated[bytes, U256]
    extranonce_size: Annotated[int, U16]
    extranonce_prefix: Annotated[bytes, B0_32]
    group_channel_id: Annotated[int, U32]


@message(0x15, channel_msg=True)
class NewMiningJob(Message):
    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    min_ntime: Annotated[int | None, OPTION(U32)]  # None: a future job, waits for SetNewPrevHash
    version: Annotated[int, U32]
    merkle_root: Annotated[bytes, U256]


@message(0x16, channel_msg=True)
class UpdateChannel(Message):
    channel_id: Annotated[int, U32]
    nominal_hash_rate: Annotated[float, F32]
    maximum_target: Annotated[bytes, U256]


@message(0x17, channel_msg=True)
class UpdateChannelError(Message):
    channel_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@message(0x18, channel_msg=True)
class CloseChannel(Message):
    channel_id: Annotated[int, U32]
    reason_code: Annotated[str, STR0_255]


@message(0x19, channel_msg=True)
class SetExtranoncePrefix(Message):
    channel_id: Annotated[int, U32]
    extranonce_prefix: Annotated[bytes, B0_32]


@message(0x1A, channel_msg=True)
class SubmitSharesStandard(Message):
    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    job_id: Annotated[int, U32]
    nonce: Annotated[int, U32]
    ntime: Annotated[int, U32]
    version: Annotated[int, U32]


@message(0x1B, channel_msg=True)
class SubmitSharesExtended(Message):
    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    job_id: Annotated[int, U32]
    nonce: Annotated[int, U32]
    ntime: Annotated[int, U32]
    version: Annotated[int, U32]
    extranonce: Annotated[bytes, B0_32]


@message(0x1C, channel_msg=True)
class SubmitSharesSuccess(Message):
    channel_id: Annotated[int, U32]
    last_sequence_number: Annotated[int, U32]
    new_submits_accepted_count: Annotated[int, U32]
    new_shares_sum: Annotated[int, U64]


@message(0x1D, channel_msg=True)
class SubmitSharesError(Message):
    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@message(0x1F, channel_msg=True)
class NewExtendedMiningJob(Message):
    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    min_ntime: Annotated[int | None, OPTION(U32)]
    version: Annotated[int, U32]
    version_rolling_allowed: Annotated[bool, BOOL]
    merkle_path: Annotated[tuple[bytes, ...], SEQ0_255(U256)]
    coinbase_tx_prefix: Annotated[bytes, B0_64K]
    coinbase_tx_suffix: Annotated[bytes, B0_64K]


@message(0x20, channel_msg=True)
class SetNewPrevHash(Message):
    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    prev_hash: Annotated[bytes, U256]
    min_ntime: Annotated[int, U32]
    nbits: Annotated[int, U32]


@message(0x21, channel_msg=True)
class SetTarget(Message):
    channel_id: Annotated[int, U32]
    maximum_target: Annotated[bytes, U256]


@message(0x25, channel_msg=False)
class SetGroupChannel(Message):
    group_channel_id: Annotated[int, U32]
    channel_ids: Annotated[tuple[int, ...], SEQ0_64K(U32)]


def message_types() -> Sequence[type[Message]]:
    return tuple(MESSAGES.values())


# --- the share path ------------------------------------------------------------------------------
# Most of what a pool receives is shares and most of what it sends is their answers. These
# read and write those messages' fields directly, with the layouts above, without building
# message objects: the same bytes and the same errors as decode_message and encode_frame.

SUBMIT_STANDARD = SubmitSharesStandard.MSG_TYPE
SUBMIT_EXTENDED = SubmitSharesExtended.MSG_TYPE
_SUBMIT_FIELDS = struct.Struct("<IIIIII")  # channel_id .. version, both submit messages
_SUBMIT_EXTENDED_FIXED = _SUBMIT_FIELDS.size + 1  # .. and the extranonce's length byte
_new_tuple = tuple.__new__  # a NamedTuple without its Python-level __new__


class SubmitFields(NamedTuple):
    """A SubmitShares.Standard or .Extended; extranonce is None for a standard one."""

    channel_id: int
    sequence_number: int
    job_id: int
    nonce: int
    ntime: int
    version: int
    extranonce: bytes | None


def decode_submit(header: FrameHeader, payload: bytes) -> SubmitFields:
    """The fields of a frame whose msg_type is SUBMIT_STANDARD or SUBMIT_EXTENDED."""
    ext, msg_type, length = header
    if not ext & ~CHANNEL_MSG_BIT and length == len(payload):
        if msg_type == SUBMIT_STANDARD:
            if length == _SUBMIT_FIELDS.size:
                return _new_tuple(SubmitFields, (*_SUBMIT_FIELDS.unpack(payload), None))
        elif msg_type == SUBMIT_EXTENDED:
            size = length - _SUBMIT_EXTENDED_FIXED
            if 0 <= size <= B0_32.limit and payload[_SUBMIT_EXTENDED_FIXED - 1] == size:
                fields = _SUBMIT_FIELDS.unpack_from(payload)
                return _new_tuple(SubmitFields, (*fields, payload[_SUBMIT_EXTENDED_FIXED:]))
        else:
            raise ValueError(f"message type 0x{msg_type:02x} is not a share submission")
    decode_message(header, payload)  # something is wrong: raises the decoder's own error
    raise AssertionError("decode_message took a submit decode_submit refused")


def _success_frame_layout() -> struct.Struct:
    fields = SubmitSharesSuccess._struct
    assert fields is not None  # all fixed-size
    return struct.Struct(HEADER_LAYOUT.format + fields.format[1:])  # the header, then the fields


_SUCCESS_FRAME = _success_frame_layout()
_SUCCESS_HEADER = (
    CHANNEL_MSG_BIT,
    SubmitSharesSuccess.MSG_TYPE,
    _SUCCESS_FRAME.size - HEADER_SIZE,
    0,
)
_ERROR_FIELDS = struct.Struct("<II")  # channel_id, sequence_number
_error_codes: dict[str, tuple[bytes, bytes]] = {}  # error code -> (frame header, encoded code)


def submit_success_frame(
    channel_id: int, last_sequence_number: int, accepted_count: int, shares_sum: int
) -> bytes:
    """SubmitShares.Success as a plaintext frame (encode_frame's bytes)."""
    return _SUCCESS_FRAME.pack(
        *_SUCCESS_HEADER, channel_id, last_sequence_number, accepted_count, shares_sum
    )


def submit_error_frame(channel_id: int, sequence_number: int, error_code: str) -> bytes:
    """SubmitShares.Error as a plaintext frame (encode_frame's bytes). The pool's error codes
    are a few constants: their header and encoding are kept."""
    parts = _error_codes.get(error_code)
    if parts is None:
        code = STR0_255.encode(error_code)
        size = _ERROR_FIELDS.size + len(code)
        parts = (FrameHeader(CHANNEL_MSG_BIT, SubmitSharesError.MSG_TYPE, size).encode(), code)
        if len(_error_codes) < 64:
            _error_codes[error_code] = parts
    return parts[0] + _ERROR_FIELDS.pack(channel_id, sequence_number) + parts[1]
