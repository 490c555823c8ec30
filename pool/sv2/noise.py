"""Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256, as Stratum V2 uses it, and the encrypted
framing after it. Sans I/O: callers move the bytes.

Handshake (the pool is the responder):
  -> e                                           64 bytes, initiator's ElligatorSwift key
  <- e, ee, s, es, SIGNATURE_NOISE_MESSAGE        64 + (64+16) + (74+16) = 234 bytes
Then each frame is its 6-byte header encrypted alone (22 bytes) followed by the payload,
encrypted in chunks of at most 65,519 bytes (65,535 with the tag); the header carries the
plaintext payload length. Nonces count up from 0 in each direction and SV2 has no rekey.

ECDH is BIP324's x-only ElligatorSwift ECDH (libsecp256k1 via coincurve), whose hash takes the
initiator's encoding first: the responder is party 1. HKDF comes from `cryptography`;
ChaCha20-Poly1305 from libsodium, as PyNaCl bundles it, called through PyNaCl's cffi module
(see CipherState for why). Everything received that is wrong raises a subclass of
`Sv2DecodeError`.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl._sodium import ffi as sodium_ffi
from nacl._sodium import lib as sodium

from pool.consensus.serialize import sha256
from pool.sv2.certificate import SIGNATURE_NOISE_MESSAGE_SIZE, SignatureNoiseMessage, new_secret_key
from pool.sv2.codec import (
    HEADER_LAYOUT,
    HEADER_SIZE,
    MAX_INBOUND_PAYLOAD,
    FrameHeader,
    Message,
    Sv2DecodeError,
)

PROTOCOL_NAME = b"Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256"
KEY_SIZE = 64  # an ElligatorSwift public key
MAC_SIZE = 16
ACT1_SIZE = KEY_SIZE
ACT2_SIZE = KEY_SIZE + KEY_SIZE + MAC_SIZE + SIGNATURE_NOISE_MESSAGE_SIZE + MAC_SIZE  # 234
ENCRYPTED_HEADER_SIZE = HEADER_SIZE + MAC_SIZE  # 22
MAX_CHUNK_CIPHERTEXT = 65535
MAX_CHUNK_PLAINTEXT = MAX_CHUNK_CIPHERTEXT - MAC_SIZE
_NONCE_LIMIT = (1 << 64) - 1  # Noise reserves the last nonce


class HandshakeError(Sv2DecodeError):
    """The handshake failed: wrong length, bad tag, or a certificate the authority did not sign."""


class DecryptionError(Sv2DecodeError):
    """A transport message failed authentication (tampered, out of order, or garbage)."""


_BAD_TAG = "decryption failed (bad tag)"  # (and, as Noise says, the nonce is not used up)


# --- secp256k1 ElligatorSwift -------------------------------------------------------------------

_CTX: Any = GLOBAL_CONTEXT.ctx


def ellswift_create(secret: bytes) -> bytes:
    """The 64-byte ElligatorSwift encoding of secret's public key (randomised; any is valid)."""
    out = ffi.new("unsigned char[64]")
    if not lib.secp256k1_ellswift_create(_CTX, out, secret, os.urandom(32)):
        raise ValueError("invalid secret key")
    return bytes(ffi.buffer(out, 64))


def ellswift_ecdh(ours: bytes, theirs: bytes, secret: bytes, initiator: bool) -> bytes:
    """BIP324 x-only ECDH. Every 64-byte string decodes to a curve point, so garbage never fails
    here: it only yields a secret the other side does not share."""
    out = ffi.new("unsigned char[32]")
    ell_a, ell_b = (ours, theirs) if initiator else (theirs, ours)
    ok = lib.secp256k1_ellswift_xdh(
        _CTX, out, ell_a, ell_b, secret, 0 if initiator else 1,
        lib.secp256k1_ellswift_xdh_hash_function_bip324, ffi.NULL,
    )  # fmt: skip
    if not ok:
        raise HandshakeError("ElligatorSwift ECDH failed")
    return bytes(ffi.buffer(out, 32))


def ellswift_xonly(encoded: bytes) -> bytes:
    """The 32-byte x-only key (BIP340) an ElligatorSwift encoding stands for."""
    pubkey = ffi.new("secp256k1_pubkey *")
    xonly = ffi.new("secp256k1_xonly_pubkey *")
    out = ffi.new("unsigned char[32]")
    if not (
        lib.secp256k1_ellswift_decode(_CTX, pubkey, encoded)
        and lib.secp256k1_xonly_pubkey_from_pubkey(_CTX, xonly, ffi.NULL, pubkey)
        and lib.secp256k1_xonly_pubkey_serialize(_CTX, out, xonly)
    ):
        raise HandshakeError("cannot decode ElligatorSwift key")
    return bytes(ffi.buffer(out, 32))


# --- Noise primitives ---------------------------------------------------------------------------


_NONCE = struct.Struct("<4xQ").pack  # 4 zero bytes, then the counter little-endian
_new_tuple = tuple.__new__  # a FrameHeader without NamedTuple's Python-level __new__

# libsodium's ChaCha20-Poly1305 with the 96-bit nonce (RFC 8439), called directly: the hot
# loops below (NoiseSession.read_frames, encrypt_frames) call these themselves, as a Python
# wrapper per call would cost a third of what this saves.
# sodium_init picks the CPU's fastest ChaCha20 and Poly1305 (3x faster on large messages
# than the portable code used without it); importing nacl._sodium alone does not call it.
if sodium.sodium_init() < 0:
    raise ImportError("libsodium could not initialise (sodium_init failed)")
_SEAL = sodium.crypto_aead_chacha20poly1305_ietf_encrypt
_OPEN = sodium.crypto_aead_chacha20poly1305_ietf_decrypt
_NULL = sodium_ffi.NULL
_unpack: Callable[[Any, int], bytes] = sodium_ffi.unpack  # (char *, length) -> bytes
_new_buffer = sodium_ffi.new
_from_buffer = sodium_ffi.from_buffer
# Each direction's own output space: every message of a share's path (a submit, its answer, a
# SetTarget) fits; a larger one gets its own for the call.
SCRATCH_SIZE = 512
_LARGEST_SCRATCH_FRAME = HEADER_SIZE + SCRATCH_SIZE - MAC_SIZE  # (a frame whose payload fits)


class CipherState:
    """ChaCha20-Poly1305 with a 64-bit counter nonce (4 zero bytes, then the counter LE).

    libsodium rather than `cryptography`'s ChaCha20Poly1305: a refused SV2 share costs four
    AEAD calls (its header and payload in, the error's header and payload out), and each of
    cryptography's costs ~1.1 µs here (an OpenSSL context copied and the GIL released per
    call; the cipher itself is a tenth of that); libsodium through cffi costs ~0.5 µs. The
    bindings are PyNaCl's (PyCA's, as cryptography is; its wheels carry libsodium: no system
    library). docs/performance.md has the figures."""

    __slots__ = ("key", "nonce", "scratch")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a ChaCha20-Poly1305 key is 32 bytes")
        self.key = bytes(key)
        self.nonce = 0
        self.scratch = _new_buffer("char[]", SCRATCH_SIZE)

    def output(self, size: int) -> Any:
        """Space for `size` bytes of output: the scratch, or new space when it is too small."""
        return self.scratch if size <= SCRATCH_SIZE else _new_buffer("char[]", size)

    def encrypt(self, plaintext: bytes | bytearray | memoryview, ad: bytes = b"") -> bytes:
        nonce = self.nonce
        if nonce >= _NONCE_LIMIT:
            raise DecryptionError("Noise nonce exhausted: the connection must be reopened")
        length = len(plaintext) + MAC_SIZE
        out = self.output(length)
        _SEAL(out, _NULL, bytes(plaintext), length - MAC_SIZE, ad, len(ad), _NULL,
              _NONCE(nonce), self.key)  # fmt: skip
        self.nonce = nonce + 1
        return _unpack(out, length)

    def decrypt(self, ciphertext: bytes | bytearray | memoryview, ad: bytes = b"") -> bytes:
        nonce = self.nonce
        if nonce >= _NONCE_LIMIT:
            raise DecryptionError("Noise nonce exhausted: the connection must be reopened")
        length = len(ciphertext) - MAC_SIZE
        out = self.output(length)
        if length < 0 or _OPEN(out, _NULL, _NULL, bytes(ciphertext), length + MAC_SIZE, ad,
                               len(ad), _NONCE(nonce), self.key):  # fmt: skip
            raise DecryptionError(_BAD_TAG)
        self.nonce = nonce + 1
        return _unpack(out, length)


def hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise's HKDF with two outputs: RFC 5869 with salt = ck, empty info."""
    out = HKDF(algorithm=SHA256(), length=64, salt=chaining_key, info=b"").derive(ikm)
    return out[:32], out[32:]


class _SymmetricState:
    def __init__(self) -> None:
        self.h = sha256(PROTOCOL_NAME)  # longer than 32 bytes: hashed
        self.ck = self.h
        self.mix_hash(b"")  # the empty prologue
        self.cipher: CipherState | None = None

    def mix_hash(self, data: bytes) -> None:
        self.h = sha256(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = hkdf2(self.ck, ikm)
        self.cipher = CipherState(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = plaintext if self.cipher is None else self.cipher.encrypt(plaintext, self.h)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        if self.cipher is None:
            plaintext = ciphertext
        else:
            try:
                plaintext = self.cipher.decrypt(ciphertext, self.h)
            except DecryptionError:
                raise HandshakeError("handshake message failed authentication") from None
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """(initiator -> responder, responder -> initiator)."""
        k1, k2 = hkdf2(self.ck, b"")
        return CipherState(k1), CipherState(k2)


# --- the handshake ------------------------------------------------------------------------------


def respond(
    act1: bytes, static_secret: bytes, certificate: SignatureNoiseMessage
) -> tuple[bytes, NoiseSession]:
    """The pool's side: the initiator's 64 bytes in -> the 234-byte reply and the session."""
    if len(act1) != ACT1_SIZE:
        raise HandshakeError(f"handshake: expected {ACT1_SIZE} bytes, got {len(act1)}")
    state = _SymmetricState()
    re = bytes(act1)
    state.mix_hash(re)
    state.decrypt_and_hash(b"")  # the empty payload after e (no key yet: a MixHash)
    e_secret = new_secret_key()
    e_pub = ellswift_create(e_secret)
    s_pub = ellswift_create(static_secret)
    state.mix_hash(e_pub)
    state.mix_key(ellswift_ecdh(e_pub, re, e_secret, initiator=False))
    encrypted_static = state.encrypt_and_hash(s_pub)
    state.mix_key(ellswift_ecdh(s_pub, re, static_secret, initiator=False))
    encrypted_certificate = state.encrypt_and_hash(certificate.encode())
    to_responder, to_initiator = state.split()
    reply = e_pub + encrypted_static + encrypted_certificate
    return reply, NoiseSession(send=to_initiator, recv=to_responder)


@dataclasses.dataclass(frozen=True, slots=True)
class ServerHello:
    """What the initiator learnt: the server's static key and its certificate."""

    server_xonly: bytes
    certificate: SignatureNoiseMessage


class Initiator:
    """The miner's side (tests and the bench): `act1()`, then `finish(reply)`.

    With `authority_xonly`, `finish` checks that the authority signed the server's key, as the
    firmware does; `now` adds the validity-time check the firmware skips.
    """

    def __init__(self, authority_xonly: bytes | None = None, now: int | None = None) -> None:
        self.authority_xonly = authority_xonly
        self.now = now
        self._state = _SymmetricState()
        self._e_secret = new_secret_key()
        self._e_pub = ellswift_create(self._e_secret)

    def act1(self) -> bytes:
        self._state.mix_hash(self._e_pub)
        self._state.encrypt_and_hash(b"")
        return self._e_pub

    def finish(self, reply: bytes) -> tuple[NoiseSession, ServerHello]:
        if len(reply) != ACT2_SIZE:
            raise HandshakeError(f"handshake: expected {ACT2_SIZE} bytes, got {len(reply)}")
        state = self._state
        re = reply[:KEY_SIZE]
        state.mix_hash(re)
        state.mix_key(ellswift_ecdh(self._e_pub, re, self._e_secret, initiator=True))
        rs = state.decrypt_and_hash(reply[KEY_SIZE : 2 * KEY_SIZE + MAC_SIZE])
        state.mix_key(ellswift_ecdh(self._e_pub, rs, self._e_secret, initiator=True))
        certificate = SignatureNoiseMessage.decode(
            state.decrypt_and_hash(reply[2 * KEY_SIZE + MAC_SIZE :])
        )
        server_xonly = ellswift_xonly(rs)
        if self.authority_xonly is not None and not certificate.verify(
            server_xonly, self.authority_xonly, self.now
        ):
            raise HandshakeError("the server's certificate is not signed by the authority key")
        to_responder, to_initiator = state.split()
        return NoiseSession(send=to_responder, recv=to_initiator), ServerHello(
            server_xonly, certificate
        )


# --- transport ----------------------------------------------------------------------------------


def ciphertext_length(plaintext_length: int) -> int:
    """Bytes on the wire for a payload: 65,519-byte chunks, each with a 16-byte tag."""
    full, rest = divmod(plaintext_length, MAX_CHUNK_PLAINTEXT)
    return full * MAX_CHUNK_CIPHERTEXT + (rest + MAC_SIZE if rest else 0)


class NoiseSession:
    """Both directions after the handshake. `encrypt_*` for sending. Receiving: `absorb`
    bytes in any chunking, then `next_frame` gives the whole frames they complete one at a
    time, decrypted as asked for (`feed` does both, as an iterator)."""

    __slots__ = ("send", "recv", "max_payload", "_buffer", "_pos", "_header")

    def __init__(
        self, send: CipherState, recv: CipherState, max_payload: int = MAX_INBOUND_PAYLOAD
    ) -> None:
        self.send = send
        self.recv = recv
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._pos = 0  # where the unread bytes in _buffer start
        self._header: FrameHeader | None = None

    def encrypt_frame(self, frame: bytes) -> bytes:
        """A plaintext frame (header + payload, as `Message.encode_frame` gives) -> wire bytes."""
        encrypt = self.send.encrypt
        parts = [encrypt(frame[:HEADER_SIZE])]
        payload = memoryview(frame)[HEADER_SIZE:]
        for start in range(0, len(payload), MAX_CHUNK_PLAINTEXT):
            parts.append(encrypt(bytes(payload[start : start + MAX_CHUNK_PLAINTEXT])))
        return b"".join(parts)

    def encrypt_frames(self, frames: list[bytes]) -> bytes:
        """Plaintext frames -> their wire bytes, in order: the answers to one read, sent in
        one write (the pool's hot path: each frame's header and payload sealed here)."""
        send = self.send
        nonce = send.nonce
        if nonce >= _NONCE_LIMIT - 2 * len(frames):
            raise DecryptionError("Noise nonce exhausted: the connection must be reopened")
        key, out = send.key, send.scratch
        parts = []
        for frame in frames:
            size = len(frame)
            if HEADER_SIZE < size <= _LARGEST_SCRATCH_FRAME:
                _SEAL(out, _NULL, frame, HEADER_SIZE, _NULL, 0, _NULL, _NONCE(nonce), key)
                parts.append(_unpack(out, ENCRYPTED_HEADER_SIZE))
                _SEAL(out, _NULL, frame[HEADER_SIZE:], size - HEADER_SIZE, _NULL, 0, _NULL,
                      _NONCE(nonce + 1), key)  # fmt: skip
                parts.append(_unpack(out, size - HEADER_SIZE + MAC_SIZE))
                nonce += 2
            else:  # an empty payload, or a large one
                send.nonce = nonce
                parts.append(self.encrypt_frame(frame))
                nonce = send.nonce
        send.nonce = nonce
        return b"".join(parts)

    def encrypt_message(self, message: Message) -> bytes:
        return self.encrypt_frame(message.encode_frame())

    def absorb(self, data: bytes) -> None:
        """Received bytes, kept until `next_frame` reads them."""
        self._buffer += data

    def buffered(self) -> int:
        """Received bytes not yet read as frames."""
        return len(self._buffer) - self._pos

    def next_frame(self) -> tuple[FrameHeader, bytes] | None:
        """The next whole frame, decrypted, or None until more bytes come. Raises
        DecryptionError or Sv2DecodeError (oversized length): the connection is then
        unusable."""
        frames, error = self.read_frames(1)
        if error is not None:
            raise error
        return frames[0] if frames else None

    def read_frames(
        self, limit: int = 1 << 30
    ) -> tuple[list[tuple[FrameHeader, bytes]], Sv2DecodeError | None]:
        """The whole frames buffered (up to `limit`), decrypted, and the error that stopped
        the reading if one did (DecryptionError, or Sv2DecodeError for an oversized length):
        every frame before a bad one is delivered (a share, or a block, that came before
        garbage in the same read is not lost); after an error the connection is unusable.

        The pool's hot path (two decryptions per share): one call per read, the headers
        read and the decryptions done here rather than through CipherState.decrypt."""
        frames: list[tuple[FrameHeader, bytes]] = []
        error: Sv2DecodeError | None = None
        buffer, pos, header = self._buffer, self._pos, self._header
        recv = self.recv
        key, out = recv.key, recv.scratch
        available = len(buffer)
        # the received bytes read where they are (no copy per frame); released before
        # _keep_from resizes the buffer
        with _from_buffer(buffer) as received:
            try:
                while len(frames) < limit:
                    if recv.nonce >= _NONCE_LIMIT - 1:
                        raise DecryptionError("Noise nonce exhausted: the connection must be "
                                              "reopened")  # fmt: skip
                    if header is None:
                        end = pos + ENCRYPTED_HEADER_SIZE
                        if available < end:
                            break
                        if _OPEN(out, _NULL, _NULL, received + pos, ENCRYPTED_HEADER_SIZE,
                                 _NULL, 0, _NONCE(recv.nonce), key):  # fmt: skip
                            raise DecryptionError(_BAD_TAG)
                        recv.nonce += 1
                        pos = end
                        ext, msg_type, low, high = HEADER_LAYOUT.unpack(_unpack(out, HEADER_SIZE))
                        length = low | high << 16
                        if length > self.max_payload:
                            raise Sv2DecodeError(f"frame payload of {length} bytes exceeds the "
                                                 f"{self.max_payload}-byte limit")  # fmt: skip
                        header = _new_tuple(FrameHeader, (ext, msg_type, length))
                    length = header[2]
                    if 0 < length <= SCRATCH_SIZE:
                        end = pos + length + MAC_SIZE
                        if available < end:
                            break
                        if _OPEN(out, _NULL, _NULL, received + pos, length + MAC_SIZE, _NULL, 0,
                                 _NONCE(recv.nonce), key):  # fmt: skip
                            raise DecryptionError(_BAD_TAG)
                        recv.nonce += 1
                        payload = _unpack(out, length)
                    else:
                        end = pos + ciphertext_length(length)
                        if available < end:
                            break
                        payload = self._decrypt_chunks(pos, end) if length else b""
                    frames.append((header, payload))
                    header, pos = None, end
            except Sv2DecodeError as exc:
                error = exc
        self._keep_from(pos, header)
        return frames, error

    def _keep_from(self, pos: int, header: FrameHeader | None) -> None:
        """Read up to `pos` (and `header`, of a frame whose payload is still to come): what
        was read is dropped once the buffer is all read, or is large."""
        self._pos, self._header = pos, header
        if pos and pos == len(self._buffer):
            self._buffer.clear()
            self._pos = 0
        elif pos > 4096:
            del self._buffer[:pos]
            self._pos = 0

    def feed(self, data: bytes) -> Iterator[tuple[FrameHeader, bytes]]:
        """`data` absorbed at once, then its frames decrypted one by one as the caller
        iterates (frames the caller does not iterate to stay buffered for the next call)."""
        self.absorb(data)
        return self._frames()

    def _frames(self) -> Iterator[tuple[FrameHeader, bytes]]:
        while (frame := self.next_frame()) is not None:
            yield frame

    def _decrypt_chunks(self, start: int, end: int) -> bytes:
        chunks = []
        for pos in range(start, end, MAX_CHUNK_CIPHERTEXT):
            chunk_end = min(pos + MAX_CHUNK_CIPHERTEXT, end)
            chunks.append(self.recv.decrypt(self._buffer[pos:chunk_end]))
        return b"".join(chunks)
