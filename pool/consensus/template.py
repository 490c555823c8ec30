"""A block template: one `getblocktemplate` answer (BIP22/23), parsed once.

Pure data: the node package fetches the answers, the job manager builds miners' work from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .merkle import coinbase_merkle_branch
from .serialize import display_to_internal
from .target import nbits_to_target, target_to_difficulty

# The block version bits BIP320 leaves to miners for version rolling.
BIP320_MASK = 0x1FFFE000
# Rules we know how to follow; a template requiring any other ("!"-prefixed) one is refused.
KNOWN_RULES = {"segwit", "signet", "csv", "taproot", "testdummy"}


class TemplateError(Exception):
    """A template we cannot mine on."""


@dataclass(frozen=True)
class Template:
    height: int
    prev_hash: str  # display hex, as the node reports it
    version: int  # as the node gave it
    bits: int
    target: int
    curtime: int
    mintime: int
    coinbase_value: int
    coinbase_aux: bytes
    witness_commitment: bytes | None
    transactions: tuple[bytes, ...]  # raw (witness-serialized) data, in template order
    txids: tuple[bytes, ...]  # internal byte order
    merkle_branch: tuple[bytes, ...]
    longpollid: str | None

    @classmethod
    def from_rpc(cls, gbt: dict[str, Any]) -> Template:
        for rule in gbt.get("rules", []):
            if rule.startswith("!") and rule[1:] not in KNOWN_RULES:
                raise TemplateError(f"the node's template requires unknown rule {rule!r}")
        txs = gbt.get("transactions", [])
        txids = tuple(display_to_internal(tx["txid"]) for tx in txs)
        commitment = gbt.get("default_witness_commitment")
        aux = b"".join(bytes.fromhex(v) for v in gbt.get("coinbaseaux", {}).values())
        return cls(
            height=int(gbt["height"]),
            prev_hash=str(gbt["previousblockhash"]),
            version=int(gbt["version"]),
            bits=int(gbt["bits"], 16),
            target=int(gbt["target"], 16) if "target" in gbt else nbits_to_target(
                int(gbt["bits"], 16)
            ),
            curtime=int(gbt["curtime"]),
            mintime=int(gbt.get("mintime", gbt["curtime"])),
            coinbase_value=int(gbt["coinbasevalue"]),
            coinbase_aux=aux,
            witness_commitment=bytes.fromhex(commitment) if commitment else None,
            transactions=tuple(bytes.fromhex(tx["data"]) for tx in txs),
            txids=txids,
            merkle_branch=tuple(coinbase_merkle_branch(list(txids))),
            longpollid=gbt.get("longpollid"),
        )

    @property
    def network_difficulty(self) -> float:
        return target_to_difficulty(self.target)

    @property
    def job_version(self) -> int:
        """The version sent to miners: the template's with the BIP320 rolling bits cleared,
        because firmware disagrees whether rolled bits are ORed or XORed in."""
        return self.version & ~BIP320_MASK

    @property
    def ntime(self) -> int:
        return max(self.curtime, self.mintime)
