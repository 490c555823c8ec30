"""Hooks and fixtures for every test: uvloop, the tools package check, and the node and pool
fixtures (defined in tests/support/fixtures.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.fixtures import fresh_node, node, start_pool

__all__ = ["fresh_node", "node", "start_pool"]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Run async tests on uvloop, as the pool runs in production."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}


def pytest_configure(config: pytest.Config) -> None:
    """The bench and miner tests import (and run as subprocesses) the separate tools package."""
    import importlib.util

    if importlib.util.find_spec("solopool_tools") is None:
        raise pytest.UsageError(
            "solopool_tools is not installed in this venv: run `pip install -e ./tools` after "
            "the pool (scripts/test.sh does)"
        )
