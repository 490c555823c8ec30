"""`solopool-bench`: submit | fanout | connections | all | fake-node | report."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .client import BenchError
from .procfs import raise_fd_limit
from .report import machine, table
from .rpc import BenchRPCError
from .runs import (
    ClientSettings,
    ConnectionSettings,
    FanoutSettings,
    NodeSettings,
    SubmitSettings,
    run_connections,
    run_fanout,
    run_submit,
)
from .sv2client import CHANNELS, STANDARD

DEFAULT_URL = "stratum+tcp://127.0.0.1:3333"  # or stratum2+tcp://HOST:PORT for Stratum V2


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list") from None
    if not values or any(v <= 0 or v > 200_000 for v in values):
        raise argparse.ArgumentTypeError("miner counts must be between 1 and 200,000")
    return values


def _count(text: str) -> int:
    value = int(text.replace("_", ""))
    if not 1 <= value <= 200_000:
        raise argparse.ArgumentTypeError("must be between 1 and 200,000")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be between 0 and 3600 seconds")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _client_args(p: argparse.ArgumentParser, miners_default: int | None) -> None:
    p.add_argument("--url", default=DEFAULT_URL, help=f"the pool (default {DEFAULT_URL})")
    if miners_default is not None:
        p.add_argument(
            "--miners", type=_count, default=miners_default,
            help=f"simulated miners (default {miners_default:,})",
        )
    p.add_argument(
        "--client-procs", type=int, default=1,
        help="client processes sharing the miners (default 1: in this process)",
    )
    p.add_argument(
        "--source-ips", type=int, default=1,
        help="spread connections over this many loopback source addresses 127.0.x.y (for pools "
        "with a per-IP limit; default 1)",
    )
    p.add_argument("--connect-concurrency", type=int, default=256,
                   help="handshakes in flight at once (default 256)")
    p.add_argument("--connect-timeout", type=_seconds, default=60.0,
                   help="per-connection connect + handshake timeout (default 60 s)")
    p.add_argument("--user", default=None,
                   help="payout address (miner N authorizes as USER.bN); default: derived "
                   "addresses for --chain")
    p.add_argument("--chain", default=None,
                   choices=["main", "test", "testnet4", "signet", "regtest"],
                   help="chain of the derived addresses (default: the node's, else main)")
    p.add_argument("--addresses", type=_count, default=1,
                   help="distinct derived payout addresses, miners cycle over them (default 1)")
    p.add_argument("--pool-pid", type=int, default=None,
                   help="the pool's process id for CPU/RSS/fds; its descendants (e.g. Stratum "
                   "worker processes) are summed in (default: whoever listens on the port, when "
                   "it is on this machine; several listening processes: their common parent)")
    p.add_argument("--label", default="", help="a name for this run in the report")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a pool that is not on a loopback address")


def _node_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node-rpc", default=None, help="the node's RPC URL, e.g. "
                   "http://127.0.0.1:18443 (fan-out: mines blocks; submit: counts a fake "
                   "node's calls)")
    p.add_argument("--node-user", default=None)
    p.add_argument("--node-password", default=None)
    p.add_argument("--node-cookie", type=Path, default=None, help="the node's .cookie file")


def _submit_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    seconds = [f"--{prefix}seconds"] + (["--seconds"] if prefix else [])
    p.add_argument(*seconds, type=_seconds, default=10.0,
                   help="length of the timed submit run (default 10 s)")
    p.add_argument(f"--{prefix}window", type=int, default=8,
                   help="submits in flight per connection (default 8)")
    p.add_argument(f"--{prefix}valid-ratio", type=_ratio, default=0.0,
                   help="fraction of submits that are real shares, hashed by the client to the "
                   "pool's share target (default 0: random nonces)")
    p.add_argument(f"--{prefix}suggest-difficulty", type=float, default=None,
                   help="send mining.suggest_difficulty with this value after authorize")
    p.add_argument(f"--{prefix}allow-blocks", action="store_true",
                   help="run even if the pool's network target is regtest-easy")
    p.add_argument(f"--{prefix}sv2-channel", choices=CHANNELS, default=STANDARD,
                   help="with a stratum2+tcp://HOST:PORT URL (Stratum V2): the channel each "
                   "miner opens (default standard)")


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print the JSON result on stdout (the table goes to stderr)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    p.add_argument("--max-seconds", type=_seconds, default=1800.0,
                   help="stop the whole run after this long (default 1800 s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="solopool-bench",
        description="Pool-agnostic Stratum V1 benchmark (the submit test also over Stratum V2: "
        "stratum2+tcp://HOST:PORT): submit throughput, new-block fan-out, "
        "connections; plus a fake bitcoind serving a recorded mainnet template.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("submit", help="submit throughput and latency")
    _client_args(p, 200)
    _node_args(p)
    _submit_args(p)
    _output_args(p)

    p = sub.add_parser("fanout", help="time from a new block to the last miner's clean notify")
    _client_args(p, None)
    p.add_argument("--miners", type=_int_list, default=[1000, 10000],
                   help="connected miners per stage, comma-separated (default 1000,10000)")
    _node_args(p)
    p.add_argument("--blocks", type=int, default=20, help="blocks per stage (default 20)")
    p.add_argument("--interval", type=_seconds, default=0.5,
                   help="pause before each block (default 0.5 s)")
    p.add_argument("--block-timeout", type=_seconds, default=10.0,
                   help="how long to wait for every miner's notify (default 10 s)")
    p.add_argument("--zmq", default=None,
                   help="the node's ZMQ hashblock endpoint (default: asked from the node)")
    p.add_argument("--no-zmq", action="store_true",
                   help="time from generatetoaddress's return instead of ZMQ")
    p.add_argument("--mine-address", default=None, help="where the mined blocks pay")
    _output_args(p)

    p = sub.add_parser("connections", help="memory per idle connection, accept rate")
    _client_args(p, 10000)
    _node_args(p)
    p.add_argument("--hold", type=_seconds, default=5.0,
                   help="how long to hold the connections (default 5 s)")
    _output_args(p)

    p = sub.add_parser("all", help="connections, fan-out and submit in one go")
    _client_args(p, None)
    _node_args(p)
    p.add_argument("--submit-url", default=None,
                   help="pool on a mainnet-difficulty template for the submit test "
                   "(default --url)")
    p.add_argument("--submit-miners", "--miners", type=_count, default=200,
                   help="miners in the submit test (default 200)")
    _submit_args(p, prefix="submit-")
    p.add_argument("--connections", type=_count, default=10000,
                   help="connections to hold (default 10,000)")
    p.add_argument("--hold", type=_seconds, default=5.0)
    p.add_argument("--fanout-miners", type=_int_list, default=[1000, 10000])
    p.add_argument("--blocks", type=int, default=20)
    p.add_argument("--no-zmq", action="store_true")
    _output_args(p)

    p = sub.add_parser("fake-node", help="serve a recorded getblocktemplate as a fake bitcoind")
    p.add_argument("--template", type=Path, required=True,
                   help="recorded getblocktemplate JSON (e.g. tests/data/gbt_mainnet.json)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--chain", default="main",
                   choices=["main", "test", "testnet4", "signet", "regtest"])
    p.add_argument("--longpoll-seconds", type=_seconds, default=60.0,
                   help="how long a longpoll is held before the same template is returned")
    p.add_argument("--extra-txs", type=int, default=0,
                   help="append this many synthetic transactions (mainnet-sized merkle branch)")
    p.add_argument("--rpc-user", default=None)
    p.add_argument("--rpc-password", default=None)
    p.add_argument("--max-seconds", type=_seconds, default=3600.0,
                   help="stop by itself after this long (default 3600 s)")

    p = sub.add_parser(
        "echo-pool",
        help="the least a Stratum pool can do (canned answers): the machine's ceiling for submit",
    )
    p.add_argument("--template", type=Path, required=True,
                   help="recorded getblocktemplate JSON for the one job it sends")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--max-seconds", type=_seconds, default=600.0,
                   help="stop by itself after this long (default 600 s)")

    p = sub.add_parser(
        "send-floor",
        help="µs per plain send() to N loopback miners waiting in epoll: the fan-out floor",
    )
    p.add_argument("--miners", type=_count, default=5000)
    p.add_argument("--rounds", type=int, default=10)
    _output_args(p)

    p = sub.add_parser(
        "wait-quiet", help="wait (bounded) until other programs leave the CPUs alone"
    )
    p.add_argument("--threshold", type=float, default=0.3,
                   help="busy cores over 2 s below which the machine counts as quiet (0.3)")
    p.add_argument("--max-seconds", type=_seconds, default=120.0,
                   help="give up waiting after this long (default 120 s); exits 0 anyway")

    p = sub.add_parser("report", help="print the table of saved JSON results")
    p.add_argument("files", type=Path, nargs="+")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    return parser


def _node(args: argparse.Namespace) -> NodeSettings | None:
    if not getattr(args, "node_rpc", None):
        return None
    return NodeSettings(args.node_rpc, args.node_user, args.node_password, args.node_cookie)


def _common(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "url": args.url,
        "client_procs": max(1, args.client_procs),
        "source_ips": max(1, args.source_ips),
        "connect_concurrency": max(1, args.connect_concurrency),
        "connect_timeout": args.connect_timeout,
        "user": args.user,
        "chain": args.chain,
        "addresses": args.addresses,
        "pool_pid": args.pool_pid,
        "label": args.label,
        "allow_remote": args.allow_remote,
        "node": _node(args),
    }


def submit_settings(args: argparse.Namespace) -> SubmitSettings:
    return SubmitSettings(
        **_common(args),
        miners=args.miners,
        seconds=args.seconds,
        window=max(1, args.window),
        valid_ratio=args.valid_ratio,
        suggest_difficulty=args.suggest_difficulty,
        allow_blocks=args.allow_blocks,
        sv2_channel=args.sv2_channel,
    )


def fanout_settings(args: argparse.Namespace) -> FanoutSettings:
    return FanoutSettings(
        **_common(args),
        stages=args.miners,
        blocks=max(1, args.blocks),
        interval=args.interval,
        block_timeout=args.block_timeout,
        zmq=args.zmq,
        use_zmq=not args.no_zmq,
        mine_address=args.mine_address,
    )


def connection_settings(args: argparse.Namespace) -> ConnectionSettings:
    return ConnectionSettings(**_common(args), miners=args.miners, hold_seconds=args.hold)


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    common = _common(args)
    results: list[dict[str, Any]] = []

    async def attempt(kind: str, job: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        try:
            results.append(await job())
        except BenchError as exc:
            results.append({"bench": kind, "label": args.label, "error": str(exc)})

    submit = SubmitSettings(
        **{**common, "url": args.submit_url or args.url},
        miners=args.submit_miners,
        seconds=args.submit_seconds,
        window=max(1, args.submit_window),
        valid_ratio=args.submit_valid_ratio,
        suggest_difficulty=args.submit_suggest_difficulty,
        allow_blocks=args.submit_allow_blocks,
        sv2_channel=args.submit_sv2_channel,
    )
    if args.submit_url:
        submit.node = None  # the --node-rpc node is the regtest node, not the submit pool's
    await attempt("submit", lambda: run_submit(submit))
    conns = ConnectionSettings(**common, miners=args.connections, hold_seconds=args.hold)
    await attempt("connections", lambda: run_connections(conns))
    fan = FanoutSettings(
        **common, stages=args.fanout_miners, blocks=max(1, args.blocks), use_zmq=not args.no_zmq
    )
    await attempt("fanout", lambda: run_fanout(fan))
    return {"bench": "all", "results": results, "machine": machine()}


def _emit(result: dict[str, Any], args: argparse.Namespace) -> None:
    results = result["results"] if result.get("bench") in ("all", "report") else [result]
    text = table(results)
    payload = json.dumps(result, indent=2, default=str)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(payload + "\n")
    if args.json:
        print(text, file=sys.stderr)
        print(payload)
    else:
        print(text)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    async with asyncio.timeout(args.max_seconds):
        if args.command == "submit":
            return await run_submit(submit_settings(args))
        if args.command == "fanout":
            return await run_fanout(fanout_settings(args))
        if args.command == "connections":
            return await run_connections(connection_settings(args))
        return await run_all(args)


def _report(args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    for path in args.files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"solopool-bench: skipping {path}: {exc}", file=sys.stderr)
            continue
        if data.get("bench") in ("all", "report"):
            results.extend(data["results"])
        else:
            results.append(data)
    _emit({"bench": "report", "results": results, "machine": machine()}, args)
    return 0


def wait_quiet(threshold: float, max_seconds: float, window: float = 2.0) -> int:
    """Return once the whole machine kept fewer than `threshold` cores busy over `window`."""
    import time

    from .procfs import busy_cores, machine_cpu_seconds

    deadline = time.monotonic() + max_seconds
    busy: float | None = None
    while time.monotonic() < deadline:
        before = machine_cpu_seconds()
        time.sleep(window)
        busy = busy_cores(before, machine_cpu_seconds(), window)
        if busy is None or busy < threshold:
            return 0
    print(
        f"solopool-bench: the machine is still busy ({busy:.2f} cores) after "
        f"{max_seconds:g} s; measuring anyway (see 'other' in the load rows)",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "fake-node":
        from .fakenode import serve

        return serve(
            args.template, args.host, args.port, args.chain, args.longpoll_seconds,
            args.extra_txs, args.rpc_user, args.rpc_password, args.max_seconds,
        )
    if args.command == "report":
        return _report(args)
    if args.command == "echo-pool":
        from .floor import echo_main

        return echo_main(args.host, args.port, args.template, args.max_seconds)
    if args.command == "send-floor":
        from .floor import send_floor

        raise_fd_limit()
        _emit(send_floor(args.miners, max(1, args.rounds)), args)
        return 0
    if args.command == "wait-quiet":
        return wait_quiet(args.threshold, args.max_seconds)
    raise_fd_limit()
    import uvloop

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(_run(args))
    except (BenchError, BenchRPCError) as exc:
        print(f"solopool-bench: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"solopool-bench: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"solopool-bench: stopped after --max-seconds {args.max_seconds:g}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    _emit(result, args)
    return 0


__all__ = ["ClientSettings", "build_parser", "main"]
