"""What happens in the pool, for observers (stats, metrics, alerts) that must never slow or
break mining: every callback runs on the event loop, must not block, and its exceptions are
logged and swallowed by `Events`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .found import FoundBlock
    from .jobs import Template

log = logging.getLogger(__name__)


class MinerView(Protocol):
    """What observers read of a miner's connection: a live `Session`, or, with `[stratum]
    workers` > 1, the main process's copy of a session that lives in a worker process."""

    @property
    def address(self) -> str | None: ...
    @property
    def worker(self) -> str: ...
    @property
    def connected_at(self) -> float: ...  # time.monotonic() (one clock for all processes)
    @property
    def difficulty(self) -> float: ...
    @property
    def user_agent(self) -> str: ...
    @property
    def protocol(self) -> str: ...  # "v1" or "sv2"
    @property
    def mining(self) -> bool: ...
    @property
    def closed(self) -> bool: ...


class ShareView(Protocol):
    """What observers read of an accepted share."""

    @property
    def difficulty(self) -> float: ...  # the difficulty its hash achieved
    @property
    def is_block(self) -> bool: ...


class PoolListener:
    """Override what you need; the defaults do nothing."""

    def on_share(self, session: MinerView, share: ShareView, difficulty: float) -> None:
        """An accepted share, judged at `difficulty` (session.worker names the worker)."""

    def on_reject(self, session: MinerView, code: int, reason: str) -> None:
        """A rejected share (Stratum error `code`)."""

    def on_block_found(self, block: FoundBlock) -> None:
        """A block was found and spooled; submission is under way."""

    def on_block_final(self, block: FoundBlock) -> None:
        """The node gave its final answer on a block (block.status says which)."""

    def on_template(self, template: Template, clean: bool) -> None:
        """A new template was installed (clean: it builds on a new previous block)."""

    def on_connect(self, session: MinerView) -> None:
        """A miner connected."""

    def on_disconnect(self, session: MinerView) -> None:
        """A miner disconnected."""


_EVENTS = tuple(name for name in vars(PoolListener) if name.startswith("on_"))


class Events:
    """Fans each event out to the registered listeners, isolating their failures."""

    def __init__(self) -> None:
        self.listeners: list[PoolListener] = []
        # event name -> the bound methods of the listeners that override it (built on add):
        # no getattr and no call of an empty default for every share.
        self._handlers: dict[str, list[Callable[..., None]]] = {}

    def add(self, listener: PoolListener) -> None:
        self.listeners.append(listener)
        self._handlers = {
            name: [
                handler for each in self.listeners
                if getattr(handler := getattr(each, name), "__func__", None)
                is not getattr(PoolListener, name)
            ]
            for name in _EVENTS
        }

    def _each(self, name: str, *args: object) -> None:
        for handler in self._handlers.get(name, ()):
            try:
                handler(*args)
            except Exception:
                log.exception("%s failed", getattr(handler, "__qualname__", name))

    def share(self, session: MinerView, share: ShareView, difficulty: float) -> None:
        self._each("on_share", session, share, difficulty)

    def reject(self, session: MinerView, code: int, reason: str) -> None:
        self._each("on_reject", session, code, reason)

    def block_found(self, block: FoundBlock) -> None:
        self._each("on_block_found", block)

    def block_final(self, block: FoundBlock) -> None:
        self._each("on_block_final", block)

    def template(self, template: Template, clean: bool) -> None:
        self._each("on_template", template, clean)

    def connect(self, session: MinerView) -> None:
        self._each("on_connect", session)

    def disconnect(self, session: MinerView) -> None:
        self._each("on_disconnect", session)
