"""New-block sends from two threads (`StratumServer._broadcast_threaded`): every miner, plain
or TLS, gets the new block's job intact, and a share on it is a block the node accepts; the
direct-send helper leaves to the transport whatever the kernel does not take."""

from __future__ import annotations

import os
import socket

import pytest

from pool.stratum import server as stratum_server
from pool.stratum.server import _send_direct
from tests.support.fixtures import PoolFactory
from tests.support.mining import new_block_job, wait_height
from tests.support.node import RegtestNode, free_port
from tests.support.shares import find_nonce
from tests.support.stratum_client import (
    StratumTestClient,
    client_tls_context,
    connect,
    last_notify,
    submit_params,
)


async def test_new_block_reaches_plain_and_tls_miners_from_two_threads(
    node: RegtestNode, start_pool: PoolFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stratum_server, "THREADED_SEND_MINIMUM", 1)
    pool = await start_pool(node, tls_port=free_port())
    assert pool.stratum.sender is not None or (os.cpu_count() or 1) == 1
    pool.stratum.enable_threaded_sends()  # also on a 1-core machine, for this test
    user = node.new_address("bech32")
    clients: list[StratumTestClient] = []
    for i in range(6):
        c = await connect("127.0.0.1", pool.stratum.port)
        await c.handshake(f"{user}.plain{i}")
        clients.append(c)
    tls_port = pool.stratum.tls_port
    assert tls_port is not None
    for i in range(2):
        c = await connect("127.0.0.1", tls_port, client_tls_context())
        await c.handshake(f"{user}.tls{i}")
        clients.append(c)
    for c in clients:
        await c.notification("mining.notify")

    calls: list[int] = []
    original = stratum_server._send_direct

    def counting(items: list[tuple[int, bytes, object]]) -> object:
        calls.append(len(items))
        return original(items)  # type: ignore[arg-type]

    monkeypatch.setattr(stratum_server, "_send_direct", counting)
    node.generate(1)
    tip = node.rpc("getbestblockhash")
    for c in clients:
        await new_block_job(c, tip)
    # Both halves ran, and only the 6 plain connections were written to directly.
    assert len(calls) >= 2 and sum(calls[-2:]) == 6

    # The job sent from the other thread is intact: a block on it is accepted (TLS miner too).
    for c in (clients[0], clients[-1]):
        height = node.rpc("getblockcount")
        notify = last_notify(c)
        en2 = bytes(8)
        nonce = find_nonce(notify, c.extranonce1, en2, meets=True)
        worker = f"{user}.x"
        res = await c.request("mining.submit", submit_params(worker, notify, en2, nonce))
        assert res["result"] is True, res
        await wait_height(node, height + 1)
        for other in clients:
            await new_block_job(other, node.rpc("getbestblockhash"))
    for c in clients:
        await c.close()


def test_send_direct_hands_back_what_the_kernel_did_not_take() -> None:
    a, b = socket.socketpair()
    full, reader = socket.socketpair()
    gone, peer = socket.socketpair()
    try:
        for s in (a, full, gone):
            s.setblocking(False)
        # Fill `full` until the kernel takes no more.
        try:
            while True:
                full.send(b"x" * 65536)
        except BlockingIOError:
            pass
        peer.close()
        line = b'{"id":null,"method":"mining.notify","params":[]}\n'
        tokens = [object(), object(), object()]
        rest = _send_direct([  # type: ignore[list-item]
            (a.fileno(), line, tokens[0]),
            (full.fileno(), line, tokens[1]),
            (gone.fileno(), line, tokens[2]),
        ])
        assert b.recv(1000) == line  # sent in full: nothing handed back
        assert rest == [(tokens[1], line), (tokens[2], line)]
    finally:
        for s in (a, b, full, reader, gone):
            s.close()
