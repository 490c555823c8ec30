"""`solopool check` against real regtest nodes; zero-config cookie and ZMQ discovery; every key
settable from the environment."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pool.app import Pool
from pool.cli import main
from pool.config import default_cookie_file, load_config
from pool.node.discovery import connectable, published_hashblock
from tests.support.fixtures import pool_config
from tests.support.node import RegtestNode, free_port
from tests.support.paths import REPO_DIR

MAINNET_ADDRESS = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"


@pytest.fixture(scope="module")
def zmq_node() -> Iterator[RegtestNode]:
    with RegtestNode(zmq=True) as node:
        node.create_wallet()
        node.generate(101)
        yield node


def write_config(tmp_path: Path, node: RegtestNode, extra: str = "", **node_keys: Any) -> Path:
    keys = {"rpc_url": node.rpc_url, "rpc_user": node.rpc_user,
            "rpc_password": node.rpc_password, **node_keys}
    lines = ["[node]"] + [f'{k} = "{v}"' for k, v in keys.items() if v is not None]
    lines += ["[stratum]", f"port = {free_port()}", "[api]", f"port = {free_port()}",
              "[pool]", f'data_dir = "{tmp_path / "data"}"']
    path = tmp_path / "solopool.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def run_check(
    capsys: pytest.CaptureFixture[str], path: Path, *extra: str
) -> tuple[int, list[str]]:
    code = main(["check", "--config", str(path), *extra])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    for line in lines:
        assert line[:6] in ("ok    ", "FAIL  ", "warn  ", "info  "), line
        if line.startswith("FAIL"):
            assert " — fix: " in line, line
    return code, lines


def find(lines: list[str], status: str, needle: str) -> str:
    for line in lines:
        if line.startswith(status) and needle in line:
            return line
    raise AssertionError(f"no {status!r} line with {needle!r} in:\n" + "\n".join(lines))


def test_all_ok_with_zmq_configured(
    zmq_node: RegtestNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = zmq_node.new_address("bech32")
    path = write_config(tmp_path, zmq_node, zmq_hashblock=zmq_node.zmq_url)
    code, lines = run_check(capsys, path, "--address", address)
    assert code == 0, lines
    assert not [line for line in lines if line.startswith("FAIL")]
    find(lines, "ok", f"node reachable at {zmq_node.rpc_url}/")
    find(lines, "ok", "RPC login accepted")
    find(lines, "ok", "chain regtest, height 101")
    find(lines, "ok", "getblocktemplate works (height 102")
    find(lines, "ok", f"ZMQ hashblock at {zmq_node.zmq_url}, published by the node")
    find(lines, "ok", f"payout address {address} is valid for regtest")
    find(lines, "ok", "Stratum port 0.0.0.0:")
    find(lines, "ok", "API port 127.0.0.1:")
    find(lines, "ok", f"data_dir {tmp_path / 'data'} is writable")


def test_zmq_published_but_not_configured_is_found(
    zmq_node: RegtestNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = run_check(capsys, write_config(tmp_path, zmq_node))
    assert code == 0, lines
    line = find(lines, "ok", f"the node publishes ZMQ hashblock at {zmq_node.zmq_url}")
    assert f'zmq_hashblock = "{zmq_node.zmq_url}"' in line


def test_zmq_configured_but_not_published(
    node: RegtestNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    code, lines = run_check(capsys, write_config(tmp_path, node, zmq_hashblock=endpoint))
    assert code == 0, lines  # mining works without ZMQ: a warning, not a failure
    line = find(lines, "warn", f"zmq_hashblock = {endpoint}, but the node publishes no hashblock")
    assert f"zmqpubhashblock={endpoint}" in line
    _, lines = run_check(capsys, write_config(tmp_path, node))
    find(lines, "info", "no ZMQ hashblock")


def test_zmq_configured_elsewhere(
    zmq_node: RegtestNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = f"tcp://127.0.0.1:{free_port()}"
    _, lines = run_check(capsys, write_config(tmp_path, zmq_node, zmq_hashblock=wrong))
    line = find(lines, "warn", f"the node publishes hashblock at {zmq_node.zmq_url}")
    assert f'zmq_hashblock = "{zmq_node.zmq_url}"' in line


def test_unreachable_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        f'[node]\nrpc_url = "http://127.0.0.1:{free_port()}"\nrpc_user = "u"\n'
        f'rpc_password = "p"\n[pool]\ndata_dir = "{tmp_path / "d"}"\n'
        f"[stratum]\nport = {free_port()}\n[api]\nenabled = false\n"
    )
    code, lines = run_check(capsys, path)
    assert code == 1
    line = find(lines, "FAIL", "node not reachable at http://127.0.0.1:")
    assert "server=1" in line and "rpc_url" in line
    find(lines, "ok", "data_dir")  # the local checks still run


def test_wrong_password_and_wrong_network_address(
    node: RegtestNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = run_check(capsys, write_config(tmp_path, node, rpc_password="wrong"))
    assert code == 1
    find(lines, "ok", "node reachable")
    assert "rpc_user/rpc_password" in find(lines, "FAIL", "RPC login refused")

    code, lines = run_check(capsys, write_config(tmp_path, node), "--address", MAINNET_ADDRESS)
    assert code == 1
    find(lines, "FAIL", f"payout address {MAINNET_ADDRESS} is not a valid regtest address")


def test_ports_in_use_and_unwritable_data_dir(
    node: RegtestNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy, socket.socket() as busy_api:
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        busy_api.bind(("127.0.0.1", 0))
        busy_api.listen(1)
        port, api_port = busy.getsockname()[1], busy_api.getsockname()[1]
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        path = write_config(tmp_path, node)
        path.write_text(
            path.read_text()
            .replace("[stratum]\nport = ", f"[stratum]\nport = {port}\n# was ")
            .replace("[api]\nport = ", f"[api]\nport = {api_port}\n# was ")
            .replace(str(tmp_path / "data"), str(blocker / "data"))
        )
        code, lines = run_check(capsys, path)
    assert code == 1
    assert "[stratum] port" in find(lines, "FAIL", f"Stratum port 0.0.0.0:{port} is in use")
    assert "[api] port" in find(lines, "FAIL", f"API port 127.0.0.1:{api_port} is in use")
    assert "[pool] data_dir" in find(lines, "FAIL", "is not writable")


def test_tls_lines(node: RegtestNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, node, extra="")
    text = path.read_text().replace("[stratum]\n", f"[stratum]\ntls_port = {free_port()}\n")
    path.write_text(text)
    code, lines = run_check(capsys, path)
    assert code == 0, lines
    find(lines, "ok", "self-signed certificate will be made at")
    path.write_text(text.replace("[stratum]\n", '[stratum]\ntls_cert_file = "nope.pem"\n'
                                 'tls_key_file = "nope.key"\n'))
    code, lines = run_check(capsys, path)
    assert code == 1
    find(lines, "FAIL", "TLS certificate file")


def test_zero_version_rolling_mask_warns(
    node: RegtestNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """cgminer with version rolling refuses a pool whose configure answer says false."""
    path = write_config(tmp_path, node)
    code, lines = run_check(capsys, path)
    assert not [line for line in lines if "version_rolling_mask =" in line], lines
    zero = '[stratum]\nversion_rolling_mask = "0"\n'
    path.write_text(path.read_text().replace("[stratum]\n", zero))
    code, lines = run_check(capsys, path)
    assert code == 0, lines
    line = find(lines, "warn", 'version_rolling_mask = "0"')
    assert "cgminer" in line and 'set version_rolling_mask = "1fffe000"' in line


def test_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[stratum]\nport = 'x'\n")
    code, lines = run_check(capsys, path)
    assert code == 2
    find(lines, "FAIL", "config: [stratum] port must be a whole number")


# --- zero-config ------------------------------------------------------------------------------


def solopool(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pool.cli", *args], capture_output=True, text=True, timeout=120,
        env={"PATH": os.environ.get("PATH", "/usr/bin"), "PYTHONPATH": str(REPO_DIR), **env},
        cwd=cwd,
    )


def test_environment_only_no_config_file(node: RegtestNode, tmp_path: Path) -> None:
    """Every key from SOLOPOOL_<SECTION>_<KEY>, no file at all (as in a container)."""
    stratum_port = free_port()
    env = {
        "HOME": str(tmp_path),
        "SOLOPOOL_NODE_RPC_URL": node.rpc_url,
        "SOLOPOOL_NODE_RPC_USER": node.rpc_user,
        "SOLOPOOL_NODE_RPC_PASSWORD": node.rpc_password,
        "SOLOPOOL_STRATUM_HOST": "127.0.0.1",
        "SOLOPOOL_STRATUM_PORT": str(stratum_port),
        "SOLOPOOL_STRATUM_TLS_PORT": str(free_port()),
        "SOLOPOOL_API_ENABLED": "false",
        "SOLOPOOL_POOL_DATA_DIR": str(tmp_path / "envdata"),
        # Misspelt: ignored, and said so (a warning, not a failure).
        "SOLOPOOL_STRATUM_SHARE_INTERVAL": "5",
        "SOLOPOOL_NODE_PREFIX": "/opt",  # the install script's: not a setting, not warned about
    }
    result = solopool("check", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "warn  environment variable SOLOPOOL_STRATUM_SHARE_INTERVAL is not a solopool setting "
        "(ignored); did you mean SOLOPOOL_STRATUM_SHARE_INTERVAL_SECONDS?"
    ) in result.stdout.splitlines()
    assert "SOLOPOOL_NODE_PREFIX" not in result.stdout
    assert "ok    config from defaults and SOLOPOOL_* variables" in result.stdout
    assert f"ok    Stratum port 127.0.0.1:{stratum_port} is free" in result.stdout
    assert f"{tmp_path / 'envdata'} is writable" in result.stdout
    assert "self-signed certificate will be made" in result.stdout
    assert "API port" not in result.stdout

    # The same variables start the real pool (it fails only later, on purpose: port taken).
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", stratum_port))
        busy.listen(1)
        run = solopool(env=env, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert f"cannot listen for miners on 127.0.0.1:{stratum_port}" in run.stderr
    assert "SOLOPOOL_STRATUM_SHARE_INTERVAL is not a solopool setting" in run.stderr


def test_default_cookie_file_per_network(tmp_path: Path) -> None:
    home = tmp_path
    assert default_cookie_file("http://127.0.0.1:8332", home) == home / ".bitcoin/.cookie"
    assert default_cookie_file("http://127.0.0.1:18443", home) == home / ".bitcoin/regtest/.cookie"
    assert default_cookie_file("http://h:48332", home) == home / ".bitcoin/testnet4/.cookie"
    assert default_cookie_file("http://h:38332", home) == home / ".bitcoin/signet/.cookie"
    assert default_cookie_file("http://h:18332", home) == home / ".bitcoin/testnet3/.cookie"
    assert default_cookie_file("http://h", home) == home / ".bitcoin/.cookie"


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_cookie_found_in_home_without_any_login_configured(tmp_path: Path) -> None:
    """A real cookie-mode node; the pool given only rpc_url finds the cookie under $HOME."""
    node = RegtestNode(use_cookie=True)
    regtest_default = port_free(18443)
    if regtest_default:  # the network's own default port maps to ~/.bitcoin/regtest/.cookie
        node.rpc_port = 18443
        node.rpc_url = "http://127.0.0.1:18443"
    with node:
        sub = "regtest" if regtest_default else ""  # a custom port: the mainnet location
        cookie_dir = tmp_path / ".bitcoin" / sub
        cookie_dir.mkdir(parents=True)
        shutil.copy(node.cookie_file, cookie_dir / ".cookie")
        env = {"HOME": str(tmp_path), "SOLOPOOL_NODE_RPC_URL": node.rpc_url,
               "SOLOPOOL_API_ENABLED": "false", "SOLOPOOL_STRATUM_PORT": str(free_port()),
               "SOLOPOOL_POOL_DATA_DIR": str(tmp_path / "d")}
        result = solopool("check", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ok    RPC login accepted (cookie)" in result.stdout

        # The explicit rpc_cookie_file (the node's own) works the same.
        config = load_config(None, {"SOLOPOOL_NODE_RPC_URL": node.rpc_url,
                                    "SOLOPOOL_NODE_RPC_COOKIE_FILE": str(node.cookie_file)})
        assert config.node.rpc_cookie_file == node.cookie_file
        assert not config.node.cookie_guessed

        # A stale copy (the node rewrites its cookie at every start) is refused, with the fix.
        node.restart()
        result = solopool("check", env=env, cwd=tmp_path)
        assert result.returncode == 1
        assert "RPC login refused" in result.stdout and "(guessed" in result.stdout


def test_connectable_zmq_addresses() -> None:
    assert connectable("tcp://0.0.0.0:28332", "http://10.1.2.3:8332") == "tcp://10.1.2.3:28332"
    assert connectable("tcp://*:28332", "http://node:8332") == "tcp://node:28332"
    assert connectable("tcp://[::]:28332", "http://[::1]:8332") == "tcp://[::1]:28332"
    assert connectable("tcp://127.0.0.1:28332", "http://x:1") == "tcp://127.0.0.1:28332"
    assert connectable("ipc:///tmp/z", "http://x:1") == "ipc:///tmp/z"
    found = published_hashblock(
        [{"type": "pubrawtx", "address": "tcp://0.0.0.0:1"},
         {"type": "pubhashblock", "address": "tcp://0.0.0.0:28332", "hwm": 1000}],
        "http://192.168.1.5:8332",
    )
    assert found == "tcp://192.168.1.5:28332"
    assert published_hashblock([], "http://x") is None
    assert published_hashblock(None, "http://x") is None


async def test_pool_uses_discovered_zmq(zmq_node: RegtestNode, tmp_path: Path) -> None:
    config = pool_config(zmq_node, tmp_path / "zdata")
    # No ZMQ configured, no longpoll, a 60 s poll: only a discovered ZMQ brings new tips fast.
    node_config = dataclasses.replace(
        config.node, zmq_hashblock=None, poll_seconds=60.0, longpoll=False
    )
    config = dataclasses.replace(
        config, node=node_config, api=dataclasses.replace(config.api, enabled=False)
    )
    pool = Pool(config)
    await pool.start()
    try:
        assert pool.source.config.zmq_hashblock == zmq_node.zmq_url
        assert any(t.get_name().startswith("zmq") for t in pool.source._tasks)
        before = pool.jobs.template
        assert before is not None
        async with asyncio.timeout(15):
            while pool.jobs.template is None or pool.jobs.template.height == before.height:
                # The first block may be published before the SUB socket has joined.
                zmq_node.generate(1)
                await asyncio.sleep(0.5)
    finally:
        await pool.stop()
