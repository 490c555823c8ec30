"""Fixtures for real regtest nodes and an in-process pool connected to them (the root
conftest.py registers them for every test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from pool.app import Pool
from pool.config import Config, parse_config
from tests.support.node import RegtestNode


def pool_config(
    node: RegtestNode,
    data_dir: Path,
    node_options: dict[str, Any] | None = None,
    **stratum: Any,
) -> Config:
    """A pool config for `node`: loopback, a free port, tiny shares for CPU miners."""
    table: dict[str, Any] = {
        "node": {
            "rpc_url": node.rpc_url,
            "rpc_user": node.rpc_user,
            "rpc_password": node.rpc_password,
            "poll_seconds": 0.5,
            **(node_options or {}),
        },
        "stratum": {
            "host": "127.0.0.1",
            "port": 0,
            "start_difficulty": 0.0001,
            "min_difficulty": 0.00001,
            "share_interval_seconds": 2,
            **stratum,
        },
        "pool": {"data_dir": str(data_dir)},
        "api": {"host": "127.0.0.1", "port": 0},
    }
    if node.zmq_url is not None:
        table["node"]["zmq_hashblock"] = node.zmq_url
    return parse_config(table, data_dir)


@pytest.fixture
def fresh_node() -> Iterator[RegtestNode]:
    """A node at height 0 with an empty wallet "w"."""
    with RegtestNode() as node:
        node.create_wallet()
        yield node


@pytest.fixture(scope="module")
def node() -> Iterator[RegtestNode]:
    """A node with wallet "w" and 101 blocks (spendable coins), shared by a test module."""
    with RegtestNode() as node:
        node.create_wallet()
        node.generate(101)
        yield node


PoolFactory = Callable[..., Any]


@pytest_asyncio.fixture
async def start_pool(tmp_path: Path) -> AsyncIterator[PoolFactory]:
    """Factory: `await start_pool(node, **stratum_overrides)` -> a started in-process Pool."""
    pools: list[Pool] = []

    async def factory(
        node: RegtestNode,
        data_dir: Path | None = None,
        node_options: dict[str, Any] | None = None,
        **stratum: Any,
    ) -> Pool:
        data_dir = data_dir or tmp_path / f"data{len(pools)}"
        pool = Pool(pool_config(node, data_dir, node_options, **stratum))
        await pool.start()
        pools.append(pool)
        return pool

    yield factory
    for pool in pools:
        # A bounded stop: pytest-timeout's alarm cannot interrupt uvloop's idle wait, so a
        # shutdown that never finishes must fail here rather than stall the whole run.
        async with asyncio.timeout(90):
            await pool.stop()
