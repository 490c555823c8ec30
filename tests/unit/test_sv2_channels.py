"""SV2 channels against the real SV2 server (TCP, Noise) on the mainnet template, with the
session tests' fake pool services (no node: shares at tiny difficulties are never blocks):
vardiff through SetTarget, UpdateChannel, CloseChannel, reloaded [stratum] settings, the
shared connection limits and extranonce table, timeouts, and Reconnect at close."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from pool.config import StratumV2Config
from pool.shares import Share, share_target
from pool.stratum.server import StratumServer
from pool.sv2.certificate import ServerIdentity, new_secret_key
from pool.sv2.channel import Channel, difficulty_floor, difficulty_for_hash_rate
from pool.sv2.codec import (
    PROTOCOL_MINING,
    REQUIRES_STANDARD_JOBS,
    CloseChannel,
    Message,
    NewMiningJob,
    OpenMiningChannelError,
    OpenStandardMiningChannelSuccess,
    Reconnect,
    SetNewPrevHash,
    SetTarget,
    SetupConnection,
    SetupConnectionSuccess,
    SubmitSharesError,
    SubmitSharesStandard,
    SubmitSharesSuccess,
    UpdateChannel,
    UpdateChannelError,
    int_to_u256,
    u256_to_int,
)
from pool.sv2.noise import ACT2_SIZE, Initiator
from pool.sv2.server import Sv2Server
from pool.vardiff import MAX_STEP, RETARGET_SHARES
from tests.support.session_fakes import (
    ADDRESS,
    EASY_TARGET,
    OTHER_ADDRESS,
    FakePool,
    easy_gbt,
)
from tests.support.sv2_client import (
    Sv2TestClient,
    between,
    find_nonce,
    open_standard,
    submit,
)

START = 1e-9  # about one hash in four is a share (and no hash is a mainnet block)
TINY_BOUNDS = {"start_difficulty": START, "min_difficulty": 1e-10}


@dataclasses.dataclass
class Rig:
    """A V1 server and an SV2 server sharing its limits, on the fake pool services."""

    services: FakePool
    stratum: StratumServer
    sv2: Sv2Server
    connected: list[Channel]
    disconnected: list[Channel]


RigFactory = Callable[..., Awaitable[Rig]]


@pytest_asyncio.fixture
async def make_rig() -> AsyncIterator[RigFactory]:
    rigs: list[Rig] = []

    async def make(gbt: dict[str, Any] | None = None, **stratum: Any) -> Rig:
        settings = {"host": "127.0.0.1", "port": 0, **TINY_BOUNDS, **stratum}
        services = FakePool(gbt, **settings)
        v1 = StratumServer(services)  # type: ignore[arg-type]
        await v1.start()
        connected: list[Channel] = []
        disconnected: list[Channel] = []
        identity = ServerIdentity.issue(new_secret_key(), 86_400, int(time.time()))
        sv2 = Sv2Server(
            services, StratumV2Config(port=0, host="127.0.0.1"), identity,  # type: ignore[arg-type]
            v1.allocate_extranonce1, connected.append, disconnected.append, connections=v1,
        )  # fmt: skip
        await sv2.start()
        rig = Rig(services, v1, sv2, connected, disconnected)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.sv2.close()
        await rig.stratum.close()


async def open_channel(
    rig: Rig, user: str = ADDRESS + ".rig1"
) -> tuple[Sv2TestClient, int, NewMiningJob, SetNewPrevHash]:
    client = await Sv2TestClient.connect(rig.sv2.port)
    await client.setup()
    client.send(open_standard(user))
    opened = await client.receive_type(OpenStandardMiningChannelSuccess)
    job = await client.receive_type(NewMiningJob)
    prev = await client.receive_type(SetNewPrevHash)
    return client, opened.channel_id, job, prev


def meets(difficulty: float) -> Callable[[int], bool]:
    target = share_target(difficulty)
    return lambda h: h <= target


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(20):
        while not condition():
            await asyncio.sleep(0.01)


# --- pure parts ------------------------------------------------------------------------------


def test_difficulty_for_hash_rate() -> None:
    assert difficulty_for_hash_rate(2**32, 10) == 10  # 1 diff-1 share per 2**32 hashes
    assert difficulty_for_hash_rate(1e12, 10) == pytest.approx(2328.3, rel=1e-4)
    for nothing in (0.0, -5.0, float("nan"), float("inf")):
        assert difficulty_for_hash_rate(nothing, 10) is None


def test_difficulty_floor_meets_the_max_target() -> None:
    for difficulty in (1e-9, 0.5, 1, 1024, 3.7e6):
        target = share_target(difficulty)
        floor = difficulty_floor(int_to_u256(target), 1e15)
        assert share_target(floor) <= target
        assert floor == pytest.approx(difficulty, rel=1e-9)
    assert difficulty_floor(b"\xff" * 32, 1e15) < 1e-9  # "anything": no floor worth the name


# --- vardiff through SetTarget ---------------------------------------------------------------


async def test_vardiff_raises_the_target_for_next_jobs_and_older_jobs_keep_theirs(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig()
    client, channel_id, job, prev = await open_channel(rig)
    # a fast miner: a retarget is due after these shares
    nonce = -1
    for sequence in range(1, RETARGET_SHARES + 1):
        nonce = find_nonce(job, prev, meets(START), start=nonce + 1)
        client.send(submit(channel_id, sequence, job, prev, nonce))
        success = await client.receive_type(SubmitSharesSuccess)
        assert (success.last_sequence_number, success.new_submits_accepted_count) == (
            sequence, 1
        )
        assert success.new_shares_sum == 1  # the judged difficulty, at least 1 in a U64
    raised = START * MAX_STEP  # far too many shares: up by the largest step
    target = await client.receive_type(SetTarget)
    assert target.channel_id == channel_id
    assert target.maximum_target == int_to_u256(share_target(raised))
    new_job = await client.receive_type(NewMiningJob)  # the job the new target applies to
    assert new_job.min_ntime is not None and new_job.job_id != job.job_id
    (channel,) = rig.connected
    assert channel.difficulty == raised
    accepted = len(rig.services.accepted)
    # A share meeting only the old target: accepted on the old job, at the old difficulty ...
    easy = find_nonce(job, prev, between(START, raised), start=nonce + 1)
    client.send(submit(channel_id, 100, job, prev, easy))
    assert (await client.receive_type(SubmitSharesSuccess)).last_sequence_number == 100
    assert rig.services.accepted[accepted][2] == START
    # ... refused on the new job
    # (the new job has the old one's header: nonces not tried yet, or they are duplicates)
    nonce = easy
    easy = find_nonce(new_job, prev, between(START, raised), start=nonce + 1)
    client.send(submit(channel_id, 101, new_job, prev, easy))
    refused = await client.receive_type(SubmitSharesError)
    assert (refused.sequence_number, refused.error_code) == (101, "difficulty-too-low")
    hard = find_nonce(new_job, prev, meets(raised), start=easy + 1)
    client.send(submit(channel_id, 102, new_job, prev, hard))
    await client.receive_type(SubmitSharesSuccess)
    assert rig.services.accepted[-1][2] == raised
    client.close()


async def test_a_share_resent_on_a_job_sent_again_is_a_duplicate(make_rig: RigFactory) -> None:
    rig = await make_rig(start_difficulty=START)
    client, channel_id, job, prev = await open_channel(rig)
    (channel,) = rig.connected
    connection = next(iter(rig.sv2.connections))
    connection.set_difficulty(channel, START / 2)  # the same template's job, a new job_id
    await client.receive_type(SetTarget)
    again = await client.receive_type(NewMiningJob)
    assert again.merkle_root == job.merkle_root and again.job_id != job.job_id
    nonce = find_nonce(job, prev, meets(START))
    client.send(submit(channel_id, 1, job, prev, nonce))
    await client.receive_type(SubmitSharesSuccess)
    client.send(submit(channel_id, 2, again, prev, nonce))
    refused = await client.receive_type(SubmitSharesError)
    assert refused.error_code == "duplicate-share"
    client.close()


def send_together(client: Sv2TestClient, *messages: Message) -> None:
    """Messages in one write: the pool reads them in one read (loopback, a few hundred bytes)."""
    assert client.session is not None
    client.writer.write(b"".join(client.session.encrypt_message(m) for m in messages))


async def test_accepted_shares_of_one_read_are_answered_together(make_rig: RigFactory) -> None:
    # SubmitShares.Success may acknowledge several shares (the spec; the firmware adds up
    # new_submits_accepted_count): one per channel per read, in order with the errors.
    rig = await make_rig()
    client, channel_id, job, prev = await open_channel(rig)
    first = find_nonce(job, prev, meets(START))
    second = find_nonce(job, prev, meets(START), start=first + 1)
    third = find_nonce(job, prev, meets(START), start=second + 1)
    send_together(
        client,
        submit(channel_id, 1, job, prev, first),
        submit(channel_id, 2, job, prev, second),
        submit(channel_id, 3, job, prev, first),  # a duplicate
        submit(channel_id, 4, job, prev, third),
    )
    answers = [await client.receive() for _ in range(3)]
    assert answers == [
        SubmitSharesSuccess(channel_id, 2, 2, 2),
        SubmitSharesError(channel_id, 3, "duplicate-share"),
        SubmitSharesSuccess(channel_id, 4, 1, 1),
    ]
    assert len(rig.services.accepted) == 3
    client.close()


async def test_a_flood_of_refused_shares_closes_that_connection_only(
    make_rig: RigFactory,
) -> None:
    # [stratum] max_invalid_shares_per_minute holds for SV2 as for V1: past it, the connection
    # is closed after the answer to the share that went over; other miners mine on.
    rig = await make_rig(max_invalid_shares_per_minute=5)
    flooder, flood_id, job, prev = await open_channel(rig)
    honest, honest_id, honest_job, honest_prev = await open_channel(rig, ADDRESS + ".rig2")
    send_together(flooder, *[submit(flood_id + 99, n, job, prev, n) for n in range(1, 8)])
    answers = await flooder.rest_until_closed()
    assert answers == [SubmitSharesError(flood_id + 99, n, "invalid-channel-id")
                       for n in range(1, 7)]  # fmt: skip
    nonce = find_nonce(honest_job, honest_prev, meets(START))
    honest.send(submit(honest_id, 1, honest_job, honest_prev, nonce))
    assert await honest.receive() == SubmitSharesSuccess(honest_id, 1, 1, 1)
    honest.close()


async def test_stale_shares_count_only_after_the_grace_of_a_new_block(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig(max_invalid_shares_per_minute=3)
    client, channel_id, job, prev = await open_channel(rig)
    gone = dataclasses.replace(job, job_id=job.job_id + 1000)  # a job the pool no longer has
    send_together(client, *[submit(channel_id, n, gone, prev, n) for n in range(1, 6)])
    for n in range(1, 6):  # work in flight when the block changed: answered, not counted
        assert await client.receive() == SubmitSharesError(channel_id, n, "stale-share")
    connection = next(iter(rig.sv2.connections))
    connection.stale_grace_until = 0.0  # the grace is over
    send_together(client, *[submit(channel_id, n, gone, prev, n) for n in range(6, 11)])
    answers = await client.rest_until_closed()
    assert [a.sequence_number for a in answers] == [6, 7, 8, 9]  # type: ignore[attr-defined]
    client.close()


async def test_frames_behind_a_waiting_one_are_handled_after_it(make_rig: RigFactory) -> None:
    # A channel's payout check and a found block's spooling answer later; what came in the
    # same read behind them waits its turn, in order.
    # regtest's target (half of all hashes are blocks), every hash a share
    rig = await make_rig(gbt=easy_gbt(), start_difficulty=1e-10)
    client = await Sv2TestClient.connect(rig.sv2.port)
    send_together(
        client,
        SetupConnection(PROTOCOL_MINING, 2, 2, REQUIRES_STANDARD_JOBS, "", 0, "t", "", "", ""),
        open_standard(ADDRESS + ".rig1"),
        SubmitSharesStandard(1, 1, 1, 0, 0, 0),  # channel 1 only exists once the open is done
    )
    assert isinstance(await client.receive(), SetupConnectionSuccess)
    assert isinstance(await client.receive(), OpenStandardMiningChannelSuccess)
    job = await client.receive_type(NewMiningJob)
    prev = await client.receive_type(SetNewPrevHash)
    refused = await client.receive_type(SubmitSharesError)
    assert refused.sequence_number == 1 and refused.error_code != "invalid-channel-id"

    spooled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    rig.services.block_found = lambda miner, share: spooled  # type: ignore[assignment,method-assign]
    block = find_nonce(job, prev, lambda h: h <= EASY_TARGET)
    share = find_nonce(job, prev, lambda h: h > EASY_TARGET)
    send_together(client, submit(1, 2, job, prev, block), submit(1, 3, job, prev, share))
    await wait_until(lambda: len(rig.services.accepted) == 1)
    await asyncio.sleep(0.2)
    assert len(rig.services.accepted) == 1 and not client.pending  # the share waits
    spooled.set_result(None)
    assert await client.receive() == SubmitSharesSuccess(1, 2, 1, 1)
    assert await client.receive() == SubmitSharesSuccess(1, 3, 1, 1)
    client.close()


async def test_a_worker_coming_back_gets_its_difficulty(make_rig: RigFactory) -> None:
    # As in V1 (and shared with it: the key is the user name): a channel that did work
    # leaves its difficulty behind for the next channel of the same worker.
    rig = await make_rig(start_difficulty=START)
    client, channel_id, job, prev = await open_channel(rig, ADDRESS + ".back")
    client.send(submit(channel_id, 1, job, prev, find_nonce(job, prev, meets(START))))
    await client.receive_type(SubmitSharesSuccess)
    idle, _, _, _ = await open_channel(rig, ADDRESS + ".idle")  # no share: not remembered
    (connection,) = [c for c in rig.sv2.connections if len(c.channels) and next(
        iter(c.channels.values())
    ).username.endswith(".back")]  # fmt: skip
    connection.set_difficulty(next(iter(connection.channels.values())), START * 4)
    for gone in (client, idle):
        gone.close()
    await wait_until(lambda: not rig.sv2.connections)

    async def opened_at(user: str) -> bytes:
        again = await Sv2TestClient.connect(rig.sv2.port)
        await again.setup()
        again.send(open_standard(user))
        target = (await again.receive_type(OpenStandardMiningChannelSuccess)).target
        again.close()
        return target

    assert await opened_at(ADDRESS + ".back") == int_to_u256(share_target(START * 4))
    assert await opened_at(ADDRESS + ".idle") == int_to_u256(share_target(START))
    # and a V1 session of that worker starts there too
    assert rig.stratum.memory.recall(ADDRESS + ".back", time.monotonic()) == START * 4


async def test_quiet_channel_difficulty_comes_down_on_tick(make_rig: RigFactory) -> None:
    rig = await make_rig(start_difficulty=1.0, share_interval_seconds=10)
    client, channel_id, _, _ = await open_channel(rig)
    (channel,) = rig.connected
    connection = next(iter(rig.sv2.connections))
    connection.tick(time.monotonic() + 3600)  # an hour without a share
    target = await client.receive_type(SetTarget)
    assert channel.difficulty == 1.0 / MAX_STEP
    assert target.maximum_target == int_to_u256(share_target(1.0 / MAX_STEP))
    assert (await client.receive_type(NewMiningJob)).channel_id == channel_id
    client.close()


# --- UpdateChannel and CloseChannel -----------------------------------------------------------


async def test_update_channel_sets_the_difficulty_for_the_hash_rate(make_rig: RigFactory) -> None:
    rig = await make_rig(share_interval_seconds=10, max_difficulty=5000)
    client, channel_id, _, _ = await open_channel(rig)
    (channel,) = rig.connected
    # 2**32 / 10 hashes a second: difficulty 1 gives one share per 10 s
    client.send(UpdateChannel(channel_id, 2**32 / 10, b"\xff" * 32))
    target = await client.receive_type(SetTarget)
    assert u256_to_int(target.maximum_target) == share_target(1)
    assert channel.difficulty == 1
    assert (await client.receive_type(NewMiningJob)).min_ntime is not None
    # far more than the bounds allow: clamped to max_difficulty
    client.send(UpdateChannel(channel_id, 1e18, b"\xff" * 32))
    target = await client.receive_type(SetTarget)
    assert u256_to_int(target.maximum_target) == share_target(5000)
    await client.receive_type(NewMiningJob)
    # the miner's maximum_target is a floor: a low hash rate cannot take it below that
    client.send(UpdateChannel(channel_id, 1.0, int_to_u256(share_target(64))))
    target = await client.receive_type(SetTarget)
    assert u256_to_int(target.maximum_target) <= share_target(64)
    assert channel.difficulty == pytest.approx(64)
    await client.receive_type(NewMiningJob)
    # a maximum_target the pool cannot meet within max_difficulty, and an unknown channel
    client.send(UpdateChannel(channel_id, 1.0, int_to_u256(share_target(1e6))))
    error = await client.receive_type(UpdateChannelError)
    assert (error.channel_id, error.error_code) == (channel_id, "max-target-out-of-range")
    client.send(UpdateChannel(channel_id + 7, 1.0, b"\xff" * 32))
    error = await client.receive_type(UpdateChannelError)
    assert (error.channel_id, error.error_code) == (channel_id + 7, "invalid-channel-id")
    assert channel.difficulty == pytest.approx(64)  # the refused updates changed nothing
    client.close()


async def test_open_with_a_max_target_beyond_max_difficulty_is_refused(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig(max_difficulty=1000)
    client = await Sv2TestClient.connect(rig.sv2.port)
    await client.setup()
    client.send(open_standard(ADDRESS + ".rig1", int_to_u256(share_target(1e6))))
    error = await client.receive_type(OpenMiningChannelError)
    assert error.error_code == "max-target-out-of-range"
    assert rig.connected == [] and rig.stratum._reserved == set()
    client.close()


async def test_user_identities_are_checked_as_v1_names(make_rig: RigFactory) -> None:
    """A control character in the identity, or a worker name over the limit: refused as V1's
    authorize refuses them; a plain name at the limit opens."""
    rig = await make_rig(max_worker_name_length=8)
    client = await Sv2TestClient.connect(rig.sv2.port)
    await client.setup()
    for user in (ADDRESS + ".rig\x1b[2J", ADDRESS + ".ninechars", "\u202e" + ADDRESS):
        client.send(open_standard(user))
        assert (await client.receive_type(OpenMiningChannelError)).error_code == "unknown-user"
    client.send(open_standard(ADDRESS + ".eightchr"))
    await client.receive_type(OpenStandardMiningChannelSuccess)
    assert [c.worker for c in rig.connected] == [ADDRESS + ".eightchr"]
    client.close()


async def test_close_channel_releases_it(make_rig: RigFactory) -> None:
    rig = await make_rig()
    client, channel_id, job, prev = await open_channel(rig)
    (channel,) = rig.connected
    assert channel.extranonce1 in rig.stratum._reserved
    client.send(CloseChannel(channel_id, "shutdown"))
    await wait_until(lambda: rig.disconnected == [channel])
    assert channel.closed and channel.extranonce1 not in rig.stratum._reserved
    assert rig.sv2.broadcast(clean=True) == 0  # no more jobs for it
    client.send(submit(channel_id, 5, job, prev, find_nonce(job, prev, meets(START))))
    refused = await client.receive_type(SubmitSharesError)
    assert (refused.sequence_number, refused.error_code) == (5, "invalid-channel-id")
    # the connection stays: a new channel opens on it
    client.send(open_standard(ADDRESS + ".rig2"))
    opened = await client.receive_type(OpenStandardMiningChannelSuccess)
    assert opened.channel_id != channel_id
    client.close()


# --- reload ------------------------------------------------------------------------------------


async def test_reloaded_stratum_settings_reach_channels(make_rig: RigFactory) -> None:
    rig = await make_rig()
    kept, kept_id, job, prev = await open_channel(rig, ADDRESS + ".kept")
    dropped, dropped_id, _, _ = await open_channel(rig, OTHER_ADDRESS + ".dropped")
    kept_channel, dropped_channel = rig.connected
    services = rig.services
    services.config = dataclasses.replace(
        services.config, allowed_addresses=(ADDRESS,), min_difficulty=1e-6,
        max_difficulty=1e-3, share_interval_seconds=3, version_rolling_mask=0x00006000,
    )  # fmt: skip
    assert rig.sv2.apply_config(services.config) == 1
    # the other address: CloseChannel, and with no channel left the connection closes
    rest = await dropped.rest_until_closed()
    assert rest == [CloseChannel(dropped_id, "address-not-allowed")]
    assert dropped_channel in rig.disconnected
    # the kept channel: its difficulty moved inside the new bounds, with a job for it
    target = await kept.receive_type(SetTarget)
    assert u256_to_int(target.maximum_target) == share_target(1e-6)
    assert kept_channel.vardiff.interval == 3 and kept_channel.vardiff.maximum == 1e-3
    new_job = await kept.receive_type(NewMiningJob)
    # the new version rolling mask: a bit outside it is refused
    outside = dataclasses.replace(
        submit(kept_id, 9, new_job, prev, 0), version=new_job.version | 0x00800000
    )
    kept.send(outside)
    refused = await kept.receive_type(SubmitSharesError)
    assert refused.error_code == "invalid-version"
    # and a new channel of the dropped address is refused
    kept.send(open_standard(OTHER_ADDRESS + ".again"))
    assert (await kept.receive_type(OpenMiningChannelError)).error_code == "unknown-user"
    kept.close()


# --- connection limits, extranonces, timeouts --------------------------------------------------


async def v1_connection(rig: Rig) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.stratum.port)
    await wait_until(lambda: len(rig.stratum.sessions) >= 1)
    return reader, writer


async def refused_at_once(port: int) -> bool:
    """The pool closes a new connection without a handshake reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(20):
            return await reader.read(65536) == b""
    finally:
        writer.close()


@pytest.mark.parametrize("limit", ["max_connections", "max_connections_per_ip"])
async def test_sv2_connections_count_with_v1_against_the_limits(
    make_rig: RigFactory, limit: str
) -> None:
    rig = await make_rig(**{limit: 2})
    _, v1_writer = await v1_connection(rig)
    client, _, _, _ = await open_channel(rig)  # V1 + SV2: at the limit
    assert rig.stratum.other_connections == 1
    refused = rig.stratum.refused
    assert await refused_at_once(rig.sv2.port)
    assert rig.stratum.refused == refused + 1
    # ... and a V1 connection is refused too while the SV2 one is open
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.stratum.port)
    async with asyncio.timeout(20):
        assert await reader.read(65536) == b""
    writer.close()
    client.close()  # room again once the SV2 connection is gone
    await wait_until(lambda: rig.stratum.other_connections == 0)
    again, _, _, _ = await open_channel(rig)
    again.close()
    v1_writer.close()


async def test_channel_extranonce_is_never_given_to_a_v1_session(make_rig: RigFactory) -> None:
    rig = await make_rig()
    client, _, _, _ = await open_channel(rig)
    (channel,) = rig.connected
    held = int.from_bytes(channel.extranonce1, "big")
    rig.stratum._next_extranonce = held - 1  # the V1 allocator's next pick would be it
    assert rig.stratum.allocate_extranonce1() != channel.extranonce1
    client.close()
    await wait_until(lambda: channel.closed)
    rig.stratum._next_extranonce = held - 1
    assert rig.stratum.allocate_extranonce1() == channel.extranonce1  # released


async def test_handshake_and_idle_timeouts(make_rig: RigFactory) -> None:
    rig = await make_rig(handshake_timeout_seconds=0.5, idle_timeout_seconds=1.0)
    # a handshake but no channel within handshake_timeout_seconds
    silent = await Sv2TestClient.connect(rig.sv2.port)
    await silent.setup()
    assert await silent.closed_by_pool()
    # a channel, then nothing received for idle_timeout_seconds
    idle, _, _, _ = await open_channel(rig)
    assert await idle.rest_until_closed() == []
    assert rig.sv2.timed_out == 2
    await wait_until(lambda: rig.stratum.other_connections == 0)


async def test_miner_that_never_reads_is_dropped(
    make_rig: RigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rig = await make_rig()
    rig.sv2.max_write_buffer = 32 * 1024  # tiny, so the test needs few jobs
    reading, _, _, _ = await open_channel(rig)
    # A miner that sets up and opens a channel, then never reads again (tiny receive buffer).
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", rig.sv2.port))
    initiator = Initiator()
    await loop.sock_sendall(sock, initiator.act1())
    reply = b""
    while len(reply) < ACT2_SIZE:
        reply += await loop.sock_recv(sock, ACT2_SIZE - len(reply))
    session, _ = initiator.finish(reply)
    setup = SetupConnection(PROTOCOL_MINING, 2, 2, REQUIRES_STANDARD_JOBS, "", 0, "t", "", "", "")
    opening = session.encrypt_message(setup) + session.encrypt_message(open_standard(ADDRESS))
    await loop.sock_sendall(sock, opening)
    await wait_until(lambda: len(rig.sv2.sessions) == 2)
    (slow,) = [c for c in rig.sv2.connections if c.channels and c.peer.endswith(
        f":{sock.getsockname()[1]}"
    )]  # fmt: skip
    assert slow.transport is not None
    transport = slow.transport
    sent = most = 0
    async with asyncio.timeout(20):
        while slow in rig.sv2.connections:
            rig.sv2.broadcast(clean=False)
            sent += 1
            most = max(most, transport.get_write_buffer_size())
            assert most <= 32 * 1024 + 512, most  # the limit, plus the job that crossed it
            if sent % 50 == 0:
                await asyncio.sleep(0)  # let the loop write
    assert any("not reading" in r.getMessage() for r in caplog.records)
    # The reading miner got every job and still mines.
    for _ in range(sent):
        await reading.receive_type(NewMiningJob)
    reading.send(UpdateChannel(1, 1e12, b"\xff" * 32))
    assert isinstance(await reading.receive(), SetTarget | NewMiningJob)
    sock.close()


# --- close --------------------------------------------------------------------------------------


async def test_close_sends_reconnect_to_the_same_pool(make_rig: RigFactory) -> None:
    rig = await make_rig()
    port = rig.sv2.port
    client, _, _, _ = await open_channel(rig)
    bare = await Sv2TestClient.connect(port)  # before SetupConnection: told too
    await rig.sv2.close()
    assert await client.rest_until_closed() == [Reconnect("", 0)]
    assert await bare.rest_until_closed() == [Reconnect("", 0)]
    with pytest.raises(OSError):  # no longer listening
        await asyncio.open_connection("127.0.0.1", port)


async def test_close_waits_for_a_block_being_spooled(make_rig: RigFactory) -> None:
    rig = await make_rig(gbt=easy_gbt())  # regtest's target: half of all hashes are blocks
    spooled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    found: list[Share] = []

    def block_found(miner: object, share: Share) -> asyncio.Future[None]:
        found.append(share)
        return spooled

    rig.services.block_found = block_found  # type: ignore[assignment,method-assign]
    client, channel_id, job, prev = await open_channel(rig)
    client.send(submit(channel_id, 1, job, prev, find_nonce(job, prev, lambda h: h <= EASY_TARGET)))
    await wait_until(lambda: bool(found))
    closing = asyncio.create_task(rig.sv2.close())
    await asyncio.sleep(0.3)
    assert not closing.done()  # still waiting for the block to be spooled
    spooled.set_result(None)
    await closing
    rest = await client.rest_until_closed()
    assert [type(m) for m in rest] == [SubmitSharesSuccess, Reconnect]  # the block's answer first
