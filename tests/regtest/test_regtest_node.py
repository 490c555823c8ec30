"""Checks that the regtest helper drives a real bitcoind (see tests/regtest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.support.node import RegtestNode, RPCError, find_bitcoin_cli, find_bitcoind


def _require_bitcoind() -> None:
    find_bitcoind()  # raises with a hint to run scripts/install-node.sh; never skips


@pytest.fixture(scope="module")
def node() -> Iterator[RegtestNode]:
    """User/password node with wallet "w", 101 blocks mined to it, and ZMQ enabled."""
    _require_bitcoind()
    with RegtestNode(zmq=True) as n:
        n.create_wallet()
        n.generate(101)
        yield n


@pytest.fixture(scope="module")
def cookie_node() -> Iterator[RegtestNode]:
    """Cookie-auth node without a wallet."""
    _require_bitcoind()
    with RegtestNode(use_cookie=True) as n:
        yield n


def test_chain_and_block_template(node: RegtestNode) -> None:
    assert node.rpc("getblockcount") == 101
    assert node.rpc("getblockchaininfo")["chain"] == "regtest"
    template = node.rpc("getblocktemplate", {"rules": ["segwit"]})
    assert template["height"] == 102
    assert template["previousblockhash"] == node.rpc("getbestblockhash")
    assert template["coinbasevalue"] == 50 * 100_000_000
    # OP_RETURN, push 36, witness commitment header aa21a9ed, 32-byte hash
    assert template["default_witness_commitment"].startswith("6a24aa21a9ed")
    assert len(template["default_witness_commitment"]) == 2 * 38


def test_generated_coins_belong_to_wallet(node: RegtestNode) -> None:
    # Only the coinbase of block 1 has matured (100 confirmations).
    assert node.rpc("getbalance", wallet="w") == Decimal("50")


@pytest.mark.parametrize(
    ("address_type", "prefix"),
    [
        ("legacy", ("m", "n")),
        ("p2sh-segwit", ("2",)),
        ("bech32", ("bcrt1q",)),
        ("bech32m", ("bcrt1p",)),
    ],
)
def test_address_types(node: RegtestNode, address_type: str, prefix: tuple[str, ...]) -> None:
    address = node.new_address(address_type)
    assert address.startswith(prefix)
    info = node.rpc("getaddressinfo", address, wallet="w")
    assert info["ismine"] is True
    assert node.rpc("validateaddress", address)["isvalid"] is True


def test_rpc_error(node: RegtestNode) -> None:
    with pytest.raises(RPCError) as excinfo:
        node.rpc("nosuchmethod")
    assert excinfo.value.code == -32601
    with pytest.raises(RPCError) as excinfo:
        node.rpc("getblockhash", 10_000)
    assert excinfo.value.code == -8


def test_cli_and_zmq(node: RegtestNode) -> None:
    assert node.cli("getblockcount") == str(node.rpc("getblockcount"))
    assert node.zmq_url is not None
    notifications = node.rpc("getzmqnotifications")
    assert {"type": "pubhashblock", "address": node.zmq_url, "hwm": 1000} in notifications


def test_cookie_mode(cookie_node: RegtestNode) -> None:
    assert cookie_node.cookie_file.is_file()
    assert cookie_node.rpc_user == "__cookie__"
    assert cookie_node.rpc("listwallets") == []
    # Without a wallet, blocks pay to a fixed address.
    hashes = cookie_node.generate(2)
    assert len(hashes) == 2
    assert cookie_node.rpc("getblockcount") == 2
    assert cookie_node.cli("getbestblockhash") == hashes[-1]


def test_restart_keeps_chain_and_url(cookie_node: RegtestNode) -> None:
    url, old_password = cookie_node.rpc_url, cookie_node.rpc_password
    height = cookie_node.rpc("getblockcount")
    cookie_node.restart()
    assert cookie_node.rpc_url == url
    assert cookie_node.rpc_password != old_password  # a new cookie per start
    assert cookie_node.rpc("getblockcount") == height


def test_find_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    _require_bitcoind()
    assert find_bitcoin_cli().endswith("bitcoin-cli")
    monkeypatch.setenv("BITCOIND", "/nonexistent/bitcoind")
    with pytest.raises(RuntimeError, match="BITCOIND"):
        find_bitcoind()
