#!/usr/bin/env bash
# The project's test command (CI runs exactly this): venv, install, regtest node, lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
# The bench and the CPU test miner (the tests run them): their own distribution, after the pool.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ./tools

# A bitcoind for the tests: $BITCOIND, else one on PATH, else install Bitcoin Knots privately.
if [ -z "${BITCOIND:-}" ] && ! command -v bitcoind >/dev/null 2>&1; then
    scripts/install-node.sh
fi

# Debian's chromium for the dashboard test (Playwright drives it; no browser download).
command -v chromium >/dev/null 2>&1 \
    || (apt-get update && apt-get install -y --no-install-recommends chromium)

# gcc and OpenSSL's headers build the Bitaxe firmware's SV2 client (tests/regtest/test_sv2_firmware.py
# builds ../shared/peers/sv2-miner into .cache/sv2-miner).
{ command -v gcc >/dev/null 2>&1 && [ -f /usr/include/openssl/evp.h ]; } \
    || (apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev)

# Podman and a local python:3.11-slim stand-in for tests/regtest/test_container.py (public image
# registries are unreachable here). container.sh lives in the shared folder beside the project.
CONTAINER_SH=${CONTAINER_SH:-../shared/tools/container.sh}
if [ ! -f "$CONTAINER_SH" ]; then
    echo "scripts/test.sh: $CONTAINER_SH not found: put the shared folder beside the project" \
        "(../shared) or set CONTAINER_SH to its tools/container.sh" >&2
    exit 1
fi
CONTAINER_SH=$(realpath "$CONTAINER_SH")
export CONTAINER_SH
bash "$CONTAINER_SH" setup

echo "== ruff"
.venv/bin/ruff check pool tests tools
echo "== mypy"
.venv/bin/mypy pool tools/solopool_tools
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
