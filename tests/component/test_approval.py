"""Approval for new CSRs (issue 9 §5) through the engine on real stores: a
held answer reaches the supervisor as the customer would get it; #approve
sends it unchanged, from its author; #reject returns it with the note."""

from __future__ import annotations

import pytest

from casestore.models import Case, Draft
from rules.commands import Given
from smtpd_hook.engine import Engine
from tests.component.test_case_life import BOB, JANE, csr_says, open_case, out
from tests.component.test_case_life import clock as _clock_fixture
from tests.component.test_case_life import engine as _engine_fixture
from tests.support.mail import parse, text_of

clock = _clock_fixture  # the case-life fixtures: a real store per backend and a fake clock
engine = _engine_fixture


@pytest.fixture
def trainee(engine: Engine) -> Engine:
    engine.store.set_csr(BOB, needs_approval=True, supervisor=JANE)
    return engine


def test_held_answer_approved_by_mail(trainee: Engine) -> None:
    engine = trainee
    case = open_case(engine)
    csr_says(engine, case, "We will replace the printer.\n", csr=BOB)
    assert out("reply") == []  # the customer gets nothing yet
    held = out("approval")[-1]
    body = text_of(parse(bytes(held.raw)))
    assert held.recipients == JANE and "Hello John,\n\nWe will replace the printer." in body
    draft = Draft.get()
    assert f"body=%23approve%20{draft.id}" in body
    csr_says(engine, case, f"#approve {draft.id}\n", csr=JANE)
    reply = out("reply")[-1]
    got = parse(bytes(reply.raw))
    assert "Bob Roe" in str(got["From"]) and text_of(got).startswith("Hello John,\n\nWe will replace")
    assert Draft.get_by_id(draft.id).status == "approved"
    assert Case.get_by_id(case.id).status == "in_progress"


def test_held_close_with_text_then_rejected(trainee: Engine) -> None:
    engine = trainee
    case = open_case(engine)
    csr_says(engine, case, "#close\nSorry, nothing we can do.\n", csr=BOB)
    assert Case.get_by_id(case.id).status == "received" and out("reply") == []
    draft = Draft.get()
    assert (draft.commands, draft.text) == ("#close", "Sorry, nothing we can do.")
    csr_says(engine, case, f"#reject {draft.id}\nOffer a voucher first.\n", csr=JANE)
    back = out("csr_notice", to=BOB)[-1]
    text = text_of(parse(bytes(back.raw)))
    assert "Offer a voucher first." in text and "Sorry, nothing we can do." in text
    assert out("reply") == [] and Case.get_by_id(case.id).status == "received"
    assert Draft.get_by_id(draft.id).status == "rejected"


def test_notes_and_commands_only_need_no_approval(trainee: Engine) -> None:
    engine = trainee
    case = open_case(engine)
    csr_says(engine, case, "#note\nChecked the logs.\n", csr=BOB)
    csr_says(engine, case, "#take\n", csr=BOB)
    assert Draft.select().count() == 0 and Case.get_by_id(case.id).assignee.address == BOB


def test_only_the_supervisor_or_an_admin_decides(trainee: Engine) -> None:
    engine = trainee
    engine.store.add_csr("eve@example.com", "Eve", ["default"])
    case = open_case(engine)
    csr_says(engine, case, "Answer.\n", csr=BOB)
    draft = Draft.get()
    csr_says(engine, case, f"#approve {draft.id}\n", csr="eve@example.com")
    assert out("reply") == []
    assert "waits for jane@example.com's approval, not yours" in text_of(
        parse(bytes(out("csr_notice", to="eve@example.com")[-1].raw)))
    result = engine.command(case.number, actor=None, commands=[Given("approve", str(draft.id))])
    assert result.ok and result.sent == ("reply",)
    again = engine.command(case.number, actor=None, commands=[Given("approve", str(draft.id))])
    assert not again.ok and "no held answer" in again.errors[0]
