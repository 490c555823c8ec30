"""pool.sv2.noise and pool.sv2.certificate: vectors from the spec and the firmware, the NX
handshake between our initiator and responder, tampering, and the encrypted framing."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pool.sv2 import codec
from pool.sv2.certificate import (
    AuthorityKeyError,
    ServerIdentity,
    SignatureNoiseMessage,
    authority_pubkey_base58,
    load_authority_key,
    load_or_create_authority_key,
    new_secret_key,
    parse_authority_pubkey,
    sign_certificate,
    xonly_public_key,
)
from pool.sv2.noise import (
    ACT2_SIZE,
    MAX_CHUNK_PLAINTEXT,
    PROTOCOL_NAME,
    SCRATCH_SIZE,
    CipherState,
    DecryptionError,
    HandshakeError,
    Initiator,
    NoiseSession,
    _SymmetricState,
    ciphertext_length,
    ellswift_create,
    ellswift_ecdh,
    ellswift_xonly,
    hkdf2,
    respond,
)

# the spec's base58check test vector (4.7.1; its raw key [118, 99, 112, ...] in hex)
SPEC_CA_KEY = bytes.fromhex("76637000979c1c11af0c300bcd8c7fe48610fce9b9c11e3daee35ae0b08a7455")
SPEC_CA_BASE58 = "9bXiEd8boQVhq7WddEcERUL5tyyJVFYdU8th3HfbNXK3Yw6GRXh"
# sv2_noise.c's check of SHA-256(protocol name)
FIRMWARE_INITIAL_H = bytes([46, 180, 120, 129, 32, 142, 158, 238, 31, 102, 159, 103, 198, 110,
                            231, 14, 169, 234, 136, 9, 13, 80, 63, 232, 48, 220, 75, 200, 62, 41,
                            191, 16])  # fmt: skip


def handshake(
    authority: bytes | None = None, identity: ServerIdentity | None = None
) -> tuple[NoiseSession, NoiseSession]:
    """(client, server) sessions after a full handshake."""
    authority = authority or new_secret_key()
    identity = identity or ServerIdentity.issue(authority, 3600, int(time.time()))
    initiator = Initiator(xonly_public_key(authority), now=int(time.time()))
    reply, server = respond(initiator.act1(), identity.static_secret, identity.certificate)
    client, hello = initiator.finish(reply)
    assert hello.server_xonly == xonly_public_key(identity.static_secret)
    return client, server


# --- vectors ------------------------------------------------------------------------------------


def test_initial_hash_matches_the_firmware() -> None:
    assert hashlib.sha256(PROTOCOL_NAME).digest() == FIRMWARE_INITIAL_H
    state = _SymmetricState()
    assert state.ck == FIRMWARE_INITIAL_H
    assert state.h == hashlib.sha256(FIRMWARE_INITIAL_H).digest()  # MixHash(empty prologue)


def test_hkdf_is_rfc5869_test_case_3() -> None:
    # RFC 5869 A.3: SHA-256, IKM = 0x0b * 22, empty salt, empty info
    okm = "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    out1, out2 = hkdf2(b"", b"\x0b" * 22)
    assert (out1 + out2).hex()[: len(okm)] == okm


def test_hkdf_is_the_specs_hmac_construction() -> None:
    ck, ikm = os.urandom(32), os.urandom(32)
    temp = hmac.new(ck, ikm, "sha256").digest()
    out1 = hmac.new(temp, b"\x01", "sha256").digest()
    out2 = hmac.new(temp, out1 + b"\x02", "sha256").digest()
    assert hkdf2(ck, ikm) == (out1, out2)


def test_nonce_is_four_zero_bytes_then_the_counter_little_endian() -> None:
    key = os.urandom(32)
    cipher = CipherState(key)
    cipher.nonce = 0x0102030405060708
    nonce = bytes(4) + bytes.fromhex("0807060504030201")
    expected = ChaCha20Poly1305(key).encrypt(nonce, b"x", b"")
    assert cipher.encrypt(b"x") == expected
    assert cipher.nonce == 0x0102030405060709


# sizes on either side of the scratch space each direction decrypts and seals into
SCRATCH_EDGES = [0, 1, 6, SCRATCH_SIZE - 16, SCRATCH_SIZE - 15, SCRATCH_SIZE, SCRATCH_SIZE + 1,
                 4000, MAX_CHUNK_PLAINTEXT]  # fmt: skip


def spec_nonce(counter: int) -> bytes:
    return bytes(4) + counter.to_bytes(8, "little")


@pytest.mark.parametrize("size", SCRATCH_EDGES)
@pytest.mark.parametrize("ad", [b"", os.urandom(32)])
def test_cipher_state_agrees_with_an_independent_chacha20_poly1305(size: int, ad: bytes) -> None:
    # libsodium (ours) against OpenSSL (through cryptography), both ways, at every size class
    key, plaintext = os.urandom(32), os.urandom(size)
    reference = ChaCha20Poly1305(key)
    sender, receiver = CipherState(key), CipherState(key)
    for counter in range(3):
        sealed = sender.encrypt(plaintext, ad)
        assert sealed == reference.encrypt(spec_nonce(counter), plaintext, ad)
        assert receiver.decrypt(sealed, ad) == plaintext
    assert receiver.decrypt(reference.encrypt(spec_nonce(3), plaintext, ad), ad) == plaintext
    assert sender.nonce == 3 and receiver.nonce == 4


def test_libsodium_is_initialised_by_the_import() -> None:
    # (without sodium_init it runs its portable code, not the CPU's fastest)
    from nacl._sodium import lib

    assert lib.sodium_init() == 1  # 1: it already was


def reference_wire(key: bytes, first_nonce: int, frames: list[bytes]) -> bytes:
    """The spec's encrypted framing written with cryptography's AEAD: each header alone, then
    the payload in 65,519-byte chunks."""
    aead, nonce, wire = ChaCha20Poly1305(key), first_nonce, b""
    for frame in frames:
        pieces = [frame[:6]] + [frame[at : at + MAX_CHUNK_PLAINTEXT]
                                for at in range(6, len(frame), MAX_CHUNK_PLAINTEXT)]  # fmt: skip
        for piece in pieces:
            wire += aead.encrypt(spec_nonce(nonce), piece, None)
            nonce += 1
    return wire


def frames_of_sizes(sizes: list[int]) -> list[bytes]:
    return [codec.FrameHeader(0, 0x1C, size).encode() + os.urandom(size) for size in sizes]


def test_read_frames_and_encrypt_frames_agree_with_an_independent_aead() -> None:
    # The hot loops call libsodium themselves, reading in place and sealing into scratch space:
    # checked against the framing written and read with OpenSSL's ChaCha20-Poly1305.
    _, server = handshake()
    key = os.urandom(32)
    server.send, server.recv = CipherState(key), CipherState(key)
    frames = frames_of_sizes(SCRATCH_EDGES + [MAX_CHUNK_PLAINTEXT + 1, 3])
    server.absorb(reference_wire(key, 0, frames))
    got, error = server.read_frames()
    assert error is None and [h.encode() + p for h, p in got] == frames
    server.send.nonce = 5
    assert server.encrypt_frames(frames) == reference_wire(key, 5, frames)


def test_failed_decryption_does_not_use_up_the_nonce() -> None:
    key = os.urandom(32)
    sender, receiver = CipherState(key), CipherState(key)
    ciphertext = sender.encrypt(b"hello")
    with pytest.raises(DecryptionError):
        receiver.decrypt(b"\x00" + ciphertext[1:])
    assert receiver.decrypt(ciphertext) == b"hello"


def test_ellswift_ecdh_agrees_and_depends_on_roles() -> None:
    a, b = new_secret_key(), new_secret_key()
    ea, eb = ellswift_create(a), ellswift_create(b)
    shared = ellswift_ecdh(ea, eb, a, initiator=True)
    assert ellswift_ecdh(eb, ea, b, initiator=False) == shared
    assert ellswift_ecdh(eb, ea, b, initiator=True) != shared  # BIP324: not symmetric in roles
    assert ellswift_xonly(ea) == xonly_public_key(a)


def test_base58check_authority_key_spec_vector() -> None:
    assert authority_pubkey_base58(SPEC_CA_KEY) == SPEC_CA_BASE58
    assert parse_authority_pubkey(SPEC_CA_BASE58) == SPEC_CA_KEY
    assert parse_authority_pubkey(SPEC_CA_KEY.hex()) == SPEC_CA_KEY
    assert parse_authority_pubkey(f"  {SPEC_CA_BASE58}\n") == SPEC_CA_KEY


@pytest.mark.parametrize(
    "text",
    [
        SPEC_CA_BASE58[:-1] + "j",  # checksum
        "1" * 10,
        "0OIl",  # not base58
        "zz" * 32,  # 64 characters, not hex, not base58check
        "00" * 32,  # hex, but x = 0 is not on the curve
    ],
)
def test_bad_authority_keys_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(AuthorityKeyError, match="authority key"):
        parse_authority_pubkey(text)


# --- certificate --------------------------------------------------------------------------------


def test_certificate_signs_the_specs_message() -> None:
    authority, server = new_secret_key(), xonly_public_key(new_secret_key())
    cert = sign_certificate(authority, server, 100, 200)
    assert len(cert.encode()) == 74
    assert SignatureNoiseMessage.decode(cert.encode()) == cert
    m = hashlib.sha256(cert.encode()[:10] + server).digest()  # version || times || server key
    assert cert.digest(server) == m
    assert cert.verify(server, xonly_public_key(authority))
    assert cert.verify(server, xonly_public_key(authority), now=150)
    assert not cert.verify(server, xonly_public_key(authority), now=201)
    assert not cert.verify(server, xonly_public_key(new_secret_key()))
    assert not cert.verify(xonly_public_key(new_secret_key()), xonly_public_key(authority))


def test_authority_key_file_is_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "sv2_authority.key"
    secret = load_or_create_authority_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_authority_key(path) == secret
    assert load_authority_key(path) == secret


def test_authority_key_file_open_to_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sv2_authority.key"
    load_or_create_authority_key(path)
    path.chmod(0o644)
    with pytest.raises(AuthorityKeyError, match="chmod 600"):
        load_or_create_authority_key(path)


def test_authority_key_file_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sv2_authority.key"
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(AuthorityKeyError, match="64 hex digits"):
        load_or_create_authority_key(path)


def test_authority_key_file_in_a_missing_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(AuthorityKeyError, match="cannot create"):
        load_or_create_authority_key(tmp_path / "missing" / "key")


# --- handshake ----------------------------------------------------------------------------------


def test_handshake_and_both_directions() -> None:
    client, server = handshake()
    submit = codec.SubmitSharesStandard(1, 2, 3, 4, 5, 6)
    assert [codec.decode_message(*f) for f in server.feed(client.encrypt_message(submit))] == [
        submit
    ]
    success = codec.SubmitSharesSuccess(1, 2, 1, 1)
    assert [codec.decode_message(*f) for f in client.feed(server.encrypt_message(success))] == [
        success
    ]


def test_reply_is_234_bytes_as_the_firmware_reads() -> None:
    authority = new_secret_key()
    identity = ServerIdentity.issue(authority, 3600, int(time.time()))
    reply, _ = respond(Initiator().act1(), identity.static_secret, identity.certificate)
    assert len(reply) == ACT2_SIZE == 234


def test_wrong_authority_fails_the_handshake() -> None:
    identity = ServerIdentity.issue(new_secret_key(), 3600, int(time.time()))
    initiator = Initiator(xonly_public_key(new_secret_key()))
    reply, _ = respond(initiator.act1(), identity.static_secret, identity.certificate)
    with pytest.raises(HandshakeError, match="not signed by the authority"):
        initiator.finish(reply)


def test_expired_certificate_fails_when_times_are_checked() -> None:
    authority = new_secret_key()
    identity = ServerIdentity.issue(authority, 60, now=1_000_000)
    initiator = Initiator(xonly_public_key(authority), now=2_000_000)
    reply, _ = respond(initiator.act1(), identity.static_secret, identity.certificate)
    with pytest.raises(HandshakeError):
        initiator.finish(reply)


@pytest.mark.parametrize("offset", [0, 63, 64, 100, 143, 144, 200, 233])
def test_any_flipped_reply_byte_fails_the_handshake(offset: int) -> None:
    authority = new_secret_key()
    identity = ServerIdentity.issue(authority, 3600, int(time.time()))
    initiator = Initiator(xonly_public_key(authority))
    reply, _ = respond(initiator.act1(), identity.static_secret, identity.certificate)
    tampered = bytearray(reply)
    tampered[offset] ^= 0x01
    with pytest.raises(HandshakeError):
        initiator.finish(bytes(tampered))


@pytest.mark.parametrize("size", [0, 63, 65, 128])
def test_responder_refuses_a_first_message_of_the_wrong_size(size: int) -> None:
    identity = ServerIdentity.issue(new_secret_key(), 3600, int(time.time()))
    with pytest.raises(HandshakeError):
        respond(os.urandom(size), identity.static_secret, identity.certificate)


def test_garbage_first_message_fails_at_the_first_frame() -> None:
    # any 64 bytes are a valid ElligatorSwift key: a stranger's garbage yields keys nobody
    # shares, so the first frame after it cannot be authenticated
    identity = ServerIdentity.issue(new_secret_key(), 3600, int(time.time()))
    _, server = respond(os.urandom(64), identity.static_secret, identity.certificate)
    with pytest.raises(DecryptionError):
        list(server.feed(os.urandom(22)))


# --- transport framing --------------------------------------------------------------------------


def test_ciphertext_length_is_the_specs() -> None:
    assert ciphertext_length(0) == 0
    assert ciphertext_length(1) == 17
    assert ciphertext_length(65519) == 65535
    assert ciphertext_length(65520) == 65535 + 17
    assert ciphertext_length(3 * 65519) == 3 * 65535


def test_header_only_frame_is_22_bytes() -> None:
    client, server = handshake()
    wire = client.encrypt_frame(codec.FrameHeader(0, 0x7F, 0).encode())
    assert len(wire) == 22
    assert list(server.feed(wire)) == [(codec.FrameHeader(0, 0x7F, 0), b"")]


def test_large_payloads_split_into_65519_byte_chunks_in_any_chunking() -> None:
    client, server = handshake()
    server.max_payload = 1 << 20
    job = codec.NewExtendedMiningJob(1, 2, None, 1, True, (), b"\x01" * 65000, b"\x02" * 65000)
    frame = job.encode_frame()
    wire = client.encrypt_frame(frame)
    assert len(wire) == 22 + ciphertext_length(len(frame) - 6)
    frames = []
    for start in range(0, len(wire), 4099):
        frames += server.feed(wire[start : start + 4099])
    assert [codec.decode_message(*f) for f in frames] == [job]


def test_oversized_frame_is_refused_before_its_payload_arrives() -> None:
    client, server = handshake()
    header = codec.FrameHeader(0, 0x00, 65537).encode()
    with pytest.raises(codec.Sv2DecodeError, match="exceeds"):
        list(server.feed(client.send.encrypt(header)))


def test_frames_before_a_bad_one_in_the_same_read_are_delivered() -> None:
    # A share (or a block) followed in the same TCP read by garbage must still be handled.
    client, server = handshake()
    submits = [codec.SubmitSharesStandard(1, n, 2, n, 0, 0) for n in range(3)]
    wire = b"".join(client.encrypt_message(m) for m in submits) + os.urandom(40)
    delivered = []
    with pytest.raises(DecryptionError):
        for frame in server.feed(wire):
            delivered.append(codec.decode_message(*frame))
    assert delivered == submits


def test_fed_bytes_stay_buffered_when_not_iterated() -> None:
    client, server = handshake()
    first, second = codec.CloseChannel(1, "a"), codec.CloseChannel(2, "b")
    server.feed(client.encrypt_message(first))  # never iterated
    frames = list(server.feed(client.encrypt_message(second)))
    assert [codec.decode_message(*f) for f in frames] == [first, second]


def test_replayed_or_reordered_frames_fail() -> None:
    client, server = handshake()
    first = client.encrypt_message(codec.CloseChannel(1, "a"))
    second = client.encrypt_message(codec.CloseChannel(1, "b"))
    with pytest.raises(DecryptionError):
        list(server.feed(second + first))
    _, server2 = handshake()
    with pytest.raises(DecryptionError):
        list(server2.feed(first))  # another session's keys


def test_read_frames_gives_the_frames_before_a_bad_one_then_the_error() -> None:
    # The pool's reader: one call per read, the error returned after what came before it.
    client, server = handshake()
    submits = [codec.SubmitSharesStandard(1, n, 2, n, 0, 0) for n in range(3)]
    server.absorb(b"".join(client.encrypt_message(m) for m in submits) + os.urandom(40))
    frames, error = server.read_frames()
    assert [codec.decode_message(*f) for f in frames] == submits
    assert isinstance(error, DecryptionError)


def test_read_frames_in_any_chunking_and_with_a_limit() -> None:
    client, server = handshake()
    messages = [codec.CloseChannel(n, "x" * n) for n in range(1, 30)]
    wire = b"".join(client.encrypt_message(m) for m in messages)
    got = []
    for start in range(0, len(wire), 7):  # a byte count that splits headers and payloads
        server.absorb(wire[start : start + 7])
        frames, error = server.read_frames(limit=2)
        assert error is None and len(frames) <= 2
        got += frames
    while frames := server.read_frames(limit=2)[0]:
        got += frames
    assert [codec.decode_message(*f) for f in got] == messages
    assert server.buffered() == 0


def test_encrypt_frames_is_encrypt_frame_in_turn() -> None:
    # Answers gathered over one read and sealed together: the same bytes, the same nonces.
    _, one = handshake()
    _, batch = handshake()
    batch.send = CipherState(b"k" * 32)
    one.send = CipherState(b"k" * 32)
    frames = [
        codec.submit_error_frame(1, 7, "difficulty-too-low"),
        codec.SetNewPrevHash(1, 2, bytes(32), 3, 4).encode_frame(),
        codec.SetupConnectionSuccess(2, 0).encode_frame(),
        codec.FrameHeader(0, 0x04, 0).encode(),  # an empty payload: the header alone
        codec.NewExtendedMiningJob(
            1, 2, None, 3, True, (), bytes(65_535), bytes(99)
        ).encode_frame(),  # two chunks
    ]
    assert batch.encrypt_frames(frames) == b"".join(one.encrypt_frame(f) for f in frames)
    assert batch.send.nonce == one.send.nonce
