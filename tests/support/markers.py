"""Which tests are `regtest` tests (the marker registered in pyproject.toml): those that need a
regtest bitcoind and/or a pool process."""

from __future__ import annotations

from pathlib import Path

import pytest

# The fixtures that start a node or a pool (tests/support/fixtures.py; zmq_node: a module's own).
NODE_FIXTURES = frozenset({"node", "fresh_node", "start_pool", "zmq_node"})


def mark_regtest(items: list[pytest.Item], folder: Path, *, all_of_them: bool) -> None:
    """Mark the tests collected from `folder`: all of them, or those asking for a node fixture.
    (pytest calls a conftest's collection hook with every collected item, not only its own.)"""
    for item in items:
        if folder not in item.path.parents:
            continue
        if all_of_them or NODE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.regtest)
