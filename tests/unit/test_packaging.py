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
from xml.etree import ElementTree

import yaml

from pool import __version__
from pool.config import apply_environment, load_config, parse_config
from tests.support.paths import REPO_DIR

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


def umbrel_store() -> tuple[str, Path]:
    """deploy/umbrel/ is a community app store: its id, and the one app folder in it."""
    store = yaml.safe_load((UMBREL / "umbrel-app-store.yml").read_text())
    apps = [d for d in UMBREL.iterdir() if (d / "umbrel-app.yml").is_file()]
    assert len(apps) == 1, apps
    return store["id"], apps[0]


def taken_umbrel_ports() -> dict[int, str]:
    """tests/data/umbrel_ports.txt: host ports other Umbrel apps and umbrelOS use."""
    taken = {}
    for line in (REPO_DIR / "tests" / "data" / "umbrel_ports.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            port, _, who = line.partition(" ")
            taken[int(port)] = who
    return taken


def test_umbrel_port_list_is_real() -> None:
    """The list the port checks rely on covers the stores (known takers are in it)."""
    taken = taken_umbrel_ports()
    assert len(taken) > 500
    assert {80, 443, 2000} <= taken.keys()  # umbrelOS itself
    assert "public-pool" in taken[2019] and "public-pool/server" in taken[2018]
    assert "bitmagnet" in taken[3335] and "bleskomat-server" in taken[3333]


def test_umbrel_store_and_manifest() -> None:
    store_id, app_dir = umbrel_store()
    # umbrelOS: store ids are letters and dashes; it lists only apps whose id starts with it.
    assert re.fullmatch(r"[a-z]+(?:-[a-z]+)*", store_id) and len(store_id) <= 50
    manifest = yaml.safe_load((app_dir / "umbrel-app.yml").read_text())
    app_id = manifest["id"]
    assert app_id == app_dir.name and app_id.startswith(f"{store_id}-")
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", app_id)
    # The fields and field order of getumbrel/umbrel-apps' packaging guide (icon: community
    # stores only), nothing else.
    order = ["manifestVersion", "id", "category", "name", "version", "tagline", "description",
             "releaseNotes", "developer", "website", "dependencies", "repo", "support", "port",
             "gallery", "path", "icon", "widgets", "defaultUsername", "defaultPassword",
             "submitter", "submission"]
    assert [k for k in order if k in manifest] == list(manifest), list(manifest)
    assert set(order) - {"widgets"} <= set(manifest), set(order) - set(manifest)
    assert manifest["manifestVersion"] in (1, 1.1)
    assert manifest["category"] == "bitcoin" and manifest["dependencies"] == ["bitcoin"]
    assert manifest["version"] == __version__ and manifest["path"] == ""
    assert manifest["gallery"] == [] or all(isinstance(g, str) for g in manifest["gallery"])
    for key in ("website", "repo", "support", "submission", "icon"):
        assert re.fullmatch(r"https://\S+", manifest[key]), key
    # The icon is a square SVG kept in this repository, at the URL the manifest gives.
    icon_path = re.fullmatch(
        r"https://raw\.githubusercontent\.com/solopool/solopool/main/(.+)", manifest["icon"]
    )
    assert icon_path and manifest["repo"] == "https://github.com/solopool/solopool"
    icon = ElementTree.parse(REPO_DIR / icon_path[1]).getroot()
    assert icon.tag == "{http://www.w3.org/2000/svg}svg" and icon.get("viewBox") == "0 0 256 256"

    taken = taken_umbrel_ports()
    port = manifest["port"]
    assert isinstance(port, int) and port not in taken, taken.get(port)


def test_umbrel_compose() -> None:
    _, app_dir = umbrel_store()
    manifest = yaml.safe_load((app_dir / "umbrel-app.yml").read_text())
    compose = yaml.safe_load((app_dir / "docker-compose.yml").read_text())
    assert "networks" not in compose  # Umbrel injects its own network
    services = compose["services"]
    proxy = services.pop("app_proxy")
    assert list(proxy) == ["environment"]
    proxy_env = proxy["environment"]
    service_name = next(s for s in services if proxy_env["APP_HOST"] == f"{manifest['id']}_{s}_1")
    pool = services[service_name]

    # Every image pinned as the release workflow pushes it: ghcr.io/<repo>:<version>@sha256:...
    repository = manifest["repo"].removeprefix("https://github.com/")
    for service in services.values():
        assert "build" not in service
        pinned = r"ghcr\.io/([a-z0-9/-]+):([\w.-]+)@sha256:[0-9a-f]{64}"
        image = re.fullmatch(pinned, service["image"])
        assert image, service["image"]
        assert image[1] == repository and image[2] == manifest["version"]
        assert service["restart"] == "on-failure"
        # Umbrel's app data is owned by 1000:1000, the image's own user.
        assert service["user"] == "1000:1000"

    # Bind mounts under ${APP_DATA_DIR}/data only, each source folder shipped in the package.
    for volume in pool["volumes"]:
        source, target = volume.split(":")[:2]
        relative = source.removeprefix("${APP_DATA_DIR}/")
        assert relative.startswith("data") and (app_dir / relative / ".gitkeep").is_file(), volume

    env = env_list(pool)
    assert str(proxy_env["APP_PORT"]) == env["SOLOPOOL_API_PORT"] == API_PORT
    # Miners' port: explicit host:container, the same inside, not taken by another app.
    [stratum] = pool["ports"]
    host, container = (int(p) for p in stratum.split(":"))
    assert host == container == int(env["SOLOPOOL_STRATUM_PORT"])
    taken = taken_umbrel_ports()
    assert host not in taken and host != manifest["port"], taken.get(host)
    assert f"stratum+tcp://umbrel.local:{host}" in manifest["description"]

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
    assert config.stratum.port == host and str(config.pool.data_dir) == "/data"


def test_image_workflow() -> None:
    """The release workflow builds amd64 and arm64 and pushes to ghcr.io on v* tags."""
    workflow = yaml.safe_load((REPO_DIR / ".github" / "workflows" / "image.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["push"]["tags"] == ["v*"] and "branches" not in triggers["push"]
    assert workflow["permissions"]["packages"] == "write"
    [job] = workflow["jobs"].values()
    steps = {step["uses"].split("@")[0]: step for step in job["steps"] if "uses" in step}
    assert {"docker/setup-qemu-action", "docker/setup-buildx-action"} <= steps.keys()
    assert steps["docker/login-action"]["with"]["registry"] == "ghcr.io"
    build = steps["docker/build-push-action"]["with"]
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["push"] is True and build["tags"].startswith("${{ steps.meta.outputs.image }}:")
    script = " ".join(step.get("run", "") for step in job["steps"])
    assert "image=ghcr.io/${GITHUB_REPOSITORY,,}" in script  # ghcr.io names are lowercase
    assert "version=${GITHUB_REF_NAME#v}" in script  # v0.1.0 -> 0.1.0, the manifest's version


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
