"""One instance of every SV2 message, with values that exercise each field type (the codec's
round-trip test and the decoder fuzzing start from them)."""

from __future__ import annotations

from pool.sv2 import codec
from pool.sv2.codec import Message

H = bytes(range(32))

# one instance of every message, with values that exercise each field type
SAMPLES: list[Message] = [
    codec.SetupConnection(0, 2, 2, 1, "pool.local", 3336, "bitaxe", "BM1370", "v2.9", "é-id"),
    codec.SetupConnectionSuccess(2, 0),
    codec.SetupConnectionError(0x4, "unsupported-feature-flags"),
    codec.ChannelEndpointChanged(7),
    codec.Reconnect("", 0),
    codec.OpenStandardMiningChannel(1, "bc1qaddr.worker", 2.0**40, b"\xff" * 32),
    codec.OpenStandardMiningChannelSuccess(1, 9, H, b"\x01\x02", 0),
    codec.OpenMiningChannelError(1, "unknown-user"),
    codec.OpenExtendedMiningChannel(1, "bc1qaddr.worker", 0.0, b"\xff" * 32, 2),
    codec.OpenExtendedMiningChannelSuccess(1, 9, H, 4, b"\xaa" * 8, 0),
    codec.NewMiningJob(9, 5, None, 0x20000000, H),
    codec.NewMiningJob(9, 6, 1_700_000_000, 0x20000000, H),
    codec.UpdateChannel(9, 2.5 * 2**40, H),
    codec.UpdateChannelError(9, "max-target-out-of-range"),
    codec.CloseChannel(9, "shutdown"),
    codec.SetExtranoncePrefix(9, b"\x05" * 32),
    codec.SubmitSharesStandard(9, 1, 5, 0xDEADBEEF, 1_700_000_001, 0x20002000),
    codec.SubmitSharesExtended(9, 2, 5, 1, 2, 3, b"\x00\x01\x02\x03"),
    codec.SubmitSharesSuccess(9, 2, 2, 1 << 40),
    codec.SubmitSharesError(9, 3, "stale-share"),
    codec.NewExtendedMiningJob(9, 7, None, 0x20000000, True, (H, H[::-1]), b"\x01" * 42, b"\x02"),
    codec.NewExtendedMiningJob(9, 8, 0, 0x20000000, False, (), b"", b""),
    codec.SetNewPrevHash(9, 7, H, 1_700_000_000, 0x207FFFFF),
    codec.SetTarget(9, b"\xff" * 32),
    codec.SetGroupChannel(100, (1, 2, 3)),
]
