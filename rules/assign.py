"""Who gets a new case."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    csr_id: int
    open_cases: int


def least_load(candidates: Sequence[Candidate]) -> int | None:
    """The available CSR with the fewest open cases; ties go to the earliest added."""
    if not candidates:
        return None
    return min(candidates, key=lambda c: (c.open_cases, c.csr_id)).csr_id
