"""Every message between the main process and a Stratum worker process (`[stratum] workers`).

Each is a frozen dataclass, sent whole over the worker's socket pair (`pool.ipc`). A worker's
session facts travel in `Events` batches; `sid` is the connection's extranonce1, unique across
all workers while it is connected.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

from .config import StratumConfig, StratumV2Config
from .found import FoundBlock
from .jobs import Template
from .sv2.certificate import ServerIdentity


class Message:
    """Pickles as its class and its field values: half the time of a dataclass's default
    pickling, on the share path of every worker."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        fields = self.__slots__
        values = attrgetter(*fields)(self) if fields else ()
        return type(self), values if len(fields) != 1 else (values,)


# --- main process -> worker ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sv2Setup:
    """What a worker needs to serve Stratum V2: the `[stratum_v2]` config (its port the one
    the main process reserved) and the pool's identity, the same in every worker so a miner
    reconnecting to any of them meets the same pool."""

    config: StratumV2Config
    identity: ServerIdentity


@dataclass(frozen=True, slots=True)
class Start(Message):
    """The worker's set-up, first thing after it is launched."""

    config: StratumConfig
    data_dir: Path
    index: int  # the worker's number: the top byte of its extranonce1s
    template: Template | None
    coinbase_tag: bytes
    log_level: int
    sv2: Sv2Setup | None = None  # None: Stratum V2 is off


@dataclass(frozen=True, slots=True)
class NewTemplate(Message):
    """A new current template: build and send its jobs."""

    template: Template
    coinbase_tag: bytes


@dataclass(frozen=True, slots=True)
class NewConfig(Message):
    """A reloaded `[stratum]` config to apply."""

    config: StratumConfig


@dataclass(frozen=True, slots=True)
class PayoutResolved(Message):
    """The answer to `ResolvePayout`: a script, or why not (refusal: the address; error: the
    pool could not check it)."""

    request: int
    script: bytes | None = None
    refusal: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RememberDifficulties(Message):
    """Miners that left another worker, so a reconnect here gets its difficulty back."""

    difficulties: tuple[tuple[str, float], ...]  # (username, difficulty)


@dataclass(frozen=True, slots=True)
class Stop(Message):
    """Send every miner `client.reconnect`, spool found blocks, say `Stopped`, exit."""


# --- worker -> main process ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready(Message):
    """It listens on the pool's port."""

    pid: int


@dataclass(frozen=True, slots=True)
class Failed(Message):
    """It could not listen."""

    errno: int
    message: str


@dataclass(frozen=True, slots=True)
class Stopped(Message):
    """A clean stop: nothing is left to hand over."""


@dataclass(frozen=True, slots=True)
class ResolvePayout(Message):
    """Check a payout address (only the main process talks to the node)."""

    request: int
    address: str


@dataclass(frozen=True, slots=True)
class BlockFound(Message):
    """A found block, already spooled (fsynced) by the worker: to submit, not to spool again."""

    block: FoundBlock


# The session facts in an `Events` batch:


@dataclass(frozen=True, slots=True)
class Connected(Message):
    """A miner connected."""

    sid: bytes
    connected_at: float  # time.monotonic() (one clock for all processes)
    protocol: str = "v1"  # "sv2" for a Stratum V2 channel


@dataclass(frozen=True, slots=True)
class Disconnected(Message):
    """A miner's connection ended."""

    sid: bytes
    remember: tuple[str, float] | None = None  # (username, difficulty) for the other workers


@dataclass(frozen=True, slots=True)
class MinerChanged(Message):
    """A connection's state as the API shows it, sent when it changed."""

    sid: bytes
    address: str | None
    worker: str
    difficulty: float
    user_agent: str
    mining: bool
    protocol: str = "v1"


@dataclass(frozen=True, slots=True)
class ShareAccepted(Message):
    """An accepted share; it is also the share as observers see it (a `ShareView`)."""

    sid: bytes
    address: str | None
    worker: str
    difficulty: float  # what its hash achieved
    is_block: bool
    judged_at: float  # the difficulty it was judged at


@dataclass(frozen=True, slots=True)
class ShareRejected(Message):
    """A rejected share (Stratum error `code`)."""

    sid: bytes
    address: str | None
    worker: str
    code: int
    reason: str


SessionEvent = Connected | Disconnected | MinerChanged | ShareAccepted | ShareRejected


@dataclass(frozen=True, slots=True)
class Events(Message):
    """A batch of session facts, in the order they happened."""

    events: tuple[SessionEvent, ...]


ToWorker = Start | NewTemplate | NewConfig | PayoutResolved | RememberDifficulties | Stop
FromWorker = Ready | Failed | Stopped | ResolvePayout | BlockFound | Events
