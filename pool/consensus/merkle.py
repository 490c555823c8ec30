"""Merkle trees over txids (internal byte order) and the coinbase branch Stratum sends."""

from __future__ import annotations

from .serialize import sha256d


def merkle_root(hashes: list[bytes]) -> bytes:
    """Core's ComputeMerkleRoot: duplicate the last node of odd levels."""
    if not hashes:
        raise ValueError("empty merkle tree")
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def coinbase_merkle_branch(txids: list[bytes]) -> list[bytes]:
    """Branch from the coinbase (position 0) to the root, given the other transactions' txids.

    The coinbase's own hash is unknown here (it depends on the extranonces), so level 0 uses a
    placeholder that is never read: only siblings on the path of position 0 go into the branch.
    """
    branch: list[bytes] = []
    level: list[bytes] = [b""] + list(txids)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        branch.append(level[1])
        level = [b""] + [sha256d(level[i] + level[i + 1]) for i in range(2, len(level), 2)]
    return branch


def merkle_root_from_branch(leaf: bytes, branch: list[bytes]) -> bytes:
    root = leaf
    for node in branch:
        root = sha256d(root + node)
    return root
