"""Block templates from the node, and the Stratum jobs built from them.

A `Template` is one `getblocktemplate` answer, parsed once. A `Job` is that template with a
coinbase paying one payout script; every miner with the same payout script on the same template
shares one job (and its pre-serialized notify line), so per-job work is done once per
(template, payout script), never per share or per connection.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import OrderedDict
from typing import Any

import orjson

from .consensus.block import build_header, serialize_block, stratum_prevhash
from .consensus.coinbase import (
    CoinbaseParts,
    TxOut,
    add_witness_reserved_value,
    build_coinbase,
)
from .consensus.merkle import merkle_root_from_branch
from .consensus.serialize import display_to_internal, sha256d
from .consensus.template import BIP320_MASK
from .consensus.template import Template as Template  # re-exported: pool.jobs.Template
from .consensus.template import TemplateError as TemplateError

log = logging.getLogger(__name__)

EXTRANONCE1_SIZE = 4
EXTRANONCE2_SIZE = 8
JOB_NUMBER_SIZE = 4  # bytes of the job number pushed in every coinbase scriptSig


# NerdMiner_v2 parses every line into a StaticJsonDocument<4096> (src/stratum.h,
# BUFFER_JSON_DOC). ArduinoJson 6 on its 32-bit ESP32 takes 16 bytes per value and a copy of
# every string with its NUL (the line is a String, not zero-copy); a notify that does not fit
# fails with NoMemory and is dropped, and the miner works on its old job until it reconnects.
NERDMINER_DOCUMENT_BYTES = 4096
ARDUINOJSON_SLOT_BYTES = 16
_NOTIFY_KEYS_BYTES = len("id") + len("method") + len("params") + len("mining.notify") + 4


def nerdminer_document_bytes(job_id: str, coinb1: bytes, coinb2: bytes, branches: int) -> int:
    """The ArduinoJson document bytes NerdMiner needs for one mining.notify (strings counted
    without deduplication, so an upper bound)."""
    slots = 3 + 9 + branches  # the message's members, its params, the merkle branch list
    strings = (
        _NOTIFY_KEYS_BYTES
        + len(job_id) + 1
        + 65  # prevhash
        + 2 * len(coinb1) + 1
        + 2 * len(coinb2) + 1
        + 65 * branches
        + 3 * 9  # version, nbits, ntime
    )
    return ARDUINOJSON_SLOT_BYTES * slots + strings


class Job:
    """One unit of work: a template plus a coinbase paying one payout script."""

    __slots__ = (
        "job_id",
        "template",
        "payout_script",
        "coinbase",
        "branch",
        "version",
        "ntime",
        "_notify",
        "_prev",
        "nerdminer_bytes",
    )

    def __init__(
        self, job_id: str, template: Template, payout_script: bytes, coinbase: CoinbaseParts
    ) -> None:
        self.job_id = job_id
        self.template = template
        self.payout_script = payout_script
        self.coinbase = coinbase
        self.branch = template.merkle_branch
        self.version = template.job_version
        self.ntime = template.ntime
        self._notify: dict[bool, bytes] = {}
        self._prev = display_to_internal(template.prev_hash)
        self.nerdminer_bytes = nerdminer_document_bytes(
            job_id, coinbase.coinb1, coinbase.coinb2, len(self.branch)
        )

    def notify_params(self, clean: bool) -> list[Any]:
        return [
            self.job_id,
            stratum_prevhash(self.template.prev_hash),
            self.coinbase.coinb1.hex(),
            self.coinbase.coinb2.hex(),
            [b.hex() for b in self.branch],
            f"{self.version:08x}",
            f"{self.template.bits:08x}",
            f"{self.ntime:08x}",
            clean,
        ]

    def notify_line(self, clean: bool) -> bytes:
        """The `mining.notify` line, serialized once and shared by every miner on this job."""
        line = self._notify.get(clean)
        if line is None:
            message = {"id": None, "method": "mining.notify", "params": self.notify_params(clean)}
            line = orjson.dumps(message) + b"\n"
            self._notify[clean] = line
        return line

    def merkle_root(self, extranonce: bytes) -> bytes:
        """The merkle root for one extranonce1 + extranonce2."""
        coinbase_txid = sha256d(self.coinbase.assemble(extranonce))
        return merkle_root_from_branch(coinbase_txid, list(self.branch))

    def header_with_root(self, root: bytes, ntime: int, nonce: int, version: int) -> bytes:
        return build_header(version, self._prev, root, ntime, self.template.bits, nonce)

    def header(self, extranonce: bytes, ntime: int, nonce: int, version: int) -> bytes:
        return self.header_with_root(self.merkle_root(extranonce), ntime, nonce, version)

    def block(self, header: bytes, extranonce: bytes) -> bytes:
        """The whole block, coinbase with its witness, ready for submitblock."""
        coinbase = self.coinbase.assemble(extranonce)
        if self.template.witness_commitment is not None:
            coinbase = add_witness_reserved_value(coinbase)
        return serialize_block(header, coinbase, list(self.template.transactions))


class JobManager:
    """Holds the current template and hands out jobs per payout script."""

    def __init__(self, coinbase_tag: bytes, keep_templates: int = 8) -> None:
        self.coinbase_tag = coinbase_tag
        self.template: Template | None = None
        # Random start so job ids are not reused across restarts (ESP-Miner ignores repeats).
        self._ids = itertools.count(secrets.randbits(28) << 4)
        self._current: dict[bytes, Job] = {}
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._keep_templates = keep_templates
        self._generations: list[list[str]] = []

    def set_template(self, template: Template) -> bool:
        """Install a new template; returns True if it builds on a new previous block."""
        new_tip = self.template is None or template.prev_hash != self.template.prev_hash
        if template.version & BIP320_MASK:
            log.info(
                "template version %08x has bits inside the rolling mask; sending %08x",
                template.version,
                template.job_version,
            )
        self.template = template
        self._current = {}
        if new_tip:
            self._jobs.clear()
            self._generations = []
        self._generations.append([])
        while len(self._generations) > self._keep_templates:
            for job_id in self._generations.pop(0):
                self._jobs.pop(job_id, None)
        return new_tip

    def job_for(self, payout_script: bytes, fresh: bool = False) -> Job:
        """The current job for a payout script; `fresh` forces a new job id (after a difficulty
        change, so the miner's shares can be matched to the difficulty they were mined at)."""
        if self.template is None:
            raise TemplateError("no block template yet")
        job = None if fresh else self._current.get(payout_script)
        if job is None:
            job = self._make_job(self.template, payout_script)
            self._current[payout_script] = job
        return job

    def _make_job(self, template: Template, payout_script: bytes) -> Job:
        number = next(self._ids)
        outputs = [TxOut(template.coinbase_value, payout_script)]
        if template.witness_commitment is not None:
            outputs.append(TxOut(0, template.witness_commitment))
        coinbase = build_coinbase(
            height=template.height,
            outputs=outputs,
            extranonce_size=EXTRANONCE1_SIZE + EXTRANONCE2_SIZE,
            tag=self.coinbase_tag,
            aux=template.coinbase_aux,
            # The job's own number in its coinbase: no two jobs give one header, even for one
            # template and payout script (a fresh job after a difficulty change, a template
            # refresh with the same transactions), so firmware that restarts its search at
            # every job (ESP-Miner's extranonce_2 = 0, NerdMiner's fixed extranonce2) never
            # sends a header it sent before. A distinct ntime per job would also do, but would
            # race ahead of the clock under frequent difficulty changes and clash with ntime
            # rolling and the node's mintime/maxtime.
            job_number=(number & 0xFFFFFFFF).to_bytes(JOB_NUMBER_SIZE, "little"),
        )
        job = Job(f"{number:x}", template, payout_script, coinbase)
        self._jobs[job.job_id] = job
        self._generations[-1].append(job.job_id)
        return job

    def get(self, job_id: str) -> Job | None:
        """A job that may still be mined on (same previous block), else None (stale/unknown)."""
        return self._jobs.get(job_id)
