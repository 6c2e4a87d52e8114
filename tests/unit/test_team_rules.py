"""Tables for the team's workflow rules: escalation targets, absences and
their deadline arithmetic, consultations, approval, closing questions."""

from __future__ import annotations

import datetime as dt

import pytest

from rules.commands import Actor, CommandFacts, Given, check, decide, parse_away, parse_when
from rules.decision import (
    AddNote,
    AnswerCustomer,
    Assign,
    CaseState,
    Consult,
    CsrInfo,
    DecideDraft,
    DepartmentInfo,
    Directory,
    DraftInfo,
    HoldDraft,
    MailboxInfo,
    Notify,
    PoolInfo,
    QuestionInfo,
    Record,
    SendCustomer,
    SetAnswers,
    SetAway,
    SetStatus,
)
from rules.vocab import EventKind, MessageKind, Outcome, Status

NOW = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
ANN, BEN, LEAD, NEW = "ann@example.com", "ben@example.com", "lead@example.com", "new@example.com"
SUPPORT = "support@example.com"


def directory(*, lead_away: bool = False, questions: tuple[QuestionInfo, ...] = (),
              notice: bool = False) -> Directory:
    pool = PoolInfo("team", questions=questions, escalation_notice=notice)
    return Directory(
        csrs={ANN: CsrInfo(ANN, "Ann", pools=frozenset({"team"}), levels=(("team", 1),)),
              BEN: CsrInfo(BEN, "Ben", pools=frozenset({"team"}), levels=(("team", 1),)),
              LEAD: CsrInfo(LEAD, "Lead", pools=frozenset({"team"}), levels=(("team", 2),),
                            away=(("team", ""),) if lead_away else ()),
              NEW: CsrInfo(NEW, "Newbie", pools=frozenset({"team"}), levels=(("team", 1),),
                           supervisor=LEAD)},
        mailboxes={SUPPORT: MailboxInfo(SUPPORT, "Support", pool)},
        departments={"legal": DepartmentInfo("legal", "legal@example.com", 86400)})


def facts(actor: str = ANN, *, d: Directory | None = None, status: Status = Status.IN_PROGRESS,
          no_case: bool = False, drafts: tuple[DraftInfo, ...] = (), by_mail: bool = True) -> CommandFacts:
    d = d or directory()
    case = None if no_case else CaseState("CS0000001", status, SUPPORT, "kim@c.test", "Kim", "Router",
                                           ANN, NOW - dt.timedelta(days=1))
    return CommandFacts(actor=Actor(actor, d.csr(actor)), case=case,
                        pool=d.mailbox(SUPPORT).pool if d.mailbox(SUPPORT) else None, directory=d,
                        by_mail=by_mail, now=NOW, drafts=drafts)


# -- escalation targets ------------------------------------------------------------------


@pytest.mark.parametrize(("arg", "d", "errors", "target"), [
    ("", directory(), [], None),  # the pool's second level, by its rule
    ("", directory(lead_away=True), ["pool team has no available second-level CSR (casegate csr set "
                                     "ADDRESS --pool NAME:2); #escalate ADDRESS names one"], None),
    (BEN, directory(), [], BEN),
    (ANN, directory(), ["CS0000001 is already assigned to ann@example.com"], None),
    ("nobody@example.com", directory(), ["nobody@example.com is not a CSR"], None),
])
def test_escalate(arg: str, d: Directory, errors: list[str], target: str | None) -> None:
    f = facts(d=d)
    given = [Given("escalate", arg)]
    assert check(given, "note", f) == errors
    if not errors:
        got = decide(given, "Handle with care.", f)
        assert got.actions[1] == Assign(target, "escalated by ann@example.com", note="Handle with care.",
                                        level=2)
        assert Notify("Escalated to you by ann@example.com", note="Handle with care.") in got.actions
        assert AddNote(ANN, "Handle with care.") in got.actions
        assert not any(isinstance(a, (AnswerCustomer, SendCustomer)) for a in got.actions)


def test_escalation_notice_is_the_pools_choice() -> None:
    got = decide([Given("escalate")], "", facts(d=directory(notice=True)))
    assert got.actions[-1] == SendCustomer(MessageKind.ESCALATED)


# -- absences and their deadline arithmetic ------------------------------------------------


@pytest.mark.parametrize(("text", "when"), [
    ("3d", NOW + dt.timedelta(days=3)),
    ("12h", NOW + dt.timedelta(hours=12)),
    ("2026-12-24", dt.datetime(2026, 12, 24, tzinfo=dt.UTC)),
    ("2026-12-24T09:30", dt.datetime(2026, 12, 24, 9, 30, tzinfo=dt.UTC)),
    ("2026-12-24T09:30+01:00", dt.datetime(2026, 12, 24, 8, 30, tzinfo=dt.UTC)),
])
def test_parse_when(text: str, when: dt.datetime) -> None:
    assert parse_when(text, NOW) == when


@pytest.mark.parametrize("text", ["yesterday", "24.12.2026", "", "off"])
def test_parse_when_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_when(text, NOW)


@pytest.mark.parametrize(("arg", "parsed"), [
    ("", ("", "", "")),
    ("until 3d", ("3d", "", "")),
    ("deputy ben@example.com pool team until 2026-12-24", ("2026-12-24", "ben@example.com", "team")),
])
def test_parse_away(arg: str, parsed: tuple[str, str, str]) -> None:
    assert parse_away(arg) == parsed


def test_away_action() -> None:
    got = decide([Given("away", "until 1d deputy ben@example.com")], "", facts(no_case=True))
    assert got.actions[0] == SetAway(ANN, (), NOW + dt.timedelta(days=1), BEN)


# -- consultations -----------------------------------------------------------------------------


def test_consult_actions_and_refusals() -> None:
    got = decide([Given("consult", "legal")], "May we?", facts())
    assert got.actions[-3:] == (Consult("legal", "May we?", ANN),
                                SetStatus(Status.UNDER_CONSULTATION, "legal consulted by ann@example.com"),
                                Record(EventKind.CONSULTED, "legal: May we?", ANN))
    assert check([Given("consult", "legal")], "x", facts(status=Status.CLOSED)) == [
        "CS0000001 is closed: #reopen it first"]
    assert check([Given("consult", "legal"), Given("note")], "x", facts()) == [
        "#consult and #note cannot be given together"]


# -- approval -----------------------------------------------------------------------------------


DRAFT = DraftInfo(7, NEW, LEAD, "#close", "Sorry.")


def test_a_trainees_answer_is_held_and_notes_are_not() -> None:
    held = decide([Given("close")], "Sorry.", facts(NEW))
    assert held.outcome is Outcome.HELD_FOR_APPROVAL
    assert held.actions[0] == HoldDraft(NEW, LEAD, "#close", "Sorry.", MessageKind.REPLY)
    assert decide([Given("note")], "x", facts(NEW)).outcome is Outcome.CSR_COMMAND
    assert decide([Given("take")], "", facts(NEW)).outcome is Outcome.CSR_COMMAND


@pytest.mark.parametrize(("actor", "drafts", "errors"), [
    (LEAD, (DRAFT,), []),
    (BEN, (DRAFT,), ["draft 7 waits for lead@example.com's approval, not yours"]),
    (LEAD, (), ["no held answer 7 on this case (held: none)"]),
])
def test_approve_checks(actor: str, drafts: tuple[DraftInfo, ...], errors: list[str]) -> None:
    assert check([Given("approve", "7")], "", facts(actor, drafts=drafts)) == errors


def test_approve_sends_the_draft_as_its_author_wrote_it() -> None:
    got = decide([Given("approve", "7")], "", facts(LEAD, drafts=(DRAFT,)))
    assert got.actions[0] == DecideDraft(7, "approved", LEAD)
    assert AnswerCustomer(NEW, "Sorry.", with_files=False) in got.actions
    assert SetStatus(Status.CLOSED, "closed by new@example.com") in got.actions


def test_reject_tells_the_author() -> None:
    got = decide([Given("reject", "7")], "Be kinder.", facts(LEAD, drafts=(DRAFT,)))
    assert got.actions[0] == DecideDraft(7, "rejected", LEAD)
    assert not any(isinstance(a, AnswerCustomer) for a in got.actions)
    assert "Be kinder." in got.actions[-1].text and got.actions[-1].to == NEW


# -- closing questions --------------------------------------------------------------------------


PRODUCT = QuestionInfo("product", ("Router", "Switch"), required=True)
PARTNER = QuestionInfo("partner", free_text=True)


@pytest.mark.parametrize(("arg", "problem"), [
    ("product=Router", None),
    ('product=Switch partner="ACME Ltd"', None),
    ("", "product is required"),
    ("product=Modem", "product=Modem is not one of Router, Switch"),
    ("product=Router colour=red", "colour is not a closing question of this pool"),
])
def test_close_questions(arg: str, problem: str | None) -> None:
    f = facts(d=directory(questions=(PRODUCT, PARTNER)))
    errors = check([Given("close", arg)], "", f)
    if problem is None:
        assert errors == []
        got = decide([Given("close", arg)], "", f)
        answers = next(a for a in got.actions if isinstance(a, SetAnswers)).answers
        assert ("product", arg.split("=")[1].split()[0]) in answers
        if "partner" in arg:
            assert ("partner", "ACME Ltd") in answers
    else:
        assert len(errors) == 1 and problem in errors[0]
        assert "product=Router|Switch (required), partner=any text" in errors[0]


# -- absence windows ----------------------------------------------------------------------------


@pytest.mark.parametrize(("away", "until", "is_away"), [
    (False, None, False),
    (True, None, True),  # until further notice
    (True, NOW.replace(tzinfo=None) + dt.timedelta(seconds=1), True),  # rows keep naive UTC
    (True, NOW.replace(tzinfo=None), False),  # over at its time, no timer needed
    (True, NOW.replace(tzinfo=None) - dt.timedelta(days=1), False),
    (False, NOW.replace(tzinfo=None) + dt.timedelta(days=1), False),
])
def test_absence_window(away: bool, until: dt.datetime | None, is_away: bool) -> None:
    from casestore.store import away_now

    assert away_now(away, until, NOW.replace(tzinfo=None)) is is_away
