"""A simulated Stratum V2 miner for the submit run, beside the V1 `Miner` and driven by the same
`ClientRunner`: the Noise handshake (pool.sv2.noise's initiator; the authority key is not
checked), SetupConnection and OpenStandardMiningChannel or OpenExtendedMiningChannel pipelined
after it, then jobs, SetNewPrevHash and SetTarget followed as a miner does, and submits
pipelined with a bounded window and matched by sequence number. Only the submit run speaks
SV2; the fan-out and connection runs are V1 only.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections import deque
from typing import TYPE_CHECKING

from pool.consensus.block import build_header
from pool.consensus.merkle import merkle_root_from_branch
from pool.consensus.serialize import sha256d
from pool.consensus.target import difficulty_to_target, target_to_difficulty
from pool.sv2.codec import (
    CHANNEL_MSG_BIT,
    PROTOCOL_MINING,
    REQUIRES_STANDARD_JOBS,
    FrameHeader,
    Message,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetNewPrevHash,
    SetTarget,
    SetupConnection,
    SetupConnectionError,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    SubmitSharesSuccess,
    Sv2DecodeError,
    decode_message,
    u256_to_int,
)
from pool.sv2.noise import ACT2_SIZE, Initiator, NoiseSession

from .mining import ValidShares

if TYPE_CHECKING:
    from .client import ClientRunner

STANDARD = "standard"
EXTENDED = "extended"
CHANNELS = (STANDARD, EXTENDED)
_SUBMIT = struct.Struct("<IIIIII")  # channel, sequence, job, nonce, ntime, version
_SUBMIT_STANDARD_HEADER = FrameHeader(
    CHANNEL_MSG_BIT, SubmitSharesStandard.MSG_TYPE, _SUBMIT.size
).encode()
_SUCCESS = SubmitSharesSuccess.MSG_TYPE
_ERROR = SubmitSharesError.MSG_TYPE
_from_bytes = int.from_bytes


class Sv2Miner(asyncio.Protocol):
    """One simulated SV2 miner connection (one channel)."""

    __slots__ = (
        "runner", "index", "user", "extended", "transport", "ready", "initiator", "session",
        "handshake", "channel_id", "target", "difficulty", "extranonce_prefix",
        "extranonce_size", "jobs", "job", "prev", "nbits", "en2", "sequence", "nonce",
        "pending", "submitting", "passive", "closed", "close_reason", "connected_at",
        "ready_at", "recent", "got", "valid", "submit_header",
    )  # fmt: skip

    def __init__(
        self, runner: ClientRunner, index: int, user: str, suggest: float | None, extended: bool
    ) -> None:
        self.runner = runner
        self.index = index
        self.user = user
        self.extended = extended
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = runner.loop.create_future()
        self.initiator: Initiator | None = Initiator()
        self.session: NoiseSession | None = None
        self.handshake = b""
        self.channel_id = 0
        self.target = difficulty_to_target(1)
        self.difficulty = 1.0
        self.extranonce_prefix = b""
        self.extranonce_size = 0
        self.jobs: dict[int, NewMiningJob | NewExtendedMiningJob] = {}
        self.job: NewMiningJob | NewExtendedMiningJob | None = None
        self.prev: SetNewPrevHash | None = None
        self.nbits = 0
        self.en2 = b""
        self.sequence = 0
        self.nonce = random.getrandbits(32)
        self.pending: dict[int, float] = {}
        self.submitting = False
        self.passive = False
        self.closed = False
        self.close_reason = ""
        self.connected_at = 0.0
        self.ready_at = 0.0
        self.recent: deque[tuple[float, bytes]] = deque(maxlen=1)  # (no fan-out over SV2)
        self.got: float | None = None
        self.valid = ValidShares()
        self.submit_header = b""

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.connected_at = time.monotonic()
        assert self.transport is not None and self.initiator is not None
        self.transport.write(self.initiator.act1())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.submitting = False
        if not self.close_reason:
            self.close_reason = f"closed by the pool ({exc})" if exc else "closed by the pool"
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(self.close_reason))
        self.runner.on_closed(self)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.session is None:
            data = self._finish_handshake(data)
            if self.session is None:
                return
        freed = 0
        try:
            for header, payload in self.session.feed(data):
                msg_type = header.msg_type
                if msg_type == _ERROR:
                    freed += self._answered(_from_bytes(payload[4:8], "little"), now, payload)
                elif msg_type == _SUCCESS:
                    freed += self._acknowledged(_from_bytes(payload[4:8], "little"), now)
                else:
                    self._message(decode_message(header, payload), now)
        except Sv2DecodeError as exc:
            self.fail(f"unreadable SV2 data from the pool: {exc}")
            return
        if not self.ready.done():
            self._check_ready(now)
        if freed and self.submitting:
            self._send_submits(freed, now)

    # --- handshake and work ---------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        self.close_reason = reason
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def _finish_handshake(self, data: bytes) -> bytes:
        """Collect the 234-byte reply; once complete, set up and open the channel (pipelined).
        Returns what followed the reply."""
        self.handshake += data
        if len(self.handshake) < ACT2_SIZE or self.initiator is None:
            return b""
        reply, rest = self.handshake[:ACT2_SIZE], self.handshake[ACT2_SIZE:]
        try:
            self.session, _ = self.initiator.finish(reply)
        except Sv2DecodeError as exc:
            self.fail(f"SV2 handshake failed: {exc}")
            return b""
        self.initiator, self.handshake = None, b""
        flags = 0 if self.extended else REQUIRES_STANDARD_JOBS
        setup = SetupConnection(
            PROTOCOL_MINING, 2, 2, flags, "127.0.0.1", 0, "solopool-bench", "", "", ""
        )
        open_channel: Message = (
            OpenExtendedMiningChannel(1, self.user, 1e12, b"\xff" * 32, 0)
            if self.extended
            else OpenStandardMiningChannel(1, self.user, 1e12, b"\xff" * 32)
        )
        assert self.transport is not None
        self.transport.write(
            self.session.encrypt_message(setup) + self.session.encrypt_message(open_channel)
        )
        return rest

    def _message(self, message: Message, now: float) -> None:
        if isinstance(message, NewMiningJob | NewExtendedMiningJob):
            self.jobs[message.job_id] = message
            if message.min_ntime is not None:  # for the current previous block: at once
                self._set_job(message)
        elif isinstance(message, SetNewPrevHash):
            self.prev = message
            self.nbits = message.nbits
            job = self.jobs.get(message.job_id)
            self.jobs = {} if job is None else {message.job_id: job}
            if job is not None:
                self._set_job(job)
        elif isinstance(message, SetTarget):
            self._set_target(message.maximum_target)
        elif isinstance(message, OpenStandardMiningChannelSuccess):
            self.channel_id = message.channel_id
            self.extranonce_prefix = message.extranonce_prefix
            self._set_target(message.target)
        elif isinstance(message, OpenExtendedMiningChannelSuccess):
            self.channel_id = message.channel_id
            self.extranonce_prefix = message.extranonce_prefix
            self.extranonce_size = message.extranonce_size
            self._set_target(message.target)
        elif isinstance(message, SetupConnectionError | OpenMiningChannelError):
            self.fail(f"{type(message).__name__}: {message.error_code}")

    def _set_target(self, target: bytes) -> None:
        self.target = u256_to_int(target)
        self.difficulty = target_to_difficulty(self.target) if self.target else 0.0
        self.valid.forget()

    def _set_job(self, job: NewMiningJob | NewExtendedMiningJob) -> None:
        self.job = job
        self.en2 = random.randbytes(self.extranonce_size) if self.extended else b""
        self.valid.forget()
        if self.extended:
            self.submit_header = FrameHeader(
                CHANNEL_MSG_BIT, SubmitSharesExtended.MSG_TYPE, _SUBMIT.size + 1 + len(self.en2)
            ).encode()
        else:
            self.submit_header = _SUBMIT_STANDARD_HEADER
        counters = self.runner.counters
        if counters is not None:
            counters.notifies += 1

    def _check_ready(self, now: float) -> None:
        if self.channel_id and self.job is not None and self.prev is not None:
            self.ready_at = now
            self.ready.set_result(None)

    def _answered(self, sequence: int, now: float, payload: bytes) -> int:
        sent = self.pending.pop(sequence, None)
        if sent is None:
            return 0
        counters = self.runner.counters
        if counters is not None:
            counters.count(now, sent, payload[9 : 9 + payload[8]].decode(errors="replace"))
        return 1

    def _acknowledged(self, last_sequence: int, now: float) -> int:
        """SubmitShares.Success acknowledges every submit up to `last_sequence`."""
        pending = self.pending
        counters = self.runner.counters
        freed = 0
        while pending:
            sequence = next(iter(pending))
            if sequence > last_sequence:
                break
            sent = pending.pop(sequence)
            freed += 1
            if counters is not None:
                counters.count(now, sent, None)
        return freed

    def start_submitting(self, window: int, now: float) -> None:
        if self.closed or self.job is None:
            return
        self.submitting = True
        self._send_submits(window, now)

    def _send_submits(self, count: int, now: float) -> None:
        runner = self.runner
        job, prev, session = self.job, self.prev, self.session
        if now >= runner.end_at or self.transport is None or self.closed:
            self.submitting = False
            return
        assert job is not None and prev is not None and session is not None
        ntime = max(prev.min_ntime, job.min_ntime or 0)
        tail = b"" if not self.extended else bytes([len(self.en2)]) + self.en2
        head = self.submit_header
        pack = _SUBMIT.pack
        encrypt = session.send.encrypt
        pending = self.pending
        ratio = runner.valid_ratio
        sequence = self.sequence
        parts = []
        for _ in range(count):
            if ratio and self.valid.take(ratio):
                nonce = self._mine(job, prev, ntime)
            else:
                nonce = self.nonce = (self.nonce + 1) & 0xFFFFFFFF
            sequence += 1
            payload = pack(self.channel_id, sequence, job.job_id, nonce, ntime, job.version)
            parts.append(encrypt(head))
            parts.append(encrypt(payload + tail))
            pending[sequence] = now
        self.sequence = sequence
        if runner.counters is not None:
            runner.counters.sent += count
        self.transport.write(b"".join(parts))

    def _mine(self, job: NewMiningJob | NewExtendedMiningJob, prev: SetNewPrevHash,
              ntime: int) -> int:  # fmt: skip
        valid = self.valid
        if not valid.prepared:
            if isinstance(job, NewExtendedMiningJob):
                coinbase = (
                    job.coinbase_tx_prefix + self.extranonce_prefix + self.en2
                    + job.coinbase_tx_suffix
                )  # fmt: skip
                root = merkle_root_from_branch(sha256d(coinbase), list(job.merkle_path))
            else:
                root = job.merkle_root
            header = build_header(job.version, prev.prev_hash, root, ntime, prev.nbits, 0)
            valid.prepare(header, self.target, self.runner.max_valid_hashes)
        self.nonce = valid.mine(self.nonce, self.runner.counters, self.runner.max_valid_hashes)
        return self.nonce
