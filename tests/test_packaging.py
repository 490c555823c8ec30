"""Packaging without a container engine: the Dockerfile's layering and its requirements step,
its HEALTHCHECK command run against a real socket, and the compose, Umbrel and systemd files
read and checked against what solopool actually accepts. tests/test_container.py builds and
runs the image itself."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from pool import __version__
from pool.config import apply_environment, load_config, parse_config
from tests.regtest import REPO_DIR

DOCKERFILE = REPO_DIR / "Dockerfile"
COMPOSE = REPO_DIR / "docker-compose.example.yml"
UMBREL = REPO_DIR / "deploy" / "umbrel"
SYSTEMD = REPO_DIR / "deploy" / "systemd" / "solopool.service"
API_PORT = "8080"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_installs_dependencies_before_the_source() -> None:
    """Dependencies in a layer of their own, read from pyproject.toml, before pool/ is copied:
    a source edit rebuilds only the last layers. (tests/test_container.py builds and runs it.)"""
    steps = dockerfile_instructions()
    copies = [i for i, (instruction, _) in enumerate(steps) if instruction == "COPY"]
    first_copy = steps[copies[0]][1].split()
    assert first_copy == ["pyproject.toml", "./"], "only pyproject.toml before the deps layer"
    source_copy = next(i for i in copies if steps[i][1].split()[0] == "pool")
    runs = {i: args for i, (instruction, args) in enumerate(steps) if instruction == "RUN"}
    deps = next(i for i, args in runs.items() if "pip install -r requirements.txt" in args)
    product = next(i for i, args in runs.items() if re.search(r"\bpip install --no-deps \.", args))
    assert copies[0] < deps < source_copy < product

    # The requirements step, run for real on pyproject.toml: exactly the product's dependencies
    # (no test or tool extras).
    generate = next(args for i, args in runs.items() if i < deps and "requirements.txt" in args)
    command = re.fullmatch(r"(python -c .+) > requirements\.txt", generate)
    assert command, generate
    listed = subprocess.run(
        [sys.executable, "-c", shlex.split(command[1])[2]], cwd=REPO_DIR,
        capture_output=True, text=True, timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    with open(REPO_DIR / "pyproject.toml", "rb") as file:
        dependencies = tomllib.load(file)["project"]["dependencies"]
    assert listed.stdout.splitlines() == dependencies


def test_dockerfile_runs_non_root_with_healthcheck() -> None:
    steps = dockerfile_instructions()
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    exposed = " ".join(args for instruction, args in steps if instruction == "EXPOSE").split()
    assert "3333" in exposed and API_PORT in exposed
    env = " ".join(args for instruction, args in steps if instruction == "ENV")
    assert "SOLOPOOL_POOL_DATA_DIR=/data" in env and "SOLOPOOL_API_HOST=0.0.0.0" in env
    volumes = [args for instruction, args in steps if instruction == "VOLUME"]
    assert volumes and "/data" in volumes[0]
    entry = json.loads(next(args for instruction, args in steps if instruction == "ENTRYPOINT"))
    assert entry == ["solopool"]

    health = next(args for instruction, args in steps if instruction == "HEALTHCHECK")
    command = json.loads(health[health.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    # Run the health check for real: healthy while the Stratum port listens, then unhealthy.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        env = {**os.environ, "SOLOPOOL_STRATUM_PORT": str(port)}
        healthy = subprocess.run([sys.executable, *command[1:]], env=env, timeout=30)
        assert healthy.returncode == 0
    unhealthy = subprocess.run(
        [sys.executable, *command[1:]], env=env, timeout=30, capture_output=True
    )
    assert unhealthy.returncode != 0


def env_list(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {str(k): str(v) for k, v in environment.items()}


def substitute(value: str, variables: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        assert name in variables, f"unknown variable {name}"
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, value)


def test_compose_example() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    pool, bitcoind = services["solopool"], services["bitcoind"]
    assert "3333:3333" in pool["ports"] and f"{API_PORT}:{API_PORT}" in pool["ports"]
    assert any(v.endswith(":/data") for v in pool["volumes"])
    env = env_list(pool)
    assert env["SOLOPOOL_POOL_DATA_DIR"] == "/data"
    assert pool["command"] == ["run"]
    # The settings are ones solopool understands, and match the node's flags.
    config = load_config(None, env)
    assert config.node.rpc_url == "http://bitcoind:8332"
    flags = dict(f.lstrip("-").split("=", 1) for f in bitcoind["command"])
    assert flags["rpcuser"] == config.node.rpc_user
    assert flags["rpcpassword"] == config.node.rpc_password
    assert flags["zmqpubhashblock"].endswith(":28332")
    assert config.node.zmq_hashblock == "tcp://bitcoind:28332"
    assert config.stratum.port == 3333 and config.api.port == int(API_PORT)
    assert str(config.pool.data_dir) == "/data"


def test_umbrel_app() -> None:
    manifest = yaml.safe_load((UMBREL / "umbrel-app.yml").read_text())
    for key in ("manifestVersion", "id", "category", "name", "version", "tagline",
                "description", "developer", "website", "dependencies", "repo", "support",
                "port", "gallery", "path", "defaultPassword", "submitter", "submission"):
        assert key in manifest, key
    assert manifest["id"] == "solopool" and "bitcoin" in manifest["dependencies"]
    assert manifest["version"] == __version__

    compose = yaml.safe_load((UMBREL / "docker-compose.yml").read_text())
    services = compose["services"]
    proxy = services["app_proxy"]["environment"]
    app_id, service_name, _ = proxy["APP_HOST"].split("_")
    assert app_id == manifest["id"] and service_name in services
    pool = services[service_name]
    assert "3333:3333" in pool["ports"]
    assert pool["image"] and "build" not in pool
    assert any(v == "${APP_DATA_DIR}/data:/data" for v in pool["volumes"])
    env = env_list(pool)
    assert str(proxy["APP_PORT"]) == env["SOLOPOOL_API_PORT"] == API_PORT
    used = set(re.findall(r"\$\{(\w+)\}", " ".join(env.values())))
    assert used == {"APP_BITCOIN_NODE_IP", "APP_BITCOIN_RPC_PORT", "APP_BITCOIN_RPC_USER",
                    "APP_BITCOIN_RPC_PASS", "APP_BITCOIN_ZMQ_HASHBLOCK_PORT"}
    # What Umbrel's Bitcoin Node app exports, substituted: a complete, valid solopool config.
    umbrel = {"APP_BITCOIN_NODE_IP": "10.21.21.8", "APP_BITCOIN_RPC_PORT": "8332",
              "APP_BITCOIN_RPC_USER": "umbrel", "APP_BITCOIN_RPC_PASS": "moneyprintergobrrr",
              "APP_BITCOIN_ZMQ_HASHBLOCK_PORT": "28334", "APP_DATA_DIR": "/x"}
    resolved = {k: substitute(v, umbrel) for k, v in env.items()}
    config = parse_config(apply_environment({}, resolved), Path("/"))
    assert config.node.rpc_url == "http://10.21.21.8:8332"
    assert (config.node.rpc_user, config.node.rpc_password) == ("umbrel", "moneyprintergobrrr")
    assert config.node.zmq_hashblock == "tcp://10.21.21.8:28334"
    assert config.api.host == "0.0.0.0" and config.api.port == int(API_PORT)
    assert config.stratum.port == 3333 and str(config.pool.data_dir) == "/data"


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(SYSTEMD.read_text())
    service = unit["Service"]
    exec_start = service["ExecStart"]
    assert re.search(r"/solopool --config \S+\.toml$", exec_start), exec_start
    assert service["Restart"] == "on-failure"
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "solopool"
    assert service.get("DynamicUser") == "yes" or service.get("User")
    assert service["NoNewPrivileges"] == "yes"
    data_dir = service["Environment"].split("=", 1)[1]
    assert data_dir == "/var/lib/solopool"  # = StateDirectory, the only writable place
    assert "solopool check --config" in service["ExecStartPre"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:  # where systemd is installed, let it read the unit too
        result = subprocess.run([analyze, "verify", str(SYSTEMD)], capture_output=True,
                                text=True, timeout=60)
        problems = [line for line in result.stderr.splitlines()
                    if "is not executable" not in line and line.strip()]
        assert not problems, result.stderr
