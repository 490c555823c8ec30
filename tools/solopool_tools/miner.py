"""solopool-miner: a small CPU Stratum V1 miner for tests and demos (not a product miner).

It speaks the same protocol as home ASICs (see shared stratum reference): pipelined
``mining.configure`` (BIP310 version rolling), ``mining.subscribe``, ``mining.authorize`` and an
optional ``mining.suggest_difficulty``; it follows ``mining.set_difficulty`` (applied with the
next ``mining.notify``, like cgminer), ``mining.notify``, ``mining.set_extranonce``,
``mining.set_version_mask``, ``client.reconnect`` and ``client.show_message``.

Hashing runs in worker processes (hashlib holds the GIL for 80-byte inputs). Each worker owns a
disjoint extranonce2 space (top byte = worker index when there is more than one worker), receives
work over a pipe, checks for new work every ``BATCH`` nonces, and sends found shares back over
the same pipe; the asyncio side reads the pipes with ``loop.add_reader`` and submits.

The hashing core is pure: ``header_prefix`` builds the first 76 header bytes of a job for given
extranonces/version/ntime, ``scan_header`` tries a nonce range against a target with a SHA-256
midstate, and ``scan`` combines the two.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

from pool.consensus.block import build_header, prevhash_from_stratum
from pool.consensus.merkle import merkle_root_from_branch
from pool.consensus.serialize import sha256d
from pool.consensus.target import difficulty_to_target, hash_to_int, nbits_to_target

from . import __version__

log = logging.getLogger("solopool.miner")

USER_AGENT = f"solopool-miner/{__version__}"
#: BIP320 bits we ask to roll (and the most we ever roll).
VERSION_ROLLING_MASK = 0x1FFFE000
#: Nonces hashed between two checks for new work (a few ms of hashing).
BATCH = 4096
#: Nonces per header when version rolling: roll the version bits after this many.
ROLLING_NONCE_SPAN = 1 << 20
#: ntime is never rolled further than this past the job's ntime.
MAX_NTIME_ROLL = 600
#: Bound on one received line (a notify with a long merkle branch stays far below this).
MAX_LINE = 64 * 1024
#: No data from the pool for this long: treat the connection as dead.
READ_TIMEOUT = 180.0
BACKOFF_MIN = 0.5
BACKOFF_MAX = 10.0
STATS_INTERVAL = 1.0
HASHRATE_LOG_INTERVAL = 30.0

EXIT_OK = 0
EXIT_NOT_DONE = 1
EXIT_AUTH_FAILED = 2
EXIT_WORKER_FAILED = 3

_sha256 = hashlib.sha256
_pack_nonce = struct.Struct("<I").pack


class ProtocolError(Exception):
    """The pool sent something the miner cannot work with (reconnect)."""


# --- jobs and the pure hashing core ----------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One ``mining.notify``, decoded, plus the share difficulty in force for it."""

    job_id: str
    prevhash: bytes  # internal byte order (stratum word swap undone)
    coinb1: bytes
    coinb2: bytes
    merkle_branch: tuple[bytes, ...]
    version: int
    nbits: int
    ntime: int
    clean_jobs: bool
    difficulty: float = 1.0

    @classmethod
    def from_notify(cls, params: list[Any], difficulty: float = 1.0) -> Job:
        """Decode the 9 ``mining.notify`` params; ValueError if malformed."""
        if not isinstance(params, list) or len(params) < 9:
            raise ValueError("mining.notify needs 9 params")
        job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime, clean = params[:9]
        if not isinstance(job_id, str | int):
            raise ValueError("bad job_id")
        if not all(isinstance(x, str) for x in (prevhash, coinb1, coinb2, version, nbits, ntime)):
            raise ValueError("hex fields must be strings")
        if not isinstance(branch, list) or not all(isinstance(b, str) for b in branch):
            raise ValueError("merkle_branch must be a list of hex strings")
        if len(prevhash) != 64:
            raise ValueError("prevhash must be 32 bytes")
        branch_bytes = tuple(bytes.fromhex(b) for b in branch)
        if any(len(b) != 32 for b in branch_bytes):
            raise ValueError("merkle branch entries must be 32 bytes")
        return cls(
            job_id=str(job_id),
            prevhash=prevhash_from_stratum(prevhash),
            coinb1=bytes.fromhex(coinb1),
            coinb2=bytes.fromhex(coinb2),
            merkle_branch=branch_bytes,
            version=_hex32(version),
            nbits=_hex32(nbits),
            ntime=_hex32(ntime),
            clean_jobs=bool(clean),
            difficulty=difficulty,
        )

    @property
    def share_target(self) -> int:
        return difficulty_to_target(self.difficulty)

    @property
    def network_target(self) -> int:
        return nbits_to_target(self.nbits)


def _hex32(text: str) -> int:
    value = int(text, 16)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{text!r} is not a 32-bit hex value")
    return value


def deposit_bits(value: int, mask: int) -> int:
    """Spread the low bits of ``value`` over the set bits of ``mask`` (like x86 PDEP)."""
    out = 0
    while mask and value:
        low = mask & -mask
        if value & 1:
            out |= low
        value >>= 1
        mask ^= low
    return out


def version_bits_for(counter: int, mask: int) -> int:
    """The ``counter``-th version-bits value inside ``mask`` (wraps around)."""
    return deposit_bits(counter % (1 << bin(mask).count("1")), mask)


def rolled_version(job_version: int, version_bits: int, mask: int) -> int:
    """Header version for submitted ``version_bits``: BIP310's
    ``(job_version & ~mask) | (version_bits & mask)``."""
    return (job_version & ~mask & 0xFFFFFFFF) | (version_bits & mask)


def coinbase_merkle_root(job: Job, extranonce1: bytes, extranonce2: bytes) -> bytes:
    """Merkle root (internal order) for this job's coinbase with the given extranonces."""
    coinbase = job.coinb1 + extranonce1 + extranonce2 + job.coinb2
    return merkle_root_from_branch(sha256d(coinbase), list(job.merkle_branch))


def header_prefix(
    job: Job, extranonce1: bytes, extranonce2: bytes, version: int, ntime: int
) -> bytes:
    """The first 76 bytes of the header (everything but the nonce); ``version`` is the final
    (already rolled) header version."""
    root = coinbase_merkle_root(job, extranonce1, extranonce2)
    return build_header(version, job.prevhash, root, ntime, job.nbits, 0)[:76]


def build_job_header(
    job: Job, extranonce1: bytes, extranonce2: bytes, version: int, ntime: int, nonce: int
) -> bytes:
    """The full 80-byte header."""
    return header_prefix(job, extranonce1, extranonce2, version, ntime) + _pack_nonce(nonce)


def scan_header(
    prefix76: bytes, nonce_start: int, nonce_count: int, target: int
) -> list[tuple[int, bytes]]:
    """Hash nonces ``nonce_start .. nonce_start+nonce_count-1`` (clamped to 32 bits) appended to
    ``prefix76``; return ``(nonce, sha256d hash in internal order)`` for each hash whose
    little-endian value is ``<= target``."""
    if len(prefix76) != 76:
        raise ValueError("header prefix must be 76 bytes")
    end = min(nonce_start + nonce_count, 1 << 32)
    midstate = _sha256(prefix76[:64])
    tail = prefix76[64:]
    copy = midstate.copy
    sha = _sha256
    pack = _pack_nonce
    from_bytes = int.from_bytes
    found: list[tuple[int, bytes]] = []
    for nonce in range(max(nonce_start, 0), end):
        h = copy()
        h.update(tail + pack(nonce))
        digest = sha(h.digest()).digest()
        if from_bytes(digest, "little") <= target:
            found.append((nonce, digest))
    return found


@dataclass(frozen=True)
class Share:
    """A hash that met the share target, ready to submit."""

    job_id: str
    extranonce2: bytes
    ntime: int
    nonce: int
    version_bits: int | None  # None when version rolling was not negotiated
    hash: bytes  # internal byte order

    @property
    def display_hash(self) -> str:
        return self.hash[::-1].hex()


def scan(
    job: Job,
    extranonce1: bytes,
    extranonce2: bytes,
    version_bits: int | None,
    ntime: int,
    nonce_start: int,
    nonce_count: int,
    target: int,
    version_mask: int = VERSION_ROLLING_MASK,
) -> list[Share]:
    """Scan a nonce range of ``job``; ``version_bits`` None = no version rolling (5-param
    submits), else the bits (within ``version_mask``) to put into the header version."""
    if version_bits is None:
        version = job.version
    else:
        if version_bits & ~version_mask:
            raise ValueError("version bits outside the mask")
        version = rolled_version(job.version, version_bits, version_mask)
    prefix = header_prefix(job, extranonce1, extranonce2, version, ntime)
    return [
        Share(job.job_id, extranonce2, ntime, nonce, version_bits, digest)
        for nonce, digest in scan_header(prefix, nonce_start, nonce_count, target)
    ]


def submit_params(user: str, share: Share) -> list[str]:
    """``mining.submit`` params: 5, or 6 with the version bits when rolling was negotiated."""
    params = [
        user,
        share.job_id,
        share.extranonce2.hex(),
        f"{share.ntime & 0xFFFFFFFF:08x}",
        f"{share.nonce & 0xFFFFFFFF:08x}",
    ]
    if share.version_bits is not None:
        params.append(f"{share.version_bits & 0xFFFFFFFF:08x}")
    return params


# --- worker processes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkSpec:
    """What a worker process hashes on: one job for one (extranonce1, extranonce2 space)."""

    job: Job
    extranonce1: bytes
    extranonce2_size: int
    worker_index: int
    worker_count: int
    share_target: int
    version_mask: int | None  # None = no version rolling
    received_at: float  # wall time the job arrived (for ntime rolling)


@dataclass(frozen=True)
class WorkUnit:
    extranonce2: bytes
    version_bits: int | None
    ntime: int
    prefix76: bytes
    nonce_start: int
    nonce_end: int


def extranonce2_for(spec: WorkSpec, counter: int) -> bytes:
    """The ``counter``-th extranonce2 of this worker's space: with several workers the top byte
    is the worker index and the rest a counter, else the whole field is the counter."""
    size = spec.extranonce2_size
    bits = 8 * size
    if size <= 0:
        return b""
    if spec.worker_count > 1:
        low_bits = bits - 8
        low = counter % (1 << low_bits) if low_bits else 0
        value = ((spec.worker_index & 0xFF) << low_bits) | low
    else:
        value = counter % (1 << bits)
    return value.to_bytes(size, "big")


def work_units(spec: WorkSpec, now: Callable[[], float] = time.time) -> Iterator[WorkUnit]:
    """Headers to scan for ``spec``, in order, each with its nonce range.

    Without version rolling: one header per extranonce2 over the full nonce range. With it:
    headers step through version-bits values (starting at 1 so rolled bits show up early, 0
    last), ``ROLLING_NONCE_SPAN`` nonces each, then the next extranonce2. ntime follows the wall
    clock since the job arrived, capped at job ntime + ``MAX_NTIME_ROLL``.
    """
    job = spec.job
    counter = 0
    while True:
        en2 = extranonce2_for(spec, counter)
        counter += 1
        root = coinbase_merkle_root(job, spec.extranonce1, en2)
        if spec.version_mask is None:
            versions: Iterator[int | None] = iter([None])
            span = 1 << 32
        else:
            mask = spec.version_mask
            n_values = 1 << bin(mask).count("1")
            versions = (version_bits_for(i % n_values, mask) for i in range(1, n_values + 1))
            span = ROLLING_NONCE_SPAN
        for bits in versions:
            if bits is None:
                version = job.version
            else:
                assert spec.version_mask is not None
                # Keep any job bits inside the mask set, and report them, so pools using
                # either the BIP310 formula or ckpool's OR reconstruct this version.
                version = job.version | bits
                bits = version & spec.version_mask
            rolled = int(now() - spec.received_at)
            ntime = (job.ntime + min(MAX_NTIME_ROLL, max(0, rolled))) & 0xFFFFFFFF
            prefix = build_header(version, job.prevhash, root, ntime, job.nbits, 0)[:76]
            yield WorkUnit(en2, bits, ntime, prefix, 0, span)


def _worker_main(conn: multiprocessing.connection.Connection) -> None:
    """Worker process: hash the latest work received on ``conn``, send shares and stats back.

    Messages in: ``("work", WorkSpec)``, ``("idle",)``, ``("stop",)``.
    Messages out: ``("share", Share)``, ``("stats", hashes)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    spec: WorkSpec | None = None
    units: Iterator[WorkUnit] | None = None
    unit: WorkUnit | None = None
    nonce = 0
    hashes = 0
    last_stats = time.monotonic()
    try:
        while True:
            if spec is None or conn.poll():
                msg = conn.recv()
                kind = msg[0]
                if kind == "stop":
                    return
                if kind == "idle":
                    spec = units = unit = None
                elif kind == "work":
                    spec = msg[1]
                    units = work_units(spec)
                    unit = None
                continue
            assert units is not None
            if unit is None or nonce >= unit.nonce_end:
                unit = next(units)
                nonce = unit.nonce_start
            count = min(BATCH, unit.nonce_end - nonce)
            for found_nonce, digest in scan_header(unit.prefix76, nonce, count, spec.share_target):
                conn.send(
                    (
                        "share",
                        Share(
                            spec.job.job_id,
                            unit.extranonce2,
                            unit.ntime,
                            found_nonce,
                            unit.version_bits,
                            digest,
                        ),
                    )
                )
            nonce += count
            hashes += count
            tick = time.monotonic()
            if tick - last_stats >= STATS_INTERVAL:
                conn.send(("stats", hashes))
                hashes = 0
                last_stats = tick
    except (EOFError, BrokenPipeError, ConnectionError, KeyboardInterrupt):
        return


class _Worker:
    def __init__(self, ctx: Any, index: int) -> None:
        self.index = index
        self.conn, child = ctx.Pipe(duplex=True)
        self.process: multiprocessing.process.BaseProcess = ctx.Process(
            target=_worker_main, args=(child,), name=f"solopool-miner-{index}", daemon=True
        )
        self.process.start()
        child.close()

    def send(self, msg: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(msg)

    def stop(self, timeout: float = 2.0) -> None:
        self.send(("stop",))
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        self.conn.close()


# --- the Stratum client -----------------------------------------------------------------------


@dataclass
class MinerConfig:
    host: str
    port: int
    user: str
    password: str = "x"
    threads: int = 1
    blocks: int | None = None
    seconds: float | None = None
    suggest_difficulty: float | None = None
    version_rolling: bool = True


@dataclass
class _Session:
    """Per-connection state."""

    writer: asyncio.StreamWriter
    next_id: int = 1
    # id -> (method, share for submits, whether that share meets the network target)
    pending: dict[int, tuple[str, Share | None, bool]] = field(default_factory=dict)
    extranonce1: bytes | None = None
    extranonce2_size: int | None = None
    next_extranonce: tuple[bytes, int] | None = None  # from set_extranonce, for the next job
    version_mask: int | None = None
    difficulty: float = 1.0  # set_difficulty value, applied to the next notify
    authorized: bool = False
    job: Job | None = None
    job_received_at: float = 0.0
    valid_jobs: dict[str, Job] = field(default_factory=dict)


def parse_url(url: str) -> tuple[str, int]:
    """``stratum+tcp://host:port`` (or ``host:port``) to (host, port)."""
    if "://" not in url:
        url = "stratum+tcp://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("stratum+tcp", "stratum", "tcp"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}")
    if not parts.hostname or parts.port is None:
        raise ValueError(f"URL needs a host and a port: {url!r}")
    return parts.hostname, parts.port


def _error_text(msg: dict[str, Any]) -> str:
    """The human reason of a failed response, in any of the shapes pools use."""
    error = msg.get("error")
    if isinstance(error, list) and len(error) >= 2:
        return f"{error[1]} (code {error[0]})"
    if isinstance(error, dict):
        return str(error.get("message", error))
    if error:
        return str(error)
    if msg.get("reject-reason"):
        return str(msg["reject-reason"])
    return f"result {msg.get('result')!r}"


class Miner:
    """The asyncio side: one Stratum connection (reconnecting), worker processes, counters."""

    def __init__(self, config: MinerConfig, out: TextIO | None = None) -> None:
        if config.threads < 1:
            raise ValueError("threads must be >= 1")
        self.config = config
        self.out = out if out is not None else sys.stdout
        self.accepted = 0
        self.rejected = 0
        self.blocks = 0
        self.hashes = 0
        self.block_hashes: list[str] = []
        self._exit_code: int | None = None
        self._done = asyncio.Event()
        self._session: _Session | None = None
        self._workers: list[_Worker] = []
        self._target: tuple[str, int] = (config.host, config.port)
        self._reconnect_delay: float | None = None
        self._hash_log_at = time.monotonic()
        self._hash_log_count = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # public control

    def stop(self, exit_code: int | None = None) -> None:
        """Ask ``run`` to finish (e.g. from a signal handler)."""
        if exit_code is not None and self._exit_code is None:
            self._exit_code = exit_code
        self._done.set()

    def summary(self) -> str:
        return f"accepted={self.accepted} rejected={self.rejected} blocks={self.blocks}"

    async def run(self) -> int:
        """Mine until the block count or time limit is reached (or ``stop``); return the exit
        code and print the summary line."""
        self._loop = asyncio.get_running_loop()
        started = time.monotonic()
        self._start_workers()
        conn_task = asyncio.create_task(self._connection_loop(), name="stratum-connection")
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), timeout=self.config.seconds)
            await self._wait_pending_submits(1.0)
        finally:
            conn_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn_task
            self._stop_workers()
            elapsed = max(time.monotonic() - started, 1e-6)
            rate = self.hashes / elapsed / 1000
            log.info("hashed %d in %.1f s (about %.1f kH/s)", self.hashes, elapsed, rate)
            print(self.summary(), file=self.out, flush=True)
        if self._exit_code is not None:
            return self._exit_code
        if self.config.blocks is not None and self.blocks < self.config.blocks:
            return EXIT_NOT_DONE
        return EXIT_OK

    # workers

    def _start_workers(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        assert self._loop is not None
        for index in range(self.config.threads):
            worker = _Worker(ctx, index)
            self._workers.append(worker)
            self._loop.add_reader(worker.conn.fileno(), self._on_worker_readable, worker)

    def _stop_workers(self) -> None:
        for worker in self._workers:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(worker.conn.fileno())
            worker.stop()
        self._workers.clear()

    def _on_worker_readable(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                msg = worker.conn.recv()
                if msg[0] == "share":
                    self._on_share(msg[1])
                elif msg[0] == "stats":
                    self._on_stats(int(msg[1]))
        except (EOFError, OSError):
            assert self._loop is not None
            self._loop.remove_reader(worker.conn.fileno())
            if not self._done.is_set():
                log.error("worker %d died (exit code %s)", worker.index, worker.process.exitcode)
                self.stop(EXIT_WORKER_FAILED)

    def _on_stats(self, hashes: int) -> None:
        self.hashes += hashes
        self._hash_log_count += hashes
        now = time.monotonic()
        if now - self._hash_log_at >= HASHRATE_LOG_INTERVAL:
            rate = self._hash_log_count / (now - self._hash_log_at)
            log.info("hashrate %.1f kH/s (%s)", rate / 1000, self.summary())
            self._hash_log_at = now
            self._hash_log_count = 0

    def _dispatch(self) -> None:
        """Send the current job to every worker (or idle them when there is nothing to do)."""
        s = self._session
        if s is None or s.job is None or s.extranonce1 is None or s.extranonce2_size is None:
            for worker in self._workers:
                worker.send(("idle",))
            return
        for worker in self._workers:
            spec = WorkSpec(
                job=s.job,
                extranonce1=s.extranonce1,
                extranonce2_size=s.extranonce2_size,
                worker_index=worker.index,
                worker_count=len(self._workers),
                share_target=s.job.share_target,
                version_mask=s.version_mask,
                received_at=s.job_received_at,
            )
            worker.send(("work", spec))

    # shares

    def _on_share(self, share: Share) -> None:
        s = self._session
        if self._done.is_set():
            return
        if s is None or share.job_id not in s.valid_jobs:
            log.debug("dropping stale share for job %s", share.job_id)
            return
        job = s.valid_jobs[share.job_id]
        is_block = hash_to_int(share.hash) <= job.network_target
        log.info(
            "share job=%s nonce=%08x hash=%s%s",
            share.job_id,
            share.nonce,
            share.display_hash,
            " (block)" if is_block else "",
        )
        self._request("mining.submit", submit_params(self.config.user, share), share, is_block)

    async def _wait_pending_submits(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self._session
            if s is None or not any(p[0] == "mining.submit" for p in s.pending.values()):
                return
            await asyncio.sleep(0.02)

    # connection

    async def _connection_loop(self) -> None:
        backoff = BACKOFF_MIN
        while not self._done.is_set():
            host, port = self._target
            self._reconnect_delay = None
            subscribed = False
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, limit=MAX_LINE), timeout=10
                )
            except (OSError, TimeoutError) as exc:
                log.warning("cannot connect to %s:%d: %s", host, port, exc)
            else:
                log.info("connected to %s:%d", host, port)
                session = _Session(writer)
                self._session = session
                try:
                    await self._run_session(reader, session)
                except (OSError, ValueError, ProtocolError, TimeoutError) as exc:
                    if not self._done.is_set():
                        log.warning("connection to %s:%d lost: %s", host, port, exc)
                except Exception:
                    log.exception("unexpected error on the pool connection")
                finally:
                    subscribed = session.extranonce1 is not None
                    if not self._done.is_set():
                        # Keep the session (and its pending submits) only while shutting down.
                        self._session = None
                        self._dispatch()
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            if self._done.is_set():
                return
            if subscribed:
                backoff = BACKOFF_MIN
            delay = self._reconnect_delay if self._reconnect_delay is not None else backoff
            if self._reconnect_delay is None:
                backoff = min(backoff * 2, BACKOFF_MAX)
            log.info("reconnecting in %.1f s", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), timeout=delay)

    async def _run_session(self, reader: asyncio.StreamReader, s: _Session) -> None:
        cfg = self.config
        if cfg.version_rolling:
            self._request(
                "mining.configure",
                [
                    ["version-rolling"],
                    {
                        "version-rolling.mask": f"{VERSION_ROLLING_MASK:08x}",
                        "version-rolling.min-bit-count": 2,
                    },
                ],
            )
        self._request("mining.subscribe", [USER_AGENT])
        self._request("mining.authorize", [cfg.user, cfg.password])
        if cfg.suggest_difficulty is not None:
            d = cfg.suggest_difficulty
            self._request("mining.suggest_difficulty", [int(d) if float(d).is_integer() else d])
        # Ends by disconnect, client.reconnect, cancellation from run(), or once the miner is
        # done: Python 3.11's wait_for can swallow that cancellation when a line arrives at the
        # same moment, and a live pool never stops sending.
        while not self._done.is_set():
            async with asyncio.timeout(READ_TIMEOUT):
                line = await reader.readline()
            if not line:
                raise ConnectionError("closed by pool")
            if not line.endswith(b"\n"):
                raise ConnectionError("closed by pool mid-line")
            text = line.strip()
            if not text:
                continue
            try:
                msg = json.loads(text)
            except ValueError:
                log.warning("ignoring non-JSON line from pool: %r", text[:200])
                continue
            if not isinstance(msg, dict):
                log.warning("ignoring non-object JSON from pool: %r", text[:200])
                continue
            self._handle(msg)
            if self._reconnect_delay is not None:
                return

    def _request(
        self, method: str, params: list[Any], share: Share | None = None, is_block: bool = False
    ) -> int | None:
        s = self._session
        if s is None:
            return None
        msg_id = s.next_id
        s.next_id += 1
        s.pending[msg_id] = (method, share, is_block)
        self._write(s, {"id": msg_id, "method": method, "params": params})
        return msg_id

    def _write(self, s: _Session, obj: dict[str, Any]) -> None:
        if s.writer.is_closing():
            return
        log.debug("> %s", obj)
        s.writer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def _handle(self, msg: dict[str, Any]) -> None:
        log.debug("< %s", msg)
        method = msg.get("method")
        if isinstance(method, str):
            self._handle_method(method, msg.get("params"), msg.get("id"))
            return
        msg_id = msg.get("id")
        s = self._session
        if s is None or not isinstance(msg_id, int) or msg_id not in s.pending:
            log.debug("unmatched response %s", msg)
            return
        kind, share, is_block = s.pending.pop(msg_id)
        ok = msg.get("error") is None and msg.get("result") not in (None, False)
        if kind == "mining.configure":
            self._on_configure(msg, ok)
        elif kind == "mining.subscribe":
            self._on_subscribe(msg, ok)
        elif kind == "mining.authorize":
            self._on_authorize(msg, ok)
        elif kind == "mining.submit" and share is not None:
            self._on_submit_result(msg, ok, share, is_block)
        elif kind == "mining.suggest_difficulty":
            log.debug("suggest_difficulty answered %s", msg.get("result"))

    def _on_configure(self, msg: dict[str, Any], ok: bool) -> None:
        s = self._session
        assert s is not None
        result = msg.get("result")
        mask: int | None = None
        if ok and isinstance(result, dict) and result.get("version-rolling") is True:
            raw = result.get("version-rolling.mask", f"{VERSION_ROLLING_MASK:08x}")
            try:
                mask = int(str(raw), 16) & VERSION_ROLLING_MASK
            except ValueError:
                log.warning("bad version-rolling.mask %r, not rolling", raw)
                mask = None
        s.version_mask = mask or None
        log.info(
            "version rolling %s",
            f"enabled, mask {s.version_mask:08x}" if s.version_mask else "not negotiated",
        )
        if s.job is not None:
            self._dispatch()

    def _on_subscribe(self, msg: dict[str, Any], ok: bool) -> None:
        s = self._session
        assert s is not None
        result = msg.get("result")
        if not ok or not isinstance(result, list) or len(result) < 3:
            raise ProtocolError(f"subscribe failed: {_error_text(msg)}")
        try:
            extranonce1 = bytes.fromhex(str(result[1]))
            size = int(result[2])
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"bad subscribe result {result!r}") from exc
        if not 0 <= size <= 32:
            raise ProtocolError(f"unsupported extranonce2_size {size}")
        s.extranonce1, s.extranonce2_size = extranonce1, size
        log.info("subscribed: extranonce1=%s extranonce2_size=%d", extranonce1.hex(), size)
        if s.job is not None:
            self._dispatch()

    def _on_authorize(self, msg: dict[str, Any], ok: bool) -> None:
        s = self._session
        assert s is not None
        if ok:
            s.authorized = True
            log.info("authorized as %s", self.config.user)
            return
        print(
            f"solopool-miner: authorize failed for {self.config.user}: {_error_text(msg)}",
            file=sys.stderr,
            flush=True,
        )
        self.stop(EXIT_AUTH_FAILED)

    def _on_submit_result(
        self, msg: dict[str, Any], ok: bool, share: Share, is_block: bool
    ) -> None:
        if not ok:
            self.rejected += 1
            log.warning("share rejected (job %s): %s", share.job_id, _error_text(msg))
            return
        self.accepted += 1
        if is_block:
            self.blocks += 1
            self.block_hashes.append(share.display_hash)
            print(f"block {share.display_hash}", file=self.out, flush=True)
        log.info("share accepted (job %s) %s", share.job_id, self.summary())
        if self.config.blocks is not None and self.blocks >= self.config.blocks:
            self.stop()

    def _handle_method(self, method: str, params: Any, msg_id: Any) -> None:
        s = self._session
        assert s is not None
        if not isinstance(params, list):
            params = []
        if method == "mining.set_difficulty":
            try:
                difficulty = float(params[0])
            except (IndexError, TypeError, ValueError):
                log.warning("bad set_difficulty params %r", params)
                return
            if difficulty <= 0:
                log.warning("ignoring non-positive difficulty %r", params[0])
                return
            s.difficulty = difficulty
            log.info("difficulty %g (from the next job)", difficulty)
        elif method == "mining.notify":
            self._on_notify(params)
        elif method == "mining.set_extranonce":
            try:
                s.next_extranonce = (bytes.fromhex(str(params[0])), int(params[1]))
            except (IndexError, TypeError, ValueError):
                log.warning("bad set_extranonce params %r", params)
                return
            log.info("extranonce1 %s size %d from the next job", params[0], params[1])
        elif method == "mining.set_version_mask":
            try:
                mask = int(str(params[0]), 16) & VERSION_ROLLING_MASK
            except (IndexError, ValueError):
                log.warning("bad set_version_mask params %r", params)
                return
            if s.version_mask is None and not self.config.version_rolling:
                log.warning("ignoring set_version_mask: version rolling disabled")
            else:
                s.version_mask = mask or None
                log.info("version mask now %08x", mask)
                self._dispatch()
        elif method == "client.reconnect":
            self._on_reconnect(params)
        elif method == "client.show_message":
            log.warning("pool message: %s", params[0] if params else "")
        elif method == "mining.ping":
            if msg_id is not None:
                self._write(s, {"id": msg_id, "result": "pong", "error": None})
        elif method == "client.get_version":
            if msg_id is not None:
                self._write(s, {"id": msg_id, "result": USER_AGENT, "error": None})
        else:
            log.debug("unknown method %s", method)
            if msg_id is not None:
                self._write(
                    s, {"id": msg_id, "result": None, "error": [20, "unsupported method", None]}
                )

    def _on_notify(self, params: list[Any]) -> None:
        s = self._session
        assert s is not None
        try:
            job = Job.from_notify(params, s.difficulty)
        except ValueError as exc:
            log.warning("ignoring bad mining.notify: %s", exc)
            return
        extranonce_changed = False
        if s.next_extranonce is not None:
            extranonce_changed = s.next_extranonce != (s.extranonce1, s.extranonce2_size)
            s.extranonce1, s.extranonce2_size = s.next_extranonce
            s.next_extranonce = None
        if job.clean_jobs or extranonce_changed:  # older shares would carry the old extranonce
            s.valid_jobs.clear()
        s.valid_jobs[job.job_id] = job
        while len(s.valid_jobs) > 32:
            del s.valid_jobs[next(iter(s.valid_jobs))]
        s.job = job
        s.job_received_at = time.time()
        log.info(
            "job %s difficulty %g nbits %08x clean=%s",
            job.job_id,
            job.difficulty,
            job.nbits,
            job.clean_jobs,
        )
        self._dispatch()

    def _on_reconnect(self, params: list[Any]) -> None:
        host, port = self.config.host, self.config.port
        wait = 0.0
        if len(params) >= 2 and isinstance(params[0], str) and params[0]:
            try:
                host, port = params[0], int(params[1])
            except (TypeError, ValueError):
                host, port = self.config.host, self.config.port
        if len(params) >= 3:
            with contextlib.suppress(TypeError, ValueError):
                wait = max(0.0, float(params[2]))
        log.info("pool asked to reconnect to %s:%d in %.0f s", host, port, wait)
        self._target = (host, port)
        self._reconnect_delay = wait


# --- command line -----------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="solopool-miner",
        description="Small CPU Stratum V1 test miner (for solopool tests and demos).",
    )
    p.add_argument("--url", required=True, help="stratum+tcp://HOST:PORT")
    p.add_argument("--user", required=True, help="ADDRESS[.WORKER]")
    p.add_argument("--password", default="x")
    p.add_argument("--threads", type=_positive_int, default=1, help="hashing processes")
    p.add_argument("--blocks", type=_positive_int, help="exit 0 after N accepted blocks")
    p.add_argument("--seconds", type=_positive_float, help="exit after S seconds")
    p.add_argument("--suggest-difficulty", type=_positive_float, metavar="D")
    p.add_argument("--no-version-rolling", action="store_true")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    return p


def config_from_args(args: argparse.Namespace) -> MinerConfig:
    host, port = parse_url(args.url)
    return MinerConfig(
        host=host,
        port=port,
        user=args.user,
        password=args.password,
        threads=args.threads,
        blocks=args.blocks,
        seconds=args.seconds,
        suggest_difficulty=args.suggest_difficulty,
        version_rolling=not args.no_version_rolling,
    )


async def _async_main(config: MinerConfig) -> int:
    miner = Miner(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not possible off the main thread (tests run main() in a thread): then Ctrl-C is moot.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, miner.stop)
    return await miner.run()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay usable without
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_async_main(config))


if __name__ == "__main__":
    sys.exit(main())
