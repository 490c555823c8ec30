"""One miner connection as a state machine: connected -> subscribed/authorized -> mining.

The session knows nothing about sockets: it reads parsed messages and writes lines through a
`Transport`-like object, and asks the pool (`PoolServices`) for payout scripts, jobs and block
submission. Every request with an id gets exactly one answer, in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..config import StratumConfig
from ..consensus.target import difficulty_to_target
from ..jobs import EXTRANONCE2_SIZE, Job, JobManager, TemplateError
from ..shares import (
    ERR_DUPLICATE,
    ERR_LOW_DIFFICULTY,
    ERR_NOT_SUBSCRIBED,
    ERR_OTHER,
    ERR_STALE,
    ERR_UNAUTHORIZED,
    Share,
    ShareError,
    build_share,
)
from ..vardiff import VarDiff, round_difficulty

log = logging.getLogger(__name__)

MAX_JOBS_PER_SESSION = 64  # jobs remembered per connection for share matching
AUTHORIZE_REFUSED_CLOSE_SECONDS = 1.0
MAX_SEEN_SHARES = 50_000  # share hashes remembered per connection for duplicate detection


class AddressRefused(Exception):
    """A payout address that cannot be mined to, with the reason for the miner."""


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class PoolServices(Protocol):
    """What a session needs from the pool around it."""

    config: StratumConfig
    jobs: JobManager

    async def resolve_payout(self, address: str) -> bytes: ...
    def share_accepted(self, session: Session, share: Share, difficulty: float) -> None: ...
    def share_rejected(self, session: Session, code: int, reason: str) -> None: ...
    def block_found(self, session: Session, share: Share) -> None: ...


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def split_username(username: str) -> tuple[str, str]:
    """`ADDRESS.worker` or `ADDRESS_worker` (neither character occurs in an address)."""
    for i, ch in enumerate(username):
        if ch in "._":
            return username[:i], username[i + 1 :]
    return username, ""


class Session:
    __slots__ = (
        "pool",
        "writer",
        "peer",
        "extranonce1",
        "user_agent",
        "subscribed",
        "address",
        "workers",
        "payout_script",
        "version_mask",
        "version_rolling_configured",
        "warned_unnegotiated_bits",
        "difficulty",
        "suggested_difficulty",
        "vardiff",
        "job_difficulty",
        "seen",
        "mining",
        "closed",
        "connected_at",
        "last_share_at",
        "accepted",
        "rejected",
        "worker",
    )

    def __init__(self, pool: PoolServices, writer: Writer, extranonce1: bytes, peer: str) -> None:
        cfg = pool.config
        now = time.monotonic()
        self.pool = pool
        self.writer = writer
        self.peer = peer
        self.extranonce1 = extranonce1
        self.user_agent = ""
        self.subscribed = False
        self.address: str | None = None
        self.workers: set[str] = set()
        self.payout_script: bytes | None = None
        self.version_mask = cfg.version_rolling_mask
        self.version_rolling_configured = False
        self.warned_unnegotiated_bits = False
        self.difficulty: float | int = round_difficulty(cfg.start_difficulty)
        self.suggested_difficulty: float | None = None
        self.vardiff = VarDiff(
            cfg.share_interval_seconds, cfg.min_difficulty, cfg.max_difficulty, now
        )
        # job id -> the difficulty in force when this connection was sent that job
        self.job_difficulty: dict[str, float] = {}
        # header hashes of accepted shares on the current previous block (insertion-ordered)
        self.seen: dict[bytes, None] = {}
        self.mining = False
        self.closed = False
        self.connected_at = now
        self.last_share_at: float | None = None
        self.accepted = 0
        self.rejected = 0
        self.worker = ""  # the worker name of the latest submit (else of the authorize)

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

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

    # --- input --------------------------------------------------------------------------------

    def handle_line(self, line: bytes) -> Awaitable[None] | None:
        """Handle one line; returns an awaitable when the answer needs the node (authorize)."""
        try:
            message = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            self.error(None, ERR_OTHER, "invalid JSON")
            return None
        if not isinstance(message, dict):
            self.error(None, ERR_OTHER, "expected a JSON object")
            return None
        msg_id = message.get("id")
        if isinstance(msg_id, dict | list | float):
            msg_id = None
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
        except (TypeError, ValueError, IndexError, KeyError, OverflowError) as exc:
            log.debug("%s: bad %s params %r: %s", self.peer, method, params, exc)
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
            self.user_agent = params[0][:128]
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
            self.workers.add(username)
            self.reply(msg_id, True)
            return None
        return self._authorize(msg_id, username, address)

    async def _authorize(self, msg_id: Any, username: str, address: str) -> None:
        try:
            script = await self.pool.resolve_payout(address)
        except AddressRefused as exc:
            reason = str(exc)
            log.info("%s: refused authorize %r: %s", self.peer, username, reason)
            self.error(msg_id, ERR_UNAUTHORIZED, reason, False)
            self.notify("client.show_message", [reason[:256]])
            # ESP-Miner keeps a refused connection open; close it so the miner retries.
            asyncio.get_running_loop().call_later(AUTHORIZE_REFUSED_CLOSE_SECONDS, self.close)
            return
        if self.address is not None:  # a pipelined second authorize won the race
            self.workers.add(username)
            self.reply(msg_id, self.address == address)
            return
        self.address = address
        self.payout_script = script
        self.workers.add(username)
        self.worker = username
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

    def on_submit(self, msg_id: Any, params: list[Any]) -> None:
        try:
            share, difficulty = self._check_submit(params)
        except ShareError as exc:
            self._reject(msg_id, exc.code, exc.message)
            return
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
        if not self.subscribed:
            raise ShareError(ERR_NOT_SUBSCRIBED, "not subscribed")
        if self.address is None:
            raise ShareError(ERR_UNAUTHORIZED, "unauthorized worker")
        if not 5 <= len(params) <= 6:
            raise ShareError(ERR_OTHER, "mining.submit takes 5 or 6 params")
        worker, job_id = params[0], params[1]
        if not isinstance(worker, str) or not isinstance(job_id, str):
            raise ShareError(ERR_OTHER, "worker and job id must be strings")
        if worker not in self.workers and split_username(worker)[0] != self.address:
            raise ShareError(ERR_UNAUTHORIZED, "unauthorized worker")
        self.worker = worker[:128]
        job = self.pool.jobs.get(job_id)
        job_difficulty = self.job_difficulty.get(job_id)
        if job is None or job_difficulty is None or job.payout_script != self.payout_script:
            raise ShareError(ERR_STALE, "job not found (stale)")
        version_bits = params[5] if len(params) == 6 else None
        unnegotiated = version_bits is not None and not self.version_rolling_configured
        if unnegotiated and not self.warned_unnegotiated_bits:
            self.warned_unnegotiated_bits = True
            log.info("%s: version bits without mining.configure; applying them", self.peer)
        share = build_share(
            job, self.extranonce1, params[2], params[3], params[4], version_bits,
            self.version_mask, time.time(),
        )
        # Jobs re-sent after a difficulty change have new ids but the same coinbase, so
        # duplicates are recognised by the header hash, not by (job, fields).
        if share.hash in self.seen:
            raise ShareError(ERR_DUPLICATE, "duplicate share")
        self.seen[share.hash] = None
        if len(self.seen) > MAX_SEEN_SHARES:
            del self.seen[next(iter(self.seen))]
        # Judge against the difficulty this job was sent with, or the current one if lower.
        difficulty = min(job_difficulty, self.difficulty)
        if share.is_block:
            self.pool.block_found(self, share)
        elif share.hash_int > difficulty_to_target(difficulty):
            raise ShareError(ERR_LOW_DIFFICULTY, "low difficulty share")
        return share, difficulty

    _handlers: dict[str, Callable[[Session, Any, list[Any]], Awaitable[None] | None]] = {
        "mining.configure": on_configure,
        "mining.subscribe": on_subscribe,
        "mining.authorize": on_authorize,
        "mining.suggest_difficulty": on_suggest_difficulty,
        "mining.extranonce.subscribe": on_extranonce_subscribe,
        "mining.multi_version": on_true,
        "mining.ping": on_ping,
        "mining.submit": on_submit,
    }

    def _reject(self, msg_id: Any, code: int, reason: str) -> None:
        self.rejected += 1
        self.error(msg_id, code, reason)
        self.pool.share_rejected(self, code, reason)

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
        if clean:
            # Jobs on an old previous block can no longer be mined: forget them.
            live = {jid for jid in self.job_difficulty if self.pool.jobs.get(jid) is not None}
            if not live:
                self.seen.clear()  # a new previous block: old shares cannot come back
            self.job_difficulty = {j: d for j, d in self.job_difficulty.items() if j in live}
        self.job_difficulty[job.job_id] = self.difficulty
        while len(self.job_difficulty) > MAX_JOBS_PER_SESSION:
            oldest = next(iter(self.job_difficulty))
            del self.job_difficulty[oldest]
        if not self.closed:
            self.writer.write(job.notify_line(clean))

    def tick(self, now: float) -> None:
        """Periodic housekeeping: lower the difficulty of a miner that has gone quiet."""
        if not self.mining:
            return
        new = self.vardiff.on_tick(self.difficulty, now, self._network_difficulty())
        if new is not None:
            self.set_difficulty(new)
