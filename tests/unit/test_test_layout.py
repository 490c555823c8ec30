"""The tests' own layout: test modules live in unit/, regtest/ or tools/, share helpers only through
tests/support/, and unit tests start no node and no pool process."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.markers import NODE_FIXTURES
from tests.support.paths import REPO_DIR

TESTS = REPO_DIR / "tests"
ROOMS = ("unit", "regtest", "tools")
# Support modules that start a node or a pool process, or need one running.
NEEDS_A_NODE = frozenset({
    "tests.support.node", "tests.support.fixtures", "tests.support.pool_process",
    "tests.support.pool_launcher", "tests.support.faults", "tests.support.mining",
})


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO_DIR).with_suffix("").parts)


def imported_modules(source: str, package: str) -> set[str]:
    """Every module `source` (a module of `package`) imports, at any depth, relative imports
    resolved; for `from module import name` both module and module.name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{module}" if module else base
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def imports_of(path: Path) -> set[str]:
    return imported_modules(path.read_text(), module_name(path).rsplit(".", 1)[0])


def is_test_module(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return name.startswith("tests.") and (last.startswith("test_") or last == "conftest")


def test_import_parsing_finds_nested_and_relative_imports() -> None:
    source = (
        "import os\n"
        "from . import test_neighbour\n"
        "from ..support import stratum_client\n"
        "def helper():\n"
        "    from tests.regtest.test_lifecycle import write_config\n"
    )
    found = imported_modules(source, "tests.unit")
    assert {"os", "tests.unit.test_neighbour", "tests.support.stratum_client",
            "tests.regtest.test_lifecycle"} <= found
    assert sorted(n for n in found if is_test_module(n)) == [
        "tests.regtest.test_lifecycle", "tests.unit.test_neighbour",
    ]
    assert is_test_module("tests.conftest") and not is_test_module("tests.support.pool_process")


def test_no_test_module_imports_another() -> None:
    offences = [
        f"{path.relative_to(REPO_DIR)} imports {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for name in sorted(imports_of(path))
        if is_test_module(name)
    ]
    assert not offences, "shared helpers belong in tests/support/:\n" + "\n".join(offences)


def test_every_test_module_lives_in_a_room() -> None:
    misplaced = [
        str(path.relative_to(TESTS))
        for path in sorted(TESTS.rglob("test_*.py"))
        if path.relative_to(TESTS).parts[0] not in ROOMS
    ]
    assert not misplaced, f"test modules belong in tests/unit, regtest or tools: {misplaced}"
    for room in ROOMS:
        assert list((TESTS / room).glob("test_*.py")), f"tests/{room}/ has no tests"


def test_unit_tests_need_no_node_and_no_pool_process() -> None:
    offences = []
    for path in sorted((TESTS / "unit").rglob("*.py")):
        needs = sorted(imports_of(path) & NEEDS_A_NODE)
        offences += [f"{path.name} imports {name}" for name in needs]
        offences += [
            f"{path.name}: {node.name} asks for the fixture {arg.arg}"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for arg in node.args.args
            if arg.arg in NODE_FIXTURES
        ]
    assert not offences, "tests that need a node belong in tests/regtest/:\n" + "\n".join(
        offences
    )
