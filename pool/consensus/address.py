"""Payout addresses to scriptPubKeys: Base58Check (P2PKH, P2SH), BIP173 bech32, BIP350 bech32m."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .serialize import sha256d


class AddressError(ValueError):
    """An address that is malformed or belongs to another network."""


@dataclass(frozen=True)
class ChainParams:
    name: str  # as `getblockchaininfo` reports `chain`
    hrp: str
    p2pkh_version: int
    p2sh_version: int


CHAINS: dict[str, ChainParams] = {
    "main": ChainParams("main", "bc", 0x00, 0x05),
    "test": ChainParams("test", "tb", 0x6F, 0xC4),
    "testnet4": ChainParams("testnet4", "tb", 0x6F, 0xC4),
    "signet": ChainParams("signet", "tb", 0x6F, 0xC4),
    "regtest": ChainParams("regtest", "bcrt", 0x6F, 0xC4),
}

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_CONST = 1
_BECH32M_CONST = 0x2BC830A3


def chain_params(chain: str) -> ChainParams:
    try:
        return CHAINS[chain]
    except KeyError:
        raise AddressError(f"unknown chain {chain!r}") from None


# --- Base58Check -------------------------------------------------------------------------------


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        if c not in _B58_INDEX:
            raise AddressError(f"invalid Base58 character {c!r}")
        n = n * 58 + _B58_INDEX[c]
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


def b58check_encode(payload: bytes) -> str:
    return b58encode(payload + sha256d(payload)[:4])


def b58check_decode(text: str) -> bytes:
    raw = b58decode(text)
    if len(raw) < 5 or sha256d(raw[:-4])[:4] != raw[-4:]:
        raise AddressError("bad Base58Check checksum")
    return raw[:-4]


# --- bech32 / bech32m (BIP173, BIP350) -----------------------------------------------------------


def _polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convertbits(data: list[int] | bytes, frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        if value < 0 or value >> frombits:
            raise AddressError("invalid data value")
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise AddressError("invalid padding")
    return out


def bech32_decode(text: str) -> tuple[str, list[int], int]:
    """Return (hrp, data without checksum, checksum constant)."""
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise AddressError("invalid character")
    if text.lower() != text and text.upper() != text:
        raise AddressError("mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text) or len(text) > 90:
        raise AddressError("bad bech32 separator or length")
    hrp = text[:pos]
    try:
        data = [_BECH32_CHARSET.index(c) for c in text[pos + 1 :]]
    except ValueError:
        raise AddressError("invalid bech32 character") from None
    const = _polymod(_hrp_expand(hrp) + data)
    if const not in (_BECH32_CONST, _BECH32M_CONST):
        raise AddressError("bad bech32 checksum")
    return hrp, data[:-6], const


def bech32_encode(hrp: str, data: list[int], const: int) -> str:
    values = _hrp_expand(hrp) + data
    polymod = _polymod(values + [0] * 6) ^ const
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[d] for d in data + checksum)


def encode_segwit_address(hrp: str, witver: int, program: bytes) -> str:
    const = _BECH32_CONST if witver == 0 else _BECH32M_CONST
    return bech32_encode(hrp, [witver] + _convertbits(program, 8, 5, True), const)


def decode_segwit_address(hrp: str, address: str) -> tuple[int, bytes]:
    got_hrp, data, const = bech32_decode(address)
    if got_hrp != hrp:
        raise AddressError(f"address prefix {got_hrp!r} is not this network's {hrp!r}")
    if not data:
        raise AddressError("empty witness data")
    witver = data[0]
    if witver > 16:
        raise AddressError("invalid witness version")
    program = bytes(_convertbits(data[1:], 5, 8, False))
    if not 2 <= len(program) <= 40:
        raise AddressError("invalid witness program length")
    if witver == 0 and len(program) not in (20, 32):
        raise AddressError("invalid witness v0 program length")
    if witver == 0 and const != _BECH32_CONST:
        raise AddressError("witness v0 address must use a bech32 checksum")
    if witver != 0 and const != _BECH32M_CONST:
        raise AddressError("version 1+ witness address must use a bech32m checksum")
    return witver, program


# --- address <-> scriptPubKey ---------------------------------------------------------------------


def p2pkh_script(h160: bytes) -> bytes:
    return b"\x76\xa9\x14" + h160 + b"\x88\xac"


def p2sh_script(h160: bytes) -> bytes:
    return b"\xa9\x14" + h160 + b"\x87"


def witness_script(witver: int, program: bytes) -> bytes:
    op = 0 if witver == 0 else 0x50 + witver
    return bytes([op, len(program)]) + program


def address_to_script(address: str, chain: str) -> bytes:
    """The scriptPubKey paying `address` on `chain`; AddressError says why an address is refused."""
    params = chain_params(chain)
    address = address.strip()
    if not address:
        raise AddressError("empty address")
    lowered = address.lower()
    if lowered.startswith(params.hrp + "1"):
        witver, program = decode_segwit_address(params.hrp, address)
        return witness_script(witver, program)
    for other in CHAINS.values():
        if other.hrp != params.hrp and lowered.startswith(other.hrp + "1"):
            raise AddressError(
                f"{address} is a {other.name} address, but the node is on {params.name}"
            )
    payload = b58check_decode(address)
    if len(payload) != 21:
        raise AddressError("invalid Base58 address length")
    version, h160 = payload[0], payload[1:]
    if version == params.p2pkh_version:
        return p2pkh_script(h160)
    if version == params.p2sh_version:
        return p2sh_script(h160)
    raise AddressError(f"{address} is not a {params.name} address (version byte {version})")


def script_to_address(script: bytes, chain: str) -> str | None:
    """The address of a standard output script, or None for anything else (e.g. OP_RETURN)."""
    params = chain_params(chain)
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return b58check_encode(bytes([params.p2pkh_version]) + script[3:23])
    if len(script) == 23 and script[:2] == b"\xa9\x14" and script[22] == 0x87:
        return b58check_encode(bytes([params.p2sh_version]) + script[2:22])
    if 4 <= len(script) <= 42 and script[1] == len(script) - 2:
        op = script[0]
        if op == 0:
            if len(script) not in (22, 34):  # v0 programs are 20 or 32 bytes (BIP141)
                return None
            witver = 0
        elif 0x51 <= op <= 0x60:
            witver = op - 0x50
        else:
            return None
        return encode_segwit_address(params.hrp, witver, script[2:])
    return None


def is_supported_payout(script: bytes) -> bool:
    """P2PKH, P2SH, P2WPKH, P2WSH or P2TR: the output types a miner can spend today."""
    n = len(script)
    return (
        (n == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac")
        or (n == 23 and script[:2] == b"\xa9\x14" and script[22] == 0x87)
        or (n in (22, 34) and script[0] == 0 and script[1] == n - 2)
        or (n == 34 and script[:2] == b"\x51\x20")
    )


def payout_script(address: str, chain: str) -> bytes:
    """The output script paying `address` on `chain`, if it is a type a miner can spend
    today; AddressError says why not."""
    script = address_to_script(address, chain)
    if not is_supported_payout(script):
        raise AddressError(
            "only P2PKH, P2SH, P2WPKH, P2WSH and P2TR payouts are supported (outputs to "
            "future witness versions can be spent by anyone today)"
        )
    return script


def normalize_address(address: str) -> str:
    """Bech32 addresses are case-insensitive (all-uppercase is valid); base58 is not."""
    lowered = address.lower()
    return lowered if lowered.startswith(("bc1", "tb1", "bcrt1")) else address


def address_allowed(allowed: Iterable[str], address: str) -> bool:
    """Whether `address` is on the operator's list (an empty list allows every address)."""
    wanted = normalize_address(address)
    listed = [normalize_address(a) for a in allowed]
    return not listed or wanted in listed
