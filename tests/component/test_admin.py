"""The admin's shell on real stores: every object shown, changed and
removed, with the refusals that keep cases and history (issue 11, §3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from casestore.models import MODELS, Case, Event, Timer
from smtpd_hook.engine import Engine
from tests.component.test_case_life import BOB, JANE, deliver
from tests.component.test_case_life import clock as _clock_fixture
from tests.component.test_case_life import engine as _engine_fixture
from tests.component.test_search import _cli
from tests.support.mail import make

clock = _clock_fixture
engine = _engine_fixture


@pytest.fixture
def run(engine: Engine, store_url: str, tmp_path: Path):
    """The CLI on the engine's store. Each CLI Store binds the models to its
    own database: bind them back to the engine's after each command."""
    cli_run = _cli(tmp_path, store_url)
    engine.store.db.bind(MODELS)

    def invoke(*args: str):
        try:
            return cli_run(*args)
        finally:
            engine.store.db.bind(MODELS)

    return invoke


def _new_case(engine: Engine, subject: str = "test_admin case", rcpt: str = "support@example.com") -> Case:
    deliver(engine, make(from_="ann@customer.test", to=rcpt, subject=subject), rcpt=rcpt)
    return Case.select().order_by(Case.id.desc()).get()


@pytest.mark.parametrize("args", [
    ("mailbox", "show", "nobody@example.com"),
    ("mailbox", "set", "nobody@example.com", "--pool", "x"),
    ("mailbox", "remove", "nobody@example.com"),
    ("pool", "show", "nope"),
    ("pool", "remove", "nope"),
    ("csr", "show", "eve@example.com"),
    ("csr", "remove", "eve@example.com"),
    ("department", "show", "nope"),
    ("question", "show", "default", "nope"),
    ("question", "set", "default", "nope", "--required"),
    ("blacklist", "show", "eve@example.com"),
])
def test_unknown_names_exit_1_and_say_where_to_look(run, args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert "list` shows" in result.output or "no " in result.output


@pytest.mark.parametrize("args", [
    ("mailbox", "set", "support@example.com"),
    ("question", "set", "default", "product"),
    ("limits", "remove"),
])
def test_nothing_to_set_is_a_usage_error(run, args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.exit_code == 2 and ("nothing to set" in result.output or "name the caps" in result.output)


def test_mailbox_show_set_and_remove_keeps_cases(engine: Engine, run) -> None:
    case = _new_case(engine)
    shown = json.loads(run("mailbox", "show", "support@example.com", "--json").output)
    assert shown["pool"] == "default" and shown["cases"] == 1 and shown["open_cases"] == 1
    assert run("mailbox", "set", "support@example.com", "--name", "Help Desk").exit_code == 0
    assert run("mailbox", "add", "help@example.com", "--pool", "second").exit_code == 0
    assert run("mailbox", "set", "help@example.com", "--pool", "third").exit_code == 0
    rows = {r["address"]: r for r in json.loads(run("mailbox", "list", "--json").output)}
    assert rows["support@example.com"]["name"] == "Help Desk" and rows["help@example.com"]["pool"] == "third"

    refused = run("mailbox", "remove", "support@example.com")
    assert refused.exit_code == 1 and "has 1 case(s)" in refused.output and "--move-cases-to" in refused.output
    assert run("mailbox", "remove", "support@example.com", "--move-cases-to", "x@example.com").exit_code == 1
    assert Case.get_by_id(case.id).mailbox.address == "support@example.com"  # nothing moved

    moved = run("mailbox", "remove", "support@example.com", "--move-cases-to", "help@example.com")
    assert moved.exit_code == 0 and "1 case(s) moved to help@example.com" in moved.output
    kept = Case.get_by_id(case.id)
    assert kept.mailbox.address == "help@example.com" and kept.number == case.number
    assert Event.select().where((Event.case == case.id) & (Event.kind == "mailbox_moved")).count() == 1
    assert [r["address"] for r in json.loads(run("mailbox", "list", "--json").output)] == ["help@example.com"]
    shown = json.loads(run("case", "show", case.number, "--json").output)
    assert shown["mailbox"] == "help@example.com" and len(shown["messages"]) >= 1


def test_pool_show_and_remove_refused_while_used(engine: Engine, run) -> None:
    _new_case(engine)
    shown = json.loads(run("pool", "show", "default", "--json").output)
    assert shown["mailboxes"] == ["support@example.com"] and shown["open_cases"] == 1
    assert {m["address"] for m in shown["members"]} == {JANE, BOB}
    refused = run("pool", "remove", "default")
    assert refused.exit_code == 1 and "serves support@example.com" in refused.output
    assert run("mailbox", "set", "support@example.com", "--pool", "other").exit_code == 0
    assert run("pool", "remove", "default").exit_code == 0
    assert [p["name"] for p in json.loads(run("pool", "list", "--json").output)] == ["other"]
    assert "pool default" not in run("csr", "show", JANE).output


def test_csr_remove_with_reassign_to(engine: Engine, run) -> None:
    cases = [_new_case(engine, f"test_admin {i}") for i in range(3)]
    jane_cases = [c.number for c in cases if Case.get_by_id(c.id).assignee.address == JANE]
    assert jane_cases
    shown = json.loads(run("csr", "show", JANE, "--json").output)
    assert shown["open_cases"] == len(jane_cases) and shown["pools"] == ["default"]
    assert run("csr", "remove", JANE, "--reassign-to", JANE).exit_code == 2
    unknown = run("csr", "remove", JANE, "--reassign-to", "eve@example.com")
    assert unknown.exit_code == 1 and "no CSR eve@example.com" in unknown.output
    assert run("csr", "show", JANE).exit_code == 0  # still there
    done = json.loads(run("csr", "remove", JANE, "--reassign-to", BOB, "--json").output)
    assert done["cases"] == {n: BOB for n in jane_cases}
    assert all(Case.get_by_id(c.id).assignee.address == BOB for c in cases)
    assert [r["address"] for r in json.loads(run("csr", "list", "--json").output)] == [BOB]
    assert run("csr", "show", JANE).exit_code == 1


def test_csr_remove_hands_cases_back_to_the_pool_rule(engine: Engine, run) -> None:
    cases = [_new_case(engine, f"test_admin {i}") for i in range(4)]
    bob_cases = [c.number for c in cases if Case.get_by_id(c.id).assignee.address == BOB]
    done = json.loads(run("csr", "remove", BOB, "--json").output)
    assert done["cases"] == {n: JANE for n in bob_cases}  # least_load: the only one left
    assert all(Case.get_by_id(c.id).assignee.address == JANE for c in cases)
    # the last CSR: her cases wait unassigned, with a retry, as a new case would
    done = json.loads(run("csr", "remove", JANE, "--json").output)
    assert set(done["cases"]) == {c.number for c in cases} and set(done["cases"].values()) == {None}
    for c in cases:
        assert Case.get_by_id(c.id).assignee is None
        assert Timer.select().where((Timer.case == c.id) & (Timer.kind == "assign_retry")
                                    & (Timer.status == "pending")).exists()
    assert json.loads(run("csr", "list", "--json").output) == []


def test_department_question_blacklist_and_limits(engine: Engine, run) -> None:
    assert run("department", "add", "legal", "legal@example.com", "--deadline", "1d").exit_code == 0
    shown = json.loads(run("department", "show", "legal", "--json").output)
    assert shown == {"name": "legal", "address": "legal@example.com", "deadline": "1d",
                     "consultations": {}}
    assert run("question", "add", "default", "product", "--choices", "Router,Modem").exit_code == 0
    assert run("question", "set", "default", "product", "--choices", "Router, Modem ,Switch",
               "--required").exit_code == 0
    q = json.loads(run("question", "show", "default", "product", "--json").output)
    assert q["choices"] == ["Router", "Modem", "Switch"] and q["required"] and not q["free_text"]
    assert run("question", "set", "default", "product", "--no-required").exit_code == 0
    assert not json.loads(run("question", "show", "default", "product", "--json").output)["required"]

    assert run("blacklist", "add", "spam@bad.test", "--reason", "spam").exit_code == 0
    assert run("blacklist", "add", "spam@bad.test", "--subject", "^win").exit_code == 0
    rows = json.loads(run("blacklist", "show", "spam@bad.test", "--json").output)
    assert [(r["subject"], r["reason"]) for r in rows] == [(None, "spam"), ("^win", "")]

    assert run("limits", "set", "--per-case", "3", "--per-domain", "9").exit_code == 0
    bad = run("limits", "remove", "per-month")
    assert bad.exit_code == 2 and "unknown cap" in bad.output
    assert run("limits", "remove", "per-case").exit_code == 0
    now = json.loads(run("limits", "show", "--json").output)
    assert now["autoreply_per_case"] == 10 and now["autoreply_per_domain"] == 9
    assert run("limits", "remove", "--all").exit_code == 0
    assert json.loads(run("limits", "show", "--json").output)["autoreply_per_domain"] == 5000
