"""Listeners: IPv6 (`::1`), dual stack (`::`), and stratum+ssl with a self-signed or given
certificate, each proven by a real client mining a block on a regtest node."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any

import pytest

from pool.app import Pool
from pool.config import ConfigError, StratumV2Config, parse_config
from pool.stratum.tls import ensure_self_signed
from pool.sv2.codec import OpenStandardMiningChannelSuccess
from tests.support.fixtures import PoolFactory, pool_config
from tests.support.mining import mine_one_block
from tests.support.node import RegtestNode, free_port
from tests.support.stratum_client import StratumTestClient, client_tls_context, connect
from tests.support.sv2_client import Sv2TestClient, open_standard


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# The workplace has IPv6 on loopback; a machine without it must not pretend these tests passed.
assert ipv6_loopback(), "these tests need IPv6 on the loopback interface (::1)"


def free_port_v6() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind(("::1", 0))
        return int(sock.getsockname()[1])


def peer_of(client: StratumTestClient) -> Any:
    return client.writer.get_extra_info("peername")


async def test_ipv6_loopback_mines_a_block(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node, host="::1")
    sockname = pool.stratum._server.sockets[0].getsockname()
    assert sockname[0] == "::1"
    client = await connect("::1", pool.stratum.port)
    assert peer_of(client)[0] == "::1"
    await mine_one_block(client, node, node.new_address("bech32") + ".v6")
    await client.close()


async def test_dual_stack_takes_ipv4_and_ipv6(node: RegtestNode, start_pool: PoolFactory) -> None:
    pool = await start_pool(node, host="::")
    sock = pool.stratum._server.sockets[0]
    assert sock.family == socket.AF_INET6
    assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    port = pool.stratum.port
    v6 = await connect("::1", port)
    v4 = await connect("127.0.0.1", port)
    user = node.new_address("bech32")
    await mine_one_block(v4, node, user + ".v4")
    await mine_one_block(v6, node, user + ".v6")
    assert {s.peer.rsplit(":", 1)[0] for s in pool.stratum.sessions} >= {"::1"}
    await v4.close()
    await v6.close()


async def test_tls_self_signed_certificate_made_once_and_reused(
    node: RegtestNode, start_pool: PoolFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "tlsdata"
    tls_port = free_port()
    pool = await start_pool(node, data_dir=data_dir, tls_port=tls_port)
    cert = data_dir / "tls" / "cert.pem"
    key = data_dir / "tls" / "key.pem"
    assert cert.exists() and key.exists()
    assert key.stat().st_mode & 0o077 == 0, "the private key must not be readable by others"
    assert pool.stratum.tls_port == tls_port
    first = cert.read_bytes()

    # A miner that does not verify (the common case), mining a block over TLS.
    client = await connect("127.0.0.1", tls_port, client_tls_context())
    assert client.writer.get_extra_info("ssl_object") is not None
    await mine_one_block(client, node, node.new_address("bech32") + ".tls")
    await client.close()

    # A miner given cert.pem verifies it, by name (localhost) and by address (127.0.0.1).
    verified = await connect("127.0.0.1", tls_port, client_tls_context(cert), "localhost")
    assert (await verified.request("mining.subscribe", ["verifier/1"]))["result"][2] == 8
    await verified.close()
    verified_ip = await connect("127.0.0.1", tls_port, client_tls_context(cert), "127.0.0.1")
    assert (await verified_ip.request("mining.subscribe", ["verifier/1"]))["error"] is None
    await verified_ip.close()

    # The plain port still works beside it.
    plain = await connect("127.0.0.1", pool.stratum.port)
    assert (await plain.request("mining.subscribe", ["plain/1"]))["error"] is None
    await plain.close()
    await pool.stop()

    # Second start: the same certificate, not a new one.
    again = await start_pool(node, data_dir=data_dir, tls_port=free_port())
    assert cert.read_bytes() == first
    client = await connect("127.0.0.1", again.stratum.tls_port or 0, client_tls_context(cert),
                           "localhost")
    assert (await client.request("mining.subscribe", ["verifier/1"]))["error"] is None
    await client.close()


async def test_tls_with_given_certificate_over_ipv6(
    node: RegtestNode, start_pool: PoolFactory, tmp_path: Path
) -> None:
    cert, key = tmp_path / "mine" / "c.pem", tmp_path / "mine" / "k.pem"
    assert ensure_self_signed(cert, key)
    assert not ensure_self_signed(cert, key)  # both exist: left alone
    data_dir = tmp_path / "given"
    tls_port = free_port_v6()
    pool = await start_pool(
        node, data_dir=data_dir, host="::1", tls_port=tls_port,
        tls_cert_file=str(cert), tls_key_file=str(key),
    )
    assert not (data_dir / "tls").exists(), "a given certificate must not be replaced"
    client = await connect("::1", pool.stratum.tls_port or 0, client_tls_context(cert), "::1")
    await mine_one_block(client, node, node.new_address("bech32m") + ".tls6")
    await client.close()


def test_tls_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_port .* must differ from port"):
        parse_config({"stratum": {"port": 3333, "tls_port": 3333}}, tmp_path)
    with pytest.raises(ConfigError, match="tls_cert_file and tls_key_file"):
        parse_config({"stratum": {"tls_port": 3334, "tls_cert_file": "c.pem"}}, tmp_path)
    config = parse_config(
        {"stratum": {"tls_port": 3334, "tls_cert_file": "c.pem", "tls_key_file": "k.pem"}},
        tmp_path,
    )
    assert config.stratum.tls_cert_file == tmp_path / "c.pem"
    assert not config.stratum.tls_self_signed
    off = parse_config({}, tmp_path).stratum
    assert off.tls_port == 0 and off.tls_cert_file is None


async def test_unusable_certificate_is_one_clear_error(
    node: RegtestNode, start_pool: PoolFactory, tmp_path: Path
) -> None:
    from pool.preflight import StartupError

    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(StartupError, match="cannot use TLS certificate"):
        await start_pool(
            node, tls_port=free_port(), tls_cert_file=str(bad), tls_key_file=str(bad)
        )


async def test_sv2_on_dual_stack_takes_ipv4_and_ipv6(node: RegtestNode, tmp_path: Path) -> None:
    """`[stratum_v2] host = "::"` listens as V1 does: one socket for IPv6 and IPv4."""
    config = pool_config(node, tmp_path / "data", host="::")
    sv2 = StratumV2Config(port=free_port_v6(), authority_key_file=tmp_path / "sv2.key")
    pool = Pool(dataclasses.replace(config, stratum_v2=sv2))
    await pool.start()
    try:
        assert pool.sv2 is not None
        sock = pool.sv2._server.sockets[0] if pool.sv2._server else None
        assert sock is not None and sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        for host in ("::1", "127.0.0.1"):
            client = await Sv2TestClient.connect(pool.sv2.port, host=host)
            await client.setup()
            client.send(open_standard(node.new_address("bech32") + ".dual"))
            assert isinstance(
                await client.receive_type(OpenStandardMiningChannelSuccess),
                OpenStandardMiningChannelSuccess,
            )
            client.close()
    finally:
        await pool.stop()
