"""One miner connection as a state machine: connected -> subscribed/authorized -> mining.

The session knows nothing about sockets: it reads lines and writes lines through a `Writer`
(the server's asyncio protocol, which has the session), has a `VarDiff` for its difficulty, and
asks the pool (`PoolServices`) for payout scripts, jobs and block submission. What the sessions
of one server share (difficulty memory, shared strings) is a `SessionCommons` the server owns.
Every request with an id gets exactly one answer, in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

import orjson

from ..config import StratumConfig
from ..consensus.address import address_allowed, normalize_address
from ..invalid import CountsInvalidShares
from ..jobs import (
    EXTRANONCE2_SIZE,
    NERDMINER_DOCUMENT_BYTES,
    Job,
    TemplateError,
)
from ..logsafety import is_plain, miner_text
from ..services import AddressRefused, PoolServices
from ..shares import (
    ERR_DUPLICATE,
    ERR_LOW_DIFFICULTY,
    ERR_NOT_SUBSCRIBED,
    ERR_OTHER,
    ERR_STALE,
    ERR_UNAUTHORIZED,
    RootCache,
    Share,
    ShareError,
    build_share,
    first_submission,
    share_target,
)
from ..vardiff import VarDiff, round_difficulty

log = logging.getLogger(__name__)

MAX_JOBS_PER_SESSION = 64  # jobs remembered per connection for share matching
AUTHORIZE_REFUSED_CLOSE_SECONDS = 1.0
UNPLAIN_USERNAME = (
    "the username holds control or invisible characters; set it to your payout address, "
    "optionally followed by .workername, in plain text"
)
# Rejects that say the miner (or whatever pretends to be one) is broken, counted against
# [stratum] max_invalid_shares_per_minute (stale ones after a grace: pool.invalid).
COUNTED_REJECTS = frozenset(
    (ERR_OTHER, ERR_STALE, ERR_DUPLICATE, ERR_LOW_DIFFICULTY, ERR_UNAUTHORIZED,
     ERR_NOT_SUBSCRIBED)
)
DIFFICULTY_MEMORY_SECONDS = 6 * 3600.0
DIFFICULTY_MEMORY_ENTRIES = 100_000
INTERNAL_ERROR_LOG_SECONDS = 60.0


class Writer(Protocol):
    """The connection a session writes through (the asyncio protocol, in the server)."""

    @property
    def peer(self) -> str:
        """`ip:port`, for logs."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


_INVALID = object()


def _json_fallback(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        # ValueError includes bad UTF-8 and integers over Python's 4300-digit limit;
        # RecursionError is nesting deeper than the interpreter's recursion limit.
        return _INVALID


def encode(message: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(message) + b"\n"
    except TypeError:  # an id beyond 64 bits, echoed back from the json fallback below
        return json.dumps(message, separators=(",", ":")).encode() + b"\n"


# Firmware known to read a fractional `mining.set_difficulty`: user agent pattern, and the first
# version that does (groups major, minor) or None for all. Everything else gets integers >= 1:
# NerdQAxe++ reads `params[0].as<uint32_t>()` (main/stratum/stratum_api.cpp), Braiins
# `f32 as u32`, ESP-Miner before 2.14.0 cJSON `valueint`; 0.5 would reach the chip as 0 (every
# nonce a share).
FRACTIONAL_DIFFICULTY_AGENTS: tuple[tuple[re.Pattern[str], tuple[int, int] | None], ...] = (
    # ESP-Miner `bitaxe/<ASIC>/<version>`: valuedouble from 2.14.0 (ESP-Miner #1594)
    (re.compile(r"bitaxe/[^/]*/v?(?P<major>\d+)\.(?P<minor>\d+)"), (2, 14)),
    # NerdMiner_v2 `NerdMinerV2/<version>`: (double)doc["params"][0] (src/stratum.cpp)
    (re.compile(r"(NerdMinerV2|HAN_SOLOminer)/"), None),
    # cgminer `cgminer/<version>`: json_number_value, a double (util.c parse_diff)
    (re.compile(r"cgminer/"), None),
    # cpuminer (pooler's, -multi, -opt) `cpuminer/<version>`: json_number_value
    (re.compile(r"cpuminer(-multi|-opt)?/"), None),
    # solopool's own CPU miner and benchmark client
    (re.compile(r"solopool-(miner|bench)/"), None),
)


NERDMINER_AGENTS = ("NerdMinerV2/", "HAN_SOLOminer/")


def fractional_difficulty_ok(user_agent: str) -> bool:
    """Whether this firmware reads a fractional difficulty; if not it gets integers >= 1."""
    for pattern, minimum in FRACTIONAL_DIFFICULTY_AGENTS:
        match = pattern.match(user_agent)
        if match is not None:
            return minimum is None or (int(match["major"]), int(match["minor"])) >= minimum
    return False


SHARED_STRINGS_MAX = 4096


class SharedStrings:
    """One string object for equal values across connections (10,000 miners mining to one
    address with one firmware hold one copy of each). Bounded, and emptied when full, because
    the values come from the network; sys.intern is not, and strings interned in 3.12 live on."""

    __slots__ = ("limit", "_known")

    def __init__(self, limit: int = SHARED_STRINGS_MAX) -> None:
        self.limit = limit
        self._known: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._known)

    def __call__(self, value: str) -> str:
        known = self._known.get(value)
        if known is None:
            if len(self._known) >= self.limit:
                self._known.clear()
            self._known[value] = known = value
        return known


def split_username(username: str) -> tuple[str, str]:
    """`ADDRESS.worker` or `ADDRESS_worker` (neither character occurs in an address)."""
    for i, ch in enumerate(username):
        if ch in "._":
            return username[:i], username[i + 1 :]
    return username, ""


class DifficultyMemory:
    """The last difficulty of each (address, worker) that disconnected, kept for some hours, so a
    miner that reconnects (network blip, pool restart, firmware reboot) does not start over at
    the start difficulty and wait for vardiff to find its rate again."""

    __slots__ = ("ttl", "max_entries", "_entries")

    def __init__(
        self, ttl: float = DIFFICULTY_MEMORY_SECONDS, max_entries: int = DIFFICULTY_MEMORY_ENTRIES
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        # (address, worker) -> (when, difficulty), oldest first
        self._entries: dict[tuple[str, str], tuple[float, float | int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(username: str) -> tuple[str, str]:
        address, worker = split_username(username)
        return normalize_address(address), worker

    def remember(self, username: str, difficulty: float | int, now: float) -> None:
        key = self._key(username)
        self._entries.pop(key, None)
        self._entries[key] = (now, difficulty)
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]

    def recall(self, username: str, now: float) -> float | int | None:
        entry = self._entries.get(self._key(username))
        if entry is None or now - entry[0] > self.ttl:
            return None
        return entry[1]

    def prune(self, now: float) -> None:
        entries = self._entries
        while entries:
            key = next(iter(entries))
            if now - entries[key][0] <= self.ttl:
                break
            del entries[key]


class InternalErrorLog:
    """A bug met by some input: logged with its traceback, at most once a minute (a remote
    peer that found one must not be able to fill the log with it)."""

    __slots__ = ("interval", "last_logged", "unlogged")

    def __init__(self, interval: float = INTERNAL_ERROR_LOG_SECONDS) -> None:
        self.interval = interval
        self.last_logged = -interval
        self.unlogged = 0

    def report(self, peer: str, line: bytes) -> None:
        now = time.monotonic()
        if now - self.last_logged < self.interval:
            self.unlogged += 1
            return
        self.last_logged = now
        log.exception(
            "%s: internal error handling %r (answered with error 20; %d similar not logged)",
            peer, line[:200], self.unlogged,
        )
        self.unlogged = 0


class SessionCommons:
    """What the sessions of one server share, owned by that server: the difficulty memory, one
    copy of equal strings, the rate-limited log of internal errors, and one start-difficulty
    object (an int above 256 is 32 bytes, per connection)."""

    __slots__ = ("memory", "shared", "internal_errors", "_start")

    def __init__(self, memory: DifficultyMemory | None = None) -> None:
        self.memory = memory if memory is not None else DifficultyMemory()
        self.shared = SharedStrings()
        self.internal_errors = InternalErrorLog()
        self._start: tuple[float, float | int] = (math.nan, 0)

    def start_difficulty(self, configured: float) -> float | int:
        """round_difficulty(configured), one object for every connection."""
        if self._start[0] != configured:
            self._start = (configured, round_difficulty(configured))
        return self._start[1]


class Session(CountsInvalidShares):
    """One miner's Stratum V1 conversation. States (see `state`): connected, then subscribed
    and authorized in either order; with both it is mining (difficulty, then jobs) until
    closed. It has a vardiff controller (`vardiff`) and writes through its `writer`."""

    protocol = "v1"  # what observers show beside the worker
    __slots__ = (
        "pool",
        "writer",
        "vardiff",
        "extranonce1",
        "user_agent",
        "subscribed",
        "address",
        "more_workers",
        "payout_script",
        "version_mask",
        "version_rolling_configured",
        "warned_unnegotiated_bits",
        "warned_document_size",
        "difficulty",
        "suggested_difficulty",
        "newest_job_id",
        "newest_job_difficulty",
        "older_jobs",
        "seen",
        "mining",
        "closed",
        "connected_at",
        "last_share_at",
        "accepted",
        "rejected",
        "worker",
        "roots",
        "username",
        "commons",
        "last_activity",
        "close_reason",
    )

    def __init__(
        self,
        pool: PoolServices,
        writer: Writer,
        extranonce1: bytes,
        commons: SessionCommons | None = None,
    ) -> None:
        cfg = pool.config
        now = time.monotonic()
        commons = commons if commons is not None else SessionCommons()
        self.pool = pool
        self.writer = writer
        self.commons = commons
        self.extranonce1 = extranonce1
        self.user_agent = ""
        self.subscribed = False
        self.address: str | None = None
        # Names authorized besides `username` (most connections have only that one: no set).
        self.more_workers: set[str] | None = None
        self.payout_script: bytes | None = None
        self.version_mask = cfg.version_rolling_mask
        self.version_rolling_configured = False
        self.warned_unnegotiated_bits = False
        self.warned_document_size = False
        self.difficulty: float | int = commons.start_difficulty(cfg.start_difficulty)
        self.suggested_difficulty: float | None = None
        self.vardiff = VarDiff(
            cfg.share_interval_seconds, cfg.min_difficulty, cfg.max_difficulty, now
        )
        # The jobs this connection was sent, with the difficulty in force when it was sent each:
        # the newest in two slots, older ones (oldest first) in a dict made at the second job.
        # Between blocks an idle miner often has one job, and a dict for it costs 184 bytes.
        self.newest_job_id: str | None = None
        self.newest_job_difficulty: float | int = 0
        self.older_jobs: dict[str, float | int] | None = None
        # header hashes of accepted shares on the current previous block (insertion-ordered);
        # None until the first one (an idle connection has none)
        self.seen: dict[bytes, None] | None = None
        self.mining = False
        self.closed = False
        self.connected_at = now
        self.last_share_at: float | None = None
        self.accepted = 0
        self.rejected = 0
        self.worker = ""  # the worker name of the latest submit (else of the authorize)
        self.roots: RootCache | None = None  # made at the first share
        self.username = ""  # as first authorized (the key of the difficulty memory)
        self.last_activity = now  # when the last line arrived (the server's idle timeout)
        self.start_invalid_count(now)
        self.close_reason = ""

    @property
    def peer(self) -> str:
        """`ip:port`, for logs (asked from the connection, not held per session)."""
        return self.writer.peer

    @property
    def state(self) -> str:
        """Where the conversation is: connected, subscribed, authorized (either of the two
        alone), mining (both), or closed."""
        if self.closed:
            return "closed"
        if self.mining:
            return "mining"
        if self.address is not None:
            return "authorized"
        return "subscribed" if self.subscribed else "connected"

    @property
    def workers(self) -> set[str]:
        """Every name this connection authorized (built on demand)."""
        names = set(self.more_workers) if self.more_workers is not None else set()
        if self.username:
            names.add(self.username)
        return names

    def _add_worker(self, username: str) -> str | None:
        """Add a name this connection mines under; returns why it cannot (too long, too many)."""
        if username == self.username or (
            self.more_workers is not None and username in self.more_workers
        ):
            return None
        refusal = self._name_refusal(username)
        if refusal is not None:
            return refusal
        limit = self.pool.config.max_workers_per_connection
        if 1 + (len(self.more_workers) if self.more_workers is not None else 0) >= limit:
            return (
                f"more than {limit} worker names on one connection; use a connection per "
                "worker (or raise [stratum] max_workers_per_connection)"
            )
        if self.more_workers is None:
            self.more_workers = set()
        self.more_workers.add(username)
        return None

    def _name_refusal(self, username: str) -> str | None:
        limit = self.pool.config.max_worker_name_length
        if len(split_username(username)[1]) > limit:
            return (
                f"worker name longer than {limit} characters; shorten it (or raise "
                "[stratum] max_worker_name_length)"
            )
        return None

    def _refuse_name(self, msg_id: Any, reason: str) -> None:
        """An extra name refused: the connection keeps mining under its names, but a stream of
        such requests counts as invalid like any broken miner's."""
        self.error(msg_id, ERR_UNAUTHORIZED, reason, False)
        self._count_invalid(reason)

    # --- output -------------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        if not self.closed:
            self.writer.write(encode(message))

    def reply(self, msg_id: Any, result: Any) -> None:
        self.send({"id": msg_id, "result": result, "error": None})

    def error(self, msg_id: Any, code: int, message: str, result: Any = None) -> None:
        self.send({"id": msg_id, "result": result, "error": [code, message, None]})

    def notify(self, method: str, params: list[Any]) -> None:
        self.send({"id": None, "method": method, "params": params})

    def close(self, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self.writer.close()

    def remembered_difficulty(self) -> tuple[str, float] | None:
        """What the difficulty memory keeps of this miner when it leaves: (username,
        difficulty) for one that did work or chose its difficulty; strangers' churn is not
        kept."""
        if self.mining and self.username and (
            self.accepted or self.suggested_difficulty is not None
        ):
            return self.username, self.difficulty
        return None

    def close_with_message(self, reason: str, level: int = logging.INFO) -> None:
        """Tell the miner why (ESP-Miner and cgminer log it), then close."""
        log.log(level, "%s: closing: %s", self.peer, reason)
        self.notify("client.show_message", [reason[:256]])
        self.close(reason)

    # --- input --------------------------------------------------------------------------------

    def handle_line(self, line: bytes) -> Awaitable[None] | None:
        """Handle one line; returns an awaitable when the answer needs the node (authorize).

        Never raises: whatever the line holds, a request with an id gets exactly one answer."""
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            # orjson refuses some of what json takes (NaN, deep nesting): json has the last word.
            message = _json_fallback(line)
            if message is _INVALID:
                self.error(None, ERR_OTHER, "invalid JSON")
                return None
        if isinstance(message, dict) and isinstance(message.get("id"), float):
            # orjson reads integers beyond 64 bits as floats; json keeps the id exactly.
            message = _json_fallback(line)
        if not isinstance(message, dict):
            self.error(None, ERR_OTHER, "expected a JSON object")
            return None
        msg_id = message.get("id")
        if not (msg_id is None or isinstance(msg_id, int | str)):
            msg_id = None  # objects, arrays and floats are not ids (bool is an int)
        try:
            return self._dispatch(message, msg_id)
        except Exception:
            self.commons.internal_errors.report(self.peer, line)
            self.error(msg_id, ERR_OTHER, "internal error")
            return None

    def _dispatch(self, message: dict[str, Any], msg_id: Any) -> Awaitable[None] | None:
        method = message.get("method")
        if method is None and ("result" in message or "error" in message):
            return None  # a reply to something we sent (e.g. ESP-Miner's pong)
        if not isinstance(method, str):
            self.error(msg_id, ERR_OTHER, "missing method")
            return None
        params = message.get("params", [])
        if params is None:
            params = []
        if not isinstance(params, list):
            if method == "pong":
                return None  # an answer whatever it carries (see on_pong)
            self.error(msg_id, ERR_OTHER, "params must be a list")
            return None
        handler = self._handlers.get(method)
        if handler is None:
            self.error(msg_id, ERR_OTHER, f"unknown method {method[:64]}")
            return None
        try:
            return handler(self, msg_id, params)
        except ShareError as exc:
            self.error(msg_id, exc.code, exc.message)
        except (TypeError, ValueError, IndexError, KeyError, OverflowError, AttributeError) as exc:
            log.debug("%s: bad %s params: %s", self.peer, method, exc)
            self.error(msg_id, ERR_OTHER, f"invalid params for {method}")
        return None

    # --- handlers -----------------------------------------------------------------------------

    def on_configure(self, msg_id: Any, params: list[Any]) -> None:
        extensions = params[0] if params else []
        options = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        if not isinstance(extensions, list):
            raise ValueError("extensions must be a list")
        result: dict[str, Any] = {}
        for ext in extensions:
            if ext == "version-rolling":
                miner_mask = options.get("version-rolling.mask") or "ffffffff"
                if isinstance(miner_mask, str):
                    miner_mask = int(miner_mask, 16)
                mask = self.pool.config.version_rolling_mask & int(miner_mask)
                self.version_mask = mask
                self.version_rolling_configured = True
                result["version-rolling"] = mask != 0
                result["version-rolling.mask"] = f"{mask:08x}"
            elif isinstance(ext, str):
                result[ext] = False
        self.reply(msg_id, result)

    def on_subscribe(self, msg_id: Any, params: list[Any]) -> None:
        if params and isinstance(params[0], str):
            self.user_agent = self.commons.shared(miner_text(params[0]))
        if not fractional_difficulty_ok(self.user_agent):
            # It reads set_difficulty as an integer: 0.5 would become 0. A suggestion below 1
            # is raised to 1 by the minimum; others are rounded to whole numbers (clamp).
            self.vardiff.minimum = max(self.vardiff.minimum, 1.0)
            self.difficulty = max(round_difficulty(self.difficulty), 1)
        sid = self.extranonce1.hex()
        self.subscribed = True
        self.reply(
            msg_id,
            [[["mining.set_difficulty", sid], ["mining.notify", sid]], sid, EXTRANONCE2_SIZE],
        )
        self._maybe_start()

    def on_authorize(self, msg_id: Any, params: list[Any]) -> Awaitable[None] | None:
        if not params or not isinstance(params[0], str) or not params[0].strip():
            self.error(msg_id, ERR_UNAUTHORIZED, "username must be your payout address", False)
            return None
        username = params[0].strip()[:256]
        if not is_plain(username):  # refused, not cleaned: it names the payout address
            self._refuse(msg_id, miner_text(username), UNPLAIN_USERNAME)
            return None
        address, worker = split_username(username)
        if self.address is not None:
            if address != self.address:
                self.error(
                    msg_id,
                    ERR_UNAUTHORIZED,
                    f"this connection already mines to {self.address}; "
                    "use a separate connection for another address",
                    False,
                )
                return None
            refusal = self._add_worker(username)
            if refusal is not None:
                self._refuse_name(msg_id, refusal)
                return None
            self.reply(msg_id, True)
            return None
        refusal = self._name_refusal(username)
        if refusal is not None:
            self._refuse(msg_id, username, refusal)
            return None
        if not self.address_allowed(address):
            self._refuse(
                msg_id, username,
                f"{address[:100]} is not allowed to mine on this pool (its operator lists the "
                "payout addresses it accepts in [stratum] allowed_addresses)",
            )
            return None
        return self._authorize(msg_id, username, address)

    def address_allowed(self, address: str) -> bool:
        return address_allowed(self.pool.config.allowed_addresses, address)

    def _refuse(self, msg_id: Any, username: str, reason: str) -> None:
        log.info("%s: refused authorize %r: %s", self.peer, username[:128], reason)
        self.error(msg_id, ERR_UNAUTHORIZED, reason, False)
        self.notify("client.show_message", [reason[:256]])
        # ESP-Miner keeps a refused connection open; close it so the miner retries.
        try:
            asyncio.get_running_loop().call_later(AUTHORIZE_REFUSED_CLOSE_SECONDS, self.close)
        except RuntimeError:  # no event loop (a unit test driving the session by hand)
            self.close()

    async def _authorize(self, msg_id: Any, username: str, address: str) -> None:
        try:
            script = await self.pool.resolve_payout(address)
        except AddressRefused as exc:
            self._refuse(msg_id, username, str(exc))
            return
        except Exception as exc:  # the node or a bug: answer, keep the connection, log it
            log.error("%s: authorize %r failed: %r", self.peer, username[:128], exc)
            self.error(msg_id, ERR_OTHER, "authorization failed; try again", False)
            return
        if self.address is not None:  # a pipelined second authorize won the race
            refusal = self._add_worker(username) if self.address == address else None
            if refusal is not None:
                self._refuse_name(msg_id, refusal)
                return
            self.reply(msg_id, self.address == address)
            return
        self.address = self.commons.shared(address)
        self.payout_script = script
        self.worker = username
        self.username = username
        if self.suggested_difficulty is None:
            # A worker coming back gets the difficulty it had (its own suggestion wins).
            remembered = self.commons.memory.recall(username, time.monotonic())
            if remembered is not None:
                self.difficulty = self.vardiff.clamp(remembered, self._network_difficulty())
        log.info("%s: authorized %s (%s)", self.peer, username, self.user_agent or "no agent")
        self.reply(msg_id, True)
        self._maybe_start()

    def on_suggest_difficulty(self, msg_id: Any, params: list[Any]) -> None:
        value = params[0] if params else None
        if isinstance(value, str):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("difficulty must be a number")
        if not math.isfinite(value) or value <= 0:
            raise ValueError("difficulty must be positive")
        self.reply(msg_id, True)
        if value == self.suggested_difficulty:
            return  # NerdMiner repeats it as a keepalive
        self.suggested_difficulty = float(value)
        new = self.vardiff.clamp(value, self._network_difficulty())
        if self.mining:
            self.set_difficulty(new)
        else:
            self.difficulty = new

    def on_extranonce_subscribe(self, msg_id: Any, params: list[Any]) -> None:
        self.reply(msg_id, True)

    def on_true(self, msg_id: Any, params: list[Any]) -> None:
        self.reply(msg_id, True)

    def on_ping(self, msg_id: Any, params: list[Any]) -> None:
        self.reply(msg_id, "pong")

    def on_pong(self, msg_id: Any, params: list[Any]) -> None:
        """ESP-Miner >= 2.13 answers mining.ping with a request-shaped {"method":"pong"}: it is
        an answer, so it gets none (an error under that id would count as a rejected share)."""

    def on_submit(self, msg_id: Any, params: list[Any]) -> Awaitable[None] | None:
        try:
            share, difficulty = self._check_submit(params)
        except ShareError as exc:
            self._reject(msg_id, exc.code, exc.message)
            return None
        except (TypeError, ValueError, IndexError, KeyError, OverflowError, AttributeError):
            self._reject(msg_id, ERR_OTHER, "invalid params for mining.submit")
            return None
        if share.is_block:
            spooled = self.pool.block_found(self, share)
            if spooled is not None:
                return self._accept_when_spooled(msg_id, share, difficulty, spooled)
        self._accept(msg_id, share, difficulty)
        return None

    async def _accept_when_spooled(
        self, msg_id: Any, share: Share, difficulty: float, spooled: Awaitable[None]
    ) -> None:
        # `true` for a block only once it is on disk: a crash after the answer loses nothing.
        # Shielded: closing this connection must not stop the block being spooled.
        await asyncio.shield(spooled)
        self._accept(msg_id, share, difficulty)

    def _accept(self, msg_id: Any, share: Share, difficulty: float) -> None:
        self.accepted += 1
        self.last_share_at = time.monotonic()
        self.reply(msg_id, True)
        self.pool.share_accepted(self, share, difficulty)
        new = self.vardiff.on_share(
            difficulty, self.difficulty, self.last_share_at, self._network_difficulty()
        )
        if new is not None:
            self.set_difficulty(new)

    def _check_submit(self, params: list[Any]) -> tuple[Share, float]:
        """Validate a submit; returns the share and the difficulty it was judged at."""
        job_id = self._check_submitter(params)
        job, job_difficulty = self._sent_job(job_id)
        version_bits = params[5] if len(params) == 6 else None
        unnegotiated = version_bits is not None and not self.version_rolling_configured
        if unnegotiated and not self.warned_unnegotiated_bits:
            self.warned_unnegotiated_bits = True
            log.info("%s: version bits without mining.configure; applying them", self.peer)
        roots = self.roots
        if roots is None:
            roots = self.roots = RootCache()
        share = build_share(
            job, self.extranonce1, params[2], params[3], params[4], version_bits,
            self.version_mask, time.time(), roots,
        )
        # Judge against the difficulty this job was sent with, or the current one if lower.
        difficulty = min(job_difficulty, self.difficulty)
        if not share.is_block and share.hash_int > share_target(difficulty):
            raise ShareError(ERR_LOW_DIFFICULTY, "low difficulty share")
        self._remember_share(share)
        return share, difficulty

    def _check_submitter(self, params: list[Any]) -> str:
        """The submit's shape and its worker name (one of this connection's, or added within
        the limits); returns the job id."""
        if not self.subscribed:
            raise ShareError(ERR_NOT_SUBSCRIBED, "not subscribed")
        if self.address is None:
            raise ShareError(ERR_UNAUTHORIZED, "unauthorized worker")
        if not 5 <= len(params) <= 6:
            raise ShareError(ERR_OTHER, "mining.submit takes 5 or 6 params")
        worker, job_id = params[0], params[1]
        if not isinstance(worker, str) or not isinstance(job_id, str):
            raise ShareError(ERR_OTHER, "worker and job id must be strings")
        if worker != self.username and (
            self.more_workers is None or worker not in self.more_workers
        ):
            if split_username(worker)[0] != self.address:
                raise ShareError(ERR_UNAUTHORIZED, "unauthorized worker")
            # ADDRESS.other without an authorize: a name of this connection, within its limits.
            # Past them the share still counts (it may be a block), under the authorized name.
            if self._add_worker(worker) is not None:
                worker = self.username
        self.worker = miner_text(worker)
        return job_id

    def _sent_job(self, job_id: str) -> tuple[Job, float | int]:
        """A job the pool still keeps and this connection was sent for its payout, with the
        difficulty in force when it was sent."""
        job = self.pool.jobs.get(job_id)
        if job_id == self.newest_job_id:
            job_difficulty: float | int | None = self.newest_job_difficulty
        else:
            older = self.older_jobs
            job_difficulty = older.get(job_id) if older is not None else None
        if job is None or job_difficulty is None or job.payout_script != self.payout_script:
            raise ShareError(ERR_STALE, "job not found (stale)")
        return job, job_difficulty

    def _remember_share(self, share: Share) -> None:
        """Only valid shares are remembered (by header hash: `first_submission`)."""
        seen = self.seen
        if seen is None:
            seen = self.seen = {}
        if not first_submission(seen, share.hash):
            raise ShareError(ERR_DUPLICATE, "duplicate share")

    # Read-only: one table of the V1 methods, shared by every session.
    _handlers: Mapping[str, Callable[[Session, Any, list[Any]], Awaitable[None] | None]] = (
        MappingProxyType({
            "mining.configure": on_configure,
            "mining.subscribe": on_subscribe,
            "mining.authorize": on_authorize,
            "mining.suggest_difficulty": on_suggest_difficulty,
            "mining.extranonce.subscribe": on_extranonce_subscribe,
            "mining.multi_version": on_true,
            "mining.ping": on_ping,
            "pong": on_pong,
            "mining.submit": on_submit,
        })
    )

    def _reject(self, msg_id: Any, code: int, reason: str) -> None:
        self.rejected += 1
        self.error(msg_id, code, reason)
        self.pool.share_rejected(self, code, reason)
        if code in COUNTED_REJECTS:
            self._count_invalid(reason, stale=code == ERR_STALE)

    def _count_invalid(self, reason: str, stale: bool = False) -> None:
        """One more invalid request in this minute; beyond the limit the connection is closed."""
        limit = self.pool.config.max_invalid_shares_per_minute
        if self.invalid_over_limit(limit, time.monotonic(), stale) and not self.closed:
            self.close_with_message(
                f"more than {limit} invalid shares in a minute (last: {reason}); "
                "check the miner's settings",
                logging.WARNING,
            )

    # --- work ---------------------------------------------------------------------------------

    def _network_difficulty(self) -> float | None:
        template = self.pool.jobs.template
        return template.network_difficulty if template is not None else None

    def _maybe_start(self) -> None:
        """Both subscribed and authorized: send difficulty, then the first job."""
        if self.mining or not self.subscribed or self.payout_script is None:
            return
        self.mining = True
        self.vardiff.reset(time.monotonic())
        self._send_difficulty()
        self.send_job(clean=True)

    def _send_difficulty(self) -> None:
        self.notify("mining.set_difficulty", [self.difficulty])

    def set_difficulty(self, difficulty: float | int) -> None:
        """A new difficulty, followed by a fresh job it applies to (cgminer applies a difficulty
        with the next notify; clean, so ESP-Miner does not re-send old work)."""
        if difficulty == self.difficulty:
            return
        log.debug("%s: difficulty %s -> %s", self.peer, self.difficulty, difficulty)
        self.difficulty = difficulty
        self.vardiff.reset(time.monotonic())
        if self.mining:
            self._send_difficulty()
            self.send_job(clean=True, fresh=True)

    def send_job(self, clean: bool, fresh: bool = False) -> None:
        if not self.mining or self.payout_script is None:
            return
        try:
            job = self.pool.jobs.job_for(self.payout_script, fresh=fresh)
        except TemplateError:
            return  # no template yet: the first one is sent to everyone when it arrives
        self.assign(job, clean)

    def assign(self, job: Job, clean: bool) -> None:
        """Send a job (its shared, pre-serialized notify) and remember its difficulty."""
        newest = self.newest_job_id
        if clean and newest is not None:
            jobs = self.pool.jobs
            if jobs.get(newest) is None:
                # Even our newest job is gone: a new previous block. Nothing old can come back.
                self.newest_job_id = newest = None
                self.older_jobs = None
                self.seen = None
                self.grace_stale_shares(time.monotonic())
            elif self.older_jobs is not None:
                # Jobs on an old previous block can no longer be mined: forget them.
                kept = {j: d for j, d in self.older_jobs.items() if jobs.get(j) is not None}
                self.older_jobs = kept or None
        job_id = job.job_id
        older = self.older_jobs
        if job_id == newest:
            self.newest_job_difficulty = self.difficulty
        elif older is not None and job_id in older:
            older[job_id] = self.difficulty  # a job sent again keeps its place, as in a dict
        else:
            if newest is not None:
                if older is None:
                    older = self.older_jobs = {}
                older[newest] = self.newest_job_difficulty
                # Jobs the pool no longer keeps (it keeps a few templates' worth) can never be
                # mined again: forget them, oldest first, so a connection idle through many
                # template refreshes holds a handful of jobs, not MAX_JOBS_PER_SESSION.
                jobs = self.pool.jobs
                while older and (
                    len(older) >= MAX_JOBS_PER_SESSION or jobs.get(next(iter(older))) is None
                ):
                    del older[next(iter(older))]
            self.newest_job_id = job_id
            self.newest_job_difficulty = self.difficulty
        if (
            job.nerdminer_bytes > NERDMINER_DOCUMENT_BYTES
            and not self.warned_document_size
            and self.user_agent.startswith(NERDMINER_AGENTS)
        ):
            self.warned_document_size = True
            log.warning(
                "%s: this job's mining.notify needs %d bytes of NerdMiner's %d-byte JSON "
                "document (%d merkle branches); the miner will drop it and keep mining old work",
                self.peer, job.nerdminer_bytes, NERDMINER_DOCUMENT_BYTES, len(job.branch),
            )
        if not self.closed:
            self.writer.write(job.notify_line(clean))

    def apply_config(self, cfg: StratumConfig) -> None:
        """A reloaded [stratum] config: new difficulty bounds and share interval apply at once
        (a difficulty now outside the bounds is moved inside them, with a fresh job)."""
        vardiff = self.vardiff
        vardiff.interval = cfg.share_interval_seconds
        vardiff.minimum = cfg.min_difficulty
        if self.subscribed and not fractional_difficulty_ok(self.user_agent):
            vardiff.minimum = max(vardiff.minimum, 1.0)  # as on_subscribe sets it
        vardiff.maximum = cfg.max_difficulty
        network = self._network_difficulty()
        if self.mining:
            self.set_difficulty(vardiff.clamp(self.difficulty, network))
        elif self.suggested_difficulty is not None:
            self.difficulty = vardiff.clamp(self.suggested_difficulty, network)
        else:
            self.difficulty = vardiff.clamp(cfg.start_difficulty, network)

    def tick(self, now: float) -> None:
        """Periodic housekeeping: lower the difficulty of a miner that has gone quiet."""
        if not self.mining:
            return
        new = self.vardiff.on_tick(self.difficulty, now, self._network_difficulty())
        if new is not None:
            self.set_difficulty(new)
