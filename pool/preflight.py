"""Can this node serve the pool? The questions asked of each node at start-up and by
`solopool check`, written once.

`probe_node` asks them in order (login, chain and sync, a block template) and tells a
`Findings` what it learnt: `solopool check` prints every finding as a line and goes on, start-up
stops at the first problem with one line (a `StartupError`). Each problem is phrased for both:
`what` and `fix` for check's `FAIL ... — fix: ...` line, `line` for start-up's single line.
The calls are blocking: start-up runs the probe on a thread, check before any event loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import EXIT_CONFIG, NodeConfig
from .consensus.address import CHAINS
from .node import NodeAuthError, NodeClient, NodeError, NodeRPCError, NodeSet, NodeUnreachable

log = logging.getLogger(__name__)

EXIT_FAIL = 1


class StartupError(Exception):
    """The pool cannot start; the message says why and what to do."""

    def __init__(self, message: str, exit_code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # EXIT_CONFIG when the fix is in the config file


@dataclass(frozen=True)
class Problem:
    """Why a node cannot serve the pool."""

    what: str  # `solopool check`: what is wrong
    fix: str  # `solopool check`: how to fix it
    line: str  # start-up: the one line saying both
    exit_code: int = EXIT_FAIL  # EXIT_CONFIG when the fix is in the config file


class Findings(Protocol):
    """Where `probe_node` reports: `solopool check`'s report, or start-up (which raises)."""

    def ok(self, message: str) -> None: ...
    def problem(self, problem: Problem) -> None: ...


@dataclass(frozen=True)
class NodeIdentity:
    chain: str
    genesis: str | None  # None when the template step failed (only `solopool check` goes on)
    height: object = field(default=None, compare=False)  # for the log line


def auth_fix(cfg: NodeConfig, section: str) -> str:
    if cfg.rpc_cookie_file is not None:
        guessed = " (guessed: no login configured)" if cfg.cookie_guessed else ""
        return (
            f"the cookie {cfg.rpc_cookie_file}{guessed} must be the running node's and readable "
            f"by this user; or set [{section}] rpc_user and rpc_password"
        )
    return f"check [{section}] rpc_user/rpc_password against rpcuser/rpcpassword or rpcauth"


def missing_cookie(cfg: NodeConfig, section: str) -> Problem:
    cookie = cfg.rpc_cookie_file
    setting = (
        f"set [{section}] rpc_cookie_file to your node's .cookie, or rpc_user and rpc_password"
    )
    configured = "no RPC login configured and no" if cfg.cookie_guessed else "no"
    return Problem(
        f"no cookie file at {cookie}", auth_fix(cfg, section),
        f"{configured} cookie at {cookie}: {setting}", EXIT_CONFIG,
    )


def rpc_failure(exc: NodeError, url: str, cfg: NodeConfig, section: str) -> Problem:
    """getblockchaininfo, the first call, failed."""
    if isinstance(exc, NodeAuthError):
        return Problem(
            f"RPC login refused: {exc}", auth_fix(cfg, section), str(exc), EXIT_CONFIG
        )
    if isinstance(exc, NodeUnreachable):
        reason = str(exc)
        if reason.startswith("cannot reach the node at"):
            reason = reason.split(": ", 1)[-1]
        return Problem(
            f"node not reachable at {url} ({reason})",
            "start bitcoind with server=1 (rpcbind/rpcallowip must let this machine in), "
            f"and check [{section}] rpc_url",
            f"cannot reach the node's RPC at {url}: is bitcoind running with server=1, and "
            f"is [{section}] rpc_url right?",
        )
    return Problem(
        f"getblockchaininfo answered with an error: {exc}", "see the node's debug.log",
        f"the node at {url} answered with an error: {exc}",
    )


def chain_problem(info: dict[str, Any]) -> Problem | None:
    """A chain solopool does not mine, or mainnet still syncing (it gives no templates)."""
    chain = str(info.get("chain"))
    if chain not in CHAINS:
        return Problem(
            f"the node is on chain {chain!r}", "solopool mines main, test, signet, regtest",
            f"the node is on chain {chain!r}, which solopool does not know",
        )
    if chain == "main" and info.get("initialblockdownload"):
        progress = 100 * float(info.get("verificationprogress", 0) or 0)
        return Problem(
            f"chain main still syncing: {info.get('blocks')} of {info.get('headers')} blocks "
            f"({progress:.1f}% verified)",
            "wait until the node has caught up (mainnet nodes give no templates while syncing)",
            f"the node is still in initial block download ({progress:.1f}% verified); "
            "start solopool when it has caught up",
        )
    return None


def template_failure(exc: NodeError) -> Problem:
    if isinstance(exc, NodeRPCError):
        return Problem(
            f"getblocktemplate failed: {exc.message} (RPC error {exc.code})",
            "a mainnet node needs peers (-9) and a finished sync (-10); otherwise see debug.log",
            f"the node cannot give a block template yet: {exc.message}",
        )
    return Problem(
        f"getblocktemplate failed: {exc}", "see the node's debug.log",
        f"getblocktemplate failed: {exc}",
    )


def probe_node(
    node: NodeClient, cfg: NodeConfig, section: str, findings: Findings
) -> NodeIdentity | None:
    """Ask one node everything start-up needs (blocking). Returns its chain (None when the
    node could not be asked or is on a chain solopool does not mine)."""
    url = node.display_url
    if cfg.rpc_cookie_file is not None and not cfg.rpc_cookie_file.exists():
        findings.ok(f"node RPC at {url} (not contacted: no login to use)")
        findings.problem(missing_cookie(cfg, section))
        return None
    try:
        info: dict[str, Any] = node.call_sync("getblockchaininfo")
    except NodeError as exc:
        if not isinstance(exc, NodeUnreachable):
            findings.ok(f"node reachable at {url}")
        findings.problem(rpc_failure(exc, url, cfg, section))
        return None
    findings.ok(f"node reachable at {url}")
    findings.ok("RPC login accepted" + (" (cookie)" if cfg.rpc_cookie_file is not None else ""))
    problem = chain_problem(info)
    chain = str(info.get("chain"))
    if problem is not None:
        findings.problem(problem)
        if chain not in CHAINS:
            return None
    else:
        findings.ok(
            f"chain {chain}, height {info.get('blocks')} (headers {info.get('headers')}), synced"
        )
    try:
        template: dict[str, Any] = node.call_sync("getblocktemplate", {"rules": ["segwit"]})
        genesis = str(node.call_sync("getblockhash", 0))
    except NodeError as exc:
        findings.problem(template_failure(exc))
        return NodeIdentity(chain, None, info.get("blocks"))
    findings.ok(
        f"getblocktemplate works (height {template.get('height')}, "
        f"{len(template.get('transactions', []))} transactions)"
    )
    return NodeIdentity(chain, genesis, info.get("blocks"))


class StartupFindings:
    """Start-up's `Findings`: the first problem ends the probe as a StartupError."""

    def ok(self, message: str) -> None:
        pass

    def problem(self, problem: Problem) -> None:
        raise StartupError(problem.line, problem.exit_code)


async def identify_nodes(nodes: NodeSet, configs: tuple[NodeConfig, ...]) -> str:
    """Probe every node (at once) and learn the chain; refuse to start with one clear reason.

    Start-up needs one node that can give templates. Backups that cannot are marked down and
    retried while the pool runs; one on another network is a config error. Returns the chain.
    """
    results = await asyncio.gather(
        *(
            asyncio.to_thread(probe_node, client, cfg, client.name, StartupFindings())
            for client, cfg in zip(nodes.clients, configs, strict=True)
        ),
        return_exceptions=True,
    )
    usable: list[tuple[NodeClient, NodeIdentity]] = []
    failures: list[tuple[NodeClient, StartupError]] = []
    for client, result in zip(nodes.clients, results, strict=True):
        if isinstance(result, StartupError) and result.exit_code != EXIT_CONFIG:
            failures.append((client, result))
        elif isinstance(result, BaseException):
            raise result
        elif result is not None:
            _same_network(client, result, usable)
            usable.append((client, result))
    if not usable:
        raise failures[0][1]
    first, identity = usable[0]
    nodes.set_identity(identity.chain, identity.genesis)
    nodes.active = first
    for client, exc in failures:
        nodes.mark_down(client, NodeError(str(exc)))
        log.warning("%s: %s; it will be used when it answers", client, exc)
    if first is not nodes.primary:
        log.warning("templates come from %s until %s answers", first, nodes.primary)
    return identity.chain


def _same_network(
    client: NodeClient, identity: NodeIdentity, usable: list[tuple[NodeClient, NodeIdentity]]
) -> None:
    log.info("%s: chain %s, height %s", client, identity.chain, identity.height)
    if not usable or usable[0][1] == identity:
        return
    first, expected = usable[0]
    raise StartupError(
        f"{client} is on chain {identity.chain!r} (genesis {(identity.genesis or '')[:16]}…) "
        f"but {first} is on {expected.chain!r} (genesis {(expected.genesis or '')[:16]}…): "
        "every node must be on the same network",
        exit_code=EXIT_CONFIG,
    )
