"""Bad input, generated, against a live pool's SV2 port on a regtest node, while a V1 miner and an
SV2 miner on other connections keep finding blocks.

Hypothesis draws the *shape* of a batch (which attack, which message, which mutations, a seed)
and each example throws a batch of inputs built from it, as tests/unit/test_sv2_fuzz.py does;
the examples run on a thread with blocking sockets while the pool serves on the event loop.
The attacks:

- act-1 garbage: random or real ElligatorSwift keys, truncated, extended, damaged;
- after a good handshake: damaged ciphertext (failed decryption), a frame header announcing
  more than the pool reads, a truncated frame, and single frames built from every message and
  then mutated (malformed payloads, unknown types, messages before SetupConnection), both
  before and after SetupConnection;
- floods: a thousand refused shares in one write on an open channel (sometimes followed by a
  damaged frame), and more channels than a connection may open.

Each input's end is predicted from the spec's rules and asserted: the spec's error message
(SetupConnection.Error, OpenMiningChannel.Error, SubmitShares.Error with its code), or the
connection closed by the pool (with nothing, or only the 234-byte handshake reply, sent back).
A message the pool does not act on is ignored, and the connection still answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
import sys
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from pool.app import Pool
from pool.config import StratumV2Config
from pool.sv2.certificate import load_authority_key, xonly_public_key
from pool.sv2.codec import (
    PROTOCOL_MINING,
    REQUIRES_STANDARD_JOBS,
    FrameHeader,
    Message,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetNewPrevHash,
    SetupConnection,
    SetupConnectionSuccess,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    Sv2DecodeError,
    decode_frame,
    decode_message,
)
from pool.sv2.noise import ACT1_SIZE, ACT2_SIZE, ENCRYPTED_HEADER_SIZE, Initiator, NoiseSession
from tests.support.fixtures import pool_config
from tests.support.fuzz import FUZZ
from tests.support.node import RegtestNode
from tests.support.sv2_client import open_standard
from tests.support.sv2_mutations import (
    MUTATIONS,
    Mutation,
    extend,
    fix_length,
    flip,
    overwrite,
    truncate,
)
from tests.support.sv2_samples import SAMPLES
from tests.support.sv2_steady import SteadyMiner

TIMEOUT = 30.0  # for any one answer or close from the pool, on a loaded machine
FLOOD = 2000  # refused shares per flood connection
CONNECTIONS_PER_EXAMPLE = 8
SV2_VERSION = 2
VALID_FRAMES = [m.encode_frame() for m in SAMPLES]
PROBE_CHANNEL = 0xFFFFFFFF  # never opened: a submit to it must get invalid-channel-id
VERSION_OUTSIDE_MASK = 1  # bit 0: never in a version-rolling mask

COUNTS: Counter[str] = Counter()


def setup_connection(protocol: int = PROTOCOL_MINING) -> SetupConnection:
    return SetupConnection(
        protocol, 2, 2, REQUIRES_STANDARD_JOBS, "127.0.0.1", 3336, "fuzz", "", "", ""
    )


# --- a blocking SV2 connection (Hypothesis runs off the event loop) -----------------------------


class Closed(Exception):
    """The pool closed the connection."""


class Wire:
    """One connection to the pool's SV2 port, with blocking sockets."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.session: NoiseSession | None = None
        self.inbox: list[Message] = []

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def recv(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:  # closed with our bytes still unread: a reset
            return b""

    def raw_until_closed(self) -> bytes:
        """Everything the pool sends until it closes (a timeout fails the test)."""
        got = b""
        while data := self.recv():
            got += data
        return got

    def handshake(self, authority_xonly: bytes) -> None:
        initiator = Initiator(authority_xonly)
        self.sock.sendall(initiator.act1())
        reply = b""
        while len(reply) < ACT2_SIZE:
            data = self.recv()
            if not data:
                raise Closed("closed during the handshake")
            reply += data
        self.session, _ = initiator.finish(reply)

    def send(self, *messages: Message) -> None:
        assert self.session is not None
        self.sock.sendall(b"".join(self.session.encrypt_message(m) for m in messages))

    def receive(self) -> Message:
        assert self.session is not None
        while not self.inbox:
            data = self.recv()
            if not data:
                raise Closed("closed by the pool")
            self.inbox += [decode_message(h, p) for h, p in self.session.feed(data)]
        return self.inbox.pop(0)

    def answer(self) -> Message:
        """The next message that is not a job: jobs for open channels come whenever a block
        is found."""
        while isinstance(message := self.receive(), NewMiningJob | SetNewPrevHash):
            pass
        return message

    def messages_until_closed(self) -> list[Message]:
        assert self.session is not None
        messages, self.inbox = self.inbox, []
        while data := self.recv():
            messages += [decode_message(h, p) for h, p in self.session.feed(data)]
        return messages

    def setup(self) -> None:
        self.send(setup_connection())
        assert isinstance(self.receive(), SetupConnectionSuccess)

    def probe(self) -> list[Message]:
        """A submit to a channel that does not exist: the connection must still answer it with
        SubmitShares.Error. Returns the messages that came before that answer."""
        self.send(SubmitSharesStandard(PROBE_CHANNEL, 0xC0FFEE, 1, 0, 0, 0))
        before = []
        while True:
            message = self.receive()
            if isinstance(message, SubmitSharesError) and message.sequence_number == 0xC0FFEE:
                assert message.error_code == "invalid-channel-id", message
                return before
            before.append(message)


# --- what the spec says happens ----------------------------------------------------------------

CLOSED = "closed"
OPEN = "open"


def expected(frame: bytes, set_up: bool) -> tuple[str, str]:
    """(the error the pool answers with, "" for none; then CLOSED or OPEN) for one whole
    plaintext frame on a connection with or without SetupConnection done."""
    try:
        message = decode_frame(frame)
    except Sv2DecodeError:  # malformed, unknown type, trailing bytes
        return "", CLOSED
    if isinstance(message, SetupConnection):
        if set_up:
            return "", CLOSED  # a second SetupConnection
        if message.protocol != PROTOCOL_MINING:
            return "SetupConnectionError unsupported-protocol", CLOSED
        if not message.min_version <= SV2_VERSION <= message.max_version:
            return "SetupConnectionError protocol-version-mismatch", CLOSED
        return "SetupConnectionSuccess", OPEN
    if not set_up:
        return "", CLOSED  # anything before SetupConnection
    if isinstance(message, OpenStandardMiningChannel | OpenExtendedMiningChannel):
        return "OpenMiningChannelError unknown-user", OPEN  # the samples' address is not regtest's
    if isinstance(message, SubmitSharesStandard | SubmitSharesExtended):
        return "SubmitSharesError invalid-channel-id", OPEN
    return "", OPEN  # what a pool does not act on (a pool's own messages, UpdateChannel, ...)


def describe(message: Message) -> str:
    code = getattr(message, "error_code", None)
    return type(message).__name__ + (f" {code}" if code is not None else "")


def whole_frame(frame: bytes) -> bytes:
    """A frame whose header's length matches its payload (the transport needs that to find the
    frame's end; lengths that lie are the truncated and oversized attacks)."""
    return fix_length(random.Random(0), frame.ljust(6, b"\0"))


# --- the attacks: each throws a batch and counts each input's end -------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    port: int
    authority_xonly: bytes
    address: str  # a regtest address the pool pays


def act1_garbage(target: Target, rng: random.Random, mutations: list[Mutation], base: int) -> None:
    for _ in range(CONNECTIONS_PER_EXAMPLE):
        data = Initiator().act1() if rng.random() < 0.5 else rng.randbytes(ACT1_SIZE)
        for mutate in mutations:
            if mutate in (truncate, extend, flip, overwrite):
                data = mutate(rng, data)
        with Wire(target.port) as wire:
            wire.sock.sendall(data)
            if len(data) - ACT1_SIZE < ENCRYPTED_HEADER_SIZE:
                wire.sock.shutdown(socket.SHUT_WR)  # the pool waits for the rest
            back = wire.raw_until_closed()
        # too short: nothing; else any 64 bytes are a key: the reply, then the first frame
        # (what followed the key, or the end of input) ends the connection
        assert len(back) == (0 if len(data) < ACT1_SIZE else ACT2_SIZE), (data.hex(), len(back))
        COUNTS["act-1 garbage: closed"] += 1


def damaged_ciphertext(
    target: Target, rng: random.Random, mutations: list[Mutation], base: int
) -> None:
    for _ in range(CONNECTIONS_PER_EXAMPLE):
        with Wire(target.port) as wire:
            wire.handshake(target.authority_xonly)
            assert wire.session is not None
            if rng.random() < 0.25:
                wire.setup()
            wire_bytes = wire.session.encrypt_frame(VALID_FRAMES[base])
            if rng.random() < 0.5:
                wire_bytes = flip(rng, wire_bytes)
            else:  # garbage from some point on, as long as the frame was or longer
                cut = rng.randrange(len(wire_bytes))
                rest = len(wire_bytes) - cut
                wire_bytes = wire_bytes[:cut] + rng.randbytes(rest + rng.randrange(300))
            wire.sock.sendall(wire_bytes)
            assert wire.messages_until_closed() == []
        COUNTS["damaged ciphertext: closed"] += 1


def oversized_header(
    target: Target, rng: random.Random, mutations: list[Mutation], base: int
) -> None:
    for _ in range(CONNECTIONS_PER_EXAMPLE):
        with Wire(target.port) as wire:
            wire.handshake(target.authority_xonly)
            assert wire.session is not None
            length = rng.randrange(64 * 1024 + 1, 1 << 24)
            header = FrameHeader(rng.choice([0, 0x8000]), rng.randrange(256), length)
            wire.sock.sendall(wire.session.send.encrypt(header.encode()) + rng.randbytes(100))
            assert wire.messages_until_closed() == []
        COUNTS["oversized frame: closed"] += 1


def truncated_frame(
    target: Target, rng: random.Random, mutations: list[Mutation], base: int
) -> None:
    for _ in range(CONNECTIONS_PER_EXAMPLE):
        with Wire(target.port) as wire:
            wire.handshake(target.authority_xonly)
            assert wire.session is not None
            wire_bytes = wire.session.encrypt_frame(VALID_FRAMES[base])
            wire.sock.sendall(wire_bytes[: rng.randrange(len(wire_bytes))])
            wire.sock.shutdown(socket.SHUT_WR)
            assert wire.messages_until_closed() == []
        COUNTS["truncated frame: closed"] += 1


def mutated_frames(set_up: bool) -> Callable[[Target, random.Random, list[Mutation], int], None]:
    def attack(target: Target, rng: random.Random, mutations: list[Mutation], base: int) -> None:
        for n in range(CONNECTIONS_PER_EXAMPLE):
            frame = VALID_FRAMES[base if n == 0 else rng.randrange(len(VALID_FRAMES))]
            if rng.random() < 0.75:  # else the valid message itself (e.g. before setup)
                for mutate in mutations:
                    frame = mutate(rng, frame)
            frame = whole_frame(frame)
            answer, end = expected(frame, set_up)
            with Wire(target.port) as wire:
                wire.handshake(target.authority_xonly)
                assert wire.session is not None
                if set_up:
                    wire.setup()
                wire.sock.sendall(wire.session.encrypt_frame(frame))
                if end == CLOSED:
                    got = [describe(m) for m in wire.messages_until_closed()]
                    assert got == ([answer] if answer else []), (frame.hex(), got)
                elif answer:
                    got_one = describe(wire.receive())
                    assert got_one == answer, (frame.hex(), got_one)
                    wire.probe()
                else:  # ignored: at most an error about it, and the connection still answers
                    before = wire.probe()
                    assert all(type(m).__name__.endswith("Error") for m in before), before
            stage = "after setup" if set_up else "before setup"
            COUNTS[f"mutated frame {stage}: {answer or 'no answer'}, {end}"] += 1

    return attack


def refused_share(rng: random.Random, channel_id: int, job: NewMiningJob, sequence: int) -> tuple[
    Message, set[str]
]:
    """A share the pool must refuse (never a block: regtest makes most headers blocks), and
    the error codes it may refuse it with (a new block can make any job stale meanwhile)."""
    kind = rng.randrange(5)
    stale_job = rng.choice([0, rng.randrange(1 << 31, 1 << 32)])  # never a job id the pool gave
    nonce, ntime = rng.getrandbits(32), rng.getrandbits(32)
    if kind == 0:
        other = rng.choice([0, channel_id + 1, PROBE_CHANNEL])
        return SubmitSharesStandard(other, sequence, job.job_id, nonce, ntime, job.version), {
            "invalid-channel-id"
        }
    if kind == 1:
        return SubmitSharesStandard(channel_id, sequence, stale_job, nonce, ntime, job.version), {
            "stale-share"
        }
    if kind == 2:
        version = job.version ^ VERSION_OUTSIDE_MASK
        return SubmitSharesStandard(channel_id, sequence, job.job_id, nonce, ntime, version), {
            "invalid-version", "stale-share"
        }
    extranonce = rng.randbytes(rng.randrange(33))
    job_id = job.job_id if kind == 3 else stale_job
    # an extended share on a standard channel
    share = SubmitSharesExtended(
        channel_id, sequence, job_id, nonce, ntime, job.version, extranonce
    )
    return share, {"invalid-channel-id", "stale-share"} if kind == 3 else {"stale-share"}


def open_channel(wire: Wire, user: str) -> tuple[int, NewMiningJob]:
    wire.send(open_standard(user))
    opened = wire.answer()
    assert isinstance(opened, OpenStandardMiningChannelSuccess), opened
    job = wire.receive()
    assert isinstance(job, NewMiningJob) and job.channel_id == opened.channel_id, job
    assert isinstance(wire.receive(), SetNewPrevHash)
    return opened.channel_id, job


def flood(target: Target, rng: random.Random, mutations: list[Mutation], base: int) -> None:
    with Wire(target.port) as wire:
        wire.handshake(target.authority_xonly)
        assert wire.session is not None
        wire.setup()
        channel_id, job = open_channel(wire, f"{target.address}.flood")
        shares = [refused_share(rng, channel_id, job, seq) for seq in range(FLOOD)]
        wire_bytes = b"".join(wire.session.encrypt_message(share) for share, _ in shares)
        damaged = rng.random() < 0.5
        if damaged:  # and then a frame that fails decryption
            wire_bytes += flip(rng, wire.session.encrypt_message(setup_connection()))
        wire.sock.sendall(wire_bytes)
        errors: dict[int, str] = {}
        while len(errors) < FLOOD:
            message = wire.receive()
            if isinstance(message, SubmitSharesError):
                assert message.sequence_number not in errors, message
                errors[message.sequence_number] = message.error_code
            else:  # new jobs as blocks are found meanwhile: nothing else
                assert isinstance(message, NewMiningJob | SetNewPrevHash), message
        for seq, (share, codes) in enumerate(shares):
            assert errors[seq] in codes, (share, errors[seq])
            COUNTS[f"flood: SubmitSharesError {errors[seq]}"] += 1
        if damaged:
            rest = wire.messages_until_closed()
            assert all(isinstance(m, NewMiningJob | SetNewPrevHash) for m in rest), rest
            COUNTS["flood then damaged frame: closed"] += 1
        else:
            wire.probe()


def too_many_channels(
    target: Target, rng: random.Random, mutations: list[Mutation], base: int
) -> None:
    with Wire(target.port) as wire:
        wire.handshake(target.authority_xonly)
        wire.setup()
        opened = 0
        while True:
            wire.send(open_standard(f"{target.address}.ch{opened}"))
            reply = wire.answer()
            if isinstance(reply, OpenMiningChannelError):
                break
            assert isinstance(reply, OpenStandardMiningChannelSuccess), reply
            opened += 1
            COUNTS["channel opened"] += 1
        assert reply.error_code == "max-channels-reached" and opened >= 1, (reply, opened)
        COUNTS["too many channels: OpenMiningChannelError max-channels-reached"] += 1
        wire.probe()


ATTACKS = {
    "act-1 garbage": act1_garbage,
    "damaged ciphertext": damaged_ciphertext,
    "oversized frame": oversized_header,
    "truncated frame": truncated_frame,
    "mutated frame before setup": mutated_frames(set_up=False),
    "mutated frame after setup": mutated_frames(set_up=True),
    "flood": flood,
    "too many channels": too_many_channels,
}


def throw(target: Target, examples: int) -> None:
    @settings(FUZZ, max_examples=examples)
    @given(
        attack=st.sampled_from(list(ATTACKS)),
        base=st.sampled_from(range(len(VALID_FRAMES))),
        mutations=st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=4),
        seed=st.integers(0, 2**32 - 1),
    )
    def run(attack: str, base: int, mutations: list[Mutation], seed: int) -> None:
        try:
            ATTACKS[attack](target, random.Random(seed), mutations, base)
        except TimeoutError:
            traceback.print_exc()
            raise AssertionError(f"{attack}: no answer and no close in {TIMEOUT:g} s") from None

    run()


# --- the live pool ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture
async def sv2_pool(node: RegtestNode, tmp_path: Path) -> AsyncIterator[Pool]:
    # Shares every two seconds or so (each one a block on regtest); no disconnect for invalid
    # shares, so a flood is answered share by share.
    config = pool_config(
        node, tmp_path / "data", start_difficulty=0.00002, share_interval_seconds=2,
        max_invalid_shares_per_minute=10**7,
    )  # fmt: skip
    sv2 = StratumV2Config(
        port=free_port(), host="127.0.0.1",
        authority_key_file=tmp_path / "data" / "sv2_authority.key",
    )  # fmt: skip
    pool = Pool(dataclasses.replace(config, stratum_v2=sv2))
    await pool.start()
    try:
        yield pool
    finally:
        async with asyncio.timeout(90):
            await pool.stop()


async def test_live_sv2_fuzzing_disturbs_no_other_miner(
    sv2_pool: Pool, node: RegtestNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pool = sv2_pool
    assert pool.sv2 is not None
    cfg = pool.full_config.stratum_v2
    assert cfg.authority_key_file is not None
    address = node.new_address("bech32")
    target = Target(
        pool.sv2.port, xonly_public_key(load_authority_key(cfg.authority_key_file)), address
    )
    v1_miner = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "solopool_tools.miner",
        "--url", f"stratum+tcp://127.0.0.1:{pool.stratum.port}",
        "--user", f"{address}.steadyv1", "--blocks", "100000", "--seconds", "300",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    stop = asyncio.Event()
    sv2_miner = await SteadyMiner.start(target.port, f"{address}.steadysv2", pause=0.2)
    sv2_mining = asyncio.create_task(sv2_miner.run(stop))
    try:
        async with asyncio.timeout(60):
            while not (steady := [s for s in pool.stratum.sessions if s.accepted > 0]):
                await asyncio.sleep(0.05)
            while not sv2_miner.stats["accepted"]:
                await asyncio.sleep(0.05)
        (v1_session,) = steady
        v1_before, sv2_before = v1_session.accepted, sv2_miner.stats["accepted"]
        sv2_blocks_before = sv2_miner.stats["blocks"]
        blocks_before = len(pool.submitter.history)
        started = time.monotonic()
        COUNTS.clear()
        await asyncio.to_thread(throw, target, 320)
        elapsed = time.monotonic() - started
        # Both miners mined all along: shares accepted and blocks found during the barrage.
        assert not sv2_mining.done() and v1_session in pool.stratum.sessions
        assert v1_session.accepted > v1_before, COUNTS
        assert sv2_miner.stats["accepted"] > sv2_before, sv2_miner.stats
        assert sv2_miner.stats["blocks"] > sv2_blocks_before, sv2_miner.stats
        # (an SV2 block's worker is ADDRESS.worker, as V1's, once SV2 channels name it so)
        found = {b.worker.rpartition(".")[2] for b in pool.submitter.history[blocks_before:]}
        assert {"steadyv1", "steadysv2"} <= found, found
    finally:
        stop.set()
        if v1_miner.returncode is None:
            v1_miner.terminate()
        await v1_miner.wait()
        async with asyncio.timeout(30):
            await sv2_mining
        sv2_miner.client.close()
    await pool.submitter.drain(10)
    statuses = [b.status for b in pool.submitter.history]
    assert "rejected" not in statuses, statuses
    # Only the errors the spec names, nothing else, from the steady SV2 miner.
    assert set(sv2_miner.stats) <= {"accepted", "blocks", "stale-share"}, sv2_miner.stats

    inputs = sum(COUNTS.values())
    assert inputs >= 50_000, COUNTS
    for attack in ATTACKS:
        assert any(key.startswith(attack) for key in COUNTS), (attack, COUNTS)
    # the oracle's every branch ran
    for end in ("no answer, closed", "SetupConnectionSuccess, open", "no answer, open",
                "unknown-user, open", "invalid-channel-id, open", "unsupported-protocol, closed"):
        assert any(end in key for key in COUNTS), (end, COUNTS)

    # Nothing crashed: no tracebacks, no task exceptions, no errors from the SV2 server.
    bad = [
        r for r in caplog.records
        if r.exc_info or "Traceback" in r.getMessage() or "exception" in r.getMessage().lower()
        or (r.levelno >= logging.ERROR and (r.name.startswith("pool.sv2") or r.name == "asyncio"))
    ]  # fmt: skip
    assert bad == [], [r.getMessage() for r in bad[:5]]
    # Every attacking connection was let go; the steady miners' are gone too.
    async with asyncio.timeout(20):
        while pool.sv2.connections:
            await asyncio.sleep(0.05)
    print(
        f"live SV2 fuzz: {inputs} inputs in {elapsed:.1f} s: {dict(COUNTS)}; "
        f"steady SV2 miner {dict(sv2_miner.stats)}; V1 miner {v1_session.accepted} accepted"
    )
