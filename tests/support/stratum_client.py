"""A plain Stratum V1 test client: raw lines out, replies matched by id, notifications queued;
and helpers to connect it (plain or TLS) and read what the pool sent it."""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
from pathlib import Path
from typing import Any


class StratumTestClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.replies: dict[Any, dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._event = asyncio.Event()
        self.closed = False
        self._task = asyncio.create_task(self._read_loop())
        self.extranonce1 = b""
        self.extranonce2_size = 0

    @classmethod
    async def connect(cls, host: str, port: int) -> StratumTestClient:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def _read_loop(self) -> None:
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                message = json.loads(line)
                if message.get("method") is not None:
                    self.notifications.append(message)
                else:
                    self.replies[message.get("id")] = message
                self._event.set()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.closed = True
            self._event.set()

    async def _wait(self, predicate: Any, timeout: float) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                found = predicate()
                if found is not None:
                    return found
                if self.closed:
                    raise ConnectionError("connection closed by the pool")
                self._event.clear()
                await self._event.wait()

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, method: str, params: list[Any], msg_id: Any = None) -> Any:
        if msg_id is None:
            msg_id = next(self._ids)
        line = json.dumps({"id": msg_id, "method": method, "params": params})
        self.writer.write(line.encode() + b"\n")
        return msg_id

    async def reply(self, msg_id: Any, timeout: float = 10.0) -> dict[str, Any]:
        result: dict[str, Any] = await self._wait(lambda: self.replies.pop(msg_id, None), timeout)
        return result

    async def request(self, method: str, params: list[Any], timeout: float = 10.0) -> Any:
        return await self.reply(self.send(method, params), timeout)

    async def notification(
        self, method: str, timeout: float = 10.0, after: int = 0
    ) -> dict[str, Any]:
        """The first notification of `method` at index >= `after` in `notifications`."""

        def find() -> dict[str, Any] | None:
            for message in self.notifications[after:]:
                if message["method"] == method:
                    return message
            return None

        result: dict[str, Any] = await self._wait(find, timeout)
        return result

    async def handshake(self, user: str, configure: bool = True) -> None:
        if configure:
            await self.request(
                "mining.configure",
                [["version-rolling"], {"version-rolling.mask": "ffffffff"}],
            )
        # A CPU miner that reads fractional difficulties (the tests use tiny ones).
        sub = await self.request("mining.subscribe", ["cpuminer/2.5.1"])
        self.extranonce1 = bytes.fromhex(sub["result"][1])
        self.extranonce2_size = sub["result"][2]
        auth = await self.request("mining.authorize", [user, "x"])
        assert auth["result"] is True, auth

    async def close(self) -> None:
        self.writer.close()
        self._task.cancel()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def mining_client(port: int, user: str, configure: bool = True) -> StratumTestClient:
    """Connected, subscribed, authorized as `user`, and holding its first job."""
    client = await StratumTestClient.connect("127.0.0.1", port)
    await client.handshake(user, configure=configure)
    await client.notification("mining.notify")
    return client


def last_notify(client: StratumTestClient) -> list[Any]:
    return [m for m in client.notifications if m["method"] == "mining.notify"][-1]["params"]


def submit_params(
    user: str, notify: list[Any], en2: bytes, nonce: int, version_bits: str | None = None
) -> list[Any]:
    params = [user, notify[0], en2.hex(), notify[7], f"{nonce:08x}"]
    if version_bits is not None:
        params.append(version_bits)
    return params


async def closed_by_pool(client: StratumTestClient, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not client.closed:
            await asyncio.sleep(0.02)


def difficulties(client: StratumTestClient, after: int = 0) -> list[Any]:
    return [
        m["params"][0] for m in client.notifications[after:]
        if m["method"] == "mining.set_difficulty"
    ]


def client_tls_context(cafile: Path | None = None) -> ssl.SSLContext:
    if cafile is None:  # as most miners do: encrypt, do not verify
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=str(cafile))


async def connect(
    host: str, port: int, tls: ssl.SSLContext | None = None, server_hostname: str | None = None
) -> StratumTestClient:
    reader, writer = await asyncio.open_connection(
        host, port, ssl=tls, server_hostname=server_hostname if tls else None, limit=1 << 20
    )
    return StratumTestClient(reader, writer)
