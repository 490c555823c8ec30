"""The pool's SV2 identity: the authority key, the certificate over the Noise static key, and the
authority public key in the base58check form miners paste (AxeOS's "pool authority key").

The authority key is long-lived (a file in data_dir, mode 0600); the Noise static key is made
fresh at each start and signed by the authority key for a validity window.

Certificate: m = SHA-256(version U16 || valid_from U32 || not_valid_after U32 || server x-only
key), signed with BIP340 by the authority key. The firmware verifies the signature only (not the
times); other clients check valid_from <= now <= not_valid_after as well.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import struct
from pathlib import Path

import coincurve

from pool.consensus.address import AddressError, b58check_decode, b58check_encode
from pool.consensus.serialize import sha256
from pool.sv2.codec import Sv2DecodeError

CERT_VERSION = 0
SIGNATURE_NOISE_MESSAGE_SIZE = 74
# The base58check payload starts with this version, U16 little-endian 1
AUTHORITY_KEY_PREFIX = b"\x01\x00"
# The certificate starts this long before "now": a miner's clock a little behind still accepts it
CLOCK_SKEW_SECONDS = 3600

_HEADER = struct.Struct("<HII")


class AuthorityKeyError(ValueError):
    """An authority key (file or pasted text) that cannot be used; the text says how to fix it."""


@dataclasses.dataclass(frozen=True, slots=True)
class SignatureNoiseMessage:
    version: int
    valid_from: int
    not_valid_after: int
    signature: bytes

    def encode(self) -> bytes:
        if len(self.signature) != 64:
            raise ValueError("signature must be 64 bytes")
        return _HEADER.pack(self.version, self.valid_from, self.not_valid_after) + self.signature

    @classmethod
    def decode(cls, data: bytes) -> SignatureNoiseMessage:
        if len(data) != SIGNATURE_NOISE_MESSAGE_SIZE:
            raise Sv2DecodeError(
                f"signature noise message must be {SIGNATURE_NOISE_MESSAGE_SIZE} bytes, "
                f"got {len(data)}"
            )
        version, valid_from, not_valid_after = _HEADER.unpack_from(data)
        return cls(version, valid_from, not_valid_after, bytes(data[_HEADER.size :]))

    def digest(self, server_xonly: bytes) -> bytes:
        """The 32-byte message the authority signs."""
        signed = _HEADER.pack(self.version, self.valid_from, self.not_valid_after)
        return sha256(signed + server_xonly)

    def verify(self, server_xonly: bytes, authority_xonly: bytes, now: int | None = None) -> bool:
        """The signature is the authority's over this server key (and, given `now`, in time)."""
        if now is not None and not self.valid_from <= now <= self.not_valid_after:
            return False
        try:
            authority = coincurve.PublicKeyXOnly(authority_xonly)
            return bool(authority.verify(self.signature, self.digest(server_xonly)))
        except ValueError:
            return False


def new_secret_key() -> bytes:
    return coincurve.PrivateKey().secret


def xonly_public_key(secret: bytes) -> bytes:
    return bytes(coincurve.PublicKeyXOnly.from_secret(secret).format())


def sign_certificate(
    authority_secret: bytes,
    server_xonly: bytes,
    valid_from: int,
    not_valid_after: int,
    version: int = CERT_VERSION,
) -> SignatureNoiseMessage:
    unsigned = SignatureNoiseMessage(version, valid_from, not_valid_after, bytes(64))
    signature = coincurve.PrivateKey(authority_secret).sign_schnorr(
        unsigned.digest(server_xonly), os.urandom(32)
    )
    return dataclasses.replace(unsigned, signature=signature)


@dataclasses.dataclass(frozen=True, slots=True)
class ServerIdentity:
    """The Noise static key of this run and the authority's certificate over it."""

    static_secret: bytes
    certificate: SignatureNoiseMessage

    @classmethod
    def issue(cls, authority_secret: bytes, validity_seconds: int, now: int) -> ServerIdentity:
        static_secret = new_secret_key()
        certificate = sign_certificate(
            authority_secret,
            xonly_public_key(static_secret),
            max(0, now - CLOCK_SKEW_SECONDS),
            min(0xFFFFFFFF, now + validity_seconds),
        )
        return cls(static_secret, certificate)


# --- the authority public key as people see it --------------------------------------------------


def authority_pubkey_base58(authority_xonly: bytes) -> str:
    """The form AxeOS and the SV2 URL take: base58check([1, 0] || 32-byte x-only key)."""
    if len(authority_xonly) != 32:
        raise ValueError("authority public key must be 32 bytes")
    return b58check_encode(AUTHORITY_KEY_PREFIX + authority_xonly)


def parse_authority_pubkey(text: str) -> bytes:
    """A pasted authority public key, base58check or 64 hex digits -> the 32-byte x-only key."""
    text = text.strip()
    if len(text) == 64:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if key:
            return _checked_xonly(key, text)
    try:
        payload = b58check_decode(text)
    except AddressError as e:
        raise AuthorityKeyError(f"authority key {text!r}: {e}") from None
    if len(payload) != 34 or payload[:2] != AUTHORITY_KEY_PREFIX:
        raise AuthorityKeyError(
            f"authority key {text!r} is not an SV2 authority key (want base58check of "
            "version 1 and a 32-byte key, or 64 hex digits)"
        )
    return _checked_xonly(payload[2:], text)


def _checked_xonly(key: bytes, text: str) -> bytes:
    try:
        coincurve.PublicKeyXOnly(key)
    except ValueError:
        raise AuthorityKeyError(f"authority key {text!r} is not a point on secp256k1") from None
    return key


# --- the authority key file ---------------------------------------------------------------------


def load_or_create_authority_key(path: Path) -> bytes:
    """The authority secret key from `path` (64 hex digits); created with mode 0600 if absent."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_authority_key(path)
    except OSError as e:
        raise AuthorityKeyError(f"cannot create authority key file {path}: {e.strerror}") from None
    secret = new_secret_key()
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return secret


def load_authority_key(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as e:
        raise AuthorityKeyError(f"cannot read authority key file {path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuthorityKeyError(
            f"authority key file {path} is open to other users (mode {stat.S_IMODE(mode):o}): "
            f"run chmod 600 {path}"
        )
    try:
        secret = bytes.fromhex(text)
        coincurve.PrivateKey(secret)
    except ValueError:
        secret = b""
    if len(secret) != 32:
        raise AuthorityKeyError(
            f"authority key file {path} does not hold a secret key (64 hex digits): restore it "
            "from a backup, or delete it to make a new key (miners must then paste the new one)"
        )
    return secret
