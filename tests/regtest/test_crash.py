"""A pool killed at the worst moment loses no block.

The real pool process runs through tests/pool_launcher.py with the fault kill-after-spool: it
SIGKILLs itself right after a found block's spool file is fsynced and before `submitblock`.
Started again without the fault, it submits the block at start-up; the node gets it and the
spool file ends ACCEPTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pool.blocks import ACCEPTED, PENDING
from pool.consensus.serialize import internal_to_display, sha256d
from tests.faults_util import mining_client, notifies, spooled, wait_for
from tests.pool_launcher import KILL_AFTER_SPOOL
from tests.regtest import REPO_DIR, RegtestNode, RPCError, free_port
from tests.shares_util import find_nonce, header_for
from tests.stratum_client import StratumTestClient

BOUND = 20.0


def write_config(
    path: Path, node: RegtestNode, port: int, data_dir: Path, stratum_extra: str = "",
    api_port: int | None = None,
) -> None:
    api = "enabled = false" if api_port is None else f'host = "127.0.0.1"\nport = {api_port}'
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
{stratum_extra}

[pool]
data_dir = "{data_dir}"

[api]
{api}
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


# --- a block storm under random SIGKILLs ---------------------------------------------------------

STORM_KILLS = 12


def known_to_node(node: RegtestNode, block_hash: str) -> bool:
    try:
        node.rpc("getblockheader", block_hash)
    except RPCError:
        return False
    return True


async def mine_blocks(
    port: int, user: str, answered: list[str], seq: list[int], *,
    client: StratumTestClient | None = None, until: int | None = None,
) -> None:
    """Submit blocks as fast as the pool sends work, recording every one answered `true`,
    until the connection dies (the pool was killed) or `until` blocks are answered."""
    if client is None:
        try:
            client = await mining_client(port, user)
        except (OSError, TimeoutError):
            return
    try:
        while until is None or len(answered) < until:
            seen = len(client.notifications)
            notify = notifies(client)[-1]
            seq[0] += 1
            en2 = seq[0].to_bytes(8, "big")
            nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
            header = header_for(notify, client.extranonce1, en2, int(notify[7], 16), nonce)
            block_hash = internal_to_display(sha256d(header))
            reply = await client.request(
                "mining.submit", [user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"]
            )
            if reply["result"] is True:
                answered.append(block_hash)
            # The pool fetches a template on top of its own block: mine on that next.
            await client.notification("mining.notify", timeout=BOUND, after=seen)
    except (ConnectionError, OSError, TimeoutError):
        return
    finally:
        await client.close()


async def test_sigkill_at_random_moments_in_a_block_storm_loses_no_block(
    fresh_node: RegtestNode, tmp_path: Path
) -> None:
    """Every block the pool answered `true` reaches the node, however the kills fall: the
    answer goes out only once the block is on disk, and a restart on the same data_dir
    submits what the killed process had not."""
    node = fresh_node
    node.generate(3)
    port = free_port()
    data_dir = tmp_path / "data"
    config = tmp_path / "solopool.toml"
    write_config(config, node, port, data_dir)
    log = tmp_path / "pool.log"
    user = node.new_address("bech32")
    answered: list[str] = []
    seq = [0]
    rng = random.Random()
    for _ in range(STORM_KILLS):
        proc = start_pool_process(config, log, None)
        try:
            await wait_listening(port, proc, log)
            storm = asyncio.create_task(mine_blocks(port, user, answered, seq))
            await asyncio.sleep(rng.uniform(0.2, 1.2))  # the kill falls anywhere in the storm
            assert proc.poll() is None, log.read_text()[-3000:]
        finally:
            proc.kill()
            proc.wait()
        await asyncio.wait_for(storm, BOUND)
    assert len(answered) >= STORM_KILLS, log.read_text()[-3000:]
    missing_before = sum(not known_to_node(node, h) for h in answered)

    proc = start_pool_process(config, log, None)
    try:
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: all(known_to_node(node, h) for h in answered), 60)
        lost = [h for h in answered if not known_to_node(node, h)]
        assert not lost, f"{len(lost)} of {len(answered)} blocks answered true never reached " \
            f"the node: {lost}"
        await wait_listening(port, proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, BOUND)
    assert code == 0, log.read_text()[-3000:]
    damaged = list((data_dir / "blocks" / "damaged").glob("*"))
    print(
        f"FIGURE storm: {STORM_KILLS} SIGKILLs, {len(answered)} blocks answered true, "
        f"{missing_before} not yet on the node after the last kill, 0 lost; "
        f"{len(damaged)} torn spool file(s) set aside"
    )
