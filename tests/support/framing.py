"""Bytes fed through the real framing path: `StratumProtocol.data_received`, with a session
that records the lines it is handed."""

from __future__ import annotations

from typing import Any, cast

from pool.stratum.framing import LineTooLong
from pool.stratum.server import StratumProtocol


class RecordingSession:
    """Takes the place of the protocol's `Session`: keeps each framed line."""

    peer = "192.0.2.1:3333"

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.closed = False
        self.close_reason = ""
        self.last_activity = 0.0

    def handle_line(self, line: bytes) -> None:
        assert type(line) is bytes
        self.lines.append(line)

    def close(self, reason: str = "") -> None:
        self.closed = True
        self.close_reason = reason


class ProtocolFeed:
    """One connection's StratumProtocol, fed chunk by chunk as the event loop feeds it."""

    def __init__(self, max_line: int) -> None:
        self.protocol = StratumProtocol(cast(Any, None))  # no server: nothing here needs one
        self.protocol.max_line = max_line
        self.session = RecordingSession()
        self.protocol.session = cast(Any, self.session)

    @property
    def held(self) -> int:
        """Bytes of an unfinished line held between reads."""
        buffer = self.protocol.buffer
        return 0 if buffer is None else len(buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The lines this chunk completed; LineTooLong when the protocol closed over one."""
        before = len(self.session.lines)
        self.protocol.data_received(data)
        if self.session.close_reason == "line too long":
            raise LineTooLong(self.session.close_reason)
        return self.session.lines[before:]
