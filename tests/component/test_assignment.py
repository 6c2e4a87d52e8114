"""Pools' assignment rules through the engine on real stores: round robin,
limit:N (a case waits, and is assigned when a CSR's case closes), fifo with
#next by mail and shell, none, and the fallback address told once."""

from __future__ import annotations

import pytest

from casestore.models import Case, Message
from rules import replies
from rules.commands import Given
from smtpd_hook.engine import Delivery, Engine
from tests.component.test_case_life import Clock, out
from tests.support.mail import make, parse, text_of

SUPPORT = "support@example.com"
ANN, BEN, CAT = "ann@example.com", "ben@example.com", "cat@example.com"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(store_url: str, clock: Clock) -> Engine:
    from casestore.store import Store
    from rules.classify import parse_networks
    from smtpd_hook.settings import Settings

    store = Store(store_url, clock=clock)
    store.migrate()
    store.add_mailbox(SUPPORT, "default", "Example Support")
    for address, name in ((ANN, "Ann"), (BEN, "Ben"), (CAT, "Cat")):
        store.add_csr(address, name, ["default"])
    yield Engine(store, Settings(secret=b"s" * 32, trusted_networks=parse_networks(["127.0.0.1/32"])))
    store.close()


_n = iter(range(1, 10**6))


def new_case(engine: Engine) -> Case:
    n = next(_n)
    raw = make(from_=f"c{n}@customer.test", subject=f"test_assign {n}")
    reply = engine.process(Delivery(f"c{n}@customer.test", (SUPPORT,), raw, client_addr="127.0.0.2",
                                    queue_id=f"A{n}"))
    case = Case.select().order_by(Case.id.desc()).get()
    assert reply == replies.stored(case.number)
    return case


def assignee(case: Case) -> str | None:
    case = Case.get_by_id(case.id)
    return case.assignee.address if case.assignee_id else None


def test_round_robin_hands_three_cases_to_three_csrs(engine: Engine) -> None:
    engine.store.set_pool("default", rule="round_robin")
    got = [assignee(new_case(engine)) for _ in range(4)]
    assert got == [ANN, BEN, CAT, ANN]


@pytest.mark.parametrize("rule", ["least_load", "round_robin", "limit:5", "random"])
def test_a_new_case_is_written_with_its_assignee(engine: Engine, rule: str) -> None:
    """Chosen before the case's INSERT, which writes it (issue 12): no UPDATE
    of the case row follows. The random rule, seeded by the case's number,
    chooses after the INSERT as before. The same events either way."""
    from casestore.models import Event

    engine.store.set_pool("default", rule=rule)
    new_case(engine)  # the directory read and cached
    db, seen = engine.store.db, []
    for name in ("execute_sql", "defer_sql"):
        original = getattr(db, name, None)
        if original is not None:
            setattr(db, name, lambda sql, params=None, *a, _run=original, **kw: (
                seen.append(sql), _run(sql, params, *a, **kw))[1])
    try:
        case = new_case(engine)
    finally:
        for name in ("execute_sql", "defer_sql"):
            db.__dict__.pop(name, None)
    updates = [sql for sql in seen if sql.startswith('UPDATE "support_case"')]
    assert len(updates) == (1 if rule == "random" else 0), updates
    assert assignee(case) in (ANN, BEN, CAT)
    kinds = [e.kind for e in Event.select().where(Event.case == case).order_by(Event.id)]
    assert kinds[:2] == ["opened", "assigned"] and kinds.count("assigned") == 1, kinds
    assigned = Event.get((Event.case == case) & (Event.kind == "assigned"))
    assert assigned.actor == assignee(case) and assigned.detail == rule


def test_limit_makes_a_case_wait_until_a_csr_has_room(engine: Engine, clock: Clock) -> None:
    engine.store.set_pool("default", rule="limit:1")
    first = [new_case(engine) for _ in range(3)]
    assert sorted(assignee(c) for c in first) == [ANN, BEN, CAT]
    fourth = new_case(engine)
    assert assignee(fourth) is None
    assert engine.run_due_timers("h:1") == 0  # not due, nobody has room anyway
    engine.command(first[1].number, actor=BEN, commands=[Given("close")])
    assert engine.run_due_timers("h:1") == 1  # the closing made its retry due at once
    assert assignee(fourth) == BEN
    assert out("notify")[-1].recipients == BEN


def test_fifo_and_next_by_mail_and_shell(engine: Engine) -> None:
    engine.store.set_pool("default", rule="fifo")
    older, newer = new_case(engine), new_case(engine)
    assert assignee(older) is None and assignee(newer) is None and out("notify") == []
    raw = make(from_=ANN, subject="next please", body="#next\n")
    engine.process(Delivery(ANN, (SUPPORT,), raw, client_addr="127.0.0.1", queue_id="N1"))
    assert assignee(older) == ANN
    note = out("notify")[-1]
    assert note.recipients == ANN and "Your next case" in text_of(parse(bytes(note.raw)))
    assert engine.next_case(BEN).number == newer.number and assignee(newer) == BEN
    nothing = engine.next_case(CAT)
    assert not nothing.ok and "nothing is waiting in your pools (default)" in nothing.errors[0]
    raw = make(from_=CAT, subject="next please", body="#next\n")
    engine.process(Delivery(CAT, (SUPPORT,), raw, client_addr="127.0.0.1", queue_id="N2"))
    told = out("csr_notice")[-1]
    assert told.recipients == CAT and "nothing is waiting" in text_of(parse(bytes(told.raw)))


def test_next_follows_the_csrs_pool_priorities(engine: Engine) -> None:
    engine.store.add_mailbox("billing@example.com", "billing")
    engine.store.set_pool("default", rule="fifo")
    engine.store.set_pool("billing", rule="fifo")
    engine.store.set_csr(ANN, pools=["default:1:2", "billing:1:1"])
    support_case = new_case(engine)
    raw = make(from_="b@customer.test", to="billing@example.com", subject="test_assign bill")
    engine.process(Delivery("b@customer.test", ("billing@example.com",), raw, queue_id="B1"))
    billing_case = Case.select().order_by(Case.id.desc()).get()
    assert engine.next_case(ANN).number == billing_case.number  # billing first, though newer
    assert engine.next_case(ANN).number == support_case.number


def test_none_stores_and_tells_nobody(engine: Engine) -> None:
    engine.store.set_pool("default", rule="none")
    case = new_case(engine)
    assert assignee(case) is None and out("notify") == []
    assert not engine.store.timers(case)  # nothing to retry


def test_fallback_address_is_told_once_per_case(engine: Engine, clock: Clock) -> None:
    engine.store.set_pool("default", unassigned_notify="lead@example.com")
    from casestore.models import Csr
    Csr.update(available=False).execute()
    engine.store.directory_generation += 1
    case = new_case(engine)
    clock.advance(minutes=6)
    assert engine.run_due_timers("h:1") == 1  # tried again: still nobody
    told = out("csr_notice", to="lead@example.com")
    assert len(told) == 1 and case.number in text_of(parse(bytes(told[0].raw)))
    assert Message.select().where(Message.kind == "ack").count() == 1


# -- availability and absence ----------------------------------------------------------


def customer_writes_again(engine: Engine, case: Case) -> None:
    ack = Message.select().where((Message.case == case) & (Message.kind == "ack")).get()
    raw = make(from_=case.customer_address, subject="Re: more", body="More news?\n",
               in_reply_to=ack.message_id, references=[ack.message_id])
    engine.process(Delivery(case.customer_address, (SUPPORT,), raw, client_addr="127.0.0.2",
                            queue_id=f"R{next(_n)}"))


def by_mail(engine: Engine, csr: str, body: str) -> None:
    raw = make(from_=csr, subject="availability", body=body)
    engine.process(Delivery(csr, (SUPPORT,), raw, client_addr="127.0.0.1", queue_id=f"M{next(_n)}"))


def test_away_with_a_deputy_then_back(engine: Engine, clock: Clock) -> None:
    case = new_case(engine)
    assert assignee(case) == ANN
    by_mail(engine, ANN, "#away until 3d deputy cat@example.com\n")
    told = out("csr_notice", to=ANN)[-1]
    assert "You are away in all your pools until 2026-11-05 09:00 UTC" in text_of(parse(bytes(told.raw)))
    # New cases skip Ann; her case's news goes to her deputy, and stays hers.
    assert assignee(new_case(engine)) == BEN
    customer_writes_again(engine, case)
    note = out("notify")[-1]
    assert note.recipients == CAT and "for Ann, who is away" in text_of(parse(bytes(note.raw)))
    assert assignee(case) == ANN
    # The absence ends by itself at its time.
    clock.advance(days=3, seconds=1)
    engine.store.directory_generation += 1  # (serve re-reads within 5 s; here at once)
    customer_writes_again(engine, case)
    assert out("notify")[-1].recipients == ANN
    by_mail(engine, ANN, "#away\n")
    assert not engine.staff_command(ANN, Given("back")).errors
    customer_writes_again(engine, case)
    assert out("notify")[-1].recipients == ANN


def test_away_without_deputy_reassigns_by_the_pool_rule(engine: Engine) -> None:
    case = new_case(engine)
    assert assignee(case) == ANN
    result = engine.staff_command(ANN, Given("away", ""))
    assert result.ok
    customer_writes_again(engine, case)
    assert assignee(case) == BEN and out("notify")[-1].recipients == BEN


def test_away_per_pool(engine: Engine) -> None:
    engine.store.add_mailbox("billing@example.com", "billing")
    engine.store.set_csr(ANN, pools=["default", "billing"])
    assert engine.staff_command(ANN, Given("away", "pool billing")).ok
    assert assignee(new_case(engine)) == ANN  # still available in support
    raw = make(from_="b@customer.test", to="billing@example.com", subject="test_assign bill")
    engine.process(Delivery("b@customer.test", ("billing@example.com",), raw, queue_id="BA1"))
    billing = Case.select().order_by(Case.id.desc()).get()
    assert assignee(billing) is None  # Ann is billing's only CSR, and away there


@pytest.mark.parametrize(("arg", "error"), [
    ("until yesterday", "is not a date"),
    ("until 2020-01-01", "not in the future"),
    ("deputy nobody@example.com", "deputy nobody@example.com is not a CSR"),
    ("deputy ann@example.com", "cannot be your own deputy"),
    ("pool nosuch", "you are not in pool nosuch"),
    ("soon", "#away takes: until WHEN, deputy ADDRESS, pool NAME"),
])
def test_away_refusals(engine: Engine, arg: str, error: str) -> None:
    result = engine.staff_command(ANN, Given("away", arg))
    assert not result.ok and error in result.errors[0]


# -- escalation ----------------------------------------------------------------------------


def csr_mail(engine: Engine, csr: str, case: Case, body: str) -> None:
    raw = make(from_=csr, to=f"support+{case.number}@example.com", subject=f"Re: [Case #{case.number}] x",
               body=body)
    engine.process(Delivery(csr, (f"support+{case.number}@example.com",), raw, client_addr="127.0.0.1",
                            queue_id=f"E{next(_n)}"))


def test_escalate_to_the_second_level_with_a_private_note(engine: Engine) -> None:
    engine.store.set_csr(CAT, pools=["default:2"])
    engine.store.set_pool("default", escalation_notice=True)
    case = new_case(engine)
    assert assignee(case) == ANN  # level 1 only
    csr_mail(engine, ANN, case, "#escalate\nCat, the firmware is corrupt; he is a VIP.\n")
    assert assignee(case) == CAT
    note = out("notify")[-1]
    body = text_of(parse(bytes(note.raw)))
    assert note.recipients == CAT and "Escalated to you by ann@example.com" in body
    assert "the firmware is corrupt" in body.split("Case:", 1)[0]  # at the top
    to_customer = [m for m in out(to=case.customer_address)]
    assert [m.kind for m in to_customer] == ["ack", "escalated"]
    assert all("firmware" not in text_of(parse(bytes(m.raw))) for m in to_customer)


def test_escalate_to_someone_and_refusals(engine: Engine) -> None:
    case = new_case(engine)
    nobody = engine.command(case.number, actor=ANN, commands=[Given("escalate")])
    assert not nobody.ok and "no available second-level CSR" in nobody.errors[0]
    done = engine.command(case.number, actor=ANN, commands=[Given("escalate", BEN)], text="over to you")
    assert done.ok and assignee(case) == BEN and "escalated" not in done.sent  # no notice by default
    links = text_of(parse(bytes(out("notify")[-1].raw)))
    assert "Assign to Ann <ann@example.com> (level 1, available)" in links
