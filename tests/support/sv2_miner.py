"""The Bitaxe firmware's own SV2 client (ESP-Miner's sv2_noise.c and sv2_protocol.c built for
Linux from the shared peers folder, into an ignored folder) and a way to run it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO_DIR

# The shared folder beside the project (../shared), or beside the folder of git worktrees.
_SHARED = [p / "shared" / "peers" / "sv2-miner" for p in (REPO_DIR.parent, REPO_DIR.parent.parent)]
SV2_MINER_SRC = Path(
    os.environ.get("SV2_MINER_SRC") or next((p for p in _SHARED if p.is_dir()), _SHARED[0])
)
BUILD_DIR = REPO_DIR / ".cache" / "sv2-miner"
USER = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080.bitaxe1"


@pytest.fixture(scope="module")
def sv2_miner() -> Path:
    binary = BUILD_DIR / "bin" / "sv2-miner"
    build = SV2_MINER_SRC / "build.sh"
    assert build.is_file(), (
        f"{build} is missing: put the shared folder beside the project (../shared) or set "
        "SV2_MINER_SRC to its peers/sv2-miner"
    )
    if not binary.exists() or binary.stat().st_mtime < build.stat().st_mtime:
        subprocess.run(["bash", str(build), str(BUILD_DIR)], check=True, capture_output=True)
    return binary


async def run_miner(binary: Path, port: int, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = await asyncio.create_subprocess_exec(
        str(binary), "--host", "127.0.0.1", "--port", str(port), "--user", USER,
        "--seconds", "20", "--drain-seconds", "0", "-v", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, json.loads(out.decode().strip().splitlines()[-1]), err.decode()
