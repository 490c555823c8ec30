"""The measurements, driven from one coordinator: submit throughput, new-block fan-out, and
connections (memory per idle connection, accept rate)."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import socket
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pool.consensus.address import chain_params, encode_segwit_address
from pool.consensus.block import stratum_prevhash
from pool.consensus.target import nbits_to_target

from . import procfs
from .client import BenchError, LocalRunner, RemoteRunner, Runner
from .report import machine, summarize_ms
from .rpc import BenchRPCError, RPCClient, ZmqBlockWatcher, discover_zmq_hashblock
from .sv2client import STANDARD

# A random hash is a block with probability target / 2**256; above this the pool's network target
# is regtest-easy and random submits would be a storm of found blocks.
BLOCK_RISK_TARGET = 1 << 236  # ~1e-6 per hash
V1_SCHEMES = ("stratum+tcp", "stratum", "tcp")
SV2_SCHEME = "stratum2+tcp"


@dataclass(frozen=True)
class PoolTarget:
    url: str
    host: str
    port: int
    sv2: bool = False  # a Stratum V2 port (stratum2+tcp://)

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(socket.gethostbyname(self.host)).is_loopback
        except (OSError, ValueError):
            return False


def parse_url(url: str) -> PoolTarget:
    """`stratum+tcp://HOST:PORT` (or `HOST:PORT`), or Stratum V2's
    `stratum2+tcp://HOST:PORT[/AUTHORITY_KEY]` (the key is not checked: a load test)."""
    text = url if "://" in url else f"stratum+tcp://{url}"
    parts = urlsplit(text)
    if parts.scheme not in (*V1_SCHEMES, SV2_SCHEME) or not parts.hostname:
        raise BenchError(
            f"{url!r} is not a stratum+tcp://HOST:PORT or stratum2+tcp://HOST:PORT URL"
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise BenchError(f"{url!r} has no port")
    return PoolTarget(url, parts.hostname, port, sv2=parts.scheme == SV2_SCHEME)


@dataclass
class NodeSettings:
    rpc_url: str
    user: str | None = None
    password: str | None = None
    cookie: Path | None = None

    def client(self) -> RPCClient:
        return RPCClient(self.rpc_url, self.user, self.password, self.cookie)


@dataclass
class ClientSettings:
    url: str = "stratum+tcp://127.0.0.1:3333"
    miners: int = 200
    client_procs: int = 1
    source_ips: int = 1
    connect_concurrency: int = 256
    connect_timeout: float = 30.0
    user: str | None = None
    chain: str | None = None
    addresses: int = 1
    pool_pid: int | None = None
    label: str = ""
    allow_remote: bool = False
    node: NodeSettings | None = None
    sv2_channel: str = STANDARD  # on a stratum2+tcp:// URL: "standard" or "extended"


@dataclass
class SubmitSettings(ClientSettings):
    seconds: float = 10.0
    window: int = 8
    valid_ratio: float = 0.0
    suggest_difficulty: float | None = None
    drain_seconds: float = 5.0
    max_valid_hashes: int = 200_000
    allow_blocks: bool = False
    settle_seconds: float = 1.0


@dataclass
class FanoutSettings(ClientSettings):
    stages: list[int] = field(default_factory=lambda: [1000, 10000])
    blocks: int = 20
    interval: float = 0.5
    block_timeout: float = 10.0
    zmq: str | None = None
    use_zmq: bool = True
    mine_address: str | None = None
    settle_seconds: float = 2.0


@dataclass
class ConnectionSettings(ClientSettings):
    miners: int = 10000
    hold_seconds: float = 5.0
    settle_seconds: float = 2.0


# --- helpers -------------------------------------------------------------------------------------


def derived_addresses(chain: str, count: int, offset: int = 0) -> list[str]:
    """Deterministic P2WPKH addresses for `chain` (nobody holds their keys: for load only)."""
    hrp = chain_params(chain).hrp
    return [
        encode_segwit_address(hrp, 0, hashlib.sha256(b"solopool-bench %d" % i).digest()[:20])
        for i in range(offset, offset + count)
    ]


def miner_users(settings: ClientSettings, count: int, chain: str) -> list[str]:
    """One username per miner: `ADDRESS.bN`, cycling over `addresses` payout addresses."""
    if settings.user:
        return [f"{settings.user}.b{i}" for i in range(count)]
    addresses = derived_addresses(chain, max(1, min(settings.addresses, count)))
    return [f"{addresses[i % len(addresses)]}.b{i}" for i in range(count)]


def resolve_pool(settings: ClientSettings, target: PoolTarget) -> procfs.PoolProcesses | None:
    """The pool's processes: --pool-pid and its descendants, else (on this machine) whoever
    listens on the port: their common parent process and its descendants (see procfs)."""
    if settings.pool_pid is not None:
        return procfs.PoolProcesses([settings.pool_pid])
    if target.is_loopback:
        roots = procfs.pool_roots(procfs.listening_pids(target.port))
        if roots:
            return procfs.PoolProcesses(roots)
    return None


def sample_pool(pool: procfs.PoolProcesses | None) -> procfs.ProcSample:
    return pool.sample() if pool is not None else procfs.ProcSample(None, None, None, None)


def pool_in_bench(pool: procfs.PoolProcesses | None) -> bool:
    """A pool running in the bench's own process (tests): its CPU is in the client's figure."""
    return pool is not None and os.getpid() in pool.roots


def _pool_info(pool: procfs.PoolProcesses | None, last: procfs.ProcSample) -> dict[str, Any]:
    return {
        "pid": None if pool is None else pool.pid,
        "root_pids": None if pool is None else pool.roots,
        "processes": last.processes,
    }


def _set_notes(
    pool: procfs.PoolProcesses | None, samples: list[procfs.ProcSample]
) -> list[str]:
    """A note when the pool's processes changed between samples whose RSS (or fds) are
    compared: the sums then cover different processes."""
    if pool is None:
        return []
    keys = [set(s.cpu_by_process) for s in samples if s.cpu_seconds is not None]
    if len(keys) < 2 or all(k == keys[0] for k in keys[1:]):
        return []
    exited = len(keys[0] - keys[-1])
    started = len(keys[-1] - keys[0])
    return [
        f"the pool's processes changed during the run ({exited} exited, {started} started, "
        f"{len(keys[-1])} at the end): RSS and fd figures compare different processes"
    ]


def check_target(settings: ClientSettings) -> PoolTarget:
    target = parse_url(settings.url)
    if not target.is_loopback and not settings.allow_remote:
        raise BenchError(
            f"{target.host} is not a loopback address; pass --allow-remote to load a pool on "
            "another machine (only ever your own)"
        )
    return target


async def start_runners(settings: ClientSettings, target: PoolTarget) -> list[Runner]:
    procs = max(1, settings.client_procs)
    channel = settings.sv2_channel if target.sv2 else None
    if procs == 1:
        return [LocalRunner(target.host, target.port, settings.source_ips, channel)]
    return [
        RemoteRunner(target.host, target.port, settings.source_ips, channel) for _ in range(procs)
    ]


def v1_only(target: PoolTarget, kind: str) -> None:
    if target.sv2:
        raise BenchError(f"the {kind} test speaks Stratum V1 only: give a stratum+tcp:// URL")


def protocol(settings: ClientSettings, target: PoolTarget) -> str:
    return f"sv2 {settings.sv2_channel}" if target.sv2 else "v1"


async def close_runners(runners: list[Runner]) -> None:
    await asyncio.gather(*(r.close() for r in runners), return_exceptions=True)


async def connect_spread(
    runners: list[Runner],
    specs: list[tuple[int, str]],
    settings: ClientSettings,
    suggest: float | None,
    passive: bool,
) -> dict[str, Any]:
    """Connect `specs` round-robin over the runners; merged statistics."""
    shares: list[list[tuple[int, str]]] = [[] for _ in runners]
    for n, spec in enumerate(specs):
        shares[n % len(runners)].append(spec)
    per_runner = max(1, settings.connect_concurrency // len(runners))
    parts = await asyncio.gather(
        *(
            r.call(
                "connect",
                specs=share,
                concurrency=per_runner,
                suggest=suggest,
                timeout=settings.connect_timeout,
                passive=passive,
            )
            for r, share in zip(runners, shares, strict=True)
        )
    )
    errors: Counter[str] = Counter()
    handshakes: list[float] = []
    for part in parts:
        errors.update(part["errors"])
        handshakes.extend(part["handshake_seconds"])
    return {
        "requested": sum(p["requested"] for p in parts),
        "ready": sum(p["ready"] for p in parts),
        "failed": sum(p["failed"] for p in parts),
        "errors": dict(errors),
        "started": min(p["started"] for p in parts),
        "last_connected": max(p["last_connected"] for p in parts),
        "last_ready": max(p["last_ready"] for p in parts),
        "handshake_seconds": handshakes,
        "nbits": next((p["nbits"] for p in parts if p["nbits"]), 0),
        "difficulty": next((p["difficulty"] for p in parts if p["difficulty"]), None),
    }


async def open_count(runners: list[Runner]) -> int:
    states = await asyncio.gather(*(r.call("status") for r in runners))
    return sum(int(s["open"]) for s in states)


class LoadMeter:
    """CPU use over a stretch of the run: the whole machine, the pool, the client processes,
    and what is left, i.e. load from other programs that makes the figures less reliable."""

    def __init__(self, runners: list[Runner], pool: procfs.PoolProcesses | None) -> None:
        self.runners = runners
        self.pool = pool
        self._start: (
            tuple[float, tuple[float, float] | None, procfs.ProcSample, float] | None
        ) = None

    async def _clients(self) -> float:
        states = await asyncio.gather(*(r.call("status") for r in self.runners))
        return sum(float(s["cpu_seconds"]) for s in states)

    async def start(self) -> None:
        clients = await self._clients()
        self._start = (
            time.monotonic(), procfs.machine_cpu_seconds(), sample_pool(self.pool), clients
        )

    async def stop(self) -> dict[str, Any]:
        assert self._start is not None
        clients = await self._clients()
        pool = sample_pool(self.pool)
        now = time.monotonic()
        t0, machine0, pool0, clients0 = self._start
        used = procfs.delta(pool0, pool)
        return load_summary(
            now - t0,
            procfs.busy_cores(machine0, procfs.machine_cpu_seconds(), now - t0),
            None if used.cpu_seconds is None else used.cpu_seconds / (now - t0),
            (clients - clients0) / (now - t0),
            pool_in_bench=pool_in_bench(self.pool),
            pool_processes=pool.processes,
            notes=used.notes(),
        )


def load_summary(
    wall: float,
    machine_cores: float | None,
    pool_cores: float | None,
    client_cores: float,
    pool_in_bench: bool,
    pool_processes: int | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    other = None
    if machine_cores is not None:
        # A pool in the bench's own process (tests) is already in the client's figure.
        pool_part = 0.0 if pool_in_bench or not pool_cores else pool_cores
        other = machine_cores - client_cores - pool_part
    return {
        "seconds": round(wall, 3),
        "machine_busy_cores": None if machine_cores is None else round(machine_cores, 3),
        "pool_cores": None if pool_cores is None else round(pool_cores, 3),
        "client_cores": round(client_cores, 3),
        "other_cores": None if other is None else round(max(other, 0.0), 3),
        "pool_processes": pool_processes,
        "notes": notes or [],
    }


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def fake_node_calls(node: NodeSettings | None) -> int | None:
    """Total RPC calls the fake node has answered (None for a real node or none)."""
    if node is None:
        return None
    try:
        stats = await asyncio.to_thread(node.client().call, "getfakenodestats")
    except (BenchRPCError, OSError, ValueError):
        return None
    return int(stats["total_calls"])


def _node_chain(node: NodeSettings | None) -> str | None:
    if node is None:
        return None
    try:
        return str(node.client().call("getblockchaininfo")["chain"])
    except (BenchRPCError, OSError, ValueError, KeyError):
        return None


def _base(kind: str, settings: ClientSettings, target: PoolTarget) -> dict[str, Any]:
    return {"bench": kind, "label": settings.label, "url": target.url, "machine": machine()}


def _connect_summary(conn: dict[str, Any]) -> dict[str, Any]:
    return {
        "requested": conn["requested"],
        "ready": conn["ready"],
        "failed": conn["failed"],
        "errors": conn["errors"],
        "handshake_ms": summarize_ms(conn["handshake_seconds"]),
    }


# --- submit throughput ---------------------------------------------------------------------------


async def run_submit(settings: SubmitSettings) -> dict[str, Any]:
    target = check_target(settings)
    pool = resolve_pool(settings, target)
    chain = settings.chain or await asyncio.to_thread(_node_chain, settings.node) or "main"
    users = miner_users(settings, settings.miners, chain)
    specs = list(enumerate(users))
    runners = await start_runners(settings, target)
    try:
        conn = await connect_spread(
            runners, specs, settings, settings.suggest_difficulty, passive=False
        )
        if conn["ready"] == 0:
            raise BenchError(f"no miner got through the handshake: {conn['errors']}")
        if (
            conn["nbits"]
            and nbits_to_target(conn["nbits"]) > BLOCK_RISK_TARGET
            and not settings.allow_blocks
        ):
            raise BenchError(
                f"the pool's network target (nbits {conn['nbits']:08x}) is regtest-easy: random "
                "submits would be found blocks. Run the submit test against a pool on a "
                "mainnet-difficulty template (solopool-bench fake-node), or pass --allow-blocks"
            )
        await asyncio.sleep(settings.settle_seconds)
        calls_before = await fake_node_calls(settings.node)
        start_at = time.monotonic() + (0.3 if len(runners) == 1 else 0.6)
        work = asyncio.gather(
            *(
                r.call(
                    "submit",
                    start_at=start_at,
                    seconds=settings.seconds,
                    window=settings.window,
                    valid_ratio=settings.valid_ratio,
                    drain_seconds=settings.drain_seconds,
                    max_valid_hashes=settings.max_valid_hashes,
                )
                for r in runners
            )
        )
        await sleep_until(start_at)
        before = sample_pool(pool)
        machine_before = procfs.machine_cpu_seconds()
        t_before = time.monotonic()
        await sleep_until(start_at + settings.seconds)
        after = sample_pool(pool)
        machine_after = procfs.machine_cpu_seconds()
        t_after = time.monotonic()
        parts: list[dict[str, Any]] = await work
        calls_after = await fake_node_calls(settings.node)
    finally:
        await close_runners(runners)

    latencies = array("d")
    codes: Counter[str] = Counter()
    per_second = [0] * max(len(p["per_second"]) for p in parts)
    for part in parts:
        latencies.extend(part["latencies"])
        codes.update(part["codes"])
        for i, n in enumerate(part["per_second"]):
            per_second[i] += n

    def total(key: str) -> int:
        return sum(int(p[key]) for p in parts)

    responses_in_window = total("window_responses")
    window = max(t_after - t_before, 1e-9)
    used = procfs.delta(before, after)
    pool_cpu = used.cpu_seconds
    client_util = [round(p["cpu_seconds"] / max(p["wall_seconds"], 1e-9), 3) for p in parts]
    result = _base("submit", settings, target)
    result.update(
        {
            "protocol": protocol(settings, target),
            "miners": settings.miners,
            "connected": conn["ready"],
            "window": settings.window,
            "seconds": settings.seconds,
            "client_procs": len(runners),
            "valid_ratio": settings.valid_ratio,
            "suggest_difficulty": settings.suggest_difficulty,
            "pool_difficulty": conn["difficulty"],
            "sent": total("sent"),
            "responses": total("responses"),
            "accepted": total("accepted"),
            "rejected": total("rejected"),
            "reject_codes": dict(codes),
            "unanswered": total("unanswered"),
            "closed_by_pool": total("closed_by_pool"),
            "window_responses": responses_in_window,
            "submits_per_second": round(responses_in_window / settings.seconds, 1),
            "latency_ms": summarize_ms(latencies),
            "per_second": per_second,
            "valid": {
                "mined": total("valid_mined"),
                "failed": total("valid_failed"),
                "infeasible": total("valid_infeasible"),
            },
            "pool": {
                **_pool_info(pool, after),
                "notes": used.notes(),
                "cpu_seconds": None if pool_cpu is None else round(pool_cpu, 3),
                "cpu_utilization": None if pool_cpu is None else round(pool_cpu / window, 3),
                "cpu_seconds_per_1000": (
                    None
                    if pool_cpu is None or not responses_in_window
                    else round(1000 * pool_cpu / responses_in_window, 4)
                ),
                "rss_kib": after.rss_kib,
                "disk_write_bytes": used.write_bytes,
            },
            "client": {
                "procs": len(runners),
                "in_process": len(runners) == 1,
                "pool_in_bench_process": pool_in_bench(pool),
                "cpu_seconds": [round(p["cpu_seconds"], 3) for p in parts],
                "cpu_utilization": client_util,
                "client_bound": any(u >= 0.9 for u in client_util),
            },
            "load": load_summary(
                window,
                procfs.busy_cores(machine_before, machine_after, window),
                None if pool_cpu is None else pool_cpu / window,
                sum(p["cpu_seconds"] for p in parts) / window,
                pool_in_bench=pool_in_bench(pool),
                pool_processes=after.processes,
            ),
            "node_calls_during_run": (
                None
                if calls_before is None or calls_after is None
                else calls_after - calls_before
            ),
            "connect": _connect_summary(conn),
        }
    )
    return result


# --- connections ---------------------------------------------------------------------------------


async def run_connections(settings: ConnectionSettings) -> dict[str, Any]:
    target = check_target(settings)
    v1_only(target, "connections")
    pool = resolve_pool(settings, target)
    chain = settings.chain or await asyncio.to_thread(_node_chain, settings.node) or "main"
    users = miner_users(settings, settings.miners, chain)
    runners = await start_runners(settings, target)
    try:
        before = sample_pool(pool)
        meter = LoadMeter(runners, pool)
        await meter.start()
        conn = await connect_spread(
            runners, list(enumerate(users)), settings, None, passive=True
        )
        load = await meter.stop()
        await asyncio.sleep(settings.settle_seconds)
        after = sample_pool(pool)
        await asyncio.sleep(settings.hold_seconds)
        held = await open_count(runners)
        after_hold = sample_pool(pool)
    finally:
        await close_runners(runners)
    await asyncio.sleep(1.0)
    after_close = sample_pool(pool)
    ready = conn["ready"]
    connecting = procfs.delta(before, after)
    rss_delta = (
        None
        if after.rss_kib is None or before.rss_kib is None
        else after.rss_kib - before.rss_kib
    )
    result = _base("connections", settings, target)
    result.update(
        {
            "requested": settings.miners,
            "ready": ready,
            "failed": conn["failed"],
            "errors": conn["errors"],
            "held": held,
            "hold_seconds": settings.hold_seconds,
            "connects_per_second": (
                round(ready / max(conn["last_connected"] - conn["started"], 1e-9), 1)
                if ready
                else None
            ),
            "handshakes_per_second": (
                round(ready / max(conn["last_ready"] - conn["started"], 1e-9), 1)
                if ready
                else None
            ),
            "connect_seconds": round(conn["last_ready"] - conn["started"], 3),
            "handshake_ms": summarize_ms(conn["handshake_seconds"]),
            "rss_before_kib": before.rss_kib,
            "rss_after_kib": after.rss_kib,
            "rss_after_close_kib": after_close.rss_kib,
            "rss_per_connection_bytes": (
                None if rss_delta is None or not ready else round(1024 * rss_delta / ready)
            ),
            "pool_fds": after_hold.fds,
            "pool_cpu_seconds_connecting": (
                None if connecting.cpu_seconds is None else round(connecting.cpu_seconds, 3)
            ),
            "pool_pid": None if pool is None else pool.pid,
            "pool_root_pids": None if pool is None else pool.roots,
            "pool_processes": after_hold.processes,
            "pool_notes": _set_notes(pool, [before, after, after_hold]),
            "client_procs": len(runners),
            "load": load,
        }
    )
    return result


# --- new-block fan-out ---------------------------------------------------------------------------


async def run_fanout(settings: FanoutSettings) -> dict[str, Any]:
    target = check_target(settings)
    v1_only(target, "fan-out")
    if settings.node is None:
        raise BenchError("the fan-out test mines blocks: give the node's RPC (--node-rpc)")
    rpc = settings.node.client()
    info = await asyncio.to_thread(rpc.call, "getblockchaininfo")
    chain = settings.chain or str(info["chain"])
    fake = await fake_node_calls(settings.node) is not None
    if chain != "regtest" and not fake:
        raise BenchError(
            f"the node is on {chain}; the fan-out test mines blocks on regtest (or on "
            "solopool-bench fake-node) only"
        )
    pool = resolve_pool(settings, target)
    stages = sorted({s for s in settings.stages if s > 0})
    if not stages:
        raise BenchError("no fan-out stage sizes given")
    users = miner_users(settings, stages[-1], chain)
    mine_to = settings.mine_address or derived_addresses(chain, 1, offset=10**6)[0]
    watcher: ZmqBlockWatcher | None = None
    endpoint = None
    zmq_error: str | None = None
    if settings.use_zmq:
        endpoint = settings.zmq or await asyncio.to_thread(discover_zmq_hashblock, rpc)
        if endpoint:
            watcher = ZmqBlockWatcher(endpoint)
            try:
                await asyncio.to_thread(watcher.start)
            except RuntimeError as exc:  # timed from generatetoaddress's return instead
                watcher.stop()
                watcher = None
                zmq_error = str(exc)
    runners = await start_runners(settings, target)
    result = _base("fanout", settings, target)
    # Without ZMQ: time from generatetoaddress's return; on the fake node, from the moment it
    # says its new template was ready (CLOCK_MONOTONIC, shared by all processes).
    reference = "zmq hashblock" if watcher else (
        "the fake node's new template" if fake else "generatetoaddress return"
    )
    result.update(
        {
            "reference": reference,
            "zmq_endpoint": endpoint,
            "zmq_error": zmq_error,
            "client_procs": len(runners),
            "addresses": 1 if settings.user else max(1, settings.addresses),
            "pool_pid": None if pool is None else pool.pid,
            "pool_root_pids": None if pool is None else pool.roots,
            "stages": [],
        }
    )
    try:
        first = sample_pool(pool)
        rss0 = first.rss_kib
        connected = 0
        for size in stages:
            specs = [(i, users[i]) for i in range(connected, size)]
            conn = await connect_spread(runners, specs, settings, None, passive=True)
            connected = size
            await asyncio.sleep(settings.settle_seconds)
            pool_now = sample_pool(pool)
            rss_now = pool_now.rss_kib
            open_now = await open_count(runners)
            samples = []
            meter = LoadMeter(runners, pool)
            await meter.start()
            for _ in range(settings.blocks):
                await asyncio.sleep(settings.interval)
                samples.append(
                    await _one_block(rpc, runners, watcher, mine_to, settings, from_fake=fake)
                )
            stage = _stage_summary(size, open_now, conn, samples, rss0, rss_now)
            stage["load"] = await meter.stop()
            stage["pool_processes"] = pool_now.processes
            stage["pool_notes"] = _set_notes(pool, [first, pool_now])
            result["stages"].append(stage)
    finally:
        await close_runners(runners)
        if watcher is not None:
            watcher.stop()
    return result


async def _one_block(
    rpc: RPCClient,
    runners: list[Runner],
    watcher: ZmqBlockWatcher | None,
    mine_to: str,
    settings: FanoutSettings,
    from_fake: bool = False,
) -> dict[str, Any]:
    called = time.monotonic()
    hashes = await asyncio.to_thread(rpc.call, "generatetoaddress", 1, mine_to)
    returned = time.monotonic()
    block_hash = str(hashes[0])
    zmq_at = None
    if watcher is not None:
        zmq_at = await asyncio.to_thread(watcher.arrival, block_hash, 5.0)
    if zmq_at is not None:
        reference = zmq_at
    elif from_fake:
        reference = float(await asyncio.to_thread(rpc.call, "getfakeblocktime", block_hash))
    else:
        reference = returned
    needle = stratum_prevhash(block_hash)
    lists = await asyncio.gather(
        *(r.call("watch", needle=needle, timeout=settings.block_timeout) for r in runners)
    )
    times = [t for part in lists for t in part]
    got = sorted(t - reference for t in times if t is not None)
    n = len(got)
    return {
        "hash": block_hash,
        "miners": len(times),
        "received": n,
        "missing": len(times) - n,
        "first_ms": round(1000 * got[0], 3) if got else None,
        "median_ms": round(1000 * got[n // 2], 3) if got else None,
        "last_ms": round(1000 * got[-1], 3) if got else None,
        "rpc_call_ms": round(1000 * (called - reference), 3),
        "rpc_return_ms": round(1000 * (returned - reference), 3),
        "zmq": zmq_at is not None,
    }


def _stage_summary(
    size: int,
    open_now: int,
    conn: dict[str, Any],
    samples: list[dict[str, Any]],
    rss0: int | None,
    rss_now: int | None,
) -> dict[str, Any]:
    complete = [s for s in samples if s["missing"] == 0 and s["last_ms"] is not None]
    return {
        "miners": size,
        "open": open_now,
        "connect": _connect_summary(conn),
        "blocks": len(samples),
        "incomplete": len(samples) - len(complete),
        "missing": sum(s["missing"] for s in samples),
        "last_ms": summarize_ms([s["last_ms"] / 1000 for s in complete]),
        "median_ms": summarize_ms([s["median_ms"] / 1000 for s in complete]),
        "first_ms": summarize_ms([s["first_ms"] / 1000 for s in complete]),
        "rss_kib": rss_now,
        "rss_per_connection_bytes": (
            None if rss0 is None or rss_now is None or not open_now
            else round(1024 * (rss_now - rss0) / open_now)
        ),
        "samples": samples,
    }
