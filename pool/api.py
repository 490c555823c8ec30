"""The read-only HTTP side: JSON API, dashboard and Prometheus metrics (aiohttp).

    GET /                        the dashboard (pool/web/, no build step, no external resources)
    GET /api/pool                network, height, difficulty, template age, node, hashrate, odds
    GET /api/workers             workers, online first (?offset=&limit=, at most 500 a page):
                                 hashrate with its band, shares, best share; and the totals
    GET /api/addresses/{address} one payout address: its workers, totals, blocks, odds
    GET /api/blocks              blocks found, newest first, with the node's answer
    GET /api/job/{address}       the exact coinbase outputs a miner on {address} hashes on now
    GET /api/history             hashrate per 10 minutes over the last 24 h (for the chart)
    GET /api/umbrel/widget       the Umbrel home-screen widget (pool/umbrel.py)
    GET /metrics                 Prometheus text format

Only GET (and HEAD) exist; nothing here can change the pool. The node's RPC credentials are
never part of any answer.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from . import __version__, umbrel
from .config import ApiConfig, local_url
from .consensus.address import AddressError, address_to_script, script_to_address
from .events import MinerView
from .found import ACCEPTED, ORPHANED, PENDING, REJECTED
from .metrics import make_registry, render
from .odds import network_hashrate, odds
from .services import AddressRefused
from .snapshot import (
    HISTORY_SNAPSHOT_SECONDS,
    SNAPSHOT_SECONDS,
    Cached,
    History,
    PoolView,
    Snapshot,
    take_history,
    take_snapshot,
)
from .stats import Estimate, WorkerStats
from .stratum.session import split_username
from .units import format_hashrate_band

log = logging.getLogger(__name__)

ODDS_WINDOW = "1h"  # the hashrate estimate the odds are computed from
MAX_BLOCKS = 500
PAGE_DEFAULT = 100  # workers per /api/workers page
PAGE_MAX = 500  # ~1 KB of JSON each: a page stays well under 1 MB
STATIC = {
    "/": ("index.html", "text/html"),
    "/dashboard.js": ("dashboard.js", "application/javascript"),
    "/dashboard.css": ("dashboard.css", "text/css"),
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'"
    ),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HTTP_ERROR_LOG_SECONDS = 60.0


class HttpErrorSummary(logging.Filter):
    """aiohttp logs every malformed or oversized request (it answers them with a 4xx) with a
    traceback; a stranger sending thousands must not fill the log. This keeps one short line
    a minute, saying how many it left out."""

    def __init__(self) -> None:
        super().__init__()
        self._last = -HTTP_ERROR_LOG_SECONDS
        self._left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = time.monotonic()
        if now - self._last < HTTP_ERROR_LOG_SECONDS:
            self._left_out += 1
            return False
        self._last = now
        exc = record.exc_info[1] if record.exc_info else None
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        what = f"{type(exc).__name__}: {str(exc)[:120]!r}" if exc is not None else "error"
        record.msg = "API: bad HTTP request from %s (%s); %d more in the last minute not logged"
        record.args = (peer, what, self._left_out)
        record.exc_info = record.exc_text = None
        record.stack_info = None
        self._left_out = 0
        return True


http_log = logging.getLogger("pool.api.http")  # aiohttp's request-handling errors
http_log.addFilter(HttpErrorSummary())


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(_finite(data), allow_nan=False, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def json_error(status: int, message: str) -> web.Response:
    return json_response({"error": message, "status": status}, status)


def _query_int(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    text = request.query.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise web.HTTPBadRequest(reason=f"{key} must be a whole number") from None
    return min(max(value, low), high)


def rates_json(rates: dict[str, Estimate]) -> dict[str, Any]:
    out = {}
    for label, e in rates.items():
        item = e.to_json()
        item["text"] = format_hashrate_band(e.hashrate, e.band)
        out[label] = item
    return out


class ApiServer:
    def __init__(self, pool: PoolView, config: ApiConfig) -> None:
        self.pool = pool
        self.config = config
        self.snapshots: Cached[Snapshot] = Cached(
            lambda: take_snapshot(pool, config.metrics_max_workers), SNAPSHOT_SECONDS,
            pool.version,
        )
        self.histories: Cached[History] = Cached(
            lambda: take_history(pool), HISTORY_SNAPSHOT_SECONDS
        )
        self.registry = make_registry(pool, self.snapshots)
        self._runner: web.AppRunner | None = None
        self._static: dict[str, tuple[bytes, str]] = {}
        self.app = self._make_app()

    # --- lifecycle ------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        for path in STATIC:
            app.router.add_get(path, self.static)
        app.router.add_get("/api/pool", self.api_pool)
        app.router.add_get("/api/workers", self.api_workers)
        app.router.add_get("/api/addresses/{address}", self.api_address)
        app.router.add_get("/api/blocks", self.api_blocks)
        app.router.add_get("/api/job/{address}", self.api_job)
        app.router.add_get("/api/history", self.api_history)
        app.router.add_get("/api/umbrel/widget", self.api_umbrel_widget)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def start(self) -> None:
        if not self.config.enabled:
            return
        web_dir = resources.files("pool") / "web"
        for path, (name, content_type) in STATIC.items():
            self._static[path] = ((web_dir / name).read_bytes(), content_type)
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, logger=http_log
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("dashboard and API on http://%s:%d/", self.config.host, self.port)

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the API is not running")
        port: int = self._runner.addresses[0][1]
        return port

    @property
    def url(self) -> str:
        return local_url(self.config.host, self.port)

    async def stop(self) -> None:
        self.snapshots.cancel()
        self.histories.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        api = request.path.startswith("/api/")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if not api:
                raise
            response = json_error(exc.status, exc.reason)
            if exc.status == 405:
                response.headers["Allow"] = "GET, HEAD"
        except Exception:
            log.exception("API %s failed", request.path)
            response = json_error(500, "internal error; see the pool's log")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    # --- pieces ---------------------------------------------------------------------------------

    def _now(self) -> float:
        return self.pool.stats.clock()

    def _difficulty(self) -> float | None:
        template = self.pool.template
        return template.network_difficulty if template is not None else None

    def _odds(self, hashrate: float) -> dict[str, Any] | None:
        difficulty = self._difficulty()
        if difficulty is None:
            return None
        result = odds(hashrate, difficulty).to_json()
        result["window"] = ODDS_WINDOW
        return result


    def _worker_json(
        self, w: WorkerStats, sessions: list[MinerView], now: float
    ) -> dict[str, Any]:
        stats = self.pool.stats
        rates = stats.worker_rates(w, now)
        odds_now = self._odds(rates[ODDS_WINDOW].hashrate)
        return {
            "name": w.name,
            "worker": w.short_name,
            "address": w.address,
            "online": bool(sessions),
            "connections": len(sessions),
            "difficulty": max((s.difficulty for s in sessions), default=None),
            "user_agent": next((s.user_agent for s in sessions if s.user_agent), None),
            # What it mines with now, else what it last mined with.
            "protocol": sessions[0].protocol if sessions else w.protocol,
            "hashrate": rates_json(rates),
            "accepted": w.accepted,
            "rejected": w.rejected,
            "stale": w.stale,
            "accepted_difficulty": w.diff_sum,
            "best_share": w.best.to_json(),
            "first_seen": w.first_seen,
            "last_share_at": w.last_share_at,
            "blocks": stats.blocks_by(worker=w.name),
            "odds": odds_now,
        }

    def _new_worker_json(self, name: str, sessions: list[MinerView], now: float) -> dict[str, Any]:
        """A connected miner that has not had a share accepted yet (or one forgotten since the
        snapshot was taken)."""
        address = sessions[0].address or "" if sessions else split_username(name)[0]
        placeholder = WorkerStats(name=name, address=address, first_seen=now)
        return self._worker_json(placeholder, sessions, now)

    def _row(self, snap: Snapshot, name: str, now: float) -> dict[str, Any]:
        group = snap.groups.get(name, [])
        w = self.pool.stats.workers.get(name)
        if w is None:
            return self._new_worker_json(name, group, now)
        return self._worker_json(w, group, now)

    def _address_workers(self, snap: Snapshot, address: str) -> list[dict[str, Any]]:
        """One address's workers (at most MAX_WORKERS_PER_ADDRESS tracked, plus connected)."""
        stats = self.pool.stats
        now = self._now()
        known = {w.name: w for w in stats.workers_of(address)}
        out = [self._worker_json(w, snap.groups.get(n, []), now) for n, w in known.items()]
        for name, group in snap.groups.items():
            if name not in known and group[0].address == address:
                out.append(self._new_worker_json(name, group, now))
        out.sort(key=lambda item: (not item["online"], item["name"]))
        return out

    def _blocks(self, address: str | None = None) -> list[dict[str, Any]]:
        blocks = [
            b.to_json() for b in self.pool.stats.blocks.values()
            if address is None or b.address == address
        ]
        blocks.sort(key=lambda b: (b["found_at"], b["height"]), reverse=True)
        return blocks[:MAX_BLOCKS]

    def _block_counts(self, blocks: list[dict[str, Any]]) -> dict[str, int]:
        counts = {"found": len(blocks), ACCEPTED: 0, PENDING: 0, REJECTED: 0, ORPHANED: 0}
        for b in blocks:
            counts[b["status"]] = counts.get(b["status"], 0) + 1
        return counts

    # --- handlers -------------------------------------------------------------------------------

    async def static(self, request: web.Request) -> web.StreamResponse:
        body, content_type = self._static[request.path]
        return web.Response(
            body=body, content_type=content_type, headers={"Cache-Control": "no-cache"}
        )

    def pool_summary(self, snap: Snapshot) -> dict[str, Any]:
        pool = self.pool
        stats = pool.stats
        now = self._now()
        template = pool.template
        rates = snap.pool_rates
        difficulty = self._difficulty()
        blocks = self._blocks()
        return {
            "network": pool.chain,
            "height": template.height - 1 if template is not None else None,
            "mining_height": template.height if template is not None else None,
            "difficulty": difficulty,
            "network_hashrate": network_hashrate(difficulty) if difficulty else None,
            "template_age": now - stats.template_at if stats.template_at is not None else None,
            "node": {
                "ok": pool.node_ok,
                "error": pool.node_error,
                "rpc_latency": pool.rpc_latency,
            },
            "hashrate": rates_json(rates),
            "miners": snap.mining,
            "connections": snap.connections,
            "connections_by_protocol": snap.by_protocol,
            "stratum_v2": pool.stratum_v2.to_json() if pool.stratum_v2 is not None else None,
            "workers_online": len(snap.groups),
            "workers_total": snap.workers_total,
            "shares": snap.totals,
            "best_share": stats.pool_best.to_json(),
            "blocks": self._block_counts(blocks),
            "last_block": blocks[0] if blocks else None,
            "odds": self._odds(rates[ODDS_WINDOW].hashrate),
            "uptime": pool.uptime(),
            "version": __version__,
            "time": now,
        }

    async def api_pool(self, request: web.Request) -> web.Response:
        return json_response(self.pool_summary(await self.snapshots.get()))

    async def api_umbrel_widget(self, request: web.Request) -> web.Response:
        return json_response(umbrel.four_stats(self.pool_summary(await self.snapshots.get())))

    async def api_workers(self, request: web.Request) -> web.Response:
        offset = _query_int(request, "offset", 0, 0, 1 << 31)
        limit = _query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
        snap = await self.snapshots.get()
        now = self._now()
        page = [self._row(snap, name, now) for name in snap.order[offset : offset + limit]]
        return json_response({
            "workers": page,
            "total": len(snap.order),
            "online": len(snap.groups),
            "offset": offset,
            "limit": limit,
            "time": now,
        })

    def _known_address(self, snap: Snapshot, address: str) -> str | None:
        stats = self.pool.stats
        candidates = [address, address.lower()]
        for candidate in candidates:
            if candidate in stats.addresses or candidate in snap.live_addresses:
                return candidate
        return None

    async def api_address(self, request: web.Request) -> web.Response:
        given = request.match_info["address"]
        snap = await self.snapshots.get()
        address = self._known_address(snap, given)
        if address is None:
            return json_error(404, f"no miner has mined to {given[:100]} on this pool")
        stats = self.pool.stats
        now = self._now()
        workers = stats.workers_of(address)
        rates = stats.rates_for(workers, now)
        best = stats.addresses[address].best.to_json() if address in stats.addresses else None
        blocks = self._blocks(address)
        return json_response({
            "address": address,
            "hashrate": rates_json(rates),
            "shares": stats.totals(workers),
            "best_share": best,
            "workers": self._address_workers(snap, address),
            "blocks": blocks,
            "block_counts": self._block_counts(blocks),
            "odds": self._odds(rates[ODDS_WINDOW].hashrate),
            "time": now,
        })

    async def api_blocks(self, request: web.Request) -> web.Response:
        return json_response({"blocks": self._blocks(), "time": self._now()})

    async def api_history(self, request: web.Request) -> web.Response:
        history = await self.histories.get()
        return json_response({
            "bin_seconds": history.bin_seconds,
            "end": history.end,
            "pool": history.pool,
            "workers": history.workers,
            "time": history.time,
        })

    async def api_job(self, request: web.Request) -> web.Response:
        pool = self.pool
        given = request.match_info["address"]
        try:
            address_to_script(given, pool.chain)
        except AddressError as exc:
            return json_error(400, f"{given[:100]} is not a valid {pool.chain} address: {exc}")
        mining = [
            s for s in pool.sessions
            if s.mining and not s.closed and s.address in (given, given.lower())
        ]
        if not mining:
            return json_error(404, f"no miner is mining to {given} on this pool right now")
        address = mining[0].address or given
        try:
            script = await pool.resolve_payout(address)
        except AddressRefused as exc:
            return json_error(400, str(exc))
        job = pool.job_for(script)
        template = job.template
        outputs = []
        for index, out in enumerate(job.coinbase.outputs):
            decoded = script_to_address(out.script_pubkey, pool.chain)
            if out.script_pubkey == script:
                kind = "payout"
            elif out.value == 0 and out.script_pubkey.startswith(b"\x6a\x24\xaa\x21\xa9\xed"):
                kind = "witness commitment"
            else:
                kind = "other"
            outputs.append({
                "index": index,
                "value": out.value,
                "value_btc": f"{out.value / 1e8:.8f}",
                "script_hex": out.script_pubkey.hex(),
                "address": decoded,
                "type": kind,
                "pays_you": out.script_pubkey == script,
            })
        paid_elsewhere = sum(o.value for o in job.coinbase.outputs if o.script_pubkey != script)
        return json_response({
            "address": address,
            "payout_script": script.hex(),
            "job_id": job.job_id,
            "height": template.height,
            "prev_hash": template.prev_hash,
            "coinbase_value": template.coinbase_value,
            "outputs": outputs,
            "pays_only_you": paid_elsewhere == 0
            and sum(o.value for o in job.coinbase.outputs) == template.coinbase_value,
            "coinb1": job.coinbase.coinb1.hex(),
            "coinb2": job.coinbase.coinb2.hex(),
            "miners": len(mining),
            "time": self._now(),
        })

    async def metrics(self, request: web.Request) -> web.Response:
        await self.snapshots.get()  # the collector reads it
        return web.Response(
            body=render(self.registry),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
