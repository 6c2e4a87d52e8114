"""Who gets a case: a pool's assignment rule over its first-level, available CSRs.

Rules (``casegate pool set NAME --assign RULE``):

* ``least_load`` (default): the CSR with the fewest open cases; ties go to the
  earliest added.
* ``limit:N``: the same among CSRs with fewer than N open cases; when nobody
  has room the case waits (the scheduler retries, a closing makes room).
* ``random``: any candidate, drawn by the injected generator.
* ``round_robin``: the candidate after the one who got the pool's last case.
* ``none``: cases are stored and nobody is pushed one (nor told).
* ``fifo``: nobody is pushed a case; CSRs pull the oldest with ``#next``.
"""

from __future__ import annotations

import random as _random
import re
from collections.abc import Sequence
from dataclasses import dataclass

RULES = ("least_load", "limit", "random", "round_robin", "none", "fifo")
DEFAULT_LIMIT = 5


@dataclass(frozen=True)
class Candidate:
    csr_id: int
    open_cases: int
    level: int = 1
    available: bool = True


@dataclass(frozen=True)
class AssignRule:
    name: str = "least_load"
    limit: int = DEFAULT_LIMIT  # for limit:N

    @classmethod
    def parse(cls, text: str) -> AssignRule:
        """``least_load``, ``limit:N`` (``limit`` alone: N=5), ``random``,
        ``round_robin``, ``none``, ``fifo``; ValueError naming them otherwise."""
        value = (text or "").strip().lower()
        name, colon, arg = value.partition(":")
        if name == "limit":
            if not colon:
                return cls("limit", DEFAULT_LIMIT)
            if re.fullmatch(r"[0-9]+", arg) and int(arg) >= 1:
                return cls("limit", int(arg))
            raise ValueError(f"limit takes a number of open cases, e.g. limit:5, not {text!r}")
        if colon or name not in RULES:
            raise ValueError(f"unknown assignment rule {text!r}: use least_load, limit:N, random, "
                             "round_robin, none or fifo")
        return cls(name)

    @property
    def pushes(self) -> bool:
        """Whether the rule hands cases out (none and fifo do not)."""
        return self.name not in ("none", "fifo")

    def __str__(self) -> str:
        return f"limit:{self.limit}" if self.name == "limit" else self.name


def choose(rule: AssignRule, candidates: Sequence[Candidate], *, last: int | None = None,
           rng: _random.Random | None = None, level: int = 1) -> int | None:
    """The CSR id the rule picks among available candidates of ``level`` (1:
    new cases; 2: escalation), or None."""
    pool = sorted((c for c in candidates if c.level == level and c.available), key=lambda c: c.csr_id)
    if not pool or not rule.pushes:
        return None
    if rule.name == "limit":
        pool = [c for c in pool if c.open_cases < rule.limit]
        if not pool:
            return None
        return least_load(pool)
    if rule.name == "random":
        return (rng or _random.Random()).choice(pool).csr_id
    if rule.name == "round_robin":
        after = [c for c in pool if last is not None and c.csr_id > last]
        return (after or pool)[0].csr_id
    return least_load(pool)


def least_load(candidates: Sequence[Candidate]) -> int | None:
    """The CSR with the fewest open cases; ties go to the earliest added."""
    if not candidates:
        return None
    return min(candidates, key=lambda c: (c.open_cases, c.csr_id)).csr_id
