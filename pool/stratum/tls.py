"""TLS for the optional stratum+ssl port: the server context, and a self-signed certificate made
once in data_dir/tls/ when none is configured (miners that verify it are given cert.pem)."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
from pathlib import Path

log = logging.getLogger(__name__)

CERT_DAYS = 3650


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server-side context for miners: TLS 1.2+ (ESP-Miner's mbedTLS speaks 1.2)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def local_names() -> tuple[list[str], list[str]]:
    """Names and addresses this machine is likely reached by, for the certificate's SANs."""
    names = {"localhost"}
    addresses = {"127.0.0.1", "::1"}
    hostname = socket.gethostname()
    for name in (hostname, socket.getfqdn()):
        if name and not name.startswith("localhost"):
            names.add(name)
    try:
        for info in socket.getaddrinfo(hostname, None):
            host = str(info[4][0]).split("%", 1)[0]
            addresses.add(host)
    except OSError:
        pass
    return sorted(names), sorted(addresses)


def ensure_self_signed(cert_file: Path, key_file: Path) -> bool:
    """Make a self-signed certificate and key unless both exist; True when one was made."""
    if cert_file.exists() and key_file.exists():
        return False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    names, addresses = local_names()
    # RSA rather than ECDSA: every miner TLS stack (mbedTLS builds included) accepts it.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname() or "solopool"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "solopool self-signed"),
        ]
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.warning(
        "made a self-signed TLS certificate %s (for %s); give it to miners that verify the pool",
        cert_file, ", ".join(names + addresses),
    )
    return True
