"""Stratum V2 serving, one process: the Noise handshake, SetupConnection, standard and
extended mining channels, jobs from the pool's JobManager and shares judged by pool.shares.

A connection knows the pool only through `pool.services` (the same services a V1 session
uses): payouts resolved by the PayoutResolver, shares to the ShareSink, blocks to the
BlockSink, which spools a block before the miner hears SubmitShares.Success. Connections
count against the V1 server's connection limits and take their extranonce1 from its table
(a `ConnectionTable`). Anything a miner sends that the protocol does not allow closes that
connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from ..config import StratumConfig, StratumV2Config
from ..consensus.address import address_allowed
from ..invalid import CountsInvalidShares
from ..jobs import EXTRANONCE2_SIZE, TemplateError
from ..listen import MAX_WRITE_BUFFER, abort_soon, listen, peer_host, peer_name, sweep_seconds
from ..logsafety import is_plain, miner_text
from ..services import AddressRefused, PoolServices
from ..shares import ERR_OTHER, Share, ShareError, first_submission, share_of, share_target
from .certificate import ServerIdentity
from .channel import Channel, MaxTargetOutOfRange, difficulty_for_hash_rate
from .codec import (
    PROTOCOL_MINING,
    SUBMIT_EXTENDED,
    SUBMIT_STANDARD,
    CloseChannel,
    FrameHeader,
    Message,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    Reconnect,
    SetNewPrevHash,
    SetTarget,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
    SubmitFields,
    Sv2DecodeError,
    UpdateChannel,
    UpdateChannelError,
    decode_message,
    decode_submit,
    int_to_u256,
    submit_error_frame,
    submit_success_frame,
)
from .noise import ACT1_SIZE, NoiseSession, respond

__all__ = ["Channel", "ConnectionTable", "Sv2Connection", "Sv2Server"]

log = logging.getLogger(__name__)

SV2_VERSION = 2
MAX_CHANNELS_PER_CONNECTION = 8
MAX_U64 = (1 << 64) - 1
SPOOL_WAIT_SECONDS = 30.0  # at shutdown: how long found blocks get to be spooled
CLOSE_WAIT_SECONDS = 2.0  # at shutdown: how long miners get to take their Reconnect
NOT_ALLOWED = "address-not-allowed"
SUBMIT_TYPES = (SUBMIT_STANDARD, SUBMIT_EXTENDED)


class Sv2ProtocolError(Exception):
    """The miner broke the protocol: close its connection."""


class ConnectionTable(Protocol):
    """The V1 server's connection limits and extranonce1 table, shared with SV2."""

    def admit_other(self, host: str) -> bool: ...  # False: over a limit (refusal logged)

    def leave_other(self, host: str) -> None: ...

    def reserve_extranonce1(self) -> bytes: ...

    def release_extranonce1(self, extranonce1: bytes) -> None: ...

    def recall_difficulty(self, username: str) -> float | int | None: ...

    def remember_difficulty(self, username: str, difficulty: float) -> None: ...


class Sv2Connection(asyncio.Protocol, CountsInvalidShares):
    """One miner connection: handshake, setup, then frames until it closes. An asyncio
    Protocol, as a V1 connection: what a read brings is handled in place, and its answers
    leave in one write. A frame whose answer must wait (a channel's payout check, a found
    block being spooled) stops reading until it is done; the frames after it wait their turn."""

    def __init__(self, server: Sv2Server) -> None:
        self.server = server
        self.services = server.services
        self.transport: asyncio.Transport | None = None
        self.host = ""
        self.connected_at = self.last_activity = time.monotonic()
        self.closed = False
        self.admitted = False
        self.noise: NoiseSession | None = None
        self._act1 = bytearray()  # the handshake's first message, until all 64 bytes are in
        self.setup: SetupConnection | None = None
        self.channels: dict[int, Channel] = {}
        self._channel_ids = itertools.count(1)
        self.opened = False  # a channel was opened: from then on the idle timeout applies
        self.spooling = 0  # found blocks being spooled before their SubmitShares.Success
        self.start_invalid_count(self.connected_at)  # refused shares, as V1 counts them
        self.busy = False  # a frame's answer is being waited for: reading is paused
        # Frames already read behind the one being waited for, and the error that ended
        # that read, if any.
        self._queued: tuple[list[tuple[FrameHeader, bytes]], Sv2DecodeError | None] | None = None
        # While the frames of one read are handled, replies collect here and leave in one
        # write (one system call per read, not per reply), and accepted shares of a channel
        # are answered by one SubmitShares.Success (channel_id -> [last sequence number,
        # count, sum of difficulties]), as the spec allows and the firmware reads.
        self._pending: list[bytes] | None = None
        self._acks: dict[int, list[int]] = {}

    @property
    def peer(self) -> str:
        return peer_name(self.host, self.transport)

    # asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        server = self.server
        self.host = peer_host(transport.get_extra_info("peername"))
        if server.closing or (server.table is not None and not server.table.admit_other(self.host)):
            self.closed = True
            transport.close()  # over a limit: refused before any handshake
            return
        self.admitted = True
        server.connections.add(self)
        assert self.transport is not None
        self.transport.set_write_buffer_limits(high=server.max_write_buffer)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = time.monotonic()
        if self.noise is None:
            data = self._handshake(data)
            if self.noise is None:
                return
        self.noise.absorb(data)
        if not self.busy:
            self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.release_channels()
        if self.admitted:
            self.admitted = False
            self.server.connections.discard(self)
            if self.server.table is not None:
                self.server.table.leave_other(self.host)

    def pause_writing(self) -> None:
        """More than `max_write_buffer` bytes queued: the miner is not reading. Drop it."""
        if self.closed:
            return
        log.info("%s: SV2 miner not reading its messages; dropping", self.peer)
        self.closed = True  # nothing more is written to it
        abort_soon(self.transport)

    def resume_writing(self) -> None:
        pass

    # reading ------------------------------------------------------------------------------------

    def _handshake(self, data: bytes) -> bytes:
        """The initiator's 64 bytes -> the reply; what came after them is returned."""
        need = ACT1_SIZE - len(self._act1)
        self._act1 += data[:need]
        if len(self._act1) < ACT1_SIZE:
            return b""
        identity = self.server.identity
        reply, self.noise = respond(bytes(self._act1), identity.static_secret,
                                    identity.certificate)  # fmt: skip
        self._act1 = bytearray()
        self.write(reply)
        return data[need:]

    def _process(self) -> None:
        """The frames buffered so far, in order, until one must wait (the rest are kept for
        `_resume`); their answers in one write."""
        noise = self.noise
        assert noise is not None
        pending: list[bytes] = []
        self._pending = pending
        try:
            while True:
                queued, self._queued = self._queued, None
                frames, error = queued or noise.read_frames()
                for index, (header, payload) in enumerate(frames):
                    if self.closed:
                        return
                    if header[1] in SUBMIT_TYPES and self.setup is not None:
                        waiting = self.on_submit(decode_submit(header, payload))
                    else:
                        waiting = self.handle(decode_message(header, payload))
                    if waiting is not None:
                        self._queued = (frames[index + 1 :], error)
                        self._wait(waiting)
                        return
                if error is not None:
                    raise error
                if queued is None:  # (after queued frames: what came while they waited)
                    break
        except (Sv2DecodeError, Sv2ProtocolError) as exc:
            log.info("%s: SV2 connection closed: %s", self.peer, miner_text(str(exc)))
            self.close()
        except Exception:  # a bug here must cost this connection only
            log.exception("%s: SV2 frame failed; closing", self.peer)
            self.close()
        finally:
            self._flush(pending)

    def _wait(self, waiting: Coroutine[Any, Any, None]) -> None:
        self.busy = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
        task = asyncio.ensure_future(waiting)
        self.server.tasks.add(task)
        task.add_done_callback(self._resume)

    def _resume(self, task: asyncio.Future[None]) -> None:
        self.server.tasks.discard(task)
        self.busy = False
        if self.closed or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if isinstance(exc, Sv2DecodeError | Sv2ProtocolError):
                log.info("%s: SV2 connection closed: %s", self.peer, miner_text(str(exc)))
            else:
                log.error("%s: SV2 request failed: %r", self.peer, exc)
            self.close()
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
        self._process()

    # writing ------------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        self.send_frame(message.encode_frame())

    def send_frame(self, frame: bytes) -> None:
        """A plaintext frame, to be encrypted and sent (after the acknowledgements it must
        follow); while a read is handled, with its other answers, in one write."""
        assert self.noise is not None
        if self._acks:
            self._send_acks()
        if self._pending is not None:
            self._pending.append(frame)
        else:
            self.write(self.noise.encrypt_frame(frame))

    def write(self, data: bytes) -> None:
        """Bytes on the wire, as they are (the handshake's, and encrypted frames); nothing
        once the connection is closed or being dropped."""
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing():
            transport.write(data)

    def _send_acks(self) -> None:
        acks, self._acks = self._acks, {}
        for channel_id, (last, count, total) in acks.items():
            self.send_frame(submit_success_frame(channel_id, last, count, min(total, MAX_U64)))

    def _flush(self, pending: list[bytes]) -> None:
        """The answers gathered while a read was handled, encrypted and written at once."""
        if self._acks:
            self._send_acks()
        self._pending = None
        if pending:
            frames = pending[:]
            pending.clear()  # (close() may have flushed it already)
            assert self.noise is not None
            self.write(self.noise.encrypt_frames(frames))

    def close(self) -> None:
        """Close the connection after what is already written."""
        if self._pending is not None:
            self._flush(self._pending)
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def release_channels(self) -> None:
        for channel in self.channels.values():
            self.server.release(channel)
        self.channels.clear()

    def handle(self, message: Message) -> Coroutine[Any, Any, None] | None:
        """Every message but shares (`_process` hands those to `on_submit` once set up)."""
        if isinstance(message, SetupConnection):
            self.on_setup(message)
        elif self.setup is None:
            raise Sv2ProtocolError(f"{type(message).__name__} before SetupConnection")
        elif isinstance(message, OpenStandardMiningChannel | OpenExtendedMiningChannel):
            return self.on_open(message)
        elif isinstance(message, UpdateChannel):
            self.on_update(message)
        elif isinstance(message, CloseChannel):
            self.on_close_channel(message)
        else:
            log.debug("%s: ignoring SV2 %s", self.peer, type(message).__name__)
        return None

    def on_setup(self, message: SetupConnection) -> None:
        if self.setup is not None:
            raise Sv2ProtocolError("a second SetupConnection")
        if message.protocol != PROTOCOL_MINING:
            self.send(SetupConnectionError(0, "unsupported-protocol"))
            raise Sv2ProtocolError(f"protocol {message.protocol} is not the mining protocol")
        if not message.min_version <= SV2_VERSION <= message.max_version:
            self.send(SetupConnectionError(0, "protocol-version-mismatch"))
            raise Sv2ProtocolError("no common protocol version")
        self.setup = message
        self.send(SetupConnectionSuccess(used_version=SV2_VERSION, flags=0))

    async def open_refusal(
        self, message: OpenStandardMiningChannel | OpenExtendedMiningChannel, address: str
    ) -> str | bytes:
        """The payout script for the channel, or the spec's error code refusing it."""
        if len(self.channels) >= MAX_CHANNELS_PER_CONNECTION:
            return "max-channels-reached"
        username = message.user_identity
        # As V1's authorize: a name with control or invisible characters is refused, not
        # cleaned (it names the payout address), and worker names are bounded (stats, API).
        limit = self.server.stratum_config.max_worker_name_length
        if not is_plain(username) or len(username.partition(".")[2]) > limit:
            log.info("%s: SV2 channel refused: user identity %r is not plain text or its "
                     "worker name is over %d characters ([stratum] max_worker_name_length)",
                     self.peer, miner_text(username), limit)  # fmt: skip
            return "unknown-user"
        if isinstance(message, OpenExtendedMiningChannel) and (
            message.min_extranonce_size > EXTRANONCE2_SIZE
        ):
            return "min-extranonce-size-too-large"
        if not address_allowed(self.server.stratum_config.allowed_addresses, address):
            log.info("%s: SV2 channel refused: %s is not in [stratum] allowed_addresses",
                     self.peer, miner_text(address))  # fmt: skip
            return "unknown-user"
        try:
            return await self.server.services.resolve_payout(address)
        except AddressRefused as exc:
            log.info("%s: SV2 channel refused for %r: %s", self.peer, miner_text(address), exc)
            return "unknown-user"

    async def on_open(self, message: OpenStandardMiningChannel | OpenExtendedMiningChannel) -> None:
        username = message.user_identity
        address = username.partition(".")[0]
        payout_script = await self.open_refusal(message, address)
        if isinstance(payout_script, str):
            self.send(OpenMiningChannelError(message.request_id, payout_script))
            return
        cfg = self.server.stratum_config
        assert self.setup is not None
        channel = Channel(
            next(self._channel_ids), isinstance(message, OpenExtendedMiningChannel), username,
            address, payout_script, self.server.new_extranonce1(), cfg,
            miner_text(f"{self.setup.vendor} {self.setup.firmware}".strip()) + " (SV2)",
            time.monotonic(),
        )  # fmt: skip
        try:
            channel.limit_target(message.max_target, cfg)
        except MaxTargetOutOfRange as exc:
            log.info("%s: SV2 channel refused: %s", self.peer, exc)
            self.server.release_extranonce1(channel.extranonce1)
            self.send(OpenMiningChannelError(message.request_id, "max-target-out-of-range"))
            return
        # A worker coming back (over either protocol) gets the difficulty it had.
        remembered = self.server.recall_difficulty(username)
        if remembered is not None:
            channel.difficulty = remembered
        channel.difficulty = channel.clamp(channel.difficulty, self.network_difficulty())
        self.channels[channel.channel_id] = channel
        self.opened = True
        self.server.register(channel)
        self.send_open_success(message.request_id, channel)
        log.info(
            "%s: SV2 %s channel %d for %s", self.peer,
            "extended" if channel.extended else "standard", channel.channel_id,
            miner_text(username),
        )  # fmt: skip
        self.send_job(channel, clean=True)

    def send_open_success(self, request_id: int, channel: Channel) -> None:
        target = int_to_u256(channel.target)
        if channel.extended:
            self.send(OpenExtendedMiningChannelSuccess(
                request_id, channel.channel_id, target, EXTRANONCE2_SIZE, channel.extranonce1, 0,
            ))  # fmt: skip
        else:
            self.send(OpenStandardMiningChannelSuccess(
                request_id, channel.channel_id, target,
                channel.extranonce1 + channel.extranonce2, 0,
            ))  # fmt: skip

    def network_difficulty(self) -> float | None:
        template = self.server.services.jobs.template
        return template.network_difficulty if template is not None else None

    def send_job(self, channel: Channel, clean: bool) -> None:
        """The current job for the channel: a future job + SetNewPrevHash on a new block (one
        message switches the miner), else a job that applies at once."""
        try:
            job = self.server.services.jobs.job_for(channel.payout_script)
        except TemplateError:
            return
        job_id = self.server.next_job_id()
        channel.add_job(job_id, job, clean)
        min_ntime = None if clean else job.ntime  # None: a future job, started by SetNewPrevHash
        if channel.extended:
            self.send(NewExtendedMiningJob(
                channel.channel_id, job_id, min_ntime, job.version, True, tuple(job.branch),
                job.coinbase.coinb1, job.coinbase.coinb2,
            ))  # fmt: skip
        else:
            root = job.merkle_root(channel.extranonce1 + channel.extranonce2)
            self.send(NewMiningJob(channel.channel_id, job_id, min_ntime, job.version, root))
        if clean:
            self.grace_stale_shares(time.monotonic())  # shares in flight on the old one are stale
            template = job.template
            prev = bytes.fromhex(template.prev_hash)[::-1]
            self.send(SetNewPrevHash(channel.channel_id, job_id, prev, job.ntime, template.bits))

    def set_difficulty(self, channel: Channel, difficulty: float) -> None:
        """A new difficulty: SetTarget, then a job it applies to (the firmware applies a
        target from the next job on)."""
        if difficulty == channel.difficulty:
            return
        log.debug("%s: SV2 channel %d difficulty %s -> %s", self.peer, channel.channel_id,
                  channel.difficulty, difficulty)  # fmt: skip
        channel.difficulty = difficulty
        self.send(SetTarget(channel.channel_id, int_to_u256(channel.target)))
        self.send_job(channel, clean=False)

    def on_update(self, message: UpdateChannel) -> None:
        """The miner's nominal hash rate sets the difficulty for the share interval, within
        the [stratum] bounds and at or above its maximum_target's floor."""
        channel = self.channels.get(message.channel_id)
        if channel is None:
            self.send(UpdateChannelError(message.channel_id, "invalid-channel-id"))
            return
        cfg = self.server.stratum_config
        try:
            channel.limit_target(message.maximum_target, cfg)
        except MaxTargetOutOfRange as exc:
            log.info("%s: SV2 UpdateChannel refused: %s", self.peer, exc)
            self.send(UpdateChannelError(channel.channel_id, "max-target-out-of-range"))
            return
        wanted = difficulty_for_hash_rate(message.nominal_hash_rate, cfg.share_interval_seconds)
        now = time.monotonic()
        channel.vardiff.reset(now)
        self.set_difficulty(
            channel, channel.clamp(wanted or channel.difficulty, self.network_difficulty())
        )

    def on_close_channel(self, message: CloseChannel) -> None:
        channel = self.channels.pop(message.channel_id, None)
        if channel is not None:
            log.info("%s: SV2 channel %d closed by the miner: %s", self.peer,
                     channel.channel_id, miner_text(message.reason_code))  # fmt: skip
            self.server.release(channel)

    def close_channel(self, channel: Channel, reason: str) -> None:
        """The pool closes a channel (CloseChannel); a connection left with none is closed,
        so a miner that ignores CloseChannel (the Bitaxe firmware) reconnects."""
        self.channels.pop(channel.channel_id, None)
        self.send(CloseChannel(channel.channel_id, reason))
        self.server.release(channel)
        if not self.channels:
            self.close()

    def on_submit(self, submit: SubmitFields) -> Coroutine[Any, Any, None] | None:
        """Judge a share and answer it; a found block is answered once it is spooled (the
        coroutine returned)."""
        channel = self.channels.get(submit.channel_id)
        if channel is None:
            self.send_frame(submit_error_frame(
                submit.channel_id, submit.sequence_number, "invalid-channel-id"
            ))  # fmt: skip
            self._count_invalid("invalid-channel-id")
            return None
        sink = self.services
        judged = self.judge(channel, submit)
        if isinstance(judged, str):
            sink.share_rejected(channel, ERR_OTHER, judged)
            self.send_frame(submit_error_frame(channel.channel_id, submit.sequence_number, judged))
            self._count_invalid(judged)
            return None
        share, difficulty = judged
        channel.accepted += 1
        sink.share_accepted(channel, share, difficulty)
        if share.is_block:
            pending = sink.block_found(channel, share)
            if pending is not None:
                return self._answer_block(pending, channel, submit.sequence_number, difficulty)
        self._accepted(channel, submit.sequence_number, difficulty)
        return None

    def _count_invalid(self, error_code: str) -> None:
        """A refused share counts toward [stratum] max_invalid_shares_per_minute as in V1 (a
        stale one after the grace that follows a new block); past it the connection closes."""
        limit = self.services.config.max_invalid_shares_per_minute
        stale = error_code == "stale-share"
        if self.invalid_over_limit(limit, time.monotonic(), stale) and not self.closed:
            log.warning(
                "%s: more than %d invalid shares in a minute (last: %s); closing: check the "
                "miner's settings", self.peer, limit, error_code,
            )  # fmt: skip
            self.close()

    async def _answer_block(
        self, pending: Awaitable[Any], channel: Channel, sequence_number: int, difficulty: float
    ) -> None:
        self.spooling += 1
        try:
            await pending  # spooled before the miner hears of it
        finally:
            self.spooling -= 1
        self._accepted(channel, sequence_number, difficulty)

    def _accepted(self, channel: Channel, sequence_number: int, difficulty: float) -> None:
        """SubmitShares.Success (gathered per read: see _acks), then vardiff."""
        # new_shares_sum: the difficulties the shares were judged at (a U64: at least 1 each)
        shares_sum = max(1, round(difficulty))
        if self._pending is None:
            self.send_frame(submit_success_frame(
                channel.channel_id, sequence_number, 1, min(shares_sum, MAX_U64)
            ))  # fmt: skip
        else:
            ack = self._acks.get(channel.channel_id)
            if ack is None:
                self._acks[channel.channel_id] = [sequence_number, 1, shares_sum]
            else:
                ack[0] = sequence_number
                ack[1] += 1
                ack[2] += shares_sum
        new = channel.vardiff.on_share(
            difficulty, channel.difficulty, time.monotonic(), self.network_difficulty()
        )
        if new is not None and not channel.closed:
            self.set_difficulty(channel, channel.clamp(new, self.network_difficulty()))

    def judge(self, channel: Channel, submit: SubmitFields) -> tuple[Share, float] | str:
        """The share and the difficulty it was judged at, or the spec's error code."""
        services = self.services
        sent = channel.jobs.get(submit.job_id)
        if sent is None or services.jobs.get(sent[0].job_id) is not sent[0]:
            return "stale-share"
        job, job_difficulty = sent
        extranonce2 = submit.extranonce
        if (extranonce2 is not None) != channel.extended:
            return "invalid-channel-id"
        if extranonce2 is None:
            extranonce2 = channel.extranonce2
        elif len(extranonce2) != EXTRANONCE2_SIZE:
            return "invalid-extranonce-size"
        mask = services.config.version_rolling_mask
        version = submit.version
        if (version ^ job.version) & ~mask:
            return "invalid-version"
        try:
            share = share_of(
                job, channel.extranonce1, extranonce2, submit.ntime, submit.nonce,
                version & mask, mask, time.time(), channel.roots,
            )  # fmt: skip
        except ShareError as exc:
            return exc.message[:255]
        # judged at the difficulty its job was sent with, or the channel's if it has come
        # down since (as V1 judges per job)
        difficulty = min(job_difficulty, channel.difficulty)
        if share.hash_int > share_target(difficulty) and not share.is_block:
            # (firmware compares difficulties in floating point: a share on the edge of the
            # target may come in just above it, and a block is never refused)
            return "difficulty-too-low"
        # the same header again, under any job id (SetTarget re-sends a job under a new one)
        if not first_submission(channel.seen, share.hash):
            return "duplicate-share"
        return share, difficulty

    def tick(self, now: float) -> None:
        """Lower the difficulty of channels that have gone quiet (as V1's sweep does)."""
        network = self.network_difficulty()
        for channel in list(self.channels.values()):
            new = channel.vardiff.on_tick(channel.difficulty, now, network)
            if new is not None:
                self.set_difficulty(channel, channel.clamp(new, network))

    def apply_config(self, cfg: StratumConfig) -> int:
        """A reloaded [stratum]: new bounds for every channel; channels of addresses no longer
        allowed are closed. Returns how many were closed."""
        closed = 0
        for channel in list(self.channels.values()):
            if not address_allowed(cfg.allowed_addresses, channel.address or ""):
                log.info("%s: SV2 channel %d closed: %s is no longer allowed", self.peer,
                         channel.channel_id, channel.address)  # fmt: skip
                self.close_channel(channel, NOT_ALLOWED)
                closed += 1
                continue
            channel.apply_config(cfg)
            self.set_difficulty(
                channel, channel.clamp(channel.difficulty, self.network_difficulty())
            )
        return closed


class Sv2Server:
    """The SV2 listener; `broadcast` is its part of installing a new template."""

    def __init__(
        self, services: PoolServices, config: StratumV2Config, identity: ServerIdentity,
        allocate_extranonce1: Callable[[], bytes],
        on_connect: Callable[[Channel], None] | None = None,
        on_disconnect: Callable[[Channel], None] | None = None,
        *, connections: ConnectionTable | None = None, reuse_port: bool = False,
    ) -> None:  # fmt: skip
        self.services = services
        self.config = config
        self.identity = identity
        self.allocate_extranonce1 = allocate_extranonce1
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.reuse_port = reuse_port  # SO_REUSEPORT: worker processes share the port
        # The V1 server's limits and extranonce table; None: no shared limits (tests).
        self.table = connections
        self.connections: set[Sv2Connection] = set()
        self.timed_out = 0  # connections closed by the handshake or idle timeout, since start
        self.max_write_buffer = MAX_WRITE_BUFFER
        self.tasks: set[asyncio.Future[None]] = set()  # answers waiting (payout checks, blocks)
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.closing = False
        self._job_ids = itertools.count(1)

    @property
    def stratum_config(self) -> StratumConfig:
        return self.services.config

    def next_job_id(self) -> int:
        return next(self._job_ids) & 0xFFFFFFFF

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        host = self.config.host or self.stratum_config.host
        self._server = await listen(
            lambda: Sv2Connection(self), host, self.config.port, None, reuse_port=self.reuse_port
        )
        self._ticker = asyncio.create_task(self._tick_loop())

    def new_extranonce1(self) -> bytes:
        """A channel's extranonce1, from the V1 table when there is one (so no V1 session
        gets the same one while the channel lives)."""
        if self.table is not None:
            return self.table.reserve_extranonce1()
        return self.allocate_extranonce1()

    def release_extranonce1(self, extranonce1: bytes) -> None:
        if self.table is not None:
            self.table.release_extranonce1(extranonce1)

    def register(self, channel: Channel) -> None:
        if self.on_connect is not None:
            self.on_connect(channel)

    def recall_difficulty(self, username: str) -> float | int | None:
        return self.table.recall_difficulty(username) if self.table is not None else None

    def release(self, channel: Channel) -> None:
        if channel.closed:
            return
        channel.closed = True
        self.release_extranonce1(channel.extranonce1)
        remembered = channel.remembered_difficulty()
        if self.table is not None and remembered is not None:
            self.table.remember_difficulty(*remembered)
        if self.on_disconnect is not None:
            self.on_disconnect(channel)

    @property
    def sessions(self) -> list[Channel]:
        """Every open channel (what the API lists beside V1 connections)."""
        return [ch for connection in self.connections for ch in connection.channels.values()]

    def broadcast(self, clean: bool) -> int:
        sent = 0
        for connection in list(self.connections):
            for channel in list(connection.channels.values()):
                connection.send_job(channel, clean)
                sent += 1
        return sent

    def apply_config(self, cfg: StratumConfig) -> int:
        """A reloaded [stratum] for every channel; returns how many channels were closed."""
        closed = 0
        for connection in list(self.connections):
            try:
                closed += connection.apply_config(cfg)
            except Exception:
                log.exception("%s: could not apply the new config", connection.peer)
        return closed

    def sweep(self, now: float) -> None:
        """Timeouts (no channel within the handshake timeout, nothing received within the
        idle one), then quiet channels' difficulty."""
        cfg = self.stratum_config
        handshake_deadline = now - cfg.handshake_timeout_seconds
        idle_deadline = now - cfg.idle_timeout_seconds
        for connection in list(self.connections):
            if connection.closed:
                continue
            try:
                if connection.opened:
                    timed_out = connection.last_activity < idle_deadline
                else:
                    timed_out = connection.connected_at < handshake_deadline
                if timed_out:
                    self.timed_out += 1
                    log.debug("%s: SV2 connection timed out", connection.peer)
                    connection.close()
                else:
                    connection.tick(now)  # (vardiff's on_tick waits out its own interval)
            except Exception:  # one bad connection must not stop the others' sweep
                log.exception("%s: SV2 tick failed", connection.peer)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(sweep_seconds(self.stratum_config))
            self.sweep(time.monotonic())

    async def close(self) -> None:
        """Stop accepting, let found blocks finish spooling (their miners hear
        SubmitShares.Success), then send every miner Reconnect to this same pool (empty host,
        port 0) and close it. Safe to call twice."""
        self.closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + SPOOL_WAIT_SECONDS
        while any(c.spooling for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # the spooled shares' Success messages go out first
        for connection in list(self.connections):
            if connection.noise is not None and not connection.closed:
                connection.send(Reconnect("", 0))
            connection.close()
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
