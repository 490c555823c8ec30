"""Newline framing of the Stratum byte stream with a hard line-length cap, fed through the
protocol that frames every connection."""

from __future__ import annotations

import pytest

from pool.stratum.framing import LineTooLong, split_lines
from tests.support.framing import ProtocolFeed

SUBMIT = (
    b'{"id":4,"method":"mining.submit","params":["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4.a",'
    b'"1a2b","0000000000000001","66233fb7","1d2e3f40","00b0c000"]}'
)


def test_single_line() -> None:
    framer = ProtocolFeed(1024)
    assert framer.feed(SUBMIT + b"\n") == [SUBMIT]
    assert framer.feed(b"") == []


def test_line_split_across_chunks() -> None:
    framer = ProtocolFeed(1024)
    pieces = [SUBMIT[:1], SUBMIT[1:50], SUBMIT[50:51], SUBMIT[51:]]
    for piece in pieces:
        assert framer.feed(piece) == []
    assert framer.feed(b"\n") == [SUBMIT]


def test_every_split_point() -> None:
    data = b'{"id":1}\n{"id":2}\r\n\n{"id":3}\n'
    for cut in range(len(data) + 1):
        framer = ProtocolFeed(64)
        assert framer.feed(data[:cut]) + framer.feed(data[cut:]) == [
            b'{"id":1}',
            b'{"id":2}',
            b'{"id":3}',
        ]


def test_crlf_and_crlf_split_between_chunks() -> None:
    framer = ProtocolFeed(1024)
    assert framer.feed(b'{"id":1}\r\n{"id":2}\r') == [b'{"id":1}']
    assert framer.feed(b'\n') == [b'{"id":2}']


def test_empty_and_blank_lines_skipped() -> None:
    framer = ProtocolFeed(1024)
    assert framer.feed(b"\n\n\r\n  \r\n\t\n") == []
    assert framer.feed(b'\n{"id":1}\n\n\r\n{"id":2}\n\n') == [b'{"id":1}', b'{"id":2}']


def test_partial_tail_kept_for_next_chunk() -> None:
    framer = ProtocolFeed(1024)
    assert framer.feed(b'{"id":1}\n{"id":') == [b'{"id":1}']
    assert framer.feed(b"2}\n{") == [b'{"id":2}']
    assert framer.feed(b'"id":3}\n') == [b'{"id":3}']


def test_many_lines_in_one_chunk() -> None:
    framer = ProtocolFeed(256)
    lines = [b'{"id":%d,"method":"mining.ping","params":[]}' % i for i in range(2000)]
    assert framer.feed(b"\n".join(lines) + b"\n") == lines


def test_lines_returned_as_bytes() -> None:
    framer = ProtocolFeed(64)
    (line,) = framer.feed(b"abc\n")
    assert type(line) is bytes


def test_line_at_the_limit_is_accepted() -> None:
    framer = ProtocolFeed(256)
    line = b"x" * 256
    assert framer.feed(line) == []  # unterminated, exactly at the limit
    assert framer.feed(b"\n") == [line]
    assert ProtocolFeed(256).feed(line + b"\n") == [line]


def test_unterminated_line_over_limit_raises() -> None:
    with pytest.raises(LineTooLong):
        ProtocolFeed(256).feed(b"x" * 257)


def test_unterminated_line_over_limit_across_chunks_raises() -> None:
    framer = ProtocolFeed(256)
    for _ in range(4):
        assert framer.feed(b"x" * 64) == []
    with pytest.raises(LineTooLong):
        framer.feed(b"x")


def test_terminated_line_over_limit_raises() -> None:
    with pytest.raises(LineTooLong):
        ProtocolFeed(256).feed(b"x" * 257 + b"\n")


def test_terminated_line_over_limit_completed_in_later_chunk_raises() -> None:
    framer = ProtocolFeed(256)
    assert framer.feed(b"x" * 200) == []
    with pytest.raises(LineTooLong):
        framer.feed(b"x" * 100 + b"\nok\n")


def test_long_line_among_short_ones_raises() -> None:
    with pytest.raises(LineTooLong):
        ProtocolFeed(256).feed(b"ok\n" + b"x" * 300 + b"\nok\n")


def test_over_limit_tail_after_a_newline_raises() -> None:
    with pytest.raises(LineTooLong):
        ProtocolFeed(256).feed(b"ok\n" + b"x" * 300)


def test_huge_unterminated_stream_raises_early() -> None:
    framer = ProtocolFeed(16384)
    with pytest.raises(LineTooLong):
        for _ in range(100):
            framer.feed(b"x" * 4096)


def test_split_lines_holds_no_buffer_between_lines() -> None:
    assert split_lines(None, b"a\nb\n", 64) == ([b"a", b"b"], None)
    lines, rest = split_lines(None, b"a\nb", 64)
    assert lines == [b"a"] and rest == bytearray(b"b")
    assert split_lines(rest, b"c\r\n", 64) == ([b"bc"], None)
