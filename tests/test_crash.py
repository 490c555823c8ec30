"""A pool killed at the worst moment loses no block.

The real pool process runs through tests/pool_launcher.py with the fault kill-after-spool: it
SIGKILLs itself right after a found block's spool file is fsynced and before `submitblock`.
Started again without the fault, it submits the block at start-up; the node gets it and the
spool file ends ACCEPTED.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pool.blocks import ACCEPTED, PENDING
from tests.faults_util import mining_client, notifies, spooled, wait_for
from tests.pool_launcher import KILL_AFTER_SPOOL
from tests.regtest import REPO_DIR, RegtestNode, free_port
from tests.shares_util import find_nonce

BOUND = 20.0


def write_config(path: Path, node: RegtestNode, port: int, data_dir: Path) -> None:
    path.write_text(
        f"""
[node]
rpc_url = "{node.rpc_url}"
rpc_user = "{node.rpc_user}"
rpc_password = "{node.rpc_password}"
poll_seconds = 0.5

[stratum]
host = "127.0.0.1"
port = {port}
start_difficulty = 0.0001
min_difficulty = 0.00001

[pool]
data_dir = "{data_dir}"

[api]
enabled = false
"""
    )
    path.chmod(0o600)  # it holds the RPC password


def start_pool_process(
    config: Path, log: Path, fault: str | None, preexec_fn: Callable[[], None] | None = None
) -> subprocess.Popen[bytes]:
    """The real pool (`pool.cli.main`) in its own process, through the tests' launcher."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLOPOOL_")}
    faults = [] if fault is None else ["--fault", fault]
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.pool_launcher", *faults, "--", "--config", str(config)],
            preexec_fn=preexec_fn,
            cwd=REPO_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    async with asyncio.timeout(BOUND):
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return


async def test_sigkill_after_spool_then_restart_submits(
    fresh_node: RegtestNode, tmp_path: Path
) -> None:
    node = fresh_node
    node.generate(3)
    port = free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "solopool.toml"
    write_config(config, node, port, data_dir)
    log = tmp_path / "pool.log"

    proc = start_pool_process(config, log, KILL_AFTER_SPOOL)
    try:
        await wait_listening(port, proc, log)
        user = node.new_address("bech32")
        client = await mining_client(port, user)
        notify = notifies(client)[-1]
        en2 = bytes(8)
        nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
        client.send("mining.submit", [user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"])
        killed_at = time.monotonic()
        code = await asyncio.to_thread(proc.wait, BOUND)
        await client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == -signal.SIGKILL, log.read_text()
    assert "killing the pool with SIGKILL after spooling block" in log.read_text()
    # On disk and fsynced; never submitted: the node has not seen it.
    [record] = spooled(data_dir)
    assert record["status"] == PENDING and record["height"] == 4
    assert node.rpc("getblockcount") == 3

    proc = start_pool_process(config, log, None)
    try:
        await wait_for(lambda: spooled(data_dir)[0]["status"] == ACCEPTED, BOUND)
        print(f"FIGURE block accepted after the kill (incl. restart): "
              f"{time.monotonic() - killed_at:.2f} s")
        record = spooled(data_dir)[0]
        assert node.rpc("getblockhash", 4) == record["hash"]
        assert record["in_best_chain"] is True and record["answers"] == {"node": "null"}
        coinbase = node.rpc("getblock", record["hash"], 2)["tx"][0]
        assert coinbase["vout"][0]["scriptPubKey"]["address"] == user
        assert "resubmitting spooled block" in log.read_text()
        await wait_listening(port, proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, BOUND)
    assert code == 0, log.read_text()
