"""Newline-delimited framing with a hard cap on line length."""

from __future__ import annotations


class LineTooLong(Exception):
    pass


def split_lines(
    buffer: bytearray | None, data: bytes, max_line: int
) -> tuple[list[bytes], bytearray | None]:
    """The complete lines of `buffer + data` (`\\n`, tolerating `\\r\\n`; empty ones skipped)
    and the unfinished rest, None when there is none: a connection between lines holds no
    buffer at all. `buffer` is extended in place."""
    if buffer is None:
        if b"\n" not in data:
            if len(data) > max_line:
                raise LineTooLong(f"line longer than {max_line} bytes")
            return [], bytearray(data) if data else None
        stream: bytes | bytearray = data  # whole lines, the common case: no copy
    else:
        buffer += data
        if b"\n" not in data:
            if len(buffer) > max_line:
                raise LineTooLong(f"line longer than {max_line} bytes")
            return [], buffer
        stream = buffer
    *lines, rest = stream.split(b"\n")
    if len(rest) > max_line:
        raise LineTooLong(f"line longer than {max_line} bytes")
    out = []
    for line in lines:
        if len(line) > max_line:
            raise LineTooLong(f"line longer than {max_line} bytes")
        line = line.strip()
        if line:
            out.append(bytes(line))
    return out, bytearray(rest) if rest else None

