"""Every test here needs a regtest bitcoind and/or a pool process: all are marked `regtest`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.markers import mark_regtest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_regtest(items, Path(__file__).parent, all_of_them=True)
