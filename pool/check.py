"""`solopool check`: preflight checks, one line each with a fix.

Runs before (or instead of) the pool, with no event loop: the node is asked synchronously.
Every line starts with `ok`, `FAIL`, `warn` or `info`; the exit code is 0 only when nothing
failed, i.e. when `solopool --config FILE` can start mining.
"""

from __future__ import annotations

import argparse
import errno
import getpass
import os
import socket
import ssl
import sys
import tempfile
from typing import TextIO

from .config import EXIT_CONFIG, Config, ConfigError, config_file, load_config, unknown_environment
from .consensus.address import AddressError, payout_script
from .node import RPC_METHOD_NOT_FOUND, NodeClient, NodeError, NodeRPCError
from .node.discovery import connectable, published_hashblock
from .preflight import EXIT_FAIL, Problem, probe_node
from .sv2.certificate import (
    AuthorityKeyError,
    authority_pubkey_base58,
    load_authority_key,
    xonly_public_key,
)

EXIT_OK = 0


class Report:
    """Collects result lines; `failed` tells whether mining could start."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failed = False

    def line(self, status: str, message: str, fix: str | None = None) -> None:
        text = f"{status:<6}{message}"
        if fix:
            text += f" — fix: {fix}"
        print(text, file=self.out, flush=True)

    def ok(self, message: str) -> None:
        self.line("ok", message)

    def fail(self, message: str, fix: str) -> None:
        self.failed = True
        self.line("FAIL", message, fix)

    def problem(self, problem: Problem) -> None:
        self.fail(problem.what, problem.fix)

    def warn(self, message: str, fix: str | None = None) -> None:
        self.line("warn", message, fix)

    def info(self, message: str, fix: str | None = None) -> None:
        self.line("info", message, fix)


def main_check(args: argparse.Namespace) -> int:
    path = config_file(args.config)
    report = Report(sys.stdout)
    for warning in unknown_environment(os.environ):
        report.warn(warning)
    try:
        config = load_config(path)
    except ConfigError as exc:
        report.fail(f"config: {exc}", f"edit {path or 'the SOLOPOOL_* variables'}")
        return EXIT_CONFIG
    report.ok(f"config {path} read" if path else "config from defaults and SOLOPOOL_* variables")
    run_checks(config, report, address=getattr(args, "address", None))
    return EXIT_FAIL if report.failed else EXIT_OK


def run_checks(config: Config, report: Report, address: str | None = None) -> None:
    chain = check_node(config, report)
    check_payout(config, report, chain, address)
    check_ports(config, report)
    check_data_dir(config, report)
    check_tls(config, report)
    check_stratum_v2(config, report)
    check_version_rolling(config, report)


# --- the node ---------------------------------------------------------------------------------


def check_node(config: Config, report: Report) -> str | None:
    """Reachability, auth, chain and sync, getblocktemplate (the start-up questions), then ZMQ.
    Returns the chain name."""
    n = config.node
    node = NodeClient(
        n.rpc_url,
        rpc_user=n.rpc_user,
        rpc_password=n.rpc_password,
        cookie_file=n.rpc_cookie_file,
        timeout=min(n.rpc_timeout_seconds, 15.0),
        max_threads=1,
    )
    try:
        identity = probe_node(node, n, "node", report)
        if identity is None:
            return None
        check_zmq(config, node, report)
        return identity.chain
    finally:
        node.close()


def check_zmq(config: Config, node: NodeClient, report: Report) -> None:
    configured = config.node.zmq_hashblock
    try:
        notifications = node.call_sync("getzmqnotifications")
    except NodeRPCError as exc:
        if exc.code == RPC_METHOD_NOT_FOUND:
            if configured:
                report.warn(
                    f"zmq_hashblock = {configured} but this node was built without ZMQ",
                    "remove [node] zmq_hashblock (longpoll and polling notice new blocks)",
                )
            else:
                report.info("the node has no ZMQ; new blocks are noticed by longpoll and polling")
            return
        report.warn(f"getzmqnotifications failed: {exc}")
        return
    except NodeError as exc:
        report.warn(f"getzmqnotifications failed: {exc}")
        return
    published = published_hashblock(notifications, config.node.rpc_url)
    if configured and published:
        if _same_endpoint(configured, published):
            report.ok(f"ZMQ hashblock at {configured}, published by the node")
        else:
            report.warn(
                f"zmq_hashblock = {configured}, but the node publishes hashblock at {published}",
                f'set [node] zmq_hashblock = "{published}"',
            )
    elif configured:
        report.warn(
            f"zmq_hashblock = {configured}, but the node publishes no hashblock",
            f"add zmqpubhashblock={configured} to bitcoin.conf and restart the node, or remove "
            "[node] zmq_hashblock",
        )
    elif published:
        report.ok(
            f"the node publishes ZMQ hashblock at {published}; solopool will use it (or set "
            f'[node] zmq_hashblock = "{published}")'
        )
    else:
        report.info(
            "no ZMQ hashblock: new blocks are noticed by longpoll (fast enough)",
            "optional: zmqpubhashblock=tcp://127.0.0.1:28332 in bitcoin.conf, for the fastest",
        )


def _same_endpoint(a: str, b: str) -> bool:
    def norm(x: str) -> str:
        return x.replace("localhost", "127.0.0.1").rstrip("/")

    return norm(a) == norm(b) or norm(connectable(a, "http://127.0.0.1")) == norm(b)


# --- payout address ---------------------------------------------------------------------------


def check_payout(config: Config, report: Report, chain: str | None, address: str | None) -> None:
    addresses = [address] if address else list(config.stratum.allowed_addresses)
    if not addresses:
        report.info(
            "no payout address to check; each miner's username is checked when it connects",
            "run with --address YOUR_ADDRESS to check yours now",
        )
        return
    for addr in addresses:
        if chain is None:
            report.warn(f"payout address {addr} not checked: the node's chain is unknown")
            continue
        try:
            payout_script(addr.strip(), chain)
        except AddressError as exc:
            report.fail(
                f"payout address {addr} is not a valid {chain} address: {exc}",
                f"use a P2PKH, P2SH, P2WPKH, P2WSH or P2TR address of the node's chain ({chain})",
            )
            continue
        report.ok(f"payout address {addr} is valid for {chain}")


# --- local resources --------------------------------------------------------------------------


def _port_free(host: str, port: int) -> OSError | None:
    """Could the pool bind host:port right now? (Same options as the real listener.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bind_host = host.strip("[]")
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and bind_host == "::":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((bind_host, port))
            sock.listen(1)
    except OSError as exc:
        return exc
    return None


def check_ports(config: Config, report: Report) -> None:
    s = config.stratum
    wanted: list[tuple[str, str, int, str]] = [("Stratum", s.host, s.port, "[stratum] port")]
    if s.tls_port:
        wanted.append(("Stratum TLS", s.host, s.tls_port, "[stratum] tls_port"))
    v2 = config.stratum_v2
    if v2.port:
        wanted.append(("Stratum V2", v2.host or s.host, v2.port, "[stratum_v2] port"))
    if config.api.enabled:
        wanted.append(("API", config.api.host, config.api.port, "[api] port"))
    for name, host, port, key in wanted:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if port == 0:
            report.ok(f"{name} port: any free port on {host} (port = 0)")
            continue
        exc = _port_free(host, port)
        if exc is None:
            report.ok(f"{name} port {where} is free")
        elif exc.errno == errno.EADDRINUSE:
            report.fail(
                f"{name} port {where} is in use",
                f"stop the program using it (is solopool already running?) or change {key}",
            )
        else:
            report.fail(f"cannot listen on {where}: {exc.strerror or exc}", f"check {key} and host")


def check_stratum_v2(config: Config, report: Report) -> None:
    """The authority public key, ready to paste into AxeOS. A missing key file is left for the
    pool to create: check may run as another user (root, say), and a 0600 file it made would
    be unreadable to the pool."""
    v2 = config.stratum_v2
    if not v2.port or v2.authority_key_file is None:
        return
    path = v2.authority_key_file
    if not path.exists():
        report.info(
            f"Stratum V2: the authority key {path} will be created at first start (mode 0600); "
            "its public key is then logged, shown on the dashboard and by solopool check",
            "back the key file up: miners that pin the pool need the same key",
        )
        return
    try:
        secret = load_authority_key(path)
    except AuthorityKeyError as exc:
        report.fail(
            f"[stratum_v2] authority_key_file: {exc}",
            "as said, or point [stratum_v2] authority_key_file at the pool's key",
        )
        return
    report.ok(
        f"Stratum V2 on port {v2.port}; authority public key (paste into AxeOS): "
        f"{authority_pubkey_base58(xonly_public_key(secret))}"
    )


def check_version_rolling(config: Config, report: Report) -> None:
    """A zero mask answers mining.configure with version-rolling false: cgminer built with
    version rolling (Avalon Nano, many Antminer builds) then refuses the connection, and
    Braiins OS requires it."""
    mask = config.stratum.version_rolling_mask
    if mask == 0:
        report.warn(
            '[stratum] version_rolling_mask = "0": miners that require version rolling '
            "(cgminer-based Avalon Nano and Antminer firmware, Braiins OS) will not connect",
            'set version_rolling_mask = "1fffe000" (the default)',
        )
    elif mask != 0x1FFFE000:
        report.info(
            f"[stratum] version_rolling_mask = {mask:08x}: Braiins OS needs exactly 1fffe000",
        )


def check_data_dir(config: Config, report: Report) -> None:
    data_dir = config.pool.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".check-", dir=data_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        report.fail(
            f"data_dir {data_dir} is not writable: {exc.strerror or exc}",
            f"create it and make it writable by user {_user()}, or change [pool] data_dir",
        )
        return
    report.ok(f"data_dir {data_dir} is writable")


def check_tls(config: Config, report: Report) -> None:
    s = config.stratum
    if not s.tls_port or s.tls_cert_file is None or s.tls_key_file is None:
        return
    cert, key = s.tls_cert_file, s.tls_key_file
    if not (cert.exists() and key.exists()):
        if s.tls_self_signed:
            report.ok(f"TLS: a self-signed certificate will be made at {cert} on first start")
        else:
            missing = cert if not cert.exists() else key
            report.fail(
                f"TLS certificate file {missing} not found",
                "fix [stratum] tls_cert_file/tls_key_file, or remove both for a self-signed one",
            )
        return
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        report.fail(
            f"TLS certificate {cert} / key {key} unusable: {exc}",
            "give a PEM certificate and its matching unencrypted PEM key",
        )
        return
    report.ok(f"TLS certificate {cert} loads")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "the user solopool runs as"
