"""The one way tests run the real pool in its own process: `python -m pool.cli --config FILE`
as a person runs it, or through tests/support/pool_launcher.py when a fault is injected.

    config = write_config(tmp_path / "solopool.toml", node, port, api_port=api_port, workers=2)
    proc = await PoolProcess.start(config, "--log-level", "DEBUG", open_files=(256, 256))
    await proc.wait_listening(port)
    ...
    assert await proc.stop() == 0, proc.output
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.support.node import RegtestNode
from tests.support.paths import REPO_DIR


def write_config(
    path: Path, node: RegtestNode, port: int, *, mode: int = 0o600, cookie: bool = False,
    api_port: int | None = None, data_dir: Path | None = None,
    node_options: Mapping[str, Any] | None = None, **stratum: Any,
) -> Path:
    """A config file for a pool process on `node`: loopback, tiny shares for CPU miners, the
    data in `data_dir` (default: "data" beside the file), the API off unless `api_port`.
    `node_options` and `stratum` add to (or override) the [node] and [stratum] keys."""
    if cookie:
        auth = f'rpc_cookie_file = "{node.cookie_file}"\n'
    else:
        auth = f'rpc_user = "{node.rpc_user}"\nrpc_password = "{node.rpc_password}"\n'
    node_table = {"poll_seconds": 0.5, **(node_options or {})}
    stratum_table = {
        "start_difficulty": 0.0001, "min_difficulty": 0.00001, "share_interval_seconds": 2,
        **stratum,
    }
    data_dir = data_dir or path.parent / "data"
    lines = [
        "[node]", f'rpc_url = "{node.rpc_url}"', auth,
        *(f"{key} = {json.dumps(value)}" for key, value in node_table.items()), "",
        "[stratum]", 'host = "127.0.0.1"', f"port = {port}",
        *(f"{key} = {json.dumps(value)}" for key, value in stratum_table.items()), "",
        "[pool]", f'data_dir = "{data_dir}"', "",
        "[api]",
        "enabled = false" if api_port is None else f'enabled = true\nport = {api_port}', "",
    ]
    path.write_text("\n".join(lines))
    os.chmod(path, mode)  # it holds the RPC password
    return path


def _open_file_limit(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


class PoolProcess:
    """The pool in its own process, its output (stdout and stderr) written to its own log file:
    a file, not a pipe, so a busy test never slows the pool by reading late."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    @classmethod
    async def start(
        cls, config: Path, *args: str, fault: str | None = None,
        env: Mapping[str, str] | None = None, open_files: tuple[int, int] | None = None,
    ) -> PoolProcess:
        """Start the pool with `--config config` and `args`; its log file is beside `config`.

        fault: one of tests.support.pool_launcher.FAULTS, injected from the tests' side.
        env: variables added to the tests' environment, from which every SOLOPOOL_* variable
        is removed first (the config file alone decides). open_files: (soft, hard) open-file
        limit for the pool process, as `ulimit -n` sets it."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SOLOPOOL_")}
        environ.update(env or {})
        if fault is None:
            command = ["-m", "pool.cli"]
        else:
            command = ["-m", "tests.support.pool_launcher", "--fault", fault, "--"]
        with tempfile.NamedTemporaryFile(
            dir=config.parent, prefix="pool-", suffix=".log", delete=False
        ) as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *command, "--config", str(config), *args,
                cwd=REPO_DIR, env=environ, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT,
                preexec_fn=None if open_files is None else _open_file_limit(*open_files),
            )
        return cls(proc, Path(out.name))

    @property
    def output(self) -> str:
        return self.log.read_bytes().decode(errors="replace")

    @property
    def lines(self) -> list[str]:
        return self.output.splitlines(keepends=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def wait_log(self, text: str, timeout: float = 15, after: int = 0) -> str:
        """The first output line at index >= `after` that contains `text`."""
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines[after:]:
                    if text in line:
                        return line
                if self.proc.returncode is not None:
                    raise AssertionError(f"pool exited; output:\n{self.output[-3000:]}")
                await asyncio.sleep(0.05)

    async def wait_listening(self, port: int, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"pool exited; output:\n{self.output[-3000:]}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.1)
                    continue
                writer.close()
                return

    async def wait(self, timeout: float = 40) -> int:
        """Its exit code, once it has exited."""
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def stop(self, timeout: float = 40) -> int:
        """SIGTERM (if still running), then its exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
