"""Bad SV2 input, generated: the frame/message decoder, the encrypted frame reader and the Noise
handshake raise only their typed errors (Sv2DecodeError and its subclasses), never another
exception, whatever bytes arrive.

As in tests/test_fuzz.py, each Hypothesis example draws the *shape* of a batch (which valid
message, which mutations, a seed) and throws a batch of inputs built from it, so well over
50,000 inputs run in seconds; a failure shrinks to the smallest shape and reproduces
(`derandomize=True`, no example database). Each test counts what it threw and checks it.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from pool.sv2 import codec
from pool.sv2.certificate import ServerIdentity, new_secret_key, xonly_public_key
from pool.sv2.codec import (
    FrameHeader,
    Sv2DecodeError,
    decode_frame,
    decode_message,
    decode_submit,
)
from pool.sv2.noise import HandshakeError, Initiator, NoiseSession, respond
from tests.support.fuzz import FUZZ
from tests.support.sv2_mutations import (
    MUTATIONS,
    Mutation,
    extend,
    flip,
    overwrite,
    truncate,
)
from tests.support.sv2_samples import SAMPLES

VALID_FRAMES = [m.encode_frame() for m in SAMPLES]


def submit_fields(frame: bytes) -> object:
    """What the pool's share path reads from a frame: its fields, or the error's type."""
    try:
        header = FrameHeader.decode(frame[:6])
        return decode_submit(header, frame[6:])
    except Sv2DecodeError as exc:
        return type(exc)


def decode_only_typed_errors(frame: bytes, counts: Counter[str]) -> None:
    share_path = frame[2:3] in (b"\x1a", b"\x1b")  # a submit: the share path reads it too
    try:
        message = decode_frame(frame)
    except Sv2DecodeError as exc:
        counts["refused"] += 1
        if share_path:
            assert submit_fields(frame) is type(exc)
        return
    if share_path:
        fields = dataclasses.astuple(message)
        assert submit_fields(frame) == (*fields[:6], fields[6] if len(fields) > 6 else None)
        counts["submits"] += 1
    # what decodes re-encodes, and that encoding is stable
    again = message.encode_frame()
    assert decode_frame(again).encode_frame() == again
    counts["decoded"] += 1


def test_decoder_throws_only_its_typed_error() -> None:
    counts: Counter[str] = Counter()
    batch = 250

    @settings(FUZZ, max_examples=250)
    @given(
        base=st.sampled_from(range(len(VALID_FRAMES))),
        mutations=st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=4),
        seed=st.integers(0, 2**32 - 1),
    )
    def run(base: int, mutations: list[Mutation], seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(batch):
            frame = VALID_FRAMES[base]
            for mutate in mutations:
                frame = mutate(rng, frame)
            decode_only_typed_errors(frame, counts)

    run()
    assert counts["refused"] + counts["decoded"] >= 50_000
    assert counts["refused"] > 10_000 and counts["decoded"] > 1_000  # both paths ran
    assert counts["submits"] > 100  # and the share path's decoder beside the general one


def test_pure_garbage_decodes_only_to_typed_errors() -> None:
    counts: Counter[str] = Counter()

    @FUZZ
    @given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 80))
    def run(seed: int, size: int) -> None:
        rng = random.Random(seed)
        for _ in range(100):
            decode_only_typed_errors(rng.randbytes(size), counts)
            header = FrameHeader(rng.choice([0, 0x8000]), rng.choice(list(codec.MESSAGES)), size)
            try:
                decode_message(header, rng.randbytes(size))
                counts["decoded"] += 1
            except Sv2DecodeError:
                counts["refused"] += 1

    run()
    assert counts["refused"] + counts["decoded"] >= 10_000


# --- the encrypted stream -----------------------------------------------------------------------

AUTHORITY = new_secret_key()
IDENTITY = ServerIdentity.issue(AUTHORITY, 3600, int(time.time()))


def sessions() -> tuple[NoiseSession, NoiseSession]:
    initiator = Initiator(xonly_public_key(AUTHORITY))
    reply, server = respond(initiator.act1(), IDENTITY.static_secret, IDENTITY.certificate)
    client, _ = initiator.finish(reply)
    return client, server


def test_stream_reader_in_any_chunking_and_with_damage() -> None:
    counts: Counter[str] = Counter()

    @FUZZ
    @given(
        picks=st.lists(st.sampled_from(range(len(SAMPLES))), min_size=1, max_size=8),
        seed=st.integers(0, 2**32 - 1),
        damage=st.sampled_from(["none", "flip", "garbage", "truncate"]),
    )
    def run(picks: list[int], seed: int, damage: str) -> None:
        rng = random.Random(seed)
        for _ in range(20):
            client, server = sessions()
            wire = b"".join(client.encrypt_message(SAMPLES[i]) for i in picks)
            if damage == "flip":
                wire = flip(rng, wire)
            elif damage == "garbage":
                wire = wire[: rng.randrange(len(wire))] + rng.randbytes(rng.randrange(1, 200))
            elif damage == "truncate":
                wire = truncate(rng, wire)
            received = []
            pool_reader = rng.random() < 0.5  # read_frames, as the pool reads, or feed
            try:
                while wire:
                    cut = rng.randrange(1, 64)
                    if pool_reader:
                        server.absorb(wire[:cut])
                        frames, error = server.read_frames()
                        received += [decode_message(h, p) for h, p in frames]
                        if error is not None:
                            raise error
                    else:
                        received += [decode_message(h, p) for h, p in server.feed(wire[:cut])]
                    wire = wire[cut:]
            except Sv2DecodeError:
                counts["refused"] += 1
            else:
                counts["read"] += 1
            # whatever came out is the start of what was sent, never something else
            assert received == [SAMPLES[i] for i in picks][: len(received)]
            if damage == "none":
                assert len(received) == len(picks)

    run()
    assert counts["refused"] > 100 and counts["read"] > 100


# --- the handshake ------------------------------------------------------------------------------


def test_handshake_garbage_raises_only_handshake_errors() -> None:
    counts: Counter[str] = Counter()

    @FUZZ
    @given(
        mutations=st.lists(st.sampled_from([truncate, extend, flip, overwrite]), max_size=3),
        seed=st.integers(0, 2**32 - 1),
    )
    def run(mutations: list[Mutation], seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(15):
            # the responder: a first message of any length and content
            first = rng.randbytes(rng.choice([0, 1, 32, 63, 64, 64, 65, 128, 234]))
            try:
                reply, _ = respond(first, IDENTITY.static_secret, IDENTITY.certificate)
                assert len(first) == 64 and len(reply) == 234
                counts["responded"] += 1
            except HandshakeError:
                assert len(first) != 64
                counts["refused"] += 1
            # the initiator: a damaged reply
            initiator = Initiator(xonly_public_key(AUTHORITY))
            reply, _ = respond(initiator.act1(), IDENTITY.static_secret, IDENTITY.certificate)
            damaged = reply
            for mutate in mutations:
                damaged = mutate(rng, damaged)
            try:
                initiator.finish(damaged)
                assert damaged == reply
                counts["completed"] += 1
            except HandshakeError:
                assert damaged != reply
                counts["refused"] += 1

    run()
    assert counts["refused"] > 500 and counts["completed"] > 0 and counts["responded"] > 0
