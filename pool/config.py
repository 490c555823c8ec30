"""TOML configuration: parsed once, checked fully, every problem reported as one plain line."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A config problem, phrased for the person who has to fix it."""


@dataclass(frozen=True)
class NodeConfig:
    rpc_url: str = "http://127.0.0.1:8332"
    rpc_user: str | None = None
    rpc_password: str | None = None
    rpc_cookie_file: Path | None = None
    zmq_hashblock: str | None = None
    template_refresh_seconds: float = 30.0
    rpc_timeout_seconds: float = 30.0
    poll_seconds: float = 2.0


@dataclass(frozen=True)
class StratumConfig:
    host: str = "0.0.0.0"
    port: int = 3333
    start_difficulty: float = 1024.0
    min_difficulty: float = 0.0001
    max_difficulty: float = 1e15
    share_interval_seconds: float = 10.0
    version_rolling_mask: int = 0x1FFFE000
    max_line_bytes: int = 16384


@dataclass(frozen=True)
class PoolConfig:
    coinbase_tag: str = "/solopool/"
    data_dir: Path = Path("data")


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    stratum: StratumConfig = field(default_factory=StratumConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    source: Path | None = None


_SECTIONS = {"node", "stratum", "pool"}


class _Section:
    """Reads typed values out of one TOML table, naming `[section] key` in every error."""

    def __init__(self, name: str, table: Any, known: set[str]) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table")
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(
                f"[{name}] has unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}"
            )
        self.name = name
        self.table = table

    def _where(self, key: str) -> str:
        return f"[{self.name}] {key}"

    def string(self, key: str, default: str | None) -> str | None:
        value = self.table.get(key, default)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{self._where(key)} must be a string in quotes, got {value!r}")
        return value

    def number(
        self, key: str, default: float, *, minimum: float | None = None, positive: bool = False
    ) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self._where(key)} must be a number, got {value!r}")
        if positive and value <= 0:
            raise ConfigError(f"{self._where(key)} must be greater than 0, got {value!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{self._where(key)} must be at least {minimum}, got {value!r}")
        return float(value)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self._where(key)} must be a whole number, got {value!r}")
        if not low <= value <= high:
            raise ConfigError(f"{self._where(key)} must be between {low} and {high}, got {value}")
        return value


def _node(section: _Section, base: Path) -> NodeConfig:
    d = NodeConfig()
    rpc_url = section.string("rpc_url", d.rpc_url) or d.rpc_url
    parts = urlsplit(rpc_url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(
            f"[node] rpc_url {rpc_url!r} is not a URL like http://127.0.0.1:8332"
        )
    user = section.string("rpc_user", None)
    password = section.string("rpc_password", None)
    cookie = section.string("rpc_cookie_file", None)
    if cookie and (user or password):
        raise ConfigError("[node] set either rpc_cookie_file or rpc_user/rpc_password, not both")
    if not cookie and not (user and password) and not (parts.username and parts.password):
        raise ConfigError(
            "[node] needs rpc_user and rpc_password, or rpc_cookie_file (e.g. "
            "~/.bitcoin/.cookie), to log in to the node's RPC"
        )
    if bool(user) != bool(password):
        raise ConfigError("[node] rpc_user and rpc_password must be set together")
    zmq = section.string("zmq_hashblock", None) or None
    if zmq is not None and not zmq.startswith(("tcp://", "ipc://")):
        raise ConfigError(f"[node] zmq_hashblock {zmq!r} must look like tcp://127.0.0.1:28332")
    return NodeConfig(
        rpc_url=rpc_url,
        rpc_user=user,
        rpc_password=password,
        rpc_cookie_file=_path(cookie, base) if cookie else None,
        zmq_hashblock=zmq,
        template_refresh_seconds=section.number(
            "template_refresh_seconds", d.template_refresh_seconds, minimum=1
        ),
        rpc_timeout_seconds=section.number("rpc_timeout_seconds", d.rpc_timeout_seconds, minimum=1),
        poll_seconds=section.number("poll_seconds", d.poll_seconds, minimum=0.05),
    )


def _stratum(section: _Section) -> StratumConfig:
    d = StratumConfig()
    host = section.string("host", d.host) or d.host
    start = section.number("start_difficulty", d.start_difficulty, positive=True)
    low = section.number("min_difficulty", d.min_difficulty, positive=True)
    high = section.number("max_difficulty", d.max_difficulty, positive=True)
    if low > high:
        raise ConfigError(
            f"[stratum] min_difficulty ({low:g}) is above max_difficulty ({high:g})"
        )
    if not low <= start <= high:
        raise ConfigError(
            f"[stratum] start_difficulty ({start:g}) must lie between min_difficulty ({low:g}) "
            f"and max_difficulty ({high:g})"
        )
    mask_text = section.string("version_rolling_mask", "1fffe000") or "0"
    try:
        mask = int(mask_text, 16)
        if not 0 <= mask <= 0xFFFFFFFF or len(mask_text) > 8:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"[stratum] version_rolling_mask {mask_text!r} must be 8 hex digits, e.g. \"1fffe000\""
        ) from None
    if mask & ~0x1FFFE000:
        raise ConfigError(
            "[stratum] version_rolling_mask may only use the BIP320 bits 1fffe000"
        )
    return StratumConfig(
        host=host,
        port=section.integer("port", d.port, 0, 65535),
        start_difficulty=start,
        min_difficulty=low,
        max_difficulty=high,
        share_interval_seconds=section.number(
            "share_interval_seconds", d.share_interval_seconds, positive=True
        ),
        version_rolling_mask=mask,
        max_line_bytes=section.integer("max_line_bytes", d.max_line_bytes, 256, 1 << 20),
    )


def _pool(section: _Section, base: Path) -> PoolConfig:
    d = PoolConfig()
    tag = section.string("coinbase_tag", d.coinbase_tag) or ""
    if len(tag.encode()) > 60:
        raise ConfigError("[pool] coinbase_tag is longer than 60 bytes; shorten it")
    data_dir = section.string("data_dir", str(d.data_dir)) or str(d.data_dir)
    return PoolConfig(coinbase_tag=tag, data_dir=_path(data_dir, base))


def _path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def parse_config(data: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """Check a parsed TOML document; relative paths are taken from `base`."""
    unknown = sorted(set(data) - _SECTIONS)
    if unknown:
        raise ConfigError(
            f"unknown section [{unknown[0]}]; known sections: [node], [stratum], [pool]"
        )
    node = _Section("node", data.get("node", {}), set(NodeConfig.__dataclass_fields__))
    stratum = _Section("stratum", data.get("stratum", {}), set(StratumConfig.__dataclass_fields__))
    pool = _Section("pool", data.get("pool", {}), set(PoolConfig.__dataclass_fields__))
    return Config(
        node=_node(node, base), stratum=_stratum(stratum), pool=_pool(pool, base), source=source
    )


def load_config(path: Path) -> Config:
    """Read and check a config file. Relative paths inside it are relative to the file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found; copy config/solopool.example.toml and edit it"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(data, path.resolve().parent, source=path)
