"""The pure parts of config reload and of the node start-up questions, with known inputs."""

from __future__ import annotations

from pathlib import Path

from pool.config import EXIT_CONFIG, NodeConfig, parse_config
from pool.node import NodeAuthError, NodeRPCError, NodeTimeout, NodeUnreachable
from pool.preflight import EXIT_FAIL, chain_problem, missing_cookie, rpc_failure, template_failure
from pool.reload import diff, effective

BASE = Path("/srv/solopool")
URL = "http://127.0.0.1:8332/"


def test_a_reload_applies_reloadable_keys_and_names_the_rest() -> None:
    login = {"rpc_user": "u", "rpc_password": "old secret"}
    old = parse_config({"stratum": {"min_difficulty": 1, "port": 3333}, "node": login}, BASE)
    new = parse_config(
        {
            "stratum": {"min_difficulty": 2, "port": 4444},
            "node": {**login, "rpc_password": "new secret", "template_refresh_seconds": 10},
            "api": {"port": 9090},
        },
        BASE,
    )
    changes = diff(old, new)
    assert changes.applied == [
        "[node] template_refresh_seconds: 30.0 -> 10.0",
        "[stratum] min_difficulty: 1.0 -> 2.0",
    ]
    # A secret is named, never shown; other sections are named whole.
    assert changes.restart == ["[node] rpc_password", "[stratum] port (3333 -> 4444)", "[api]"]
    running = effective(old, changes)
    assert running.stratum.min_difficulty == 2.0 and running.node.template_refresh_seconds == 10
    assert running.stratum.port == 3333 and running.api.port == old.api.port
    assert running.node.rpc_password == old.node.rpc_password


def test_an_unchanged_file_changes_nothing() -> None:
    config = parse_config({"pool": {"coinbase_tag": "/x/"}}, BASE)
    changes = diff(config, parse_config({"pool": {"coinbase_tag": "/x/"}}, BASE))
    assert changes.applied == [] and changes.restart == []
    assert effective(config, changes) == config


def test_chain_problems() -> None:
    assert chain_problem({"chain": "regtest", "initialblockdownload": True}) is None
    assert chain_problem({"chain": "main", "initialblockdownload": False}) is None
    unknown = chain_problem({"chain": "liquid"})
    assert unknown is not None and "'liquid', which solopool does not know" in unknown.line
    syncing = chain_problem({
        "chain": "main", "initialblockdownload": True, "verificationprogress": 0.5,
        "blocks": 10, "headers": 20,
    })
    assert syncing is not None
    assert syncing.what == "chain main still syncing: 10 of 20 blocks (50.0% verified)"
    assert "initial block download (50.0% verified)" in syncing.line
    assert syncing.exit_code == EXIT_FAIL


def test_rpc_failures_say_what_to_fix() -> None:
    cfg = NodeConfig(rpc_cookie_file=Path("/nope/.cookie"), cookie_guessed=True)
    refused = rpc_failure(NodeAuthError("HTTP 401"), URL, cfg, "node")
    assert refused.exit_code == EXIT_CONFIG and refused.line == "HTTP 401"
    assert "(guessed: no login configured)" in refused.fix
    down = rpc_failure(
        NodeUnreachable(f"cannot reach the node at {URL}: refused"), URL, cfg, "backup_node 1"
    )
    assert down.what == f"node not reachable at {URL} (refused)"
    assert "[backup_node 1] rpc_url" in down.line and down.exit_code == EXIT_FAIL
    slow = rpc_failure(NodeTimeout("did not answer"), URL, cfg, "node")
    assert "did not answer" in slow.what and "server=1" in slow.fix
    missing = missing_cookie(cfg, "node")
    assert missing.line.startswith("no RPC login configured and no cookie at /nope/.cookie")
    assert missing.exit_code == EXIT_CONFIG
    configured = missing_cookie(NodeConfig(rpc_cookie_file=Path("/c")), "node")
    assert configured.line.startswith("no cookie at /c")


def test_template_failures() -> None:
    ibd = template_failure(NodeRPCError(-10, "in initial sync"))
    assert ibd.what == "getblocktemplate failed: in initial sync (RPC error -10)"
    assert ibd.line == "the node cannot give a block template yet: in initial sync"
    other = template_failure(NodeUnreachable("gone"))
    assert other.line == "getblocktemplate failed: gone" and "debug.log" in other.fix
