"""TOML configuration: parsed once, checked fully, every problem reported as one plain line.

Every key can also be set by an environment variable named SOLOPOOL_<SECTION>_<KEY>
(e.g. SOLOPOOL_NODE_RPC_URL), which wins over the file; handy in containers. A SOLOPOOL_*
variable that names no key is reported (unknown_environment), not silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "SOLOPOOL_"
# SOLOPOOL_* variables the project reads that are not config keys (scripts and test hooks).
NOT_SETTINGS = frozenset({
    "SOLOPOOL_NODE_PREFIX",  # scripts/install-node.sh and tests: where Bitcoin Knots is installed
    "SOLOPOOL_DEBIAN_MIRROR",  # scripts/install-node.sh: the Debian mirror to fetch it from
})
MAX_WORKERS = 64  # Stratum worker processes; the top byte of extranonce1 names the process
EXIT_CONFIG = 2  # the exit code when the fix is in the config (or the environment)
DEFAULT_CONFIG_FILE = Path("solopool.toml")  # read when present and no --config is given

# Bitcoin Core's default RPC port -> the datadir subfolder that holds that network's cookie.
COOKIE_SUBDIR_BY_PORT = {
    8332: "",
    18332: "testnet3",
    48332: "testnet4",
    38332: "signet",
    18443: "regtest",
}


class ConfigError(Exception):
    """A config problem, phrased for the person who has to fix it."""


def config_file(given: Path | None) -> Path | None:
    """The file to read: `given` (--config), else ./solopool.toml if present, else none
    (defaults and SOLOPOOL_* variables only)."""
    if given is not None:
        return given
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None


@dataclass(frozen=True)
class NodeConfig:
    rpc_url: str = "http://127.0.0.1:8332"
    rpc_user: str | None = None
    rpc_password: str | None = field(default=None, repr=False)  # never in logs or reprs
    rpc_cookie_file: Path | None = None
    zmq_hashblock: str | None = None
    template_refresh_seconds: float = 30.0
    rpc_timeout_seconds: float = 30.0
    poll_seconds: float = 2.0
    longpoll: bool = True
    # True when no credentials were configured and the cookie path was guessed
    cookie_guessed: bool = False


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
    max_connections: int = 20000
    max_connections_per_ip: int = 2000
    handshake_timeout_seconds: float = 60.0
    idle_timeout_seconds: float = 900.0
    max_invalid_shares_per_minute: int = 600
    # Names one connection may mine under (authorize and submit), and the length of the part
    # after the address: a stranger must not grow the pool's memory by inventing names.
    max_workers_per_connection: int = 16
    max_worker_name_length: int = 64
    allowed_addresses: tuple[str, ...] = ()
    # Stratum over TLS (stratum+ssl) on a second port; 0 = off. Without tls_cert_file and
    # tls_key_file a self-signed certificate is made in data_dir/tls/ on first start.
    tls_port: int = 0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # True when the certificate paths are the data_dir/tls/ defaults (generated if missing)
    tls_self_signed: bool = False
    # Stratum processes sharing the port (SO_REUSEPORT); 1 = everything in one process.
    workers: int = 1


@dataclass(frozen=True)
class StratumV2Config:
    port: int = 0  # 0 = off
    host: str | None = None  # None: as [stratum] host
    # The authority secret that signs the pool's key; None: sv2_authority.key in data_dir.
    authority_key_file: Path | None = None
    certificate_validity_days: float = 365.0


@dataclass(frozen=True)
class PoolConfig:
    coinbase_tag: str = "/solopool/"
    data_dir: Path = Path("data")
    # Workers (with an accepted share) kept in memory and in the stats database: the least
    # recently active are forgotten beyond max_workers, and any idle for worker_retention_days.
    max_workers: int = 10_000
    worker_retention_days: float = 30.0


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    # /metrics has per-worker series for this many most recently active workers (plus totals).
    metrics_max_workers: int = 100


def local_url(host: str, port: int) -> str:
    """The http:// URL at which this machine reaches a listener on host:port (a wildcard host
    means this machine)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


@dataclass(frozen=True)
class NotifyConfig:
    webhook_urls: tuple[str, ...] = ()
    worker_silent_minutes: float = 15.0


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    stratum: StratumConfig = field(default_factory=StratumConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    stratum_v2: StratumV2Config = field(default_factory=StratumV2Config)
    backup_nodes: tuple[NodeConfig, ...] = ()
    source: Path | None = None

    @property
    def nodes(self) -> tuple[NodeConfig, ...]:
        """The primary node first, then the backups."""
        return (self.node, *self.backup_nodes)


_TABLES: dict[str, type] = {
    "node": NodeConfig,
    "stratum": StratumConfig,
    "pool": PoolConfig,
    "api": ApiConfig,
    "notify": NotifyConfig,
    "stratum_v2": StratumV2Config,
}
_INTERNAL_KEYS = {"cookie_guessed", "tls_self_signed"}


def _keys(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - _INTERNAL_KEYS


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
            shown = "a value that is not text" if "password" in key else repr(value)  # no leaks
            raise ConfigError(f"{self._where(key)} must be a string in quotes, got {shown}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self._where(key)} must be true or false, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.table.get(key, [])
        if isinstance(value, str):  # from an environment variable: comma-separated
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self._where(key)} must be a list of strings, got {value!r}")
        return tuple(value)

    def number(
        self, key: str, default: float, *, minimum: float | None = None, positive: bool = False
    ) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self._where(key)} must be a number, got {value!r}")
        if not math.isfinite(value):  # TOML has nan and inf; every comparison below passes NaN
            raise ConfigError(
                f"{self._where(key)} must be a finite number like {default:g}, got {value!r}"
            )
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


def default_cookie_file(rpc_url: str, home: Path | None = None) -> Path:
    """Where Bitcoin Core writes its cookie for the network whose default port `rpc_url` uses."""
    port = urlsplit(rpc_url).port or 8332
    sub = COOKIE_SUBDIR_BY_PORT.get(port, "")
    base = (home or Path.home()) / ".bitcoin"
    return base / sub / ".cookie" if sub else base / ".cookie"


def _node(section: _Section, base: Path) -> NodeConfig:
    d = NodeConfig()
    rpc_url = section.string("rpc_url", d.rpc_url) or d.rpc_url
    try:
        parts = urlsplit(rpc_url)  # ValueError for an unclosed [IPv6 bracket
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = urlsplit(""), False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(
            f"[{section.name}] rpc_url {rpc_url!r} is not a URL like http://127.0.0.1:8332"
        )
    user = section.string("rpc_user", None) or None
    password = section.string("rpc_password", None) or None
    cookie = section.string("rpc_cookie_file", None) or None
    if cookie and (user or password):
        raise ConfigError(
            f"[{section.name}] set either rpc_cookie_file or rpc_user/rpc_password, not both"
        )
    if bool(user) != bool(password):
        raise ConfigError(f"[{section.name}] rpc_user and rpc_password must be set together")
    guessed = False
    cookie_path: Path | None = _path(cookie, base) if cookie else None
    if cookie_path is None and not user and not (parts.username and parts.password):
        # Zero-config: the cookie bitcoind writes in its default datadir for this network.
        cookie_path = default_cookie_file(rpc_url)
        guessed = True
    zmq = section.string("zmq_hashblock", None) or None
    if zmq is not None and not zmq.startswith(("tcp://", "ipc://")):
        raise ConfigError(
            f"[{section.name}] zmq_hashblock {zmq!r} must look like tcp://127.0.0.1:28332"
        )
    return NodeConfig(
        rpc_url=rpc_url,
        rpc_user=user,
        rpc_password=password,
        rpc_cookie_file=cookie_path,
        zmq_hashblock=zmq,
        template_refresh_seconds=section.number(
            "template_refresh_seconds", d.template_refresh_seconds, minimum=1
        ),
        rpc_timeout_seconds=section.number("rpc_timeout_seconds", d.rpc_timeout_seconds, minimum=1),
        poll_seconds=section.number("poll_seconds", d.poll_seconds, minimum=0.05),
        longpoll=section.boolean("longpoll", d.longpoll),
        cookie_guessed=guessed,
    )


def _stratum(section: _Section, base: Path | None = None) -> StratumConfig:
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
        max_connections=section.integer("max_connections", d.max_connections, 1, 1_000_000),
        max_connections_per_ip=section.integer(
            "max_connections_per_ip", d.max_connections_per_ip, 1, 1_000_000
        ),
        handshake_timeout_seconds=section.number(
            "handshake_timeout_seconds", d.handshake_timeout_seconds, positive=True
        ),
        idle_timeout_seconds=section.number(
            "idle_timeout_seconds", d.idle_timeout_seconds, positive=True
        ),
        max_invalid_shares_per_minute=section.integer(
            "max_invalid_shares_per_minute", d.max_invalid_shares_per_minute, 1, 10_000_000
        ),
        max_workers_per_connection=section.integer(
            "max_workers_per_connection", d.max_workers_per_connection, 1, 100_000
        ),
        max_worker_name_length=section.integer(
            "max_worker_name_length", d.max_worker_name_length, 1, 1024
        ),
        allowed_addresses=section.strings("allowed_addresses"),
        workers=section.integer("workers", d.workers, 1, MAX_WORKERS),
        **_stratum_tls(section, base or Path.cwd()),
    )


def _stratum_tls(section: _Section, base: Path) -> dict[str, Any]:
    """The [stratum] TLS keys: tls_port, and tls_cert_file + tls_key_file (both or neither)."""
    port = section.integer("port", StratumConfig.port, 0, 65535)
    tls_port = section.integer("tls_port", 0, 0, 65535)
    if tls_port and tls_port == port:
        raise ConfigError(
            f"[stratum] tls_port ({tls_port}) must differ from port; e.g. port = 3333 and "
            "tls_port = 3334"
        )
    cert = section.string("tls_cert_file", None) or None
    key = section.string("tls_key_file", None) or None
    if bool(cert) != bool(key):
        raise ConfigError("[stratum] tls_cert_file and tls_key_file must be set together")
    return {
        "tls_port": tls_port,
        "tls_cert_file": _path(cert, base) if cert else None,
        "tls_key_file": _path(key, base) if key else None,
    }


def _with_tls_defaults(stratum: StratumConfig, data_dir: Path) -> StratumConfig:
    """TLS on without a certificate: use (and on first start make) one in data_dir/tls/."""
    if not stratum.tls_port or stratum.tls_cert_file is not None:
        return stratum
    return dataclasses.replace(
        stratum,
        tls_cert_file=data_dir / "tls" / "cert.pem",
        tls_key_file=data_dir / "tls" / "key.pem",
        tls_self_signed=True,
    )


def _pool(section: _Section, base: Path) -> PoolConfig:
    d = PoolConfig()
    tag = section.string("coinbase_tag", d.coinbase_tag) or ""
    if len(tag.encode()) > 60:
        raise ConfigError("[pool] coinbase_tag is longer than 60 bytes; shorten it")
    data_dir = section.string("data_dir", str(d.data_dir)) or str(d.data_dir)
    return PoolConfig(
        coinbase_tag=tag,
        data_dir=_path(data_dir, base),
        max_workers=section.integer("max_workers", d.max_workers, 1, 10_000_000),
        worker_retention_days=section.number(
            "worker_retention_days", d.worker_retention_days, positive=True
        ),
    )


def _api(section: _Section) -> ApiConfig:
    d = ApiConfig()
    return ApiConfig(
        enabled=section.boolean("enabled", d.enabled),
        host=section.string("host", d.host) or d.host,
        port=section.integer("port", d.port, 0, 65535),
        metrics_max_workers=section.integer(
            "metrics_max_workers", d.metrics_max_workers, 0, 1_000_000
        ),
    )


def _notify(section: _Section) -> NotifyConfig:
    d = NotifyConfig()
    urls = section.strings("webhook_urls")
    for url in urls:
        if not _is_http_url(url):
            raise ConfigError(f"[notify] webhook_urls entry {url!r} must be an http(s):// URL")
    return NotifyConfig(
        webhook_urls=urls,
        worker_silent_minutes=section.number(
            "worker_silent_minutes", d.worker_silent_minutes, positive=True
        ),
    )


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # ValueError for a port out of range or an unclosed [IPv6 bracket
    except ValueError:
        return False
    return parts.scheme in ("http", "https")


def _path(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _env_value(text: str) -> Any:
    """An environment value read as a TOML value when it is one (numbers, booleans, quoted
    strings, lists), else as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _stratum_v2(
    section: _Section, base: Path, stratum: StratumConfig, data_dir: Path
) -> StratumV2Config:
    d = StratumV2Config()
    port = section.integer("port", d.port, 0, 65535)
    if port and port in (stratum.port, stratum.tls_port):
        raise ConfigError(f"[stratum_v2] port {port} is already used by [stratum]; pick another")
    key_file = section.string("authority_key_file", None)
    return StratumV2Config(
        port=port,
        host=section.string("host", None) or stratum.host,
        authority_key_file=_path(key_file, base) if key_file else data_dir / "sv2_authority.key",
        certificate_validity_days=section.number(
            "certificate_validity_days", d.certificate_validity_days, positive=True
        ),
    )


def _text_keys(cls: type) -> set[str]:
    """Keys whose values are strings or paths (annotations are strings here)."""
    return {
        f.name
        for f in dataclasses.fields(cls)
        if isinstance(f.type, str) and f.type.split(" |")[0] in ("str", "Path")
    } | {"version_rolling_mask"}


def apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay SOLOPOOL_<SECTION>_<KEY> variables on a parsed config document."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        for section, cls in _TABLES.items():
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1 :]
                if key in _keys(cls):
                    table = merged.setdefault(section, {})
                    if isinstance(table, dict):
                        # Text keys take the value verbatim: a password "123" stays text.
                        text = key in _text_keys(cls)
                        table[key] = value if text else _env_value(value)
                break
    return merged


def _setting_names() -> list[str]:
    """SECTION_KEY for every key an environment variable can set."""
    return [f"{section}_{key}".upper() for section, cls in _TABLES.items() for key in _keys(cls)]


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """One line for each SOLOPOOL_* variable that sets nothing: a misspelt setting would
    otherwise be ignored without a word."""
    names = _setting_names()
    lines = []
    for name in sorted(environ):
        rest = name[len(ENV_PREFIX) :].upper()
        if not name.startswith(ENV_PREFIX) or rest in names or name.upper() in NOT_SETTINGS:
            continue
        close = difflib.get_close_matches(rest, names, n=1)
        if rest.startswith("BACKUP_NODE"):
            hint = "backup nodes are set in the config file only, as [[backup_node]] tables"
        elif close:
            hint = f"did you mean {ENV_PREFIX}{close[0]}?"
        else:
            hint = "settings are named SOLOPOOL_<SECTION>_<KEY>, e.g. SOLOPOOL_STRATUM_PORT"
        lines.append(f"environment variable {name} is not a solopool setting (ignored); {hint}")
    return lines


def parse_config(data: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """Check a parsed TOML document; relative paths are taken from `base`."""
    known = {*_TABLES, "backup_node"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown section [{unknown[0]}]; known sections: "
            + ", ".join(f"[{s}]" for s in _TABLES)
            + ", [[backup_node]]"
        )

    def section(name: str) -> _Section:
        return _Section(name, data.get(name, {}), _keys(_TABLES[name]))

    backups = data.get("backup_node", [])
    if not isinstance(backups, list):
        raise ConfigError(
            "backup nodes are written [[backup_node]] (double brackets), one table per node"
        )
    node = _node(section("node"), base)
    stratum = _stratum(section("stratum"), base)
    pool = _pool(section("pool"), base)
    return Config(
        node=node,
        stratum=_with_tls_defaults(stratum, pool.data_dir),
        pool=pool,
        api=_api(section("api")),
        notify=_notify(section("notify")),
        stratum_v2=_stratum_v2(section("stratum_v2"), base, stratum, pool.data_dir),
        backup_nodes=tuple(
            _node(_Section(f"backup_node {i + 1}", table, _keys(NodeConfig)), base)
            for i, table in enumerate(backups)
        ),
        source=source,
    )


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read and check a config file (or none: environment only). Relative paths inside the file
    are relative to the file."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                f"offset {exc.start}); save it as UTF-8"
            ) from None
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
        base = path.resolve().parent
    return parse_config(apply_environment(data, environ), base, source=path)
