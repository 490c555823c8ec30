"""Stratum V2 serving, one process: the Noise handshake, SetupConnection, standard and
extended mining channels, jobs from the pool's JobManager and shares judged by pool.shares.

A connection knows the pool only through `pool.services` (the same services a V1 session
uses): payouts resolved by the PayoutResolver, shares to the ShareSink, blocks to the
BlockSink, which spools a block before the miner hears SubmitShares.Success. Anything a miner
sends that the protocol does not allow closes that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from ..config import StratumConfig, StratumV2Config
from ..jobs import EXTRANONCE2_SIZE, Job, TemplateError
from ..logsafety import miner_text
from ..services import AddressRefused, PoolServices
from ..shares import ERR_OTHER, Share, ShareError, build_share, share_target
from .certificate import ServerIdentity
from .codec import (
    PROTOCOL_MINING,
    Message,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetNewPrevHash,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    SubmitSharesSuccess,
    Sv2DecodeError,
    decode_message,
    int_to_u256,
)
from .noise import ACT1_SIZE, NoiseSession, respond

log = logging.getLogger(__name__)

SV2_VERSION = 2
MAX_CHANNELS_PER_CONNECTION = 8
JOBS_PER_CHANNEL = 16  # jobs a channel may still submit to (same previous block)
MAX_SEEN_SHARES = 50_000


class Sv2ProtocolError(Exception):
    """The miner broke the protocol: close its connection."""


class Channel:
    """One mining channel: a payout, the pool's part of the extranonce and a target. A standard
    channel's extranonce is fixed (so it has its own merkle root per job); an extended one
    rolls the last EXTRANONCE2_SIZE bytes itself. Also what the share sink and block sink see
    as the miner."""

    protocol = "sv2"
    def __init__(
        self, channel_id: int, extended: bool, username: str, address: str,
        payout_script: bytes, extranonce1: bytes, difficulty: float, user_agent: str,
    ) -> None:  # fmt: skip
        self.channel_id = channel_id
        self.extended = extended
        self.username = username
        self.address: str | None = address
        self.worker = username  # ADDRESS.worker, as a V1 session: stats and blocks key by it
        self.payout_script = payout_script
        self._extranonce1 = extranonce1
        self.difficulty = difficulty
        self.target = share_target(difficulty)
        self.user_agent = user_agent
        self.connected_at = time.monotonic()
        self.mining = True
        self.closed = False
        self.accepted = 0
        self.jobs: OrderedDict[int, Job] = OrderedDict()
        self.seen: set[tuple[bytes, int, int, int, int]] = set()

    @property
    def extranonce1(self) -> bytes:
        return self._extranonce1

    @property
    def extranonce2(self) -> bytes:
        return b"\0" * EXTRANONCE2_SIZE  # a standard channel mines headers only


class Sv2Connection:
    """One miner connection: handshake, setup, then messages until it closes."""

    def __init__(
        self, server: Sv2Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        self.noise: NoiseSession | None = None
        self.setup: SetupConnection | None = None
        self.channels: dict[int, Channel] = {}
        self._channel_ids = itertools.count(1)

    def send(self, message: Message) -> None:
        assert self.noise is not None
        if not self.writer.is_closing():
            self.writer.write(self.noise.encrypt_message(message))

    async def run(self) -> None:
        cfg = self.server.stratum_config
        try:
            act1 = await asyncio.wait_for(
                self.reader.readexactly(ACT1_SIZE), cfg.handshake_timeout_seconds
            )
            identity = self.server.identity
            reply, self.noise = respond(act1, identity.static_secret, identity.certificate)
            self.writer.write(reply)
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), cfg.idle_timeout_seconds)
                if not data:
                    return
                for header, payload in self.noise.feed(data):
                    await self.handle(decode_message(header, payload))
                await self.writer.drain()
        except (Sv2DecodeError, Sv2ProtocolError) as exc:
            log.info("%s: SV2 connection closed: %s", self.peer, miner_text(str(exc)))
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        for channel in self.channels.values():
            self.server.release(channel)
        self.channels.clear()
        self.writer.close()

    async def handle(self, message: Message) -> None:
        if isinstance(message, SetupConnection):
            self.on_setup(message)
        elif self.setup is None:
            raise Sv2ProtocolError(f"{type(message).__name__} before SetupConnection")
        elif isinstance(message, OpenStandardMiningChannel | OpenExtendedMiningChannel):
            await self.on_open(message)
        elif isinstance(message, SubmitSharesStandard | SubmitSharesExtended):
            await self.on_submit(message)
        else:
            log.debug("%s: ignoring SV2 %s", self.peer, type(message).__name__)

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

    async def on_open(
        self, message: OpenStandardMiningChannel | OpenExtendedMiningChannel
    ) -> None:
        if len(self.channels) >= MAX_CHANNELS_PER_CONNECTION:
            self.send(OpenMiningChannelError(message.request_id, "max-channels-reached"))
            return
        username = message.user_identity
        address = username.partition(".")[0]
        try:
            payout_script = await self.server.services.resolve_payout(address)
        except AddressRefused as exc:
            log.info("%s: SV2 channel refused for %r: %s", self.peer, miner_text(username), exc)
            self.send(OpenMiningChannelError(message.request_id, "unknown-user"))
            return
        extended = isinstance(message, OpenExtendedMiningChannel)
        if isinstance(message, OpenExtendedMiningChannel) and (
            message.min_extranonce_size > EXTRANONCE2_SIZE
        ):
            self.send(OpenMiningChannelError(message.request_id, "min-extranonce-size-too-large"))
            return
        assert self.setup is not None
        channel = Channel(
            next(self._channel_ids), extended, username, address, payout_script,
            self.server.allocate_extranonce1(), self.server.stratum_config.start_difficulty,
            f"{self.setup.vendor} {self.setup.firmware}".strip() + " (SV2)",
        )  # fmt: skip
        self.channels[channel.channel_id] = channel
        self.server.register(channel)
        target = int_to_u256(channel.target)
        if extended:
            self.send(OpenExtendedMiningChannelSuccess(
                message.request_id, channel.channel_id, target, EXTRANONCE2_SIZE,
                channel.extranonce1, 0,
            ))  # fmt: skip
        else:
            self.send(OpenStandardMiningChannelSuccess(
                message.request_id, channel.channel_id, target,
                channel.extranonce1 + channel.extranonce2, 0,
            ))  # fmt: skip
        log.info(
            "%s: SV2 %s channel %d for %s", self.peer,
            "extended" if extended else "standard", channel.channel_id, miner_text(username),
        )  # fmt: skip
        self.send_job(channel, clean=True)

    def send_job(self, channel: Channel, clean: bool) -> None:
        """The current job for the channel: a future job + SetNewPrevHash on a new block (one
        message switches the miner), else a job that applies at once."""
        try:
            job = self.server.services.jobs.job_for(channel.payout_script)
        except TemplateError:
            return
        if clean:
            channel.jobs.clear()
            channel.seen.clear()
        job_id = self.server.next_job_id()
        channel.jobs[job_id] = job
        while len(channel.jobs) > JOBS_PER_CHANNEL:
            channel.jobs.popitem(last=False)
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
            template = job.template
            prev = bytes.fromhex(template.prev_hash)[::-1]
            self.send(SetNewPrevHash(channel.channel_id, job_id, prev, job.ntime, template.bits))

    async def on_submit(self, message: SubmitSharesStandard | SubmitSharesExtended) -> None:
        channel = self.channels.get(message.channel_id)
        if channel is None:
            self.send(SubmitSharesError(message.channel_id, message.sequence_number,
                                        "invalid-channel-id"))
            return
        sink = self.server.services
        share = self.judge(channel, message)
        if isinstance(share, str):
            sink.share_rejected(channel, ERR_OTHER, share)
            self.send(SubmitSharesError(channel.channel_id, message.sequence_number, share))
            return
        channel.accepted += 1
        sink.share_accepted(channel, share, channel.difficulty)
        if share.is_block:
            pending = sink.block_found(channel, share)
            if pending is not None:
                await pending  # spooled before the miner hears of it
        self.send(SubmitSharesSuccess(
            channel.channel_id, message.sequence_number, 1, int(channel.difficulty) or 1
        ))  # fmt: skip

    def judge(
        self, channel: Channel, message: SubmitSharesStandard | SubmitSharesExtended
    ) -> Share | str:
        """The share, or the spec's error code for why it is refused."""
        job = channel.jobs.get(message.job_id)
        if job is None or self.server.services.jobs.get(job.job_id) is not job:
            return "stale-share"
        extranonce2 = channel.extranonce2
        if isinstance(message, SubmitSharesExtended) != channel.extended:
            return "invalid-channel-id"
        if isinstance(message, SubmitSharesExtended):
            if len(message.extranonce) != EXTRANONCE2_SIZE:
                return "invalid-extranonce-size"
            extranonce2 = message.extranonce
        mask = self.server.stratum_config.version_rolling_mask
        if (message.version ^ job.version) & ~mask:
            return "invalid-version"
        try:
            share = build_share(
                job, channel.extranonce1, extranonce2.hex(), f"{message.ntime:08x}",
                f"{message.nonce:08x}", f"{message.version & mask:08x}", mask, time.time(),
            )  # fmt: skip
        except ShareError as exc:
            return exc.message[:255]
        if share.hash_int > channel.target and not share.is_block:
            # (firmware compares difficulties in floating point: a share on the edge of the
            # target may come in just above it, and a block is never refused)
            return "difficulty-too-low"
        key = (extranonce2, message.job_id, message.nonce, message.ntime, message.version)
        if key in channel.seen:
            return "duplicate-share"
        if len(channel.seen) < MAX_SEEN_SHARES:
            channel.seen.add(key)
        return share


class Sv2Server:
    """The SV2 listener; `broadcast` is its part of installing a new template."""

    def __init__(
        self, services: PoolServices, config: StratumV2Config, identity: ServerIdentity,
        allocate_extranonce1: Callable[[], bytes],
        on_connect: Callable[[Channel], None] | None = None,
        on_disconnect: Callable[[Channel], None] | None = None, *, reuse_port: bool = False,
    ) -> None:  # fmt: skip
        self.services = services
        self.config = config
        self.identity = identity
        self.allocate_extranonce1 = allocate_extranonce1
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.reuse_port = reuse_port  # SO_REUSEPORT: worker processes share the port
        self.connections: set[Sv2Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
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
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, reuse_port=self.reuse_port or None
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Sv2Connection(self, reader, writer)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    def register(self, channel: Channel) -> None:
        if self.on_connect is not None:
            self.on_connect(channel)

    def release(self, channel: Channel) -> None:
        channel.closed = True
        if self.on_disconnect is not None:
            self.on_disconnect(channel)

    def broadcast(self, clean: bool) -> int:
        sent = 0
        for connection in list(self.connections):
            for channel in connection.channels.values():
                connection.send_job(channel, clean)
                sent += 1
        return sent

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
