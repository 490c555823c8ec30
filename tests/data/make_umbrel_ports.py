"""Writes tests/data/umbrel_ports.txt: every host port taken on an Umbrel, so the solopool app
can pick ports no other app uses (tests/test_packaging.py checks against it).

    python tests/data/make_umbrel_ports.py UMBREL_APPS COMMUNITY_STORE > tests/data/umbrel_ports.txt

Each argument is a git repository (a clone, or a bare mirror) of github.com/getumbrel/umbrel-apps
and github.com/getumbrel/umbrel-community-app-store; their HEAD is read. Taken ports: umbrelOS's
own (80, 443, 2000), each app's manifest `port:` (its app_proxy port), and every host port its
docker-compose.yml publishes (`${VAR}` resolved from any app's exports.sh numeric exports,
port ranges expanded), as umbrel-apps' own linter (.tools/lint-apps.mjs) collects them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from typing import Any

import yaml

UMBREL_OS_PORTS = {80: "umbrelOS dashboard HTTP", 443: "umbrelOS dashboard HTTPS",
                   2000: "umbrelOS app auth"}
EXPORT = re.compile(r"""^export\s+([A-Z_][A-Z0-9_]*)=(?:"(\d+)"|'(\d+)'|(\d+))\s*(?:#.*)?$""")


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True,
                          text=True).stdout


def host_ports(mapping: Any, exports: dict[str, str]) -> list[int]:
    """The host side of one compose `ports:` entry (short or long syntax)."""
    if isinstance(mapping, dict):
        host = str(mapping.get("published", ""))
    else:
        parts = re.sub(r"/(tcp|udp)$", "", str(mapping).strip(), flags=re.I).split(":")
        if len(parts) == 1:
            return []  # container port only: Docker picks a random host port
        host = parts[-2]
    variable = re.fullmatch(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", host)
    if variable:
        host = exports.get(variable[1], "")
    low, _, high = host.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        return []
    return list(range(int(low), int(high or low) + 1))


REPOS = ("github.com/getumbrel/umbrel-apps", "github.com/getumbrel/umbrel-community-app-store")


def main(repos: list[str]) -> None:
    assert len(repos) == len(REPOS), __doc__
    taken: dict[int, set[str]] = defaultdict(set)
    for port, label in UMBREL_OS_PORTS.items():
        taken[port].add(label)
    header = []
    for repo, url in zip(repos, REPOS, strict=True):
        files = git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
        header.append(f"{url} at {git(repo, 'rev-parse', 'HEAD').strip()}")
        exports: dict[str, str] = {}
        for name in files:
            if name.endswith("/exports.sh") and name.count("/") == 1:
                for line in git(repo, "show", f"HEAD:{name}").splitlines():
                    match = EXPORT.match(line)
                    if match:
                        exports[match[1]] = match[2] or match[3] or match[4]
        for name in files:
            app, _, base = name.partition("/")
            if "/" in base:
                continue
            if base == "umbrel-app.yml":
                manifest = yaml.safe_load(git(repo, "show", f"HEAD:{name}")) or {}
                if isinstance(manifest.get("port"), int):
                    taken[manifest["port"]].add(f"{app} (app port)")
            elif base == "docker-compose.yml":
                compose = yaml.safe_load(git(repo, "show", f"HEAD:{name}")) or {}
                for service, config in (compose.get("services") or {}).items():
                    for mapping in (config or {}).get("ports") or []:
                        for port in host_ports(mapping, exports):
                            taken[port].add(f"{app}/{service}")
    print("# Host ports taken on an Umbrel: port, then who takes it. Made by")
    print("# tests/data/make_umbrel_ports.py (see its docstring) from:")
    for line in header:
        print(f"#   {line}")
    for port in sorted(taken):
        print(port, " ".join(sorted(taken[port])))


if __name__ == "__main__":
    main(sys.argv[1:])
