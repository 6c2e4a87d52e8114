"""Consulting a department (issue 9 §4) through the engine on real stores:
#consult, the department's proven answer (internal, to the CSR, never to the
customer), the deadline's overdue notices, several at once."""

from __future__ import annotations

import pytest

from casestore.models import Case, Consultation
from rules import replies
from rules.commands import Given
from smtpd_hook.engine import Delivery, Engine
from tests.component.test_case_life import JANE, Clock, csr_says, events, open_case, out
from tests.component.test_case_life import clock as _clock_fixture
from tests.component.test_case_life import engine as _engine_fixture
from tests.support.mail import make, parse, text_of

clock = _clock_fixture  # the case-life fixtures: a real store per backend and a fake clock
engine = _engine_fixture

LEGAL, SHIP = "legal@example.com", "ship@example.com"


@pytest.fixture
def depts(engine: Engine) -> Engine:
    engine.store.add_department("legal", LEGAL, 2 * 86400)
    engine.store.add_department("shipping", SHIP, 3600)
    return engine


def dept_answers(engine: Engine, dept: str, body: str, *, client: str = "127.0.0.1") -> replies.Reply:
    ask = [m for m in out("consult") if m.recipients == dept][-1]
    raw = make(from_=dept, to=parse(bytes(ask.raw))["Reply-To"], subject="Re: " + ask.subject, body=body,
               in_reply_to=ask.message_id, references=[ask.message_id])
    return engine.process(Delivery(dept, (str(parse(bytes(ask.raw))["Reply-To"]),), raw, client_addr=client,
                                   queue_id=f"D{len(body)}{dept[:3]}"))


def test_consult_answer_reaches_the_csr_only(depts: Engine) -> None:
    engine = depts
    case = open_case(engine)
    csr_says(engine, case, "#note\nHe may sue.\n")
    csr_says(engine, case, "#consult legal\nMay we refund without a receipt?\n")
    assert Case.get_by_id(case.id).status == "under_consultation"
    ask = out("consult")[-1]
    body = text_of(parse(bytes(ask.raw)))
    assert ask.recipients == LEGAL and "May we refund without a receipt?" in body
    assert "my printer is on fire" in body and "He may sue" not in body  # history, never notes
    assert dept_answers(engine, LEGAL, "Yes, up to 100 EUR.\n") == replies.stored(case.number)
    case = Case.get_by_id(case.id)
    assert case.status == "in_progress"
    note = out("notify")[-1]
    assert note.recipients == JANE and "Yes, up to 100 EUR." in text_of(parse(bytes(note.raw)))
    assert all("100 EUR" not in text_of(parse(bytes(m.raw))) for m in out(to="john@customer.test"))
    assert Consultation.get().status == "answered"
    # The CSR's next answer to the customer does not carry it in the history either.
    csr_says(engine, case, "Good news: a refund is on its way.\n")
    assert "100 EUR" not in text_of(parse(bytes(out("reply")[-1].raw)))


def test_an_unproven_department_is_a_customer(depts: Engine) -> None:
    engine = depts
    case = open_case(engine)
    csr_says(engine, case, "#consult legal\nMay we?\n")
    dept_answers(engine, LEGAL, "Forged: yes!\n", client="127.0.0.2")
    assert Case.get_by_id(case.id).status == "under_consultation"
    assert Consultation.get().status == "open"


def test_overdue_notices_once_each_and_case_list_overdue(depts: Engine, clock: Clock) -> None:
    engine = depts
    case = open_case(engine)
    csr_says(engine, case, "#consult shipping\nWhere is parcel 42?\n")
    csr_says(engine, case, "#consult legal\nAnd may we refund?\n")
    clock.advance(minutes=61)
    assert engine.run_due_timers("h:1") == 1
    overdue = out("overdue")
    assert sorted(m.recipients for m in overdue) == [JANE, SHIP]
    assert [c.status for c in Consultation.select().order_by(Consultation.id)] == ["overdue", "open"]
    assert engine.store.overdue_cases() == [case.number]
    assert engine.run_due_timers("h:1") == 0  # once: legal's deadline is later
    clock.advance(days=2)
    assert engine.run_due_timers("h:1") == 1
    assert len(out("overdue")) == 4
    # An overdue answer still counts; the case returns to work when the last one answers.
    dept_answers(engine, SHIP, "In Leipzig.\n")
    assert Case.get_by_id(case.id).status == "under_consultation"
    dept_answers(engine, LEGAL, "Yes.\n")
    assert Case.get_by_id(case.id).status == "in_progress"


def test_consult_refusals(depts: Engine) -> None:
    engine = depts
    case = open_case(engine)
    r = engine.command(case.number, actor=JANE, commands=[Given("consult", "finance")], text="x")
    assert not r.ok and "'finance' is not a department (departments: legal, shipping)" in r.errors[0]
    r = engine.command(case.number, actor=JANE, commands=[Given("consult", "legal")], text="")
    assert not r.ok and "#consult needs the question" in r.errors[0]
    assert ("command_refused" not in [k for k, _ in events(case)])  # the shell answers itself
