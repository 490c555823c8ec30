"""A steady SV2 miner: keeps finding regtest blocks on a standard channel, one share at a time
(the miner that must not be disturbed while others attack the pool)."""

from __future__ import annotations

import asyncio
import struct
from collections import Counter

from pool.consensus.target import nbits_to_target
from pool.sv2.codec import (
    Message,
    NewMiningJob,
    OpenStandardMiningChannelSuccess,
    SetNewPrevHash,
    SetTarget,
    SubmitSharesError,
    SubmitSharesStandard,
    SubmitSharesSuccess,
    u256_to_int,
)
from solopool_tools.miner import scan_header
from tests.support.sv2_client import Sv2TestClient, open_standard


def find_share(prefix76: bytes, target: int) -> tuple[int, bytes]:
    """The first nonce whose header hash meets `target`, and that hash (off the event loop:
    at the pool's test difficulties this takes tens of thousands of hashes)."""
    start = 0
    while not (found := scan_header(prefix76, start, 1 << 16, target)):
        start += 1 << 16
    return found[0]


class SteadyMiner:
    """Mines on one standard channel, one share at a time (hashed here: on regtest about one
    hash in two is a block), a pause between shares, following jobs, prevhashes and targets.
    `stats` counts accepted shares, blocks (accepted shares meeting nbits) and error codes."""

    def __init__(self, client: Sv2TestClient, pause: float = 0.1) -> None:
        self.client = client
        self.pause = pause
        self.stats: Counter[str] = Counter()
        self.channel_id = 0
        self.target = 0
        self.jobs: dict[int, NewMiningJob] = {}
        self.prev: SetNewPrevHash | None = None
        self.job: NewMiningJob | None = None

    @classmethod
    async def start(cls, port: int, user: str, pause: float = 0.1) -> SteadyMiner:
        client = await Sv2TestClient.connect(port)
        await client.setup()
        client.send(open_standard(user))
        miner = cls(client, pause)
        while miner.job is None:
            miner.follow(await client.receive())
        return miner

    def follow(self, message: Message) -> None:
        if isinstance(message, OpenStandardMiningChannelSuccess):
            self.channel_id = message.channel_id
            self.target = u256_to_int(message.target)
        elif isinstance(message, SetTarget):
            self.target = u256_to_int(message.maximum_target)
        elif isinstance(message, NewMiningJob):
            self.jobs[message.job_id] = message
            if message.min_ntime is not None:
                self.job = message  # applies at once, on the same previous block
        elif isinstance(message, SetNewPrevHash):
            self.prev = message
            self.job = self.jobs.get(message.job_id)
            self.jobs = {} if self.job is None else {message.job_id: self.job}

    async def catch_up(self) -> None:
        """Follow whatever the pool has sent meanwhile (a new block: a new job)."""
        while True:
            try:
                message = await asyncio.wait_for(self.client.receive(), 0.001)
            except TimeoutError:
                return
            self.follow(message)

    async def run(self, stop: asyncio.Event) -> None:
        sequence = 0
        while not stop.is_set():
            await self.catch_up()
            job, prev = self.job, self.prev
            assert job is not None and prev is not None
            ntime = max(prev.min_ntime, job.min_ntime or 0)
            head = struct.pack("<I", job.version) + prev.prev_hash + job.merkle_root
            head += struct.pack("<II", ntime, prev.nbits)
            nonce, digest = await asyncio.to_thread(find_share, head, self.target)
            is_block = int.from_bytes(digest, "little") <= nbits_to_target(prev.nbits)
            sequence += 1
            self.client.send(SubmitSharesStandard(
                self.channel_id, sequence, job.job_id, nonce, ntime, job.version
            ))  # fmt: skip
            while True:
                message = await self.client.receive()
                self.follow(message)
                if isinstance(message, SubmitSharesSuccess):
                    self.stats["accepted"] += 1
                    self.stats["blocks"] += is_block
                    break
                if isinstance(message, SubmitSharesError):
                    self.stats[message.error_code] += 1
                    break
            await asyncio.sleep(self.pause)
