"""The package's rooms and which way imports may go, checked from the source (no import runs).

Lower layers never import higher ones, and no two modules of pool/ import each other, directly
or round about. Imports under `if TYPE_CHECKING:` count too: a type-only cycle is still a
tangle a reader has to follow."""

from __future__ import annotations

import ast
from pathlib import Path

import pool

POOL_DIR = Path(pool.__file__).parent

# package (or module) -> the pool packages/modules it may import besides itself
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "pool.consensus": (),
    "pool.node": ("pool.consensus", "pool.config"),
    # The SV2 protocol itself (not its server) is as pure as consensus code.
    **{
        f"pool.sv2.{m}": ("pool.consensus", "pool.sv2.codec", "pool.sv2.noise",
                          "pool.sv2.certificate")
        for m in ("codec", "noise", "certificate")
    },
}
# package -> what it must never import
MUST_NOT_IMPORT: dict[str, tuple[str, ...]] = {
    "pool.stratum": ("pool.app", "pool.cli", "pool.api", "pool.metrics"),
    "pool.sv2": ("pool.app", "pool.cli", "pool.api", "pool.metrics", "pool.stratum"),
    "pool.stats": ("pool.stratum", "pool.app", "pool.cli", "pool.api"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(POOL_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in POOL_DIR.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """The pool modules the module at `path` imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


def within(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def test_imports_are_read_relative_and_absolute() -> None:
    templates = GRAPH["pool.node.templates"]
    assert {"pool.config", "pool.consensus.template", "pool.node.rpc"} <= templates
    assert {"pool.node", "pool.jobs"} <= GRAPH["pool.app"]


def test_every_room_is_there() -> None:
    # The rules above hold for something: each room has its modules.
    assert len([m for m in MODULES if within(m, "pool.node")]) >= 6
    assert len([m for m in MODULES if within(m, "pool.consensus")]) >= 8
    assert len([m for m in MODULES if within(m, "pool.stats")]) >= 5
    assert len([m for m in MODULES if within(m, "pool.stratum")]) >= 4


def test_lower_layers_import_only_what_they_may() -> None:
    wrong = []
    for module, imported in GRAPH.items():
        for room, allowed in MAY_IMPORT.items():
            if within(module, room):
                wrong += [
                    f"{module} imports {m}" for m in sorted(imported)
                    if not within(m, room) and not any(within(m, a) for a in allowed)
                ]
        for room, forbidden in MUST_NOT_IMPORT.items():
            if within(module, room):
                wrong += [
                    f"{module} imports {m}" for m in sorted(imported)
                    if any(within(m, f) for f in forbidden)
                ]
    assert wrong == []


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for nxt in sorted(GRAPH[module]):
            # A package's __init__ re-exporting its own modules is not a cycle with them.
            if within(nxt, module):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def test_no_import_cycle_in_pool() -> None:
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    saved = dict(GRAPH)
    try:
        GRAPH["pool.consensus.serialize"] = GRAPH["pool.consensus.serialize"] | {"pool.app"}
        assert _cycle() is not None
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
