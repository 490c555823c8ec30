"""Newline-delimited framing with a hard cap on line length."""

from __future__ import annotations


class LineTooLong(Exception):
    pass


class LineFramer:
    """Splits a byte stream into lines (`\\n`, tolerating `\\r\\n`), skipping empty ones."""

    __slots__ = ("max_line", "_buffer")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        if b"\n" not in data:
            if len(self._buffer) > self.max_line:
                raise LineTooLong(f"line longer than {self.max_line} bytes")
            return []
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        if len(rest) > self.max_line:
            raise LineTooLong(f"line longer than {self.max_line} bytes")
        out = []
        for line in lines:
            if len(line) > self.max_line:
                raise LineTooLong(f"line longer than {self.max_line} bytes")
            line = line.strip()
            if line:
                out.append(bytes(line))
        return out
