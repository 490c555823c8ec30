"""Alerts: a block found (and its fate: accepted, rejected, orphaned, matured), and a worker gone
silent. Each alert is a WARNING log line and a JSON POST to every `[notify] webhook_urls` entry.

Webhooks run in background tasks behind a bounded queue, with timeouts and retries with backoff:
a slow or failing endpoint never touches mining. Bodies carry "title" and "message" (ntfy-style
and generic receivers) and "content" (Discord). URLs on discord.com get Discord's own shape;
URLs on a host named ntfy… are published through ntfy's JSON API (topic from the path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from .config import NotifyConfig
from .events import PoolListener
from .found import ACCEPTED, ORPHANED, REJECTED, FoundBlock
from .stats import MATURITY, BlockRecord, Stats
from .tasks import Supervisor
from .units import format_duration

if TYPE_CHECKING:
    from .events import MinerView, ShareView

log = logging.getLogger(__name__)

QUEUE_SIZE = 100
SENDERS = 2
TIMEOUT_SECONDS = 10.0
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # then give up
STOP_GRACE_SECONDS = 3.0
USER_AGENT = "solopool-notify"


@dataclass(frozen=True)
class Alert:
    event: str  # block_found, block_accepted, block_rejected, block_orphaned, ...
    title: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    priority: int = 3  # ntfy's 1..5


def btc(sats: int | None) -> str:
    return "unknown" if sats is None else f"{sats / 1e8:.8f} BTC"


def webhook_request(url: str, alert: Alert) -> tuple[str, dict[str, Any]]:
    """Where to POST and what, for the kind of endpoint `url` looks like."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    text = f"{alert.title}\n{alert.message}"
    if host in ("discord.com", "discordapp.com") or host.endswith(
        (".discord.com", ".discordapp.com")
    ):
        return url, {"content": f"**{alert.title}**\n{alert.message}"[:2000],
                     "username": "solopool"}
    topic = parts.path.strip("/")
    if host.startswith("ntfy") and topic and "/" not in topic:
        root = urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
        return root, {
            "topic": topic,
            "title": alert.title,
            "message": alert.message,
            "priority": alert.priority,
            "tags": ["pick"] if alert.event.startswith("block") else ["warning"],
        }
    return url, {
        "event": alert.event,
        "title": alert.title,
        "message": alert.message,
        "content": text,
        **alert.fields,
    }


class Notifier(PoolListener):
    def __init__(
        self, config: NotifyConfig, stats: Stats, tasks: Supervisor | None = None
    ) -> None:
        self.config = config
        self.stats = stats
        self.urls = config.webhook_urls
        self.silent_seconds = 60.0 * config.worker_silent_minutes
        self.retry_delays: tuple[float, ...] = RETRY_DELAYS
        self.timeout = TIMEOUT_SECONDS
        self.stop_grace = STOP_GRACE_SECONDS
        self.sent: list[Alert] = []  # the most recent alerts, for the API and tests
        self._queue: asyncio.Queue[tuple[str, Alert]] = asyncio.Queue(QUEUE_SIZE)
        self._silent: set[str] = set()
        self._tasks = tasks if tasks is not None else Supervisor("notify")
        self._http: aiohttp.ClientSession | None = None
        stats.on_block_change.append(self.on_block_change)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.urls:
            self._http = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
            for i in range(SENDERS):
                self._tasks.start(f"notify-{i}", self._sender)
        self._tasks.start("notify-silence", self._watch_silence)

    async def stop(self) -> None:
        if self.urls and self._tasks.tasks:
            # Give queued alerts (say, the block found just before shutdown) a moment.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.stop_grace):
                    await self._queue.join()
        await self._tasks.stop()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- alerts ---------------------------------------------------------------------------------

    def alert(self, alert: Alert) -> None:
        level = logging.INFO if alert.event == "worker_back" else logging.WARNING
        log.log(level, "ALERT %s: %s", alert.title, alert.message)
        self.sent.append(alert)
        del self.sent[:-100]
        for url in self.urls:
            try:
                self._queue.put_nowait((url, alert))
            except asyncio.QueueFull:
                log.warning("webhook queue full; dropping %s alert for %s", alert.event, url)

    async def _sender(self) -> None:
        while True:
            url, alert = await self._queue.get()
            try:
                await self._deliver(url, alert)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook %s failed", redact(url))
            finally:
                self._queue.task_done()

    async def _deliver(self, url: str, alert: Alert) -> None:
        target, body = webhook_request(url, alert)
        http = self._http
        assert http is not None
        attempts = len(self.retry_delays) + 1
        for attempt in range(attempts):
            problem: str
            try:
                async with http.post(
                    target, json=body, timeout=aiohttp.ClientTimeout(total=self.timeout)
                ) as response:
                    if 200 <= response.status < 300:
                        log.debug("webhook %s: %s delivered", redact(url), alert.event)
                        return
                    problem = f"HTTP {response.status}"
                    if 400 <= response.status < 500 and response.status not in (408, 429):
                        log.warning(
                            "webhook %s refused the %s alert (%s); not retrying",
                            redact(url), alert.event, problem,
                        )
                        return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = str(exc) or type(exc).__name__
            if attempt + 1 < attempts:
                delay = self.retry_delays[attempt]
                log.info(
                    "webhook %s: %s; retrying in %.0f s", redact(url), problem, delay
                )
                await asyncio.sleep(delay)
            else:
                log.warning(
                    "webhook %s: %s; giving up on the %s alert", redact(url), problem,
                    alert.event,
                )

    # --- blocks ---------------------------------------------------------------------------------

    def _block_fields(self, block_hash: str) -> dict[str, Any]:
        record = self.stats.blocks.get(block_hash)
        return record.to_json() if record is not None else {"hash": block_hash}

    def on_block_found(self, block: FoundBlock) -> None:
        fields = self._block_fields(block.hash)
        self.alert(Alert(
            "block_found",
            f"Block {block.height} found!",
            f"{block.worker or block.address} found block {block.height} ({block.hash}), "
            f"paying {btc(fields.get('reward'))} to {block.address}. Submitting it to the node.",
            fields,
            priority=5,
        ))

    def on_block_final(self, block: FoundBlock) -> None:
        fields = self._block_fields(block.hash)
        if block.status == ACCEPTED:
            where = "in the best chain" if block.in_best_chain else "not (yet) in the best chain"
            self.alert(Alert(
                "block_accepted",
                f"Block {block.height} accepted",
                f"The node accepted block {block.height} ({block.hash}); it is {where}. "
                f"{btc(fields.get('reward'))} can be spent after {MATURITY} confirmations.",
                fields,
                priority=5,
            ))
        elif block.status in (REJECTED, ORPHANED):
            self.alert(Alert(
                f"block_{block.status}",
                f"Block {block.height} {block.status.upper()}",
                f"The node did not take block {block.height} ({block.hash}): {block.answer}.",
                fields,
                priority=5,
            ))

    def on_block_change(self, record: BlockRecord, change: str) -> None:
        fields = record.to_json()
        if change == "orphaned":
            self.alert(Alert(
                "block_orphaned",
                f"Block {record.height} orphaned",
                f"Block {record.height} ({record.hash}) is no longer in the best chain; "
                "its reward is lost unless the chain switches back.",
                fields,
                priority=5,
            ))
        elif change == "back_in_chain":
            self.alert(Alert(
                "block_back_in_chain",
                f"Block {record.height} back in the best chain",
                f"Block {record.height} ({record.hash}) is in the best chain again.",
                fields,
                priority=4,
            ))
        elif change == "matured":
            self.alert(Alert(
                "block_matured",
                f"Block {record.height} reward spendable",
                f"Block {record.height} ({record.hash}) has {record.confirmations} "
                f"confirmations: {btc(record.reward)} at {record.address} can now be spent.",
                fields,
                priority=4,
            ))

    # --- silent workers -------------------------------------------------------------------------

    def on_share(self, session: MinerView, share: ShareView, difficulty: float) -> None:
        if self._silent and session.worker in self._silent:
            self._silent.discard(session.worker)
            self.alert(Alert(
                "worker_back",
                f"{session.worker} is back",
                f"{session.worker} is submitting shares again.",
                {"worker": session.worker, "address": session.address},
                priority=2,
            ))

    def check_silence(self, now: float | None = None) -> None:
        """Alert once for each worker with no share for `worker_silent_minutes` (workers that
        mined since this run started; retired ones from long ago stay quiet)."""
        now = self.stats.clock() if now is None else now
        for w in list(self.stats.workers.values()):
            last = w.last_share_at
            if last is None or last < self.stats.started_at or w.name in self._silent:
                continue
            if now - last >= self.silent_seconds:
                self._silent.add(w.name)
                self.alert(Alert(
                    "worker_silent",
                    f"{w.name} is silent",
                    f"No share from {w.name} for {format_duration(now - last)} "
                    f"(last at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last))}). "
                    "Is it powered, connected and pointed at this pool?",
                    {"worker": w.name, "address": w.address, "last_share_at": last},
                    priority=4,
                ))

    async def _watch_silence(self) -> None:
        interval = min(30.0, max(0.25, self.silent_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                self.check_silence()
            except Exception:
                log.exception("silent-worker check failed")


def redact(url: str) -> str:
    """A webhook URL for the log: scheme and host only (the path is often the secret)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], "/…", "", ""))
