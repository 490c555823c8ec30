"""A scripted SV2 miner over pool.sv2's initiator side: connects, sets up, opens channels,
mines standard-channel shares by brute force and reads what the pool sends."""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import Callable
from typing import TypeVar

from pool.consensus.target import difficulty_to_target
from pool.sv2.codec import (
    PROTOCOL_MINING,
    REQUIRES_STANDARD_JOBS,
    Message,
    NewMiningJob,
    OpenStandardMiningChannel,
    SetNewPrevHash,
    SetupConnection,
    SetupConnectionSuccess,
    SubmitSharesStandard,
    decode_message,
)
from pool.sv2.noise import ACT2_SIZE, Initiator, NoiseSession

M = TypeVar("M", bound=Message)

RECEIVE_SECONDS = 20.0  # generous: the machine may be loaded


class Sv2TestClient:
    """One SV2 connection to the pool, driven message by message."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.session: NoiseSession | None = None
        self.pending: list[Message] = []

    @classmethod
    async def connect(
        cls, port: int, authority_xonly: bytes | None = None, host: str = "127.0.0.1"
    ) -> Sv2TestClient:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        initiator = Initiator(authority_xonly)
        writer.write(initiator.act1())
        client.session, _ = initiator.finish(await reader.readexactly(ACT2_SIZE))
        return client

    def send(self, message: Message) -> None:
        assert self.session is not None
        self.writer.write(self.session.encrypt_message(message))

    async def receive(self) -> Message:
        assert self.session is not None
        async with asyncio.timeout(RECEIVE_SECONDS):
            while not self.pending:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed by the pool")
                self.pending += [decode_message(h, p) for h, p in self.session.feed(data)]
        return self.pending.pop(0)

    async def receive_type(self, kind: type[M]) -> M:
        """The next message, which must be a `kind`."""
        message = await self.receive()
        assert isinstance(message, kind), message
        return message

    async def closed_by_pool(self) -> bool:
        """True when the pool closes the connection without sending anything more."""
        async with asyncio.timeout(RECEIVE_SECONDS):
            return await self.reader.read(65536) == b""

    async def rest_until_closed(self) -> list[Message]:
        """Everything the pool sends until it closes the connection."""
        assert self.session is not None
        async with asyncio.timeout(RECEIVE_SECONDS):
            while data := await self.reader.read(65536):
                self.pending += [decode_message(h, p) for h, p in self.session.feed(data)]
        rest, self.pending = self.pending, []
        return rest

    async def setup(self) -> None:
        self.send(SetupConnection(PROTOCOL_MINING, 2, 2, REQUIRES_STANDARD_JOBS, "127.0.0.1",
                                  3336, "test", "", "", ""))
        assert isinstance(await self.receive(), SetupConnectionSuccess)

    def close(self) -> None:
        self.writer.close()


def open_standard(user: str, max_target: bytes = b"\xff" * 32) -> OpenStandardMiningChannel:
    return OpenStandardMiningChannel(1, user, 1e12, max_target)


def standard_header(job: NewMiningJob, prev: SetNewPrevHash) -> bytes:
    """The first 76 bytes of a standard channel's header (the firmware's layout)."""
    return (
        struct.pack("<I", job.version) + prev.prev_hash + job.merkle_root
        + struct.pack("<II", prev.min_ntime, prev.nbits)
    )  # fmt: skip


def find_nonce(
    job: NewMiningJob, prev: SetNewPrevHash, accept: Callable[[int], bool],
    start: int = 0, limit: int = 3_000_000,
) -> int:  # fmt: skip
    """The first nonce from `start` whose header hash (as an integer) satisfies `accept`."""
    midstate = hashlib.sha256(standard_header(job, prev))
    for nonce in range(start, start + limit):
        h = midstate.copy()
        h.update(struct.pack("<I", nonce))
        if accept(int.from_bytes(hashlib.sha256(h.digest()).digest(), "little")):
            return nonce
    raise AssertionError("no nonce found")


def between(easier: float, harder: float) -> Callable[[int], bool]:
    """Hashes that meet difficulty `easier` but not `harder`."""
    low, high = difficulty_to_target(harder), difficulty_to_target(easier)
    return lambda h: low < h <= high


def submit(
    channel_id: int, sequence: int, job: NewMiningJob, prev: SetNewPrevHash, nonce: int
) -> SubmitSharesStandard:
    return SubmitSharesStandard(
        channel_id, sequence, job.job_id, nonce, prev.min_ntime, job.version
    )
