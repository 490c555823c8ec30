"""The bench and CPU test miner's tests; those that start a node or a pool are marked `regtest`,
as every test in tests/regtest/ is."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.markers import mark_regtest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_regtest(items, Path(__file__).parent, all_of_them=False)
