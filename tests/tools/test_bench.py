"""`solopool-bench` correctness: it counts exactly what the pool answered, the fan-out test gets
one sample per block, the connection test holds what it opened, and the fake node answers the
RPCs the pool needs. No timing is asserted: the speed figures live in docs/performance.md."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from pool.app import Pool
from pool.config import StratumV2Config
from pool.consensus.address import address_to_script
from pool.consensus.merkle import merkle_root
from pool.consensus.serialize import sha256d
from pool.jobs import Template
from pool.node import NodeClient, NodeRPCError
from solopool_tools.bench.client import Miner, reject_code
from solopool_tools.bench.fakenode import (
    GENESIS,
    FakeNode,
    FakeNodeServer,
    load_template,
    with_extra_transactions,
)
from solopool_tools.bench.report import percentile, rows_for, summarize_ms, table
from solopool_tools.bench.runs import (
    ConnectionSettings,
    FanoutSettings,
    NodeSettings,
    SubmitSettings,
    derived_addresses,
    miner_users,
    parse_url,
    run_connections,
    run_fanout,
    run_submit,
)
from solopool_tools.bench.sv2client import Sv2Miner
from tests.support.fixtures import pool_config
from tests.support.node import RegtestNode
from tests.support.paths import DATA_DIR

TEMPLATE = DATA_DIR / "gbt_mainnet.json"
RPC_USER = "bench"
RPC_PASSWORD = "bench-password"
MAINNET_ADDRESS = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"


@dataclass
class FakeEndpoint:
    """What `pool_config` reads from a node: the fake node's RPC, no ZMQ."""

    rpc_url: str
    rpc_user: str = RPC_USER
    rpc_password: str = RPC_PASSWORD
    zmq_url: str | None = None


@pytest.fixture
def fake_node() -> Iterator[FakeNodeServer]:
    template = load_template(TEMPLATE)
    node = FakeNode(template, "main", longpoll_seconds=0.5, rpc_user=RPC_USER,
                    rpc_password=RPC_PASSWORD)
    server = FakeNodeServer(node)
    server.start_thread()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def zmq_node() -> Iterator[RegtestNode]:
    with RegtestNode(zmq=True) as node:
        node.generate(1)
        yield node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pool_url(pool: Any) -> str:
    return f"stratum+tcp://127.0.0.1:{pool.stratum.port}"


def fake_settings(server: FakeNodeServer) -> NodeSettings:
    return NodeSettings(server.url, RPC_USER, RPC_PASSWORD)


# --- the fake node -------------------------------------------------------------------------------


async def test_fake_node_answers_what_the_pool_asks(fake_node: FakeNodeServer) -> None:
    client = NodeClient(fake_node.url, rpc_user=RPC_USER, rpc_password=RPC_PASSWORD, timeout=10)
    try:
        info = await client.get_blockchain_info()
        assert info["chain"] == "main" and info["initialblockdownload"] is False
        gbt = await client.get_block_template()
        template = Template.from_rpc(gbt)
        assert template.height == 840000 and template.bits == 0x17034219
        assert await client.get_best_block_hash() == template.prev_hash
        assert await client.get_block_hash(0) == GENESIS["main"]
        assert await client.get_block_hash(template.height - 1) == template.prev_hash

        valid = await client.validate_address(MAINNET_ADDRESS)
        assert valid["isvalid"] is True
        assert valid["scriptPubKey"] == address_to_script(MAINNET_ADDRESS, "main").hex()
        invalid = await client.validate_address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
        assert invalid["isvalid"] is False and invalid["error"]

        # A longpoll on the current template is held, then answered with the same template.
        again = await client.get_block_template(longpollid=gbt["longpollid"], timeout=10)
        assert again["previousblockhash"] == gbt["previousblockhash"]

        header = bytes(80)
        assert await client.submit_block((header + b"\x00").hex()) is None
        assert await client.get_block_hash(template.height) == sha256d(header)[::-1].hex()
        with pytest.raises(NodeRPCError) as excinfo:
            await client.call("nosuchmethod")
        assert excinfo.value.code == -32601
    finally:
        client.close()
    stats = fake_node.node.stats()
    assert stats["submitted_blocks"] == 1
    assert stats["calls"]["getblocktemplate"] == 2
    assert stats["calls"]["validateaddress"] == 2


def test_fake_node_refuses_wrong_credentials(fake_node: FakeNodeServer) -> None:
    from solopool_tools.bench.rpc import BenchRPCError, RPCClient

    with pytest.raises(BenchRPCError) as excinfo:
        RPCClient(fake_node.url, RPC_USER, "wrong").call("getblockchaininfo")
    assert excinfo.value.code == 401
    assert RPCClient(fake_node.url, RPC_USER, RPC_PASSWORD).call("getblockcount") == 839999


def test_extra_transactions_keep_the_template_consistent() -> None:
    base = load_template(TEMPLATE)
    assert with_extra_transactions(base, 0) is base
    padded = with_extra_transactions(base, 3000)
    txs = padded["transactions"]
    assert len(txs) == len(base["transactions"]) + 3000
    for tx in txs[-3:]:
        assert sha256d(bytes.fromhex(tx["data"]))[::-1].hex() == tx["txid"]
    wtxids = [bytes(32)] + [bytes.fromhex(tx["hash"])[::-1] for tx in txs]
    commitment = "6a24aa21a9ed" + sha256d(merkle_root(wtxids) + bytes(32)).hex()
    assert padded["default_witness_commitment"] == commitment
    template = Template.from_rpc(padded)
    assert len(template.merkle_branch) == 12  # 3,006 leaves: a mainnet-sized branch


async def test_fake_node_command_serves_until_told_to_stop(tmp_path: Path) -> None:
    from tests.support.node import free_port

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "solopool_tools.bench", "fake-node", "--template", str(TEMPLATE),
        "--port", str(port), "--max-seconds", "60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        banner = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"height 840000" in banner
        from solopool_tools.bench.rpc import RPCClient

        rpc = RPCClient(f"http://127.0.0.1:{port}")
        info = await asyncio.to_thread(rpc.call, "getblockchaininfo")
        assert info["chain"] == "main"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0


# --- submit --------------------------------------------------------------------------------------


async def test_submit_counts_what_the_pool_answered(
    fake_node: FakeNodeServer, start_pool: Any
) -> None:
    pool = await start_pool(
        FakeEndpoint(fake_node.url), start_difficulty=1024, max_invalid_shares_per_minute=10**7
    )
    accepted_before, rejected_before = pool.shares.accepted, pool.shares.rejected
    result = await run_submit(
        SubmitSettings(
            url=pool_url(pool), miners=4, seconds=1.5, window=4, chain="main",
            node=fake_settings(fake_node),
        )
    )
    assert result["connected"] == 4
    assert result["sent"] > 0
    assert result["unanswered"] == 0 and result["closed_by_pool"] == 0
    assert result["responses"] == result["sent"]
    assert result["accepted"] + result["rejected"] == result["responses"]
    assert result["accepted"] == pool.shares.accepted - accepted_before
    assert result["rejected"] == pool.shares.rejected - rejected_before
    # Random nonces at difficulty 1024 on a mainnet template: all low difficulty.
    assert result["reject_codes"] == {"23": result["rejected"]}
    assert result["window_responses"] <= result["responses"]
    assert sum(result["per_second"]) == result["window_responses"]
    assert result["latency_ms"]["count"] == result["window_responses"]
    # The pool's node is not asked anything per share.
    assert result["node_calls_during_run"] is not None
    assert result["node_calls_during_run"] < result["responses"] // 10
    assert result["pool"]["pid"] is not None  # the in-process pool: found by its port


async def test_submit_valid_shares_are_accepted(
    fake_node: FakeNodeServer, start_pool: Any
) -> None:
    pool = await start_pool(
        FakeEndpoint(fake_node.url),
        start_difficulty=1e-8, min_difficulty=1e-8, max_difficulty=1e-8,
    )
    accepted_before, rejected_before = pool.shares.accepted, pool.shares.rejected
    result = await run_submit(
        SubmitSettings(
            url=pool_url(pool), miners=3, seconds=1.0, window=2, chain="main",
            valid_ratio=1.0,
        )
    )
    assert result["responses"] == result["sent"] > 0
    assert result["valid"]["mined"] == result["sent"]
    assert result["valid"]["failed"] == result["valid"]["infeasible"] == 0
    assert result["rejected"] == 0, result["reject_codes"]
    assert result["accepted"] == result["responses"]
    assert pool.shares.accepted - accepted_before == result["accepted"]
    assert pool.shares.rejected == rejected_before


async def test_submit_command_with_client_processes(
    fake_node: FakeNodeServer, start_pool: Any
) -> None:
    pool = await start_pool(
        FakeEndpoint(fake_node.url), start_difficulty=1024, max_invalid_shares_per_minute=10**7
    )
    accepted_before, rejected_before = pool.shares.accepted, pool.shares.rejected
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "solopool_tools.bench", "submit", "--url", pool_url(pool),
        "--miners", "4", "--seconds", "1", "--window", "2", "--client-procs", "2",
        "--chain", "main", "--json", "--max-seconds", "90",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 100)
    assert proc.returncode == 0, stderr.decode()
    result = json.loads(stdout)
    assert b"responses/s" in stderr  # the table
    assert result["client_procs"] == 2 and len(result["client"]["cpu_seconds"]) == 2
    assert result["connected"] == 4
    assert result["responses"] == result["sent"] > 0
    assert result["accepted"] + result["rejected"] == result["responses"]
    assert result["accepted"] == pool.shares.accepted - accepted_before
    assert result["rejected"] == pool.shares.rejected - rejected_before


async def test_submit_refuses_a_regtest_easy_target(zmq_node: RegtestNode, start_pool: Any) -> None:
    from solopool_tools.bench.client import BenchError

    pool = await start_pool(zmq_node)
    with pytest.raises(BenchError, match="regtest-easy"):
        await run_submit(
            SubmitSettings(url=pool_url(pool), miners=2, seconds=1, chain="regtest")
        )
    assert pool.shares.accepted == pool.shares.rejected == 0


# --- connections and fan-out ---------------------------------------------------------------------


async def test_connections_holds_what_it_opened(
    fake_node: FakeNodeServer, start_pool: Any
) -> None:
    pool = await start_pool(FakeEndpoint(fake_node.url))
    result = await run_connections(
        ConnectionSettings(
            url=pool_url(pool), miners=30, hold_seconds=0.5, settle_seconds=0.2, chain="main",
            connect_concurrency=8,
        )
    )
    assert result["ready"] == result["held"] == 30
    assert result["failed"] == 0 and not result["errors"]
    assert result["rss_before_kib"] is not None and result["pool_fds"] is not None
    assert result["connects_per_second"] > 0 and result["handshakes_per_second"] > 0
    for _ in range(100):
        if not pool.stratum.sessions:
            break
        await asyncio.sleep(0.05)
    assert not pool.stratum.sessions  # everything was closed again


@pytest.mark.parametrize("use_zmq", [True, False], ids=["zmq", "rpc-return"])
async def test_fanout_one_sample_per_block(
    zmq_node: RegtestNode, start_pool: Any, use_zmq: bool
) -> None:
    pool = await start_pool(zmq_node)
    height = zmq_node.rpc("getblockcount")
    result = await run_fanout(
        FanoutSettings(
            url=pool_url(pool), stages=[8, 20], blocks=2, interval=0.2, block_timeout=15,
            settle_seconds=0.2, use_zmq=use_zmq, addresses=3,
            node=NodeSettings(zmq_node.rpc_url, zmq_node.rpc_user, zmq_node.rpc_password),
        )
    )
    assert zmq_node.rpc("getblockcount") == height + 4
    assert result["reference"] == ("zmq hashblock" if use_zmq else "generatetoaddress return")
    assert [s["miners"] for s in result["stages"]] == [8, 20]
    for stage in result["stages"]:
        assert stage["blocks"] == 2 and len(stage["samples"]) == 2
        assert stage["incomplete"] == 0 and stage["missing"] == 0
        assert stage["last_ms"]["count"] == 2
        for sample in stage["samples"]:
            assert sample["received"] == sample["miners"] == stage["miners"]
            assert sample["zmq"] is use_zmq
            assert sample["first_ms"] <= sample["median_ms"] <= sample["last_ms"]
    text = table([result])
    assert "fan-out: 20 miners, 3 payout address(es)" in text


async def test_fanout_on_the_fake_node_with_a_mainnet_template(
    fake_node: FakeNodeServer, start_pool: Any
) -> None:
    pool = await start_pool(FakeEndpoint(fake_node.url))
    before = fake_node.node.height
    result = await run_fanout(
        FanoutSettings(
            url=pool_url(pool), stages=[10], blocks=2, interval=0.2, block_timeout=15,
            settle_seconds=0.2, node=fake_settings(fake_node),
        )
    )
    assert fake_node.node.height == before + 2
    assert result["reference"] == "the fake node's new template"  # it has no ZMQ
    (stage,) = result["stages"]
    assert stage["incomplete"] == 0 and len(stage["samples"]) == 2
    assert all(s["received"] == 10 for s in stage["samples"])
    assert pool.jobs.template is not None and pool.jobs.template.height == before + 2


async def test_all_command_runs_each_test_and_reports_failures(
    zmq_node: RegtestNode, start_pool: Any, tmp_path: Path
) -> None:
    pool = await start_pool(zmq_node)
    out = tmp_path / "all.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "solopool_tools.bench", "all", "--url", pool_url(pool),
        "--node-rpc", zmq_node.rpc_url, "--node-user", zmq_node.rpc_user,
        "--node-password", zmq_node.rpc_password, "--miners", "2", "--seconds", "1",
        "--connections", "12", "--hold", "0.2", "--fanout-miners", "6", "--blocks", "2",
        "--out", str(out), "--max-seconds", "120",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 150)
    assert proc.returncode == 0, stderr.decode()
    result = json.loads(out.read_text())
    by_kind = {r["bench"]: r for r in result["results"]}
    # Random submits on regtest would be blocks: refused, and said so in the table.
    assert "regtest-easy" in by_kind["submit"]["error"]
    assert b"FAILED" in stdout
    assert by_kind["connections"]["ready"] == by_kind["connections"]["held"] == 12
    assert by_kind["fanout"]["stages"][0]["incomplete"] == 0
    report = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "solopool_tools.bench", "report", str(out), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    report_out, _ = await asyncio.wait_for(report.communicate(), 60)
    assert len(json.loads(report_out)["results"]) == 3


# --- submit over Stratum V2 ----------------------------------------------------------------------


@pytest_asyncio.fixture
async def sv2_pool(fake_node: FakeNodeServer, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Factory: a started in-process pool on the fake node with its SV2 port open."""
    pools: list[Pool] = []

    async def factory(**stratum: Any) -> Pool:
        data_dir = tmp_path / f"data{len(pools)}"
        config = pool_config(FakeEndpoint(fake_node.url), data_dir, **stratum)
        sv2 = StratumV2Config(
            port=free_port(), host="127.0.0.1", authority_key_file=data_dir / "sv2_authority.key"
        )
        pool = Pool(dataclasses.replace(config, stratum_v2=sv2))
        await pool.start()
        pools.append(pool)
        return pool

    yield factory
    for pool in pools:
        async with asyncio.timeout(90):
            await pool.stop()


def sv2_url(pool: Pool) -> str:
    assert pool.sv2 is not None
    return f"stratum2+tcp://127.0.0.1:{pool.sv2.port}"


@pytest.mark.parametrize("channel", ["standard", "extended"])
async def test_sv2_submit_counts_what_the_pool_answered(
    fake_node: FakeNodeServer, sv2_pool: Callable[..., Any], channel: str
) -> None:
    pool = await sv2_pool(start_difficulty=1024, max_invalid_shares_per_minute=10**7)
    accepted_before, rejected_before = pool.shares.accepted, pool.shares.rejected
    result = await run_submit(
        SubmitSettings(
            url=sv2_url(pool), miners=4, seconds=1.5, window=4, chain="main",
            node=fake_settings(fake_node), sv2_channel=channel,
        )
    )
    assert result["protocol"] == f"sv2 {channel}"
    assert result["connected"] == 4
    assert result["sent"] > 0
    assert result["unanswered"] == 0 and result["closed_by_pool"] == 0
    assert result["responses"] == result["sent"]
    assert result["accepted"] + result["rejected"] == result["responses"]
    assert result["accepted"] == pool.shares.accepted - accepted_before
    assert result["rejected"] == pool.shares.rejected - rejected_before
    # Random nonces at difficulty 1024 on a mainnet template: all low difficulty.
    assert result["reject_codes"] == {"difficulty-too-low": result["rejected"]}
    assert sum(result["per_second"]) == result["window_responses"]
    assert result["latency_ms"]["count"] == result["window_responses"]
    assert result["node_calls_during_run"] is not None
    assert result["node_calls_during_run"] < result["responses"] // 10
    assert result["pool"]["pid"] is not None  # the in-process pool: found by its SV2 port
    assert "sv2 " + channel in table([result])


@pytest.mark.parametrize("channel", ["standard", "extended"])
async def test_sv2_submit_valid_shares_are_accepted(
    sv2_pool: Callable[..., Any], channel: str
) -> None:
    # Real shares: the client builds the header from the channel's job (its merkle root, or
    # the coinbase prefix + extranonce prefix + its own extranonce + suffix and the path).
    pool = await sv2_pool(start_difficulty=1e-8, min_difficulty=1e-8, max_difficulty=1e-8)
    accepted_before, rejected_before = pool.shares.accepted, pool.shares.rejected
    result = await run_submit(
        SubmitSettings(
            url=sv2_url(pool), miners=3, seconds=1.0, window=2, chain="main", valid_ratio=1.0,
            sv2_channel=channel,
        )
    )
    assert result["responses"] == result["sent"] > 0
    assert result["valid"]["mined"] == result["sent"]
    assert result["rejected"] == 0, result["reject_codes"]
    assert result["accepted"] == result["responses"]
    assert pool.shares.accepted - accepted_before == result["accepted"]
    assert pool.shares.rejected == rejected_before


async def test_sv2_submit_command_with_client_processes(sv2_pool: Callable[..., Any]) -> None:
    pool = await sv2_pool(start_difficulty=1024, max_invalid_shares_per_minute=10**7)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "solopool_tools.bench", "submit", "--url", sv2_url(pool),
        "--sv2-channel", "extended", "--miners", "4", "--seconds", "1", "--window", "2",
        "--client-procs", "2", "--chain", "main", "--json", "--max-seconds", "90",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 100)
    assert proc.returncode == 0, stderr.decode()
    result = json.loads(stdout)
    assert result["protocol"] == "sv2 extended" and result["client_procs"] == 2
    assert result["connected"] == 4
    assert result["responses"] == result["sent"] > 0
    assert result["reject_codes"] == {"difficulty-too-low": result["rejected"]}


async def test_sv2_url_only_for_the_submit_test() -> None:
    from solopool_tools.bench.client import BenchError

    url = "stratum2+tcp://127.0.0.1:1/9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh"
    target = parse_url(url)
    assert target.sv2 and target.port == 1 and not parse_url("127.0.0.1:1").sv2
    with pytest.raises(BenchError, match="Stratum V1 only"):
        await run_connections(ConnectionSettings(url=url, miners=1))
    with pytest.raises(BenchError, match="Stratum V1 only"):
        await run_fanout(FanoutSettings(url=url, node=NodeSettings("http://127.0.0.1:1")))


# --- pieces --------------------------------------------------------------------------------------


def test_parse_url_and_users() -> None:
    assert parse_url("stratum+tcp://127.0.0.1:3333").port == 3333
    assert parse_url("localhost:4000").host == "localhost"
    from solopool_tools.bench.client import BenchError

    with pytest.raises(BenchError):
        parse_url("http://127.0.0.1:3333")
    with pytest.raises(BenchError):
        parse_url("stratum+tcp://127.0.0.1")
    addresses = derived_addresses("regtest", 3)
    assert len(set(addresses)) == 3
    assert all(address_to_script(a, "regtest")[:2] == b"\x00\x14" for a in addresses)
    users = miner_users(SubmitSettings(addresses=2), 4, "main")
    assert [u.split(".")[1] for u in users] == ["b0", "b1", "b2", "b3"]
    assert users[0].split(".")[0] == users[2].split(".")[0] != users[1].split(".")[0]
    assert miner_users(SubmitSettings(user="X"), 2, "main") == ["X.b0", "X.b1"]


def test_reject_reasons_in_every_pool_style() -> None:
    assert reject_code({"id": 1, "result": None, "error": [23, "low", None]}) == "23"
    assert reject_code({"id": 1, "result": False, "error": None, "reject-reason": "Stale"}) == (
        "Stale"
    )
    assert reject_code({"id": 1, "result": None, "error": {"code": 21, "message": "x"}}) == "21"
    assert reject_code({"id": 1, "result": False, "error": None}) == "false"


def test_percentiles_and_table() -> None:
    assert percentile([], 50) is None
    assert percentile([1.0], 99) == 1.0
    assert percentile([0.0, 10.0], 50) == 5.0
    summary = summarize_ms([0.001, 0.002, 0.003])
    assert summary["p50"] == 2.0 and summary["max"] == 3.0 and summary["count"] == 3
    failed = rows_for({"bench": "submit", "error": "nope"})
    assert ("  FAILED", "nope") in failed
    assert "FAILED  nope" in table([{"bench": "submit", "error": "nope"}])
    assert table([]) == "(no results)"


def test_wait_quiet_is_bounded() -> None:
    from solopool_tools.bench.cli import wait_quiet

    assert wait_quiet(threshold=1000.0, max_seconds=5, window=0.05) == 0  # quiet at once
    assert wait_quiet(threshold=-1.0, max_seconds=0.2, window=0.05) == 0  # never: gives up


def test_miner_protocol_has_slots() -> None:
    # 10,000 of them live in one client process.
    assert Miner.__dictoffset__ == 0
    assert Sv2Miner.__dictoffset__ == 0
