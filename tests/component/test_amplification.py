"""Amplification (issue 8, "Hostile input"): how much mail can one forged
sender make casegate send to a third party?

Through the whole engine on real stores (a SQLite file, and PostgreSQL when
one answers) with a fake clock: a forger writes as the victim, in every
spelling that reaches the victim's mailbox, and drives every path that mails
a customer without a CSR typing it (acknowledgements of new cases and
follow-ups, reminders, closing notices and surveys after auto-close, an
accepted solution or a CSR's #close, thank-yous for ratings). Whatever the
mix, the victim's mailbox gets at most ``autoreply_per_recipient`` automatic
mails in any window of ``autoreply_window_hours``, each path is refused by
the cap once it is reached, and the cap frees again as the window slides.
The bound is in docs/operations.md, "Amplification: the bound".
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest

from casestore.models import Case, Event, Message
from casestore.store import Store
from rules import replies
from rules.classify import parse_networks
from rules.commands import Given
from rules.defaults import LIMIT_DEFAULTS
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.executor import rate_key
from smtpd_hook.settings import Settings
from tests.support.clock import Clock
from tests.support.mail import make

SECRET = b"a" * 32
SUPPORT = "support@example.com"
JANE = "jane@example.com"
VICTIM = "victim@victim.test"
# What a forger may put in From: that still lands in the victim's mailbox
# (Postfix strips the quotes; the victim's server the +tag). A trailing dot
# (victim@victim.test.) reads as no address at all: automatic mail, never
# answered (test_a_domain_with_a_trailing_dot_gets_nothing).
SPELLINGS = ("victim@victim.test", "Victim@VICTIM.test", "victim+1@victim.test",
             "VICTIM+Sale@victim.test", '"victim"@victim.test', '"vic\\tim"@victim.test',
             '"victim+q"@Victim.Test')
# Mail a CSR typed (an answer, a proposed solution): a person decides to send it.
CSR_TYPED = {"reply", "solution"}
# Mail to staff, never to a customer.
STAFF = {"notify", "csr_notice"}
CAP = LIMIT_DEFAULTS["autoreply_per_recipient"]
PER_CASE = LIMIT_DEFAULTS["autoreply_per_case"]
WINDOW = dt.timedelta(hours=LIMIT_DEFAULTS["autoreply_window_hours"])
_TO_VICTIM = re.compile(r'"?victim(\+[^@"]*)?"?@victim\.test\.*')


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(store_url: str, clock: Clock) -> Iterator[Engine]:
    store = Store(store_url, clock=clock)
    store.migrate()
    store.add_mailbox(SUPPORT, "default", "Example Support")
    store.add_csr(JANE, "Jane Doe", ["default"], "Jane Doe\nSupport Team")
    # Short timers so that reminders and auto-close fire within one window.
    store.set_pool("default", remind_after=3600, autoclose_after=7200)
    settings = Settings(secret=SECRET, trusted_networks=parse_networks(["127.0.0.1/32"]))
    yield Engine(store, settings)
    store.close()


_qid = iter(range(1, 10**6))


def deliver(engine: Engine, raw: bytes, *, client: str = "198.51.100.7", rcpt: str = SUPPORT,
            mail_from: str = "forger@attacker.test") -> replies.Reply:
    qid = f"A{next(_qid)}"
    reply = engine.process(Delivery(mail_from=mail_from, rcpt_tos=(rcpt,), data=raw,
                                    client_addr=client, queue_id=qid))
    stored = Message.get((Message.queue_id == qid) & (Message.direction == "in"))
    assert reply == replies.stored(stored.case.number if stored.case else None)
    return reply


def forge_new_case(engine: Engine, spelling: str, subject: str) -> Case:
    """A new case whose 'customer' is the victim: the forger's envelope, the victim's From:."""
    deliver(engine, make(from_=spelling, subject=subject),
            mail_from=f"bounce{next(_qid)}@attacker.test")
    case = Case.select().order_by(Case.id.desc()).get()
    assert case.customer_address.replace('"', "").rstrip(".").lower().startswith("victim")
    return case


def forge_reply(engine: Engine, case: Case, body: str) -> None:
    """The forger writes on the victim's case as the victim (tag and plus-address)."""
    case = Case.get(Case.id == case.id)
    rcpt = f"support+{case.number}@example.com"
    deliver(engine, make(from_=case.customer_address, to=rcpt, body=body,
                         subject=f"Re: [Case #{case.number}] {case.subject}"), rcpt=rcpt)


def csr_answers(engine: Engine, case: Case, body: str) -> None:
    """A proven CSR (trusted network) answers: mail a person typed."""
    rcpt = f"support+{case.number}@example.com"
    deliver(engine, make(from_=JANE, to=rcpt, body=body,
                         subject=f"Re: [Case #{case.number}] {case.subject}"),
            client="127.0.0.1", rcpt=rcpt, mail_from=JANE)


def to_victim(*, automatic_only: bool = True) -> list[Message]:
    """Every message casegate wrote to the victim's mailbox, in any spelling;
    all but what a CSR typed (so a new kind of automatic mail counts too)."""
    rows = Message.select().where(Message.direction == "out").order_by(Message.id)
    return [m for m in rows if _TO_VICTIM.fullmatch(m.recipients.lower())
            and not (automatic_only and m.kind in CSR_TYPED)]


def worst_window(messages: list[Message]) -> int:
    """The most messages within any window of WINDOW (both ends included)."""
    times = sorted(m.created for m in messages)
    return max((sum(1 for u in times if t <= u <= t + WINDOW) for t in times), default=0)


def refusals(case: Case | None = None) -> list[str]:
    q = Event.select().where(Event.kind.in_(["no_ack", "not_sent"]) & Event.detail.contains("rate cap"))
    if case is not None:
        q = q.where(Event.case == case)
    return [e.detail for e in q.order_by(Event.id)]


def status(case: Case) -> str:
    return Case.get(Case.id == case.id).status


def test_every_path_to_a_forged_victim_is_bounded_by_the_per_recipient_cap(
        engine: Engine, clock: Clock) -> None:
    store = engine.store
    # -- one window: every path, until the cap stops them --------------------
    cases = [forge_new_case(engine, s, f"amp new {i}") for i, s in enumerate(SPELLINGS)]
    assert [m.kind for m in to_victim()] == ["ack"] * len(SPELLINGS)
    c_remind, c_accept, c_close, c_rate, c_late, c_late_solution, _spare = cases

    # Reminder, then auto-close by the scheduler: reminder, closing notice, survey.
    csr_answers(engine, c_remind, "Try the blue button.\n")
    csr_answers(engine, c_rate, "Try the red button.\n")
    clock.advance(hours=1, seconds=1)
    assert engine.run_due_timers("host:1") == 2
    clock.advance(hours=1)
    assert engine.run_due_timers("host:1") == 2
    assert status(c_remind) == status(c_rate) == "closed"
    # A solution the forger accepts as the victim: closing notice, survey.
    assert engine.command(c_accept.number, actor=JANE, commands=[Given("solution")],
                          text="Replace the toner.").ok
    forge_reply(engine, c_accept, "Accept\n")
    assert status(c_accept) == "closed"
    # A CSR's #close: closing notice, survey.
    assert engine.command(c_close.number, actor=JANE, commands=[Given("close")]).ok
    # Ratings of a closed case, again and again: a thank-you each, up to the per-case cap.
    for grade in "5432154321":
        forge_reply(engine, c_rate, f"{grade}\n")
    on_case = [m for m in to_victim() if m.case_id == c_rate.id]
    assert len(on_case) == PER_CASE
    assert [m.kind for m in on_case].count("thanks") == PER_CASE - 4  # ack, reminder, closed, survey
    assert refusals(c_rate) and all(f"{PER_CASE} automatic mails on {c_rate.number}" in r
                                    for r in refusals(c_rate))
    # Mail to a closed case opens a linked follow-up: its acknowledgement.
    store.set_pool("default", closed_policy="new_linked")
    forge_reply(engine, c_close, "It broke again.\n")
    follow_up = Case.select().order_by(Case.id.desc()).get()
    assert follow_up.follow_up_of_id == c_close.id and to_victim()[-1].kind == "ack"
    # Cases whose automatic mail comes after the cap is reached (below).
    csr_answers(engine, c_late, "Did that help?\n")
    assert engine.command(c_late_solution.number, actor=JANE, commands=[Given("solution")],
                          text="Restart it.").ok
    sent = len(to_victim())
    assert sent < CAP
    assert {m.kind for m in to_victim()} == {"ack", "reminder", "closed", "survey", "thanks"}
    # New cases in every spelling until the cap is reached, and well beyond.
    per_rcpt = f"rate cap: {CAP} automatic mails to {VICTIM} already sent"
    for i in range(CAP):
        forge_new_case(engine, SPELLINGS[i % len(SPELLINGS)], f"amp flood {i}")
    assert len(to_victim()) == CAP
    assert refusals().count(per_rcpt) == sent  # the acknowledgements beyond the cap

    # -- at the cap: each path is refused, by the per-recipient cap -------------
    def refused_now(before: int) -> list[str]:
        return refusals()[before:]

    n = len(refusals())
    forge_new_case(engine, '"Victim+x"@victim.test', "amp after cap")  # acknowledgement
    forge_reply(engine, c_remind, "3\n")  # thank-you for a rating (c_remind has 4 of 10)
    forge_reply(engine, cases[0], "Still broken.\n")  # follow-up (closed, new_linked)
    forge_reply(engine, c_late_solution, "Accept\n")  # closing notice + survey
    assert status(c_late_solution) == "closed"
    clock.advance(hours=1, seconds=1)
    assert engine.run_due_timers("host:1") == 1  # reminder on c_late
    clock.advance(hours=1)
    assert engine.run_due_timers("host:1") == 1  # auto-close of c_late: notice + survey
    assert status(c_late) == "closed"
    extra = Case.select().where(Case.subject == "amp flood 0").get()
    assert engine.command(extra.number, actor=JANE, commands=[Given("close")]).ok  # notice + survey
    after = refused_now(n)
    assert after == [
        per_rcpt,  # ack
        f"thanks: {per_rcpt}",
        per_rcpt,  # ack of the follow-up
        f"closed: {per_rcpt}", f"survey: {per_rcpt}",  # accepted solution
        f"reminder: {per_rcpt}",
        f"closed: {per_rcpt}", f"survey: {per_rcpt}",  # auto-close
        f"closed: {per_rcpt}", f"survey: {per_rcpt}",  # #close
    ]
    assert len(to_victim()) == CAP
    # What a CSR types still goes out (a person decided), and staff are still told.
    notified = Message.select().where(Message.kind == "notify").count()
    csr_answers(engine, extra, "We are sorry: this was not you?\n")
    assert to_victim(automatic_only=False)[-1].kind == "reply"
    forge_new_case(engine, VICTIM, "amp staff still told")
    assert Message.select().where(Message.kind == "notify").count() == notified + 1
    assert all(m.recipients == JANE for m in Message.select().where(Message.kind.in_(STAFF)))
    assert len(to_victim()) == CAP and worst_window(to_victim()) == CAP

    # -- the window slides: what left it is free again, never more ---------------
    first = min(m.created for m in to_victim())
    clock.now = first.replace(tzinfo=dt.UTC) + WINDOW + dt.timedelta(seconds=1)
    for i in range(CAP):
        forge_new_case(engine, SPELLINGS[i % len(SPELLINGS)], f"amp slide {i}")
    assert len(to_victim()) > CAP
    assert worst_window(to_victim()) == CAP
    # A whole window later, the cap is whole again, and still the cap.
    clock.advance(hours=25)
    before = len(to_victim())
    for i in range(CAP + 5):
        forge_new_case(engine, SPELLINGS[i % len(SPELLINGS)], f"amp next day {i}")
    assert len(to_victim()) - before == CAP
    assert worst_window(to_victim()) == CAP
    # One key for the store, whatever the spelling.
    keys = {m.rcpt_key for m in to_victim()}
    assert keys == {VICTIM}


def test_the_domain_cap_bounds_many_mailboxes_at_one_domain(engine: Engine) -> None:
    """victim1@, victim2@ … in any spelling: ``autoreply_per_domain`` for the whole domain."""
    engine.store.set_setting("autoreply_per_domain", "12")
    for i in range(20):
        domain = "Victim.TEST" if i % 2 else "victim.test"
        deliver(engine, make(from_=f"user{i}@{domain}", subject=f"amp domain {i}"))
        deliver(engine, make(from_=f'"user{i}+again"@{domain}', subject=f"amp domain again {i}"))
    acks = Message.select().where((Message.direction == "out") & (Message.kind == "ack"))
    assert acks.count() == 12
    assert {m.rcpt_domain for m in acks} == {"victim.test"}
    assert refusals()[-1] == "rate cap: 12 automatic mails to @victim.test already sent"
    # Another domain is not touched by it.
    deliver(engine, make(from_="ann@other.test", subject="amp other domain"))
    assert acks.count() == 13


def test_a_domain_with_a_trailing_dot_gets_nothing(engine: Engine) -> None:
    """Postfix would deliver to victim@victim.test. as to victim@victim.test:
    casegate reads such a From: as no address (automatic mail) and answers nothing."""
    for i, spelling in enumerate(("victim@victim.test.", '"victim+q"@Victim.Test.')):
        deliver(engine, make(from_=spelling, subject=f"amp dot {i}"))
    assert to_victim() == []
    assert Message.select().where((Message.direction == "in") & (Message.kind == "bounce")).count() == 2


def test_no_automatic_mail_to_an_address_literal(engine: Engine) -> None:
    """victim@[192.0.2.1] is one more spelling of a mailbox (a cap of its own)."""
    deliver(engine, make(from_="victim@[192.0.2.1]", subject="amp literal"))
    case = Case.select().get()
    assert Message.select().where((Message.direction == "out") & (Message.kind == "ack")).count() == 0
    assert Event.select().where((Event.case == case) & (Event.kind == "no_ack")).get().detail == \
        "never to an address literal"
    assert Message.select().where(Message.kind == "notify").count() == 1  # the CSR still sees it


@pytest.mark.parametrize(("spelling", "key"), [
    ("victim@victim.test", "victim@victim.test"),
    ("Victim+Sale@VICTIM.Test", "victim@victim.test"),
    ('"victim"@victim.test', "victim@victim.test"),
    ('"victim+q"@Victim.Test.', "victim@victim.test"),
    ('"vic\\tim"@victim.test', "victim@victim.test"),
    ("victim@victim.test..", "victim@victim.test"),
    ("V.ic.tim+3@gmail.com", "victim@gmail.com"),
    ("victim@GoogleMail.com", "victim@gmail.com"),
    ("v.ictim@victim.test", "v.ictim@victim.test"),  # dots matter elsewhere
    ("+victim@victim.test", "+victim@victim.test"),  # a leading + is the name, not a tag
])
def test_every_spelling_of_a_mailbox_is_one_key(spelling: str, key: str) -> None:
    assert rate_key(spelling) == key
