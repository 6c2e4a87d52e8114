"""rules.assign: each assignment rule over loads, levels and availability."""

from __future__ import annotations

import random

import pytest

from rules.assign import AssignRule, Candidate, choose

A, B, C = 1, 2, 3


def cands(*rows: tuple[int, int]) -> list[Candidate]:
    return [Candidate(csr, load) for csr, load in rows]


@pytest.mark.parametrize(("rule", "candidates", "last", "chosen"), [
    ("least_load", cands((A, 2), (B, 1), (C, 1)), None, B),
    ("least_load", cands((A, 0), (B, 0)), None, A),
    ("least_load", [], None, None),
    ("limit:2", cands((A, 2), (B, 1), (C, 0)), None, C),
    ("limit:2", cands((A, 2), (B, 2)), None, None),  # nobody has room: the case waits
    ("limit:1", cands((A, 0)), None, A),
    ("round_robin", cands((A, 5), (B, 0), (C, 0)), None, A),
    ("round_robin", cands((A, 5), (B, 0), (C, 0)), A, B),
    ("round_robin", cands((A, 5), (B, 0), (C, 0)), B, C),
    ("round_robin", cands((A, 5), (B, 0), (C, 0)), C, A),  # wraps round
    ("round_robin", cands((A, 0), (C, 0)), B, C),  # B left the pool
    ("none", cands((A, 0)), None, None),
    ("fifo", cands((A, 0)), None, None),
    # Second level and unavailable CSRs are never candidates.
    ("least_load", [Candidate(A, 0, level=2), Candidate(B, 9)], None, B),
    ("least_load", [Candidate(A, 0, available=False), Candidate(B, 9)], None, B),
    ("round_robin", [Candidate(A, 0), Candidate(B, 0, available=False), Candidate(C, 0)], A, C),
    ("least_load", [Candidate(A, 0, level=2)], None, None),
])
def test_choose(rule: str, candidates: list[Candidate], last: int | None, chosen: int | None) -> None:
    assert choose(AssignRule.parse(rule), candidates, last=last) == chosen


def test_random_is_the_generators_draw_among_candidates() -> None:
    rule = AssignRule.parse("random")
    pool = [Candidate(A, 0), Candidate(B, 0), Candidate(C, 0, level=2)]
    draws = [choose(rule, pool, rng=random.Random(seed)) for seed in range(200)]
    assert set(draws) == {A, B}  # never the second-level CSR
    assert draws == [choose(rule, pool, rng=random.Random(seed)) for seed in range(200)]


@pytest.mark.parametrize(("text", "parsed"), [
    ("least_load", "least_load"), ("LIMIT:3", "limit:3"), ("limit", "limit:5"),
    (" round_robin ", "round_robin"), ("random", "random"), ("none", "none"), ("fifo", "fifo"),
])
def test_parse(text: str, parsed: str) -> None:
    assert str(AssignRule.parse(text)) == parsed


@pytest.mark.parametrize("text", ["", "loudest", "limit:0", "limit:x", "fifo:2", "limit:-1", "limit:٣"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        AssignRule.parse(text)
