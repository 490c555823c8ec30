"""The node package: its layering, and its adapter to python-bitcoinrpc against a real node."""

from __future__ import annotations

import ast
import base64
import json
import logging
import socket
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from bitcoinrpc import authproxy
from bitcoinrpc.authproxy import AuthServiceProxy

import pool
from pool.node import NodeClient
from pool.node.proxy import RPCProxy
from tests.support.node import RegtestNode

POOL_DIR = Path(pool.__file__).parent
NODE_MAY_IMPORT = ("pool.consensus", "pool.config", "pool.node")


def _module_name(path: Path) -> str:
    parts = path.relative_to(POOL_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def pool_imports(path: Path) -> set[str]:
    """The pool modules that the module at `path` imports (anywhere in it, typing-only too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for stmt in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(stmt, ast.Import):
            found.update(alias.name for alias in stmt.names)
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level:
                base = package.split(".")[: len(package.split(".")) - stmt.level + 1]
                module = ".".join(base + ([stmt.module] if stmt.module else []))
            else:
                module = stmt.module or ""
            found.add(module)
            # `from . import x` and `from .pkg import module` name modules too
            found.update(f"{module}.{alias.name}" for alias in stmt.names)
    modules = {_module_name(p) for p in POOL_DIR.rglob("*.py")}
    return {m for m in found if m in modules}


def test_pool_imports_reads_relative_and_absolute_imports(tmp_path: Path) -> None:
    imports = pool_imports(POOL_DIR / "node" / "templates.py")
    assert {"pool.config", "pool.consensus.template", "pool.node.rpc"} <= imports
    assert pool_imports(POOL_DIR / "app.py") >= {"pool.node", "pool.jobs"}


def test_node_imports_only_consensus_and_config() -> None:
    files = sorted((POOL_DIR / "node").glob("*.py"))
    assert len(files) >= 6
    for path in files:
        outside = {
            m for m in pool_imports(path)
            if not any(m == allowed or m.startswith(allowed + ".") for allowed in NODE_MAY_IMPORT)
        }
        assert outside == set(), f"{path.name} imports {sorted(outside)}"


def test_node_modules_import_no_cycle() -> None:
    graph = {
        _module_name(p): {m for m in pool_imports(p) if m.startswith("pool.node")}
        for p in (POOL_DIR / "node").glob("*.py")
        if p.name != "__init__.py"
    }
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for imported in graph.get(module, ()):
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    assert "pool.node.rpc" in done


# --- the adapter, against a real node -------------------------------------------------------------


@pytest.fixture(scope="module")
def awkward_node() -> Iterator[RegtestNode]:
    """A node whose password a URL cannot carry unquoted (bitcoind refuses only ":")."""
    with RegtestNode(rpc_password="p@ss/w#rd?%41 x") as node:
        yield node


def test_a_password_a_url_cannot_carry_logs_in(awkward_node: RegtestNode) -> None:
    client = NodeClient(
        awkward_node.rpc_url, rpc_user=awkward_node.rpc_user,
        rpc_password=awkward_node.rpc_password,
    )
    try:
        assert client.call_sync("getblockchaininfo")["chain"] == "regtest"
    finally:
        client.close()


def _authorization(node: RegtestNode) -> bytes:
    return b"Basic " + base64.b64encode(f"{node.rpc_user}:{node.rpc_password}".encode())


def test_the_adapter_changes_nothing_global(node: RegtestNode) -> None:
    """Other users of python-bitcoinrpc in the process get the library as shipped: its json
    module, Decimal amounts; the pool's calls get orjson's floats."""
    assert authproxy.json is json
    ours = RPCProxy(node.rpc_url, "getblockchaininfo", _authorization(node), 10, 10)
    try:
        assert isinstance(ours()["difficulty"], float)
    finally:
        ours.close()
    host = node.rpc_url.removeprefix("http://")
    stock = AuthServiceProxy(f"http://{node.rpc_user}:{node.rpc_password}@{host}", timeout=10)
    assert isinstance(stock.getblockchaininfo()["difficulty"], Decimal)


def test_answers_are_logged_only_when_the_library_logs_debug(
    node: RegtestNode, caplog: pytest.LogCaptureFixture
) -> None:
    client = NodeClient(node.rpc_url, rpc_user=node.rpc_user, rpc_password=node.rpc_password)
    try:
        with caplog.at_level(logging.INFO, logger=authproxy.log.name):
            height = client.call_sync("getblockcount")
        assert not [r for r in caplog.records if r.name == authproxy.log.name]
        with caplog.at_level(logging.DEBUG, logger=authproxy.log.name):
            assert client.call_sync("getblockcount") == height
        answers = [r.getMessage() for r in caplog.records if r.getMessage().startswith("<--")]
        assert len(answers) == 1 and f'"result":{height}' in answers[0].replace(" ", "")
    finally:
        client.close()


@pytest.mark.parametrize("answer_timeout", [None, 10.0])
def test_keepalive_only_on_connections_without_an_answer_timeout(
    node: RegtestNode, answer_timeout: float | None
) -> None:
    proxy = RPCProxy(node.rpc_url, "getblockcount", _authorization(node), 10, answer_timeout)
    try:
        assert isinstance(proxy(), int)
        sock = proxy.connection.sock
        assert sock is not None
        keepalive = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert bool(keepalive) == (answer_timeout is None)
        assert sock.gettimeout() == answer_timeout
    finally:
        proxy.close()
