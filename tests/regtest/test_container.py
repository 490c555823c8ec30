"""The Docker image, built and run for real: the project's Dockerfile built with podman, the
container run against a regtest node on the host with SOLOPOOL_* variables only, blocks mined
through it by the CPU test miner on the host, its data volume, HEALTHCHECK and SIGTERM stop.

Podman comes from ../shared/tools/container.sh (scripts/test.sh runs its `setup`), which also
provides a local stand-in for python:3.11-slim: public image registries are unreachable here."""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pool import __version__
from pool.found import ACCEPTED
from tests.support.mining import check_block_pays
from tests.support.node import RegtestNode, free_port
from tests.support.paths import REPO_DIR

# scripts/test.sh exports CONTAINER_SH after running its setup; ../shared is where CI puts it.
CONTAINER_SH = Path(
    os.environ.get("CONTAINER_SH") or REPO_DIR.parent / "shared" / "tools" / "container.sh"
)
IMAGE = "localhost/solopool:test"
# The container runs as the image's solopool user; Umbrel's app data is owned by 1000:1000 too.
IMAGE_UID = 1000


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    assert CONTAINER_SH.is_file(), (
        f"{CONTAINER_SH} is missing: put the shared folder beside the project (../shared) "
        "or set CONTAINER_SH to its tools/container.sh"
    )
    result = subprocess.run(
        ["bash", str(CONTAINER_SH), "podman", *args],
        capture_output=True, text=True, timeout=timeout,
    )
    if check:
        assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def image() -> str:
    """The project's Dockerfile, built as CI builds it (docker format keeps the HEALTHCHECK)."""
    podman("build", "--pull=never", "--format", "docker", "-t", IMAGE, str(REPO_DIR),
           timeout=1200)
    return IMAGE


@pytest.fixture
def volume() -> Iterator[str]:
    name = f"solopool-test-{secrets.token_hex(4)}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "-f", name, check=False)


def wait_listening(port: int, container: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 2).close()
            return
        except OSError:
            state = podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
            assert state == "running", f"container {state}: {podman('logs', container).stderr}"
            time.sleep(0.5)
    raise AssertionError(f"Stratum port {port} not open: {podman('logs', container).stderr}")


def healthcheck_command(image: str) -> list[str]:
    """The image's own HEALTHCHECK, as Docker would run it ("CMD", argv...)."""
    test = json.loads(podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}",
                             image).stdout)["Test"]
    assert test[0] == "CMD", test
    return list(test[1:])


def run_miner(port: int, user: str, blocks: int) -> list[str]:
    """The host's `solopool-miner` (this venv's console script) until `blocks` are found."""
    miner = Path(sys.executable).parent / "solopool-miner"
    result = subprocess.run(
        [str(miner), "--url", f"stratum+tcp://127.0.0.1:{port}", "--user", user,
         "--blocks", str(blocks), "--seconds", "180"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return [line.split()[1] for line in result.stdout.splitlines() if line.startswith("block ")]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_image_holds_the_product_only(image: str) -> None:
    """The installed package is complete (CLI, preflight, TLS certificate code) and carries no
    test or tool dependencies."""
    version = podman("run", "--rm", image, "--version")
    assert version.stdout.strip() == f"solopool {__version__}"
    check = podman("run", "--rm", image, "check", "--help")
    assert "--address" in check.stdout
    probe = podman(
        "run", "--rm", "--entrypoint", "python", image, "-c",
        "import importlib.util as u, tempfile, pathlib;"
        "from pool.stratum.tls import ensure_self_signed as e;"
        "d = pathlib.Path(tempfile.mkdtemp());"
        "print(e(d / 'c.pem', d / 'k.pem'), *(u.find_spec(m) is None for m in"
        " ('pytest', 'mypy', 'playwright', 'hypothesis', 'yaml')))",
    )
    assert probe.stdout.split() == ["True"] * 6, probe.stdout


def test_image_mines_on_regtest(image: str, volume: str, node: RegtestNode) -> None:
    stratum_port = free_port()
    api_port = free_port()
    while api_port == stratum_port:
        api_port = free_port()
    environment = {
        "SOLOPOOL_NODE_RPC_URL": node.rpc_url,  # the host's loopback: host network
        "SOLOPOOL_NODE_RPC_USER": node.rpc_user,
        "SOLOPOOL_NODE_RPC_PASSWORD": node.rpc_password,
        "SOLOPOOL_NODE_POLL_SECONDS": "0.5",
        "SOLOPOOL_STRATUM_PORT": str(stratum_port),
        # CPU-miner sized shares
        "SOLOPOOL_STRATUM_START_DIFFICULTY": "0.0001",
        "SOLOPOOL_STRATUM_MIN_DIFFICULTY": "0.00001",
        "SOLOPOOL_STRATUM_SHARE_INTERVAL_SECONDS": "2",
        "SOLOPOOL_API_PORT": str(api_port),
    }
    name = f"solopool-test-{secrets.token_hex(4)}"
    env_args = [arg for key, value in environment.items() for arg in ("-e", f"{key}={value}")]
    podman("run", "-d", "--name", name, *env_args, "-v", f"{volume}:/data", image, "run")
    try:
        wait_listening(stratum_port, name)
        health = podman("exec", name, *healthcheck_command(image), check=False)
        assert health.returncode == 0, health.stderr

        address = node.new_address("bech32")
        start_height = node.rpc("getblockcount")
        found = run_miner(stratum_port, f"{address}.docker", 2)
        assert len(found) >= 2
        end_height = node.rpc("getblockcount")
        assert end_height >= start_height + 2
        # Every block on top of the chain since the miner started came through the container
        # and pays the miner's address the whole subsidy plus fees.
        for height in range(start_height + 1, end_height + 1):
            check_block_pays(node, node.rpc("getblockhash", height), address)
        in_chain = [h for h in found if node.rpc("getblockheader", h)["confirmations"] >= 1]
        assert in_chain

        data = Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}",
                           volume).stdout.strip())

        def spooled() -> dict[str, str]:
            out = {}
            for path in (data / "blocks").glob("*.json"):
                block = json.loads(path.read_text())
                out[block["hash"]] = block["status"]
            return out

        # The spool holds every found block, each with the node's final answer.
        wait_for(lambda: all(spooled().get(h) == ACCEPTED for h in in_chain),
                 f"spooled blocks {spooled()} lack {in_chain}")
        assert set(found) <= set(spooled())

        began = time.monotonic()
        podman("kill", "--signal", "TERM", name)
        code = podman("wait", name, timeout=60).stdout.strip()
        stopped_in = time.monotonic() - began
        assert code == "0", podman("logs", name).stderr[-3000:]
        assert stopped_in < 10, f"SIGTERM took {stopped_in:.1f} s"

        stats = data / "stats.sqlite3"
        assert stats.stat().st_uid == IMAGE_UID
        assert all(p.stat().st_uid == IMAGE_UID for p in (data / "blocks").iterdir())
        with sqlite3.connect(stats) as db:
            recorded = {row[0] for row in db.execute("SELECT hash FROM blocks")}
            workers = {row[0] for row in db.execute("SELECT name FROM workers")}
        assert set(in_chain) <= recorded
        assert f"{address}.docker" in workers
    finally:
        podman("rm", "-f", name, check=False)
