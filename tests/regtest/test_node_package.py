"""The node package's adapter to python-bitcoinrpc, against a real node (its layering is
checked with the rest of the pool's in tests/unit/test_layering.py)."""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import Iterator
from decimal import Decimal

import pytest
from bitcoinrpc import authproxy
from bitcoinrpc.authproxy import AuthServiceProxy

from pool.node import NodeClient
from pool.node.proxy import RPCProxy
from tests.support.node import RegtestNode

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
