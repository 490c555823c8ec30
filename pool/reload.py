"""Config reload (SIGHUP): re-read the config file and apply what can change under running
miners: difficulty bounds, start difficulty, share interval, allowed addresses, connection
limits and timeouts, coinbase tag, template refresh. Every other changed key is logged as
needing a restart and keeps its running value."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import Config, ConfigError, NodeConfig, StratumConfig, load_config
from .jobs import JobManager
from .node import TemplateSource

log = logging.getLogger(__name__)

# What a reload applies to the running pool; any other changed key needs a restart.
RELOADABLE_STRATUM = frozenset({
    "start_difficulty", "min_difficulty", "max_difficulty", "share_interval_seconds",
    "allowed_addresses", "max_connections", "max_connections_per_ip",
    "handshake_timeout_seconds", "idle_timeout_seconds", "max_invalid_shares_per_minute",
    "max_line_bytes", "version_rolling_mask",
})
RELOADABLE_NODE = frozenset({"template_refresh_seconds"})
RELOADABLE_POOL = frozenset({"coinbase_tag"})
SECRET_KEYS = frozenset({"rpc_password", "rpc_user", "rpc_url"})
RELOADED_SECTIONS = ("node", "stratum", "pool")


class Listeners(Protocol):
    """The Stratum side: takes new limits and closes connections no longer allowed."""

    def apply_config(self, config: StratumConfig) -> int: ...


class Reloadable(Protocol):
    """The parts of the running pool a reload changes."""

    full_config: Config
    config: StratumConfig
    source: TemplateSource
    jobs: JobManager

    @property
    def miners(self) -> Listeners: ...  # every protocol's


@dataclass
class Changes:
    """What differs between the running config and the file, section by section."""

    reloadable: dict[str, dict[str, Any]] = field(default_factory=dict)  # replace() arguments
    applied: list[str] = field(default_factory=list)  # described for the log
    restart: list[str] = field(default_factory=list)


def _section_changes(
    section: str, old: Any, new: Any, reloadable: frozenset[str], changes: Changes
) -> None:
    """The reloadable keys of one section that changed; describes every change (never
    showing secret values)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(old):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if before == after:
            continue
        if f.name in reloadable:
            out[f.name] = after
            changes.applied.append(f"[{section}] {f.name}: {before!r} -> {after!r}")
        elif f.name in SECRET_KEYS:
            changes.restart.append(f"[{section}] {f.name}")
        else:
            changes.restart.append(f"[{section}] {f.name} ({before!r} -> {after!r})")
    changes.reloadable[section] = out


def diff(old: Config, new: Config) -> Changes:
    changes = Changes()
    _section_changes("node", old.node, new.node, RELOADABLE_NODE, changes)
    _section_changes("stratum", old.stratum, new.stratum, RELOADABLE_STRATUM, changes)
    _section_changes("pool", old.pool, new.pool, RELOADABLE_POOL, changes)
    for f in dataclasses.fields(old):  # [api], [notify], [[backup_node]], ...
        if f.name not in (*RELOADED_SECTIONS, "source") and (
            getattr(old, f.name) != getattr(new, f.name)
        ):
            changes.restart.append(f"[{f.name}]")
    return changes


def effective(old: Config, changes: Changes) -> Config:
    """The running config with the reloadable changes applied."""
    return dataclasses.replace(
        old,
        **{
            name: dataclasses.replace(getattr(old, name), **changes.reloadable[name])
            for name in RELOADED_SECTIONS
        },
    )


def read_changes(running: Config) -> Changes | None:
    """The file's changes against the running config; None (logged) when there is no file
    or it cannot be used."""
    source = running.source
    if source is None:
        log.warning("reload: started without a config file; nothing to reload")
        return None
    try:
        new = load_config(source)
    except ConfigError as exc:
        log.error("reload: %s; keeping the running config", exc)
        return None
    return diff(running, new)


async def reload_config(pool: Reloadable) -> list[str]:
    """Re-read the config file and apply what can change under running miners. Returns the
    changes applied."""
    changes = read_changes(pool.full_config)
    if changes is None:
        return []
    config = effective(pool.full_config, changes)
    pool.full_config = config
    pool.config = config.stratum
    await _apply(pool, config, changes.reloadable)
    _log(changes, config)
    return changes.applied


async def _apply(pool: Reloadable, config: Config, changed: dict[str, dict[str, Any]]) -> None:
    if changed["stratum"]:
        dropped = pool.miners.apply_config(config.stratum)
        if dropped:
            log.warning(
                "reload: closed %d connection(s) or SV2 channel(s) of addresses no longer allowed",
                dropped,
            )
    if changed["node"] and isinstance(getattr(pool.source, "config", None), NodeConfig):
        pool.source.config = dataclasses.replace(pool.source.config, **changed["node"])
    if "coinbase_tag" in changed["pool"]:
        pool.jobs.coinbase_tag = config.pool.coinbase_tag.encode()
        # Jobs are built once per template: re-install it so new jobs carry the tag.
        if not await pool.source.update("config reload", resend=True):
            log.warning("reload: the new coinbase tag applies from the next template")


def _log(changes: Changes, config: Config) -> None:
    for change in changes.applied:
        log.info("reload: %s", change)
    if changes.restart:
        log.warning("reload: changed but needs a restart: %s", ", ".join(changes.restart))
    if not changes.applied and not changes.restart:
        log.info("reload: %s unchanged", config.source)
