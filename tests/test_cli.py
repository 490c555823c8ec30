"""`solopool` as a person runs it: bad configs and node problems give one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.regtest import RegtestNode, free_port


def run_solopool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pool.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "solopool.toml"
    path.write_text(text)
    return path


GOOD_NODE = '[node]\nrpc_url = "http://127.0.0.1:{port}"\nrpc_user = "u"\nrpc_password = "p"\n'


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("[node\n", "not valid TOML"),
        (GOOD_NODE + "[stratum]\nport = \"3333\"\n", "[stratum] port must be a whole number"),
        (GOOD_NODE + "[stratum]\nmin_difficulty = 10\nmax_difficulty = 1\n", "min_difficulty"),
        (GOOD_NODE + "[stratum]\nstart_difficulty = -1\n", "start_difficulty"),
        (GOOD_NODE + "[stratum]\nversion_rolling_mask = \"zz\"\n", "version_rolling_mask"),
        (GOOD_NODE + "[stratum]\nprot = 3333\n", "unknown key 'prot'"),
        ("[node]\nrpc_url = \"http://127.0.0.1:8332\"\nrpc_user = \"u\"\n", "rpc_password"),
        ("[node]\nrpc_url = \"localhost\"\nrpc_user = \"u\"\nrpc_password = \"p\"\n", "rpc_url"),
        (GOOD_NODE + "[pools]\n", "unknown section [pools]"),
    ],
)
def test_config_errors_are_one_line(tmp_path: Path, body: str, needle: str) -> None:
    path = write_config(tmp_path, body.format(port=free_port()))
    result = run_solopool("--config", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_solopool("--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "not found" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_node(tmp_path: Path) -> None:
    path = write_config(tmp_path, GOOD_NODE.format(port=free_port()))
    result = run_solopool("--config", str(path))
    assert result.returncode == 1
    assert "cannot reach the node" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_password(tmp_path: Path) -> None:
    with RegtestNode() as node:
        path = write_config(
            tmp_path,
            f'[node]\nrpc_url = "{node.rpc_url}"\nrpc_user = "{node.rpc_user}"\n'
            'rpc_password = "wrong"\n',
        )
        result = run_solopool("--config", str(path))
    assert result.returncode == 2
    assert "401" in result.stderr and "rpc_password" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_flag() -> None:
    result = run_solopool("--version")
    assert result.returncode == 0 and result.stdout.startswith("solopool ")


def test_no_login_and_no_cookie(tmp_path: Path) -> None:
    path = write_config(tmp_path, f'[node]\nrpc_url = "http://127.0.0.1:{free_port()}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "pool.cli", "--config", str(path)],
        capture_output=True, text=True, timeout=60, env={"HOME": str(tmp_path), "PATH": "/usr/bin"},
    )
    assert result.returncode == 2, result.stderr
    assert "no RPC login configured" in result.stderr and ".cookie" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["solopool.example.toml", "regtest.toml"])
def test_shipped_configs_parse(name: str) -> None:
    from pool.config import load_config

    config = load_config(Path(__file__).parent.parent / "config" / name, environ={})
    assert config.stratum.version_rolling_mask == 0x1FFFE000
    assert config.stratum.min_difficulty <= config.stratum.start_difficulty


def test_environment_overrides_file(tmp_path: Path) -> None:
    from pool.config import load_config

    path = write_config(tmp_path, GOOD_NODE.format(port=8332) + "[stratum]\nport = 3333\n")
    config = load_config(
        path,
        environ={
            "SOLOPOOL_STRATUM_PORT": "4444",
            "SOLOPOOL_NODE_RPC_URL": "http://10.0.0.2:8332",
            "SOLOPOOL_STRATUM_ALLOWED_ADDRESSES": "bc1qa,bc1qb",
            "SOLOPOOL_POOL_COINBASE_TAG": "/home/",
        },
    )
    assert config.stratum.port == 4444
    assert config.node.rpc_url == "http://10.0.0.2:8332"
    assert config.stratum.allowed_addresses == ("bc1qa", "bc1qb")
    assert config.pool.coinbase_tag == "/home/"


def test_environment_text_values_stay_text(tmp_path: Path) -> None:
    from pool.config import load_config

    config = load_config(
        None,
        environ={
            "SOLOPOOL_NODE_RPC_USER": "true",
            "SOLOPOOL_NODE_RPC_PASSWORD": "123",
            "SOLOPOOL_STRATUM_VERSION_ROLLING_MASK": "00006000",
            "SOLOPOOL_STRATUM_MIN_DIFFICULTY": "0.5",
            "SOLOPOOL_API_ENABLED": "false",
        },
    )
    assert config.node.rpc_user == "true" and config.node.rpc_password == "123"
    assert config.stratum.version_rolling_mask == 0x6000
    assert config.stratum.min_difficulty == 0.5
    assert config.api.enabled is False
