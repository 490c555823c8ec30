"""What `pip install .` of the pool ships: only what runs a pool. The benchmark and the CPU test
miner are a separate distribution in tools/ that drives the pool; the pool never imports it."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.paths import REPO_DIR

# Local state that is not part of the source tree (venvs, caches, build output, runtime data).
NOT_SOURCE = (
    ".git", ".venv", ".node", ".demo", "data", "build", "dist", "*.egg-info", "__pycache__",
    ".pytest_cache", ".mypy_cache", ".ruff_cache",
)


def build_pool_wheel(tmp_path: Path) -> Path:
    """Build the pool's wheel from a copy of the whole source tree (tools/ included, so the
    pool's package discovery is what keeps the tools out)."""
    source = tmp_path / "source"
    shutil.copytree(REPO_DIR, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    assert (source / "tools" / "solopool_tools" / "miner.py").is_file()
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
         "--disable-pip-version-check", "-w", str(out), str(source)],
        check=True, timeout=600,
    )
    (wheel,) = out.glob("solopool-*.whl")
    return wheel


def test_pool_wheel_holds_only_the_pool(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_pool_wheel(tmp_path)) as wheel:
        names = wheel.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = wheel.read(entry_points).decode()
    top_level = {name.split("/", 1)[0] for name in names if not name.endswith("/")}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"pool"}, top_level
    assert "pool/cli.py" in names and "pool/web/index.html" in names, names
    tool_files = [n for n in names if "bench" in n or "miner.py" in n or "solopool_tools" in n]
    assert tool_files == [], tool_files
    assert "solopool = pool.cli:main" in scripts
    assert "solopool-bench" not in scripts and "solopool-miner" not in scripts, scripts


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a source file imports (relative imports resolve inside its own
    package, so they cannot reach another top-level package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_pool_never_imports_the_tools() -> None:
    sources = sorted((REPO_DIR / "pool").rglob("*.py"))
    assert len(sources) > 20
    offenders: dict[str, list[str]] = {}
    for path in sources:
        tools = sorted(m for m in imported_modules(path) if m.split(".")[0] == "solopool_tools")
        if tools:
            offenders[str(path.relative_to(REPO_DIR))] = tools
    assert offenders == {}


def test_tools_console_scripts_keep_their_names() -> None:
    """`pip install -e ./tools` (scripts/test.sh) puts both commands beside this venv's python."""
    assert not (REPO_DIR / "pool" / "bench").exists()
    assert not (REPO_DIR / "pool" / "miner.py").exists()
    for command in ("solopool-bench", "solopool-miner"):
        script = Path(sys.executable).parent / command
        result = subprocess.run(
            [str(script), "--help"], capture_output=True, text=True, timeout=120, check=True
        )
        assert result.stdout.startswith(f"usage: {command}"), result.stdout
