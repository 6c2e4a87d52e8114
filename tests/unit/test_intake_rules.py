"""Pure intake rules (issue 10, sections 5-6): who joins a case, which
product a case is about, what a mailbox's intake policy does. Tables."""

from __future__ import annotations

import datetime as dt

import pytest

from rules import life
from rules.decision import (
    CsrInfo,
    DepartmentInfo,
    Directory,
    MailboxInfo,
    OpenCase,
    PoolInfo,
    ProductInfo,
    RefuseIntake,
)
from rules.match import Match
from rules.participants import joining
from rules.products import product_for
from rules.vocab import Outcome, Status

POOL = PoolInfo("default")
DIRECTORY = Directory(
    csrs={"jane@example.com": CsrInfo("jane@example.com", "Jane")},
    mailboxes={"support@example.com": MailboxInfo("support@example.com", "", POOL)},
    departments={"legal": DepartmentInfo("legal", "legal@example.com", 3600)},
)

JOINING = [
    # (what, cc, known, limit, added, refused addresses)
    ("a new colleague joins", ["carol@c.test"], {"ann@c.test"}, 10, ("carol@c.test",), ()),
    ("case and duplicates folded", ["Carol@C.test", "carol@c.test"], {"ann@c.test"}, 10,
     ("carol@c.test",), ()),
    ("the sender is not added twice", ["ann@c.test"], {"ann@c.test"}, 10, (), ()),
    ("already taking part (a +tag of them too)", ["bob@c.test", "bob+x@c.test"],
     {"ann@c.test", "bob@c.test"}, 10, (), ()),
    ("a CSR never joins", ["jane@example.com", "jane+tag@example.com"], {"ann@c.test"}, 10, (),
     ("jane@example.com", "jane+tag@example.com")),
    ("a supervised address or a department never joins",
     ["support@example.com", "support+CS0000001@example.com", "legal@example.com"], {"ann@c.test"}, 10,
     (), ("support@example.com", "support+cs0000001@example.com", "legal@example.com")),
    ("role addresses never join", ["noreply@c.test", "mailer-daemon@c.test"], {"ann@c.test"}, 10, (),
     ("noreply@c.test", "mailer-daemon@c.test")),
    ("an address literal never joins", ["x@[192.0.2.1]"], {"ann@c.test"}, 10, (), ("x@[192.0.2.1]",)),
    ("the cap counts those on the case already", ["c@c.test", "d@c.test"],
     {"ann@c.test", "b@c.test"}, 2, ("c@c.test",), ("d@c.test",)),
    ("a cap of 0 takes nobody", ["c@c.test"], {"ann@c.test"}, 0, (), ("c@c.test",)),
]


@pytest.mark.parametrize("cc, known, limit, added, refused", [c[1:] for c in JOINING],
                         ids=[c[0] for c in JOINING])
def test_who_joins_a_case(cc, known, limit, added, refused) -> None:
    got = joining(cc, sender="ann@c.test", known=known, directory=DIRECTORY, limit=limit)
    assert got.added == added
    assert tuple(a for a, _ in got.refused) == refused


# -- products ----------------------------------------------------------------------------------


PRODUCTS = (ProductInfo("Router", keywords=("rt-100",)), ProductInfo("Router Pro"),
            ProductInfo("Billing", mailbox="billing@example.com"),
            ProductInfo("Printer", keywords=("laser", "ink jet")))

PRODUCT_CASES = [
    ("the name as a word, any case", "support@example.com", "my ROUTER is down", "Router"),
    ("a keyword", "support@example.com", "RT-100 blinks", "Router"),
    ("a phrase keyword across spaces", "support@example.com", "Ink  Jet smudges", "Printer"),
    ("a word inside another is no match", "support@example.com", "routers and lasers", None),
    ("the longer name at the same place", "support@example.com", "Router Pro overheats", "Router Pro"),
    ("the earliest keyword wins", "support@example.com", "laser next to my router", "Printer"),
    ("the mailbox's product", "billing@example.com", "invoice 42", "Billing"),
    ("a +tag of the mailbox too", "billing+x@example.com", "invoice 42", "Billing"),
    ("a keyword beats the mailbox", "billing@example.com", "router invoice", "Router"),
    ("nothing", "support@example.com", "hello", None),
    ("an empty subject", "support@example.com", "", None),
]


@pytest.mark.parametrize("mailbox, subject, expected", [c[1:] for c in PRODUCT_CASES],
                         ids=[c[0] for c in PRODUCT_CASES])
def test_which_product(mailbox: str, subject: str, expected: str | None) -> None:
    got = product_for(mailbox, subject, PRODUCTS)
    assert (got[0] if got else None) == expected


# -- the mailbox's intake policy --------------------------------------------------------------


def facts(*, prefix: str = "", unknown: str = "open", known: bool = False, subject: str = "Help",
          sender: str = "ann@c.test") -> life.CustomerFacts:
    box = MailboxInfo("support@example.com", "", POOL, subject_prefix=prefix, unknown_policy=unknown)
    return life.CustomerFacts(
        mailbox=box, directory=DIRECTORY, case=None, match=Match(None, "new_case", "no case"),
        sender=sender, sender_name="Ann", subject=subject, cc=(), text="hi", reply_text="",
        no_ack_reason=None, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), known_customer=known)


INTAKE = [
    # (what, facts, outcome, refusal template or opened status)
    ("open by default", facts(), Outcome.NEW_CASE, Status.RECEIVED),
    ("prefix present, any case", facts(prefix="[ORDER]", subject="  [order] 42"), Outcome.NEW_CASE,
     Status.RECEIVED),
    ("prefix missing", facts(prefix="[ORDER]", subject="order 42"), Outcome.INTAKE_REFUSED,
     "intake_prefix"),
    ("prefix missing, known customer too", facts(prefix="[ORDER]", known=True), Outcome.INTAKE_REFUSED,
     "intake_prefix"),
    ("reject an unknown sender", facts(unknown="reject"), Outcome.INTAKE_REFUSED, "intake_rejected"),
    ("reject comes before the prefix", facts(unknown="reject", prefix="[ORDER]"),
     Outcome.INTAKE_REFUSED, "intake_rejected"),
    ("a known sender is not rejected", facts(unknown="reject", known=True), Outcome.NEW_CASE,
     Status.RECEIVED),
    ("hold an unknown sender", facts(unknown="hold"), Outcome.HELD_CASE, Status.HELD),
    ("hold still needs the prefix", facts(unknown="hold", prefix="[ORDER]"), Outcome.INTAKE_REFUSED,
     "intake_prefix"),
    ("a known sender is not held", facts(unknown="hold", known=True), Outcome.NEW_CASE, Status.RECEIVED),
]


@pytest.mark.parametrize("f, outcome, what", [c[1:] for c in INTAKE], ids=[c[0] for c in INTAKE])
def test_intake_policy(f: life.CustomerFacts, outcome: Outcome, what) -> None:
    d = life.on_customer(f)
    assert d.outcome is outcome
    if isinstance(what, Status):
        opened = [a for a in d.actions if isinstance(a, OpenCase)]
        assert [a.status for a in opened] == [what]
        assert (what is Status.HELD) == (not any(type(a).__name__ == "Acknowledge" for a in d.actions))
    else:
        assert not any(isinstance(a, OpenCase) for a in d.actions)
        assert [a.template for a in d.actions if isinstance(a, RefuseIntake)] == [what]


# -- #new: a CSR's proactive case gets its product as a customer's does -----------------

NEW_PRODUCT = [
    ("a keyword in the subject", "support@example.com", "Your RT-100 replacement",
     ("Router", "keyword 'rt-100' in the subject")),
    ("the mailbox's product", "billing@example.com", "Your invoice",
     ("Billing", "the product of billing@example.com")),
    ("neither", "support@example.com", "Hello", None),
]


@pytest.mark.parametrize("mailbox, subject, product", [c[1:] for c in NEW_PRODUCT],
                         ids=[c[0] for c in NEW_PRODUCT])
def test_new_by_a_csr_gets_a_product(mailbox: str, subject: str, product) -> None:
    from dataclasses import replace

    from rules import commands as cmd
    from rules.decision import SetProduct

    directory = replace(DIRECTORY, products=PRODUCTS)
    f = cmd.CommandFacts(actor=cmd.Actor("jane@example.com", directory.csr("jane@example.com")),
                         case=None, pool=POOL, directory=directory, subject=subject, mailbox=mailbox)
    got = cmd.decide([cmd.Given("new", "mary@customer.test")], "Hello Mary", f)
    assert not got.errors
    assert [a for a in got.actions if isinstance(a, SetProduct)] == (
        [SetProduct(*product)] if product else [])


@pytest.mark.parametrize("pool_ack, mailbox_ack, ack", [
    (True, None, "sent"), (False, None, "pool default: acknowledgements off"),
    (False, True, "sent"), (True, False, "mailbox support@example.com: acknowledgements off")])
def test_accept_acknowledges_as_the_mailbox_says(pool_ack: bool, mailbox_ack: bool | None, ack: str) -> None:
    from dataclasses import replace

    from rules import commands as cmd
    from rules.decision import CaseState, Record, SendCustomer
    from rules.vocab import EventKind, MessageKind

    pool = PoolInfo("default", acknowledge=pool_ack)
    directory = replace(DIRECTORY, mailboxes={"support@example.com": MailboxInfo(
        "support@example.com", "", pool, acknowledge=mailbox_ack)})
    state = CaseState("CS0000001", Status.HELD, "support@example.com", "ann@c.test", "", "Help",
                      "jane@example.com", dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    f = cmd.CommandFacts(actor=cmd.Actor("jane@example.com", directory.csr("jane@example.com")),
                         case=state, pool=pool, directory=directory)
    got = cmd.decide([cmd.Given("accept", "")], "", f)
    assert not got.errors
    assert got.actions[-1] == (SendCustomer(MessageKind.ACK) if ack == "sent"
                               else Record(EventKind.NO_ACK, ack))
