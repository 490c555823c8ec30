"""A found block as it is spooled, submitted and shown: the record and its statuses (below the
spool, the submitter and the observers that all pass it around)."""

from __future__ import annotations

from dataclasses import dataclass, field

PENDING = "pending"
ACCEPTED = "accepted"
REJECTED = "rejected"
ORPHANED = "orphaned"


@dataclass
class FoundBlock:
    height: int
    hash: str
    hex: str
    worker: str
    address: str
    found_at: float
    status: str = PENDING
    answer: str | None = None  # the deciding submitblock answer; "null" when accepted outright
    in_best_chain: bool = False
    attempts: int = 0  # submission rounds (each round goes to every node still owing an answer)
    answers: dict[str, str] = field(default_factory=dict)  # node name -> its final answer
    final_at: float | None = None  # when the final answer was known (time.time())

    @property
    def filename(self) -> str:
        return f"{self.height:08d}-{self.hash}.json"
