"""Restarts and signals, against the real `solopool` process and a real regtest node: SIGTERM and
SIGINT send miners `client.reconnect` and exit 0, SIGHUP reloads the config under connected
miners, a block found just before shutdown still reaches the node, a reconnecting worker gets
its difficulty back, and the RPC password or cookie never shows in logs (at DEBUG) or the API."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pool.found import ACCEPTED
from pool.reload import reload_config
from tests.support.fixtures import PoolFactory
from tests.support.node import RegtestNode, free_port
from tests.support.pool_process import PoolProcess, write_config
from tests.support.shares import find_nonce
from tests.support.stratum_client import (
    StratumTestClient,
    closed_by_pool,
    difficulties,
    mining_client,
)
from tests.support.watch import fetch

# --- stop -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_stop_signal_sends_reconnect_and_exits_zero(
    node: RegtestNode, tmp_path: Path, sig: signal.Signals
) -> None:
    port = free_port()
    proc = await PoolProcess.start(write_config(tmp_path / "solopool.toml", node, port))
    try:
        await proc.wait_listening(port)
        user = node.new_address("bech32")
        clients = [await mining_client(port, f"{user}.rig{i}") for i in range(3)]
        proc.proc.send_signal(sig)
        for client in clients:
            reconnect = await client.notification("client.reconnect", timeout=10)
            assert reconnect == {"id": None, "method": "client.reconnect", "params": []}
            await closed_by_pool(client)
        assert await proc.wait() == 0, proc.output[-3000:]
    finally:
        await proc.kill()
    assert "shutting down" in proc.output and "stopped" in proc.output
    assert "Traceback" not in proc.output, proc.output[-3000:]
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_block_found_just_before_stop_reaches_the_node(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    """stop() waits for the block being spooled and for submitblock's answer."""
    pool = await start_pool(node)
    # A slow disk: the block is still being written to the spool when stop() begins.
    write = pool.spool.write

    def slow_write(block: Any) -> Path:
        time.sleep(0.5)
        return write(block)

    pool.spool.write = slow_write  # type: ignore[method-assign]
    user = node.new_address("bech32")
    client = await mining_client(pool.stratum.port, user)
    notify = [m for m in client.notifications if m["method"] == "mining.notify"][-1]["params"]
    en2 = bytes(8)
    nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
    reply = await client.request(
        "mining.submit", [user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"]
    )
    assert reply["result"] is True
    await pool.stop()  # at once: the block is still being spooled and submitted
    assert [m for m in client.notifications if m["method"] == "client.reconnect"]
    (block,) = pool.submitter.history
    assert block.status == ACCEPTED, block
    assert node.rpc("getbestblockhash") == block.hash
    (spooled,) = pool.spool.load_all()
    assert spooled.hash == block.hash and spooled.status == ACCEPTED
    await client.close()


# --- reload ---------------------------------------------------------------------------------------


async def test_sighup_applies_difficulty_without_dropping_miners(
    node: RegtestNode, tmp_path: Path
) -> None:
    port = free_port()
    config = write_config(tmp_path / "solopool.toml", node, port)
    proc = await PoolProcess.start(config)
    try:
        await proc.wait_listening(port)
        user = node.new_address("bech32")
        client = await mining_client(port, f"{user}.rig")
        assert difficulties(client) == [0.0001]
        seen = len(client.notifications)

        # New bounds and start difficulty, a new coinbase tag, and a port change.
        write_config(
            config, node, free_port(), start_difficulty=0.002, min_difficulty=0.001,
        )
        text = config.read_text().replace("[pool]", '[pool]\ncoinbase_tag = "/reloaded/"')
        config.write_text(text)
        mark = len(proc.lines)
        proc.proc.send_signal(signal.SIGHUP)
        raised = await client.notification("mining.set_difficulty", after=seen)
        assert raised["params"] == [0.001]  # moved inside the new bounds, at once
        job = await client.notification("mining.notify", after=client.notifications.index(raised))
        assert job["params"][8] is True
        assert (await client.request("mining.ping", []))["result"] == "pong"
        await proc.wait_log("[stratum] min_difficulty: 1e-05 -> 0.001", after=mark)
        await proc.wait_log("[stratum] start_difficulty: 0.0001 -> 0.002", after=mark)
        await proc.wait_log("[pool] coinbase_tag: '/solopool/' -> '/reloaded/'", after=mark)
        restart = await proc.wait_log("needs a restart", after=mark)
        assert "[stratum] port" in restart

        # A new miner starts at the new start difficulty, with the new tag in its coinbase.
        late = await mining_client(port, f"{user}.late")
        assert difficulties(late) == [0.002]
        notify = [m for m in late.notifications if m["method"] == "mining.notify"][-1]
        assert b"/reloaded/".hex() in notify["params"][2]

        # A broken file is refused and the running config kept.
        config.write_text("[stratum\n")
        mark = len(proc.lines)
        proc.proc.send_signal(signal.SIGHUP)
        await proc.wait_log("keeping the running config", after=mark)
        assert (await client.request("mining.ping", []))["result"] == "pong"
        assert not client.closed and not late.closed

        proc.proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    finally:
        await proc.kill()
    assert "Traceback" not in proc.output, proc.output[-3000:]


async def test_sighup_with_a_bad_file_keeps_the_running_config(
    node: RegtestNode, tmp_path: Path
) -> None:
    """A file that is not UTF-8, or that holds nan or inf where a number goes, is refused on
    SIGHUP with one line (no task traceback) and miners keep mining on the running config."""
    port = free_port()
    config = write_config(tmp_path / "solopool.toml", node, port)
    good = config.read_bytes()
    proc = await PoolProcess.start(config)
    try:
        await proc.wait_listening(port)
        user = f"{node.new_address('bech32')}.rig"
        client = await mining_client(port, user)
        bad_files = [
            (good.replace(b"[pool]", b'[pool]\ncoinbase_tag = "/Jos\xe9/"'), "is not UTF-8 text"),
            (good.replace(b"share_interval_seconds = 2", b"share_interval_seconds = nan"),
             "[stratum] share_interval_seconds must be a finite number like 10, got nan"),
            (good.replace(b"poll_seconds = 0.5", b"poll_seconds = 0.5\nrpc_timeout_seconds=nan"),
             "[node] rpc_timeout_seconds must be a finite number like 30, got nan"),
            (good.replace(b"share_interval_seconds = 2", b"share_interval_seconds = inf"),
             "[stratum] share_interval_seconds must be a finite number like 10, got inf"),
        ]
        for text, reason in bad_files:
            config.write_bytes(text)
            mark = len(proc.lines)
            proc.proc.send_signal(signal.SIGHUP)
            line = await proc.wait_log("keeping the running config", after=mark)
            assert reason in line and line.rstrip().endswith("keeping the running config")
            assert "ERROR" in line
            assert (await client.request("mining.ping", []))["result"] == "pong"
        assert not client.closed
        # Still mining: a block found now reaches the node.
        notify = [m for m in client.notifications if m["method"] == "mining.notify"][-1]["params"]
        en2 = bytes(client.extranonce2_size)
        nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
        params = [user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"]
        assert (await client.request("mining.submit", params))["result"] is True
        await proc.wait_log("BLOCK ACCEPTED")

        # A good file afterwards still reloads.
        config.write_bytes(good.replace(b"interval_seconds = 2", b"interval_seconds = 3"))
        mark = len(proc.lines)
        proc.proc.send_signal(signal.SIGHUP)
        await proc.wait_log("[stratum] share_interval_seconds: 2.0 -> 3.0", after=mark)
        proc.proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    finally:
        await proc.kill()
    assert "Traceback" not in proc.output, proc.output[-3000:]


async def test_reload_applies_limits_and_allowed_addresses(
    node: RegtestNode, start_pool: PoolFactory, tmp_path: Path
) -> None:
    """In-process: what a SIGHUP applies, key by key."""
    pool = await start_pool(node)
    port = pool.stratum.port
    keep, drop = node.new_address("bech32"), node.new_address("bech32")
    kept = await mining_client(port, keep + ".a")
    dropped = await mining_client(port, drop + ".b")
    config = write_config(
        tmp_path / "solopool.toml", node, port,
        allowed_addresses=[keep], max_connections_per_ip=3, idle_timeout_seconds=120,
        max_invalid_shares_per_minute=7, share_interval_seconds=5, max_difficulty=1000,
    )
    pool.full_config = dataclasses.replace(pool.full_config, source=config)
    applied = await reload_config(pool)
    assert f"[stratum] allowed_addresses: () -> ('{keep}',)" in applied
    assert "[stratum] max_connections_per_ip: 2000 -> 3" in applied
    cfg = pool.config
    assert (cfg.allowed_addresses, cfg.max_connections_per_ip, cfg.idle_timeout_seconds) == (
        (keep,), 3, 120
    )
    assert cfg.max_invalid_shares_per_minute == 7 and cfg.share_interval_seconds == 5
    assert cfg.port == 0  # not reloadable: the running value stays
    await closed_by_pool(dropped)
    assert any("no longer allowed" in m["params"][0] for m in dropped.notifications
               if m["method"] == "client.show_message")
    assert (await kept.request("mining.ping", []))["result"] == "pong"
    (session,) = pool.stratum.sessions
    assert session.vardiff.interval == 5 and session.vardiff.maximum == 1000
    # Reloading the same file again changes nothing.
    assert await reload_config(pool) == []
    await kept.close()


# --- difficulty memory ----------------------------------------------------------------------------


async def test_reconnecting_worker_gets_its_difficulty_back(
    node: RegtestNode, start_pool: PoolFactory
) -> None:
    pool = await start_pool(node)
    port = pool.stratum.port
    user = node.new_address("bech32")
    first = await mining_client(port, f"{user}.rig1")
    count = len(first.notifications)
    await first.request("mining.suggest_difficulty", [0.01])
    await first.notification("mining.set_difficulty", after=count)
    await first.close()
    async with asyncio.timeout(5):
        while pool.stratum.sessions:
            await asyncio.sleep(0.02)

    again = await mining_client(port, f"{user}.rig1")
    assert difficulties(again) == [0.01]  # where it was, not the start difficulty
    other = await mining_client(port, f"{user}.rig2")
    assert difficulties(other) == [0.0001]
    # Its own suggestion wins over the memory.
    suggests = await StratumTestClient.connect("127.0.0.1", port)
    await suggests.request("mining.suggest_difficulty", [0.005])
    await suggests.handshake(f"{user}.rig1")
    await suggests.notification("mining.notify")
    assert difficulties(suggests) == [0.005]
    for client in (again, other, suggests):
        await client.close()


# --- secrets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["password", "cookie"])
async def test_rpc_secrets_never_in_logs_or_api(tmp_path: Path, auth: str) -> None:
    cookie = auth == "cookie"
    with RegtestNode(use_cookie=cookie) as node:
        node.create_wallet()
        user, password = node.rpc_user, node.rpc_password
        port, api_port = free_port(), free_port()
        # A group-readable file: warned about when it holds the password.
        config = write_config(
            tmp_path / "solopool.toml", node, port, mode=0o644, cookie=cookie, api_port=api_port
        )
        proc = await PoolProcess.start(config, "--log-level", "DEBUG")
        bodies: list[str] = []
        try:
            await proc.wait_listening(port)
            address = node.new_address("bech32")
            client = await mining_client(port, f"{address}.rig")
            notify = [m for m in client.notifications if m["method"] == "mining.notify"][-1]
            en2 = bytes(8)
            nonce = find_nonce(notify["params"], client.extranonce1, en2, meets=True)
            params = [address, notify["params"][0], en2.hex(), notify["params"][7],
                      f"{nonce:08x}"]
            assert (await client.request("mining.submit", params))["result"] is True
            await proc.wait_log("BLOCK ACCEPTED")
            await client.request("mining.submit", ["x", "y", "zz", None, 5])
            for path in ("/api/pool", "/api/workers", "/api/blocks", f"/api/addresses/{address}",
                         "/metrics", "/"):
                bodies.append(await asyncio.to_thread(
                    fetch, f"http://127.0.0.1:{api_port}{path}"
                ))
            proc.proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
        finally:
            await proc.kill()
    output = proc.output
    assert "DEBUG" in output and "connected, extranonce1" in output  # DEBUG really was on
    assert '"blocks"' in bodies[0] or "height" in bodies[0], bodies[0][:500]  # the API answered
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    for secret in (password, token, f"{user}:{password}"):
        assert secret not in output, "a secret in the log"
        for body in bodies:
            assert secret not in body, "a secret in the API"
    warning = f"config file {config} is readable by other users; it holds your RPC password"
    assert (warning in output) == (not cookie), output[:2000]
    assert f"chmod 600 {config}" in output or cookie


async def test_no_permission_warning_for_a_private_file(node: RegtestNode, tmp_path: Path) -> None:
    port = free_port()
    proc = await PoolProcess.start(write_config(tmp_path / "solopool.toml", node, port))
    try:
        await proc.wait_listening(port)
        proc.proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    finally:
        await proc.kill()
    assert "readable by other users" not in proc.output


def test_config_error_does_not_echo_the_password(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "solopool.toml"
    path.write_text('[node]\nrpc_user = "u"\nrpc_password = 918273645546372819\n')
    result = subprocess.run(
        [sys.executable, "-m", "pool.cli", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "rpc_password" in result.stderr and "918273645546372819" not in result.stderr
