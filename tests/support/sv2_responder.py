"""A minimal Stratum V2 responder for the interop tests (not the pool): the Noise handshake with
pool.sv2, SetupConnection.Success and Open{Standard,Extended}MiningChannel.Success, then it
closes the connection. It records what it received, decoded by pool.sv2.codec."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

from pool.sv2.certificate import ServerIdentity
from pool.sv2.codec import (
    Message,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetupConnection,
    SetupConnectionSuccess,
    Sv2DecodeError,
    decode_message,
    int_to_u256,
)
from pool.sv2.noise import ACT1_SIZE, NoiseSession, respond

# difficulty 1: the firmware should log "diff 1" if it reads the U256 little-endian
DIFF1_TARGET = 0xFFFF << 208
EXTRANONCE_PREFIX = bytes.fromhex("0102030405060708")
EXTRANONCE_SIZE = 4


@dataclasses.dataclass
class Seen:
    handshakes: int = 0
    messages: list[Message] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)


async def _read_message(
    reader: asyncio.StreamReader, session: NoiseSession, pending: list[Message]
) -> Message:
    while not pending:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("closed")
        pending.extend(decode_message(h, p) for h, p in session.feed(data))
    return pending.pop(0)


def _reply(request: Message) -> Message | None:
    if isinstance(request, SetupConnection):
        return SetupConnectionSuccess(used_version=2, flags=0)
    if isinstance(request, OpenExtendedMiningChannel):
        return OpenExtendedMiningChannelSuccess(
            request.request_id, 1, int_to_u256(DIFF1_TARGET), EXTRANONCE_SIZE, EXTRANONCE_PREFIX, 0
        )
    if isinstance(request, OpenStandardMiningChannel):
        return OpenStandardMiningChannelSuccess(
            request.request_id, 1, int_to_u256(DIFF1_TARGET), b"", 0
        )
    return None


async def _serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    identity: ServerIdentity,
    seen: Seen,
) -> None:
    try:
        act1 = await reader.readexactly(ACT1_SIZE)
        reply, session = respond(act1, identity.static_secret, identity.certificate)
        writer.write(reply)
        seen.handshakes += 1
        pending: list[Message] = []
        for _ in range(2):  # SetupConnection, then the channel
            request = await _read_message(reader, session, pending)
            seen.messages.append(request)
            answer = _reply(request)
            if answer is None:
                break
            writer.write(session.encrypt_message(answer))
            await writer.drain()
    except (Sv2DecodeError, ConnectionError, asyncio.IncompleteReadError) as e:
        seen.errors.append(f"{type(e).__name__}: {e}")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def responder(authority_secret: bytes) -> AsyncIterator[tuple[int, Seen]]:
    """Listen on a free loopback port; yields (port, what was seen)."""
    identity = ServerIdentity.issue(authority_secret, 3600, int(time.time()))
    seen = Seen()
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, identity, seen), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, seen
    finally:
        server.close()
        await server.wait_closed()
