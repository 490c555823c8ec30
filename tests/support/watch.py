"""Helpers for the stats/API tests: a Stratum test miner whose every share is known, and JSON and
text getters for the pool's API."""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.error
import urllib.request
from typing import Any

from pool.app import Pool
from pool.consensus.serialize import sha256d
from pool.consensus.target import hash_difficulty
from tests.support.shares import find_nonce, header_for
from tests.support.stratum_client import StratumTestClient

# Below regtest's network difficulty (4.66e-10) every hash meets the share target, so a test can
# choose whether each share is a block (about every other hash) or not.
TINY = 1e-10
PINNED = {"start_difficulty": TINY, "min_difficulty": TINY, "max_difficulty": TINY}

_extranonce2 = itertools.count(1)


class Miner:
    """A StratumTestClient that submits shares and remembers what each achieved."""

    def __init__(self, client: StratumTestClient, user: str) -> None:
        self.client = client
        self.user = user
        self.achieved: list[float] = []  # difficulty of every accepted share, in order
        self.submitted: list[tuple[list[Any], bytes, int]] = []  # (notify, en2, nonce)

    @classmethod
    async def connect(cls, pool: Pool, user: str) -> Miner:
        client = await StratumTestClient.connect("127.0.0.1", pool.stratum.port)
        await client.handshake(user)
        await client.notification("mining.notify")
        return cls(client, user)

    def notify(self) -> list[Any]:
        notes = [m for m in self.client.notifications if m["method"] == "mining.notify"]
        params: list[Any] = notes[-1]["params"]
        return params

    async def submit_on(self, notify: list[Any], en2: bytes, nonce: int) -> dict[str, Any]:
        params = [self.user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"]
        reply: dict[str, Any] = await self.client.request("mining.submit", params)
        return reply

    async def share(self, block: bool = False) -> tuple[dict[str, Any], str]:
        """Submit one share on the current job (a block, or not); returns the reply and the
        share's hash (display hex). Accepted shares are added to `achieved`."""
        notify = self.notify()
        en2 = next(_extranonce2).to_bytes(8, "big")
        nonce = find_nonce(notify, self.client.extranonce1, en2, meets=block)
        header = header_for(notify, self.client.extranonce1, en2, int(notify[7], 16), nonce)
        digest = sha256d(header)
        reply = await self.submit_on(notify, en2, nonce)
        if reply.get("result") is True:
            self.achieved.append(hash_difficulty(digest))
            self.submitted.append((notify, en2, nonce))
        return reply, digest[::-1].hex()

    async def wait_new_tip(self, old_prevhash: str, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.notify()[1] == old_prevhash:
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.client.close()


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


async def api(pool: Pool, path: str) -> Any:
    """GET a JSON API path of `pool` (off the loop: the pool answers on this loop)."""
    status, body = await asyncio.to_thread(get_json, pool.api.url + path)
    assert status == 200, (path, status, body)
    return body


async def api_status(pool: Pool, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(get_json, pool.api.url + path)


async def wait_blocks_final(pool: Pool, count: int, timeout: float = 10.0) -> None:
    """Until the pool has recorded `count` blocks, each with the node's final answer."""
    async with asyncio.timeout(timeout):
        while len(pool.stats.blocks) < count or any(
            b.status == "pending" for b in pool.stats.blocks.values()
        ):
            await asyncio.sleep(0.02)


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode(errors="replace"))
    except OSError as exc:  # includes HTTPError
        return f"<{url}: {exc}>"
