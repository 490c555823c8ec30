"""Messages between the main process and its Stratum worker processes (`[stratum] workers`).

One Unix socket pair per worker, made by the main process; each message is a 4-byte big-endian
length and a pickle. Both ends are this program's own processes, started by the main process,
so pickle carries the config, templates and found blocks as they are, with no schema to keep.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

HEADER = 4
MAX_MESSAGE = 1 << 30  # a template with a 4 MB block is ~8 MB pickled; anything near this is a bug
# Far above any burst (a template to each worker, a second of share events): never pause.
WRITE_BUFFER_HIGH = 256 << 20


def encode(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(HEADER, "big") + data


class Channel(asyncio.Protocol):
    """One end of a socket pair: `send(message)`, and `on_message` for each one received.

    `on_closed` runs once when the other end has gone (its process exited or closed it)."""

    def __init__(
        self, on_message: Callable[[Any], None], on_closed: Callable[[], None] | None = None
    ) -> None:
        self.on_message = on_message
        self.on_closed = on_closed
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.closed = False

    @classmethod
    async def open(
        cls,
        sock: socket.socket,
        on_message: Callable[[Any], None],
        on_closed: Callable[[], None] | None = None,
    ) -> Channel:
        loop = asyncio.get_running_loop()
        channel = cls(on_message, on_closed)
        await loop.create_unix_connection(lambda: channel, sock=sock)
        return channel

    # asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        end = len(buffer)
        while end - start >= HEADER:
            size = int.from_bytes(buffer[start : start + HEADER], "big")
            if size > MAX_MESSAGE:
                log.error("IPC message of %d bytes; closing the channel", size)
                self.close()
                return
            if end - start - HEADER < size:
                break
            body = bytes(buffer[start + HEADER : start + HEADER + size])
            start += HEADER + size
            try:
                message = pickle.loads(body)
            except Exception:
                log.exception("unreadable IPC message; closing the channel")
                self.close()
                return
            try:
                self.on_message(message)
            except Exception:
                log.exception("IPC message %r failed", _kind(message))
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            if self.on_closed is not None:
                self.on_closed()

    # sending ------------------------------------------------------------------------------------

    def send(self, message: Any) -> bool:
        """Queue a message; False when the channel is closed (the message is dropped)."""
        return self.send_encoded(encode(message))

    def send_encoded(self, data: bytes) -> bool:
        """Queue a message already `encode`d (one encoding for several channels)."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return False
        transport.write(data)
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _kind(message: Any) -> str:
    if isinstance(message, tuple) and message and isinstance(message[0], str):
        return message[0]
    return type(message).__name__
