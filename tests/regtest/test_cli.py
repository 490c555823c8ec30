"""`solopool` as a person runs it: bad configs and node problems give one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.node import RegtestNode, free_port
from tests.support.paths import REPO_DIR


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
        # TOML has nan and inf, and NaN passes every `<` and `>` check.
        (GOOD_NODE + "[stratum]\nshare_interval_seconds = nan\n",
         "[stratum] share_interval_seconds must be a finite number like 10, got nan"),
        (GOOD_NODE + "rpc_timeout_seconds = nan\n", "[node] rpc_timeout_seconds must be a finite"),
        (GOOD_NODE + "poll_seconds = -nan\n", "[node] poll_seconds must be a finite"),
        (GOOD_NODE + "[stratum]\nmax_difficulty = inf\n", "[stratum] max_difficulty must be a fin"),
        (GOOD_NODE + "[notify]\nworker_silent_minutes = +inf\n", "worker_silent_minutes must"),
        ("[node]\nrpc_url = \"http://[::1:8332\"\nrpc_user = \"u\"\nrpc_password = \"p\"\n",
         "rpc_url 'http://[::1:8332' is not a URL"),
        (GOOD_NODE + "[notify]\nwebhook_urls = [\"https://[oops/hook\"]\n",
         "webhook_urls entry 'https://[oops/hook' must be an http(s):// URL"),
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


def test_config_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "solopool.toml"
    # Latin-1, as an editor on an old system might save it.
    latin1 = b'[pool]\ncoinbase_tag = "/Jos\xe9/"\n'
    path.write_bytes(GOOD_NODE.format(port=free_port()).encode() + latin1)
    result = run_solopool("--config", str(path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"solopool: config error: config file {path} is not UTF-8 text (byte 0xe9 at offset "
        f"{path.read_bytes().index(0xE9)}); save it as UTF-8"
    ]


def test_misspelt_environment_variable_is_named(tmp_path: Path) -> None:
    """An unknown SOLOPOOL_* variable is named at start, with the setting it probably meant;
    the project's own non-setting variables are not."""
    path = write_config(tmp_path, GOOD_NODE.format(port=free_port()))
    env = {
        "PATH": "/usr/bin", "HOME": str(tmp_path),
        "SOLOPOOL_STRATUM_PROT": "3334", "SOLOPOOL_NODE_RPC_TIMEOUT": "5",
        "SOLOPOOL_NODE_PREFIX": str(tmp_path), "SOLOPOOL_DEBIAN_MIRROR": "http://x",
    }
    run = subprocess.run(
        [sys.executable, "-m", "pool.cli", "--config", str(path)],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert run.returncode == 1, run.stderr  # it started, then found no node
    warnings = [line for line in run.stderr.splitlines() if "not a solopool setting" in line]
    assert len(warnings) == 2, run.stderr
    assert "SOLOPOOL_NODE_RPC_TIMEOUT" in warnings[0]
    assert warnings[0].endswith("did you mean SOLOPOOL_NODE_RPC_TIMEOUT_SECONDS?")
    assert "WARNING" in warnings[1] and "SOLOPOOL_STRATUM_PROT" in warnings[1]
    assert warnings[1].endswith("did you mean SOLOPOOL_STRATUM_PORT?")
    for name in ("SOLOPOOL_NODE_PREFIX", "SOLOPOOL_DEBIAN_MIRROR"):
        assert name not in run.stderr

    # With a config error the warnings come first: the misspelling may be its cause.
    env["SOLOPOOL_NODE_RPC_PASWORD"] = env.pop("SOLOPOOL_NODE_RPC_TIMEOUT")
    path.write_text(f'[node]\nrpc_url = "http://127.0.0.1:{free_port()}"\nrpc_user = "u"\n')
    run = subprocess.run(
        [sys.executable, "-m", "pool.cli", "--config", str(path)],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 3, run.stderr
    assert lines[0].startswith("solopool: warning: environment variable SOLOPOOL_NODE_RPC_PASWORD")
    assert lines[0].endswith("did you mean SOLOPOOL_NODE_RPC_PASSWORD?")
    assert "SOLOPOOL_STRATUM_PROT" in lines[1]
    assert lines[2].startswith("solopool: config error:") and "rpc_password" in lines[2]


def test_unknown_environment_lines() -> None:
    from pool.config import unknown_environment

    assert unknown_environment({
        "PATH": "/usr/bin", "SOLOPOOL_STRATUM_PORT": "1", "SOLOPOOL_stratum_host": "h",
        "SOLOPOOL_API_ENABLED": "false", "SOLOPOOL_NODE_PREFIX": "/opt",
    }) == []
    assert unknown_environment({
        "SOLOPOOL_XYZZY": "1", "SOLOPOOL_BACKUP_NODE_RPC_URL": "http://h:8332",
        "SOLOPOOL_NODE_COOKIE_GUESSED": "true",  # internal, not a setting
    }) == [
        "environment variable SOLOPOOL_BACKUP_NODE_RPC_URL is not a solopool setting (ignored); "
        "backup nodes are set in the config file only, as [[backup_node]] tables",
        "environment variable SOLOPOOL_NODE_COOKIE_GUESSED is not a solopool setting (ignored); "
        "did you mean SOLOPOOL_NODE_RPC_COOKIE_FILE?",
        "environment variable SOLOPOOL_XYZZY is not a solopool setting (ignored); settings are "
        "named SOLOPOOL_<SECTION>_<KEY>, e.g. SOLOPOOL_STRATUM_PORT",
    ]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
def test_environment_numbers_must_be_finite(value: str) -> None:
    from pool.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="share_interval_seconds must be a finite number"):
        load_config(None, environ={"SOLOPOOL_STRATUM_SHARE_INTERVAL_SECONDS": value})


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

    config = load_config(REPO_DIR / "config" / name, environ={})
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
