"""Text from miners cannot forge or hide log lines, alerts, webhooks or API answers: the sanitiser
on known vectors, then the attacks against a real `solopool` process with its API and a webhook."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pool.logsafety import MINER_TEXT_MAX, is_plain, miner_text
from pool.stratum.session import UNPLAIN_USERNAME
from tests.support.node import RegtestNode, free_port
from tests.support.pool_process import PoolProcess, write_config
from tests.support.shares import find_nonce
from tests.support.stratum_client import StratumTestClient
from tests.support.watch import fetch

# Characters that end, rewrite or hide a line in a terminal, a log viewer or a page.
HOSTILE = [
    "\n", "\r", "\t", "\x00", "\x1b", "\x7f",  # C0 (newline, return, tab, NUL, ESC) and DEL
    "\x85", "\x9b",  # C1: next line, control sequence introducer
    "\u2028", "\u2029",  # line and paragraph separators
    "\u202e", "\u2066", "\u200b", "\ufeff",  # bidi override and isolate, zero-width, BOM
    "\ud800",  # a lone surrogate (json.loads makes one from "\ud800")
    "\xa0",  # a no-break space: looks like a space, is not one
]
FORGED = "2026-01-01 00:00:00,000 WARNING pool.app: BLOCK ACCEPTED forged"


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("bc1qexample.rig1", "bc1qexample.rig1"),
        ("bitaxe/BM1370/v2.9.0", "bitaxe/BM1370/v2.9.0"),
        ("my rig · garage ü 矿机 ⛏", "my rig · garage ü 矿机 ⛏"),  # letters and symbols stay
        ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>"),  # the page escapes it
        (f"w\n{FORGED}", f"w{FORGED}"),
        ("a\r\nb\tc\x00d\x1b[2Je\x7ff", "ab" "cd[2Jef"),
        ("x\x85y\x9bz", "xyz"),
        ("line\u2028para\u2029end", "lineparaend"),
        ("\u202egnp.exe\u2066\u200b\ufeff", "gnp.exe"),
        ("lone\ud800surrogate", "lonesurrogate"),
        ("no\xa0break", "nobreak"),
        ("\n\r\t", ""),
    ],
)
def test_miner_text_vectors(text: str, clean: str) -> None:
    assert miner_text(text) == clean
    assert is_plain(clean) and is_plain(text) == (text == clean)


def test_miner_text_cuts_to_a_length() -> None:
    assert miner_text("a" * 1000) == "a" * MINER_TEXT_MAX
    assert miner_text("\n" * 1000 + "abc", 2) == "ab"
    assert miner_text("é" * 300, 10) == "é" * 10
    plain = "x" * 50
    assert miner_text(plain) is plain  # no copy for the usual case (every submit)


def test_every_hostile_character_is_removed() -> None:
    for ch in HOSTILE:
        assert not is_plain(ch), repr(ch)
        assert miner_text(f"a{ch}b") == "ab", repr(ch)


# --- against a real pool process -----------------------------------------------------------------

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \S+: ")


async def test_miner_text_cannot_forge_logs_alerts_or_api(
    node: RegtestNode, tmp_path: Path
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"

    port, api_port = free_port(), free_port()
    # Worker names as long as the hostile ones (a longer name would count under the authorized
    # one, and the cleaning of the submitted name would go untested).
    config = write_config(
        tmp_path / "solopool.toml", node, port, api_port=api_port, max_worker_name_length=256
    )
    config.write_text(config.read_text() + f'\n[notify]\nwebhook_urls = ["{hook_url}"]\n')
    proc = await PoolProcess.start(config, "--log-level", "DEBUG")
    address = node.new_address("bech32")
    try:
        await proc.wait_listening(port)

        # 1. Usernames with a hostile character: each refused with a clear error, then closed.
        async def refused(ch: str) -> None:
            client = await StratumTestClient.connect("127.0.0.1", port)
            await client.request("mining.subscribe", ["x"])
            reply = await client.request("mining.authorize", [f"{address}.w{ch}{FORGED}", "x"])
            assert reply["result"] is not True and reply["error"][0] == 24, (repr(ch), reply)
            assert reply["error"][1] == UNPLAIN_USERNAME
            shown = await client.notification("client.show_message")
            assert shown["params"] == [UNPLAIN_USERNAME]
            async with asyncio.timeout(15):
                while not client.closed:
                    await asyncio.sleep(0.02)

        await asyncio.gather(*(refused(ch) for ch in HOSTILE))
        await proc.wait_log(f"refused authorize '{address}.w{FORGED}'")

        # 2. A hostile user agent and 3. a hostile worker name in a block-finding submit.
        client = await StratumTestClient.connect("127.0.0.1", port)
        agent = "bitaxe/BM1370/v2.9.0\n" + FORGED + "\x1b[31m\u202e\u2028\ud800"
        subscribed = await client.request("mining.subscribe", [agent])
        client.extranonce1 = bytes.fromhex(subscribed["result"][1])
        user = f"{address}.rig"
        assert (await client.request("mining.authorize", [user, "x"]))["result"] is True
        notify = (await client.notification("mining.notify"))["params"]
        en2 = bytes(subscribed["result"][2])  # the size the pool gave
        nonce = find_nonce(notify, client.extranonce1, en2, meets=True)
        submitted_as = f"{user}\n{FORGED}\u2028\x1b]0;title\x07"
        params = [submitted_as, notify[0], en2.hex(), notify[7], f"{nonce:08x}"]
        reply = await client.request("mining.submit", params)
        assert reply["result"] is True, reply
        accepted = await proc.wait_log("BLOCK ACCEPTED height")
        clean_worker = miner_text(submitted_as)
        assert clean_worker == f"{user}{FORGED}]0;title"
        assert f"worker={clean_worker} " in accepted
        await proc.wait_log(f"authorized {user} (bitaxe/BM1370/v2.9.0{FORGED}[31m)")

        async with asyncio.timeout(15):
            while not any(r.get("event") == "block_found" for r in received):
                await asyncio.sleep(0.05)
        workers = json.loads(await asyncio.to_thread(
            fetch, f"http://127.0.0.1:{api_port}/api/workers"
        ))["workers"]
        blocks = await asyncio.to_thread(fetch, f"http://127.0.0.1:{api_port}/api/blocks")
        await client.close()
        proc.proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
    finally:
        await proc.kill()
        await runner.cleanup()

    # Every line of the log is a real log line: nothing a miner sent started one of its own.
    output = proc.output
    for line in output.splitlines(keepends=True):
        assert LOG_LINE.match(line), repr(line)
    assert not output.count("\nBLOCK ACCEPTED") and output.count("BLOCK ACCEPTED height") == 1
    for ch in HOSTILE[1:]:  # and no hidden character anywhere (\n only ends lines)
        assert ch not in output, repr(ch)
    assert "Logging error" not in output and "Traceback" not in output

    # The webhook and the API carry the same clean text.
    alert = next(r for r in received if r["event"] == "block_found")
    assert alert["message"].startswith(f"{clean_worker} found block")
    assert alert["worker"] == clean_worker
    for ch in HOSTILE:
        assert all(ch not in json.dumps(r, ensure_ascii=False) for r in received), repr(ch)
    (worker,) = workers
    assert worker["user_agent"] == f"bitaxe/BM1370/v2.9.0{FORGED}[31m"
    assert worker["name"] in (user, clean_worker)
    assert clean_worker in blocks and "\\n" not in blocks and "\\u" not in blocks
