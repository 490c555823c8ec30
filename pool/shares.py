"""Judging one `mining.submit` against its job: pure, no I/O, no session state."""

from __future__ import annotations

import functools
from typing import NamedTuple

from .consensus.block import header_hash
from .consensus.target import difficulty_to_target, hash_difficulty, hash_to_int
from .jobs import EXTRANONCE2_SIZE, Job

# Stratum error codes (slush's list, as every pool and firmware uses them).
ERR_OTHER = 20
ERR_STALE = 21
ERR_DUPLICATE = 22
ERR_LOW_DIFFICULTY = 23
ERR_UNAUTHORIZED = 24
ERR_NOT_SUBSCRIBED = 25

# ntime may move ahead of the job's by this much (home hardware rolls far less) and never past
# the consensus limit of the node's time + 2 h.
MAX_NTIME_ROLL = 600
MAX_FUTURE_SECONDS = 7200


@functools.lru_cache(maxsize=4096)
def share_target(difficulty: float) -> int:
    """The target a share must meet at `difficulty` (exact Fraction arithmetic, so cached)."""
    return difficulty_to_target(difficulty)


class RootCache:
    """The merkle root of a connection's last (job, extranonce): a miner sends many shares per
    extranonce2 (it rolls nonce, version bits and ntime first), and the root costs 1 + branch
    length double hashes, the header just one."""

    __slots__ = ("job", "extranonce", "root")

    def __init__(self) -> None:
        self.job: Job | None = None
        self.extranonce = b""
        self.root = b""

    def get(self, job: Job, extranonce: bytes) -> bytes:
        if job is not self.job or extranonce != self.extranonce:
            self.job, self.extranonce, self.root = job, extranonce, job.merkle_root(extranonce)
        return self.root


class ShareError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


MAX_SEEN_SHARES = 50_000  # header hashes remembered per V1 connection or SV2 channel


def first_submission(seen: dict[bytes, None], header_hash: bytes) -> bool:
    """True the first time a header comes in (it is then remembered, the oldest forgotten
    past MAX_SEEN_SHARES); False for the same work submitted again. Every job has its own
    coinbase, so equal headers mean the same work, whatever job id it came under."""
    if header_hash in seen:
        return False
    seen[header_hash] = None
    if len(seen) > MAX_SEEN_SHARES:
        del seen[next(iter(seen))]
    return True


class Share(NamedTuple):
    """A submitted header checked against its job, and its hash. A NamedTuple rather than a
    frozen dataclass: one is made for every share, refused ones included, and a frozen
    dataclass's __init__ (one object.__setattr__ per field) costs ~1 µs more."""

    job: Job
    extranonce2: bytes
    ntime: int
    nonce: int
    version: int
    header: bytes
    hash: bytes  # internal byte order
    hash_int: int  # the hash as the number targets are compared with (judging needs it twice)

    @property
    def difficulty(self) -> float:
        """The difficulty this hash achieved (for best-share records)."""
        return hash_difficulty(self.hash)

    @property
    def is_block(self) -> bool:
        return self.hash_int <= self.job.template.target

    @property
    def block_hash(self) -> str:
        return self.hash[::-1].hex()


def parse_hex32(value: object, name: str) -> int:
    """A 32-bit big-endian hex field; short values are left-padded (NerdMiner drops zeros)."""
    if not (isinstance(value, str) and 1 <= len(value) <= 8 and value.isascii()):
        raise ShareError(ERR_OTHER, f"{name} must be up to 8 hex digits")
    if not value.isalnum():  # int() would also take "-1", "+1", " 1", "0_1"
        raise ShareError(ERR_OTHER, f"{name} must be up to 8 hex digits")
    try:
        return int(value, 16)
    except ValueError:
        raise ShareError(ERR_OTHER, f"{name} is not hex") from None


def parse_extranonce2(value: object) -> bytes:
    """extranonce2 as sent; like ckpool, a short one is padded with trailing zeros."""
    if not isinstance(value, str) or len(value) > 2 * EXTRANONCE2_SIZE or len(value) % 2:
        raise ShareError(ERR_OTHER, f"extranonce2 must be {2 * EXTRANONCE2_SIZE} hex digits")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ShareError(ERR_OTHER, "extranonce2 is not hex") from None
    return raw.ljust(EXTRANONCE2_SIZE, b"\0")


def build_share(
    job: Job,
    extranonce1: bytes,
    extranonce2_hex: object,
    ntime_hex: object,
    nonce_hex: object,
    version_bits_hex: object | None,
    version_mask: int,
    now: float,
    roots: RootCache | None = None,
) -> Share:
    """Check a V1 submit's text fields against the job and hash it. Raises ShareError (code
    20). `roots` is the connection's cache of its last merkle root."""
    extranonce2 = parse_extranonce2(extranonce2_hex)
    ntime = parse_hex32(ntime_hex, "ntime")
    nonce = parse_hex32(nonce_hex, "nonce")
    bits = None if version_bits_hex is None else parse_hex32(version_bits_hex, "version bits")
    return share_of(job, extranonce1, extranonce2, ntime, nonce, bits, version_mask, now, roots)


def share_of(
    job: Job,
    extranonce1: bytes,
    extranonce2: bytes,
    ntime: int,
    nonce: int,
    version_bits: int | None,
    version_mask: int,
    now: float,
    roots: RootCache | None = None,
) -> Share:
    """Check a submit's parsed fields (V1 after parsing its text, SV2 as sent) against the job
    and hash it. Raises ShareError (code 20)."""
    earliest = job.template.mintime
    latest = min(job.ntime + MAX_NTIME_ROLL, int(now) + MAX_FUTURE_SECONDS)
    if not earliest <= ntime <= max(latest, job.ntime):
        raise ShareError(ERR_OTHER, "ntime out of range")
    version = job.version
    if version_bits is not None:
        if version_bits & ~version_mask:
            raise ShareError(ERR_OTHER, "invalid version bits (outside the negotiated mask)")
        version = (job.version & ~version_mask) | version_bits
    extranonce = extranonce1 + extranonce2
    if roots is None:
        header = job.header(extranonce, ntime, nonce, version)
    else:
        header = job.header_with_root(roots.get(job, extranonce), ntime, nonce, version)
    digest = header_hash(header)
    return Share(job, extranonce2, ntime, nonce, version, header, digest, hash_to_int(digest))
