"""Events: each event reaches the listeners that handle it, in order, and one failing listener
never stops the others."""

from __future__ import annotations

import logging

import pytest

from pool.events import Events, PoolListener


class Recorder(PoolListener):
    def __init__(self, name: str, seen: list[tuple[str, object]]) -> None:
        self.name = name
        self.seen = seen

    def on_reject(self, session: object, code: int, reason: str) -> None:  # type: ignore[override]
        self.seen.append((self.name, code))


class Broken(PoolListener):
    def on_reject(self, session: object, code: int, reason: str) -> None:  # type: ignore[override]
        raise RuntimeError("bug in a listener")


def test_events_reach_overriding_listeners_in_order(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, object]] = []
    events = Events()
    events.add(Recorder("first", seen))
    events.add(Broken())
    events.add(PoolListener())  # handles nothing: never called
    events.add(Recorder("last", seen))
    with caplog.at_level(logging.ERROR):
        events.reject(object(), 23, "low difficulty share")  # type: ignore[arg-type]
    assert seen == [("first", 23), ("last", 23)]
    assert "Broken.on_reject failed" in caplog.text
    events.share(object(), object(), 1.0)  # type: ignore[arg-type]  # nobody handles it
    assert seen == [("first", 23), ("last", 23)]


def test_instance_level_handler_is_called() -> None:
    calls: list[str] = []
    listener = PoolListener()
    listener.on_connect = lambda session: calls.append("connect")  # type: ignore[method-assign]
    events = Events()
    events.add(listener)
    events.connect(object())  # type: ignore[arg-type]
    assert calls == ["connect"]
