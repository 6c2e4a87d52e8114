"""A mailbox's own language, acknowledgement and greeting beat its pool's
(NULL: the pool's), through the engine on real stores (a SQLite file and
PostgreSQL)."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from casestore.models import Case, Event, Message
from casestore.store import Store
from rules import replies
from rules.classify import parse_networks
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.settings import Settings
from tests.support.clock import Clock
from tests.support.mail import make, parse, text_of

SECRET = b"m" * 32
BILLING, FAKTURY, QUIET = "billing@example.com", "faktury@example.com", "quiet@example.com"
JANE = "jane@example.com"
_qid = iter(range(1, 10**6))


@pytest.fixture
def engine(store_url: str) -> Engine:
    store = Store(store_url, clock=Clock())
    store.migrate()
    for address in (BILLING, FAKTURY, QUIET):
        store.add_mailbox(address, "billing", "Example Billing")
    store.add_csr(JANE, "Jane Doe", ["billing"], "Jane Doe")
    store.set_pool("billing", greeting="Dear {first_name},")
    yield Engine(store, Settings(secret=SECRET, trusted_networks=parse_networks(["127.0.0.1/32"])))
    store.close()


def deliver(engine: Engine, raw: bytes, rcpt: str, *, client: str = "127.0.0.2",
            mail_from: str = "john@customer.test") -> replies.Reply:
    return engine.process(Delivery(mail_from=mail_from, rcpt_tos=(rcpt,), data=raw,
                                   client_addr=client, queue_id=f"M{next(_qid)}"))


def open_case(engine: Engine, rcpt: str) -> Case:
    raw = make(from_="John Smith <john@customer.test>", to=rcpt, subject=f"test_mailbox_templates {rcpt}")
    reply = deliver(engine, raw, rcpt)
    case = Case.select().order_by(Case.id.desc()).get()
    assert reply == replies.stored(case.number)
    return case


def sent(kind: str, case: Case) -> list[EmailMessage]:
    q = Message.select().where((Message.direction == "out") & (Message.kind == kind)
                               & (Message.case == case)).order_by(Message.id)
    return [parse(bytes(m.raw)) for m in q]


def html_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def test_mailbox_language_greeting_and_acknowledgement_beat_the_pool(engine: Engine) -> None:
    store = engine.store
    store.set_mailbox_intake(FAKTURY, language="pl", greeting="Szanowni Państwo,")
    store.set_mailbox_intake(QUIET, acknowledge=False)

    # billing@ says nothing of its own: the pool's English and greeting.
    case = open_case(engine, BILLING)
    [ack] = sent("ack", case)
    assert text_of(ack).startswith("Dear John,\n\nThank you for contacting Example Billing.")
    assert '<html lang="en">' in html_of(ack)

    # faktury@: its own language and greeting.
    case = open_case(engine, FAKTURY)
    [ack] = sent("ack", case)
    assert text_of(ack).startswith("Szanowni Państwo,\n\ndziękujemy za kontakt z Example Billing.")
    assert '<html lang="pl">' in html_of(ack)
    # ... and a CSR's answer there is Polish too.
    plus = FAKTURY.replace("@", f"+{case.number}@")
    note = Message.select().where((Message.kind == "notify") & (Message.case == case)).get()
    assert deliver(engine, make(from_=f"Jane Doe <{JANE}>", to=plus, subject=f"Re: [Case #{case.number}] x",
                                body="Faktura jest w załączniku.\n", in_reply_to=note.message_id),
                   plus, client="127.0.0.1", mail_from=JANE) == replies.stored(case.number)
    [reply] = sent("reply", case)
    text = text_of(reply)
    assert text.startswith("Szanowni Państwo,\n\nFaktura jest w załączniku.\n\nJane Doe\nExample Billing")
    assert "Sprawa " in text and "---- Case " not in text
    assert '<html lang="pl">' in html_of(reply)

    # quiet@: no acknowledgement though its pool sends them; the CSR still hears.
    case = open_case(engine, QUIET)
    assert sent("ack", case) == [] and len(sent("notify", case)) == 1
    assert [e.detail for e in Event.select().where((Event.case == case) & (Event.kind == "no_ack"))] == [
        f"mailbox {QUIET}: acknowledgements off"]

    # The pool turns acknowledgements off; quiet@ says --acknowledge: it wins.
    store.set_pool("billing", acknowledge=False)
    store.set_mailbox_intake(QUIET, acknowledge=True)
    assert len(sent("ack", open_case(engine, QUIET))) == 1
    assert sent("ack", open_case(engine, BILLING)) == []

    # A mailbox in another language than its pool, with no greeting of its
    # own: the language's greeting, not the pool's English one.
    store.set_mailbox_intake(FAKTURY, greeting=None, acknowledge=True)
    [ack] = sent("ack", open_case(engine, FAKTURY))
    assert text_of(ack).startswith("Dzień dobry John,\n\ndziękujemy za kontakt z Example Billing.")
    # Back to the pool's language (NULL): the pool's greeting again.
    store.set_mailbox_intake(FAKTURY, language=None)
    [ack] = sent("ack", open_case(engine, FAKTURY))
    assert text_of(ack).startswith("Dear John,\n\nThank you for contacting Example Billing.")


# What the executor wrote in English into every notification before it had a table.
ENGLISH = ("New case", "Close (", "Propose a solution", "Add an internal note", "Take it",
           "Set a status", "Assign to", "Escalate to", "Blacklist", "Internal note by", "(no text)",
           "The customer", "level ", "available", "wrote again", "department, internal")


def test_polish_notification_has_no_english_labels(engine: Engine) -> None:
    from rules.quotes import html_to_text

    store = engine.store
    store.set_pool("billing", language="pl", greeting="")
    store.add_csr("piotr@example.com", "Piotr Nowak", ["billing:2"], "Piotr")
    store.add_csr("ewa@example.com", "Ewa Kowalska", ["billing"], "Ewa")
    case = open_case(engine, BILLING)
    assignee = case.assignee.address
    plus = BILLING.replace("@", f"+{case.number}@")
    note = Message.select().where((Message.kind == "notify") & (Message.case == case)).get()
    assert deliver(engine, make(from_=assignee, to=plus, subject=f"Re: [Case #{case.number}] x",
                                body="#note\nZadzwonić jutro.\n", in_reply_to=note.message_id),
                   plus, client="127.0.0.1", mail_from=assignee) == replies.stored(case.number)
    assert deliver(engine, make(from_="John Smith <john@customer.test>", to=plus,
                                subject=f"Re: [Case #{case.number}] x", body="Jeszcze jedno.\n"),
                   plus) == replies.stored(case.number)
    first, again = sent("notify", case)
    assert first["Subject"].endswith(case.subject)
    for mail, headline in ((first, "Nowa sprawa"), (again, "Klient napisał ponownie")):
        text, html = text_of(mail), html_to_text(html_of(mail))
        for body in (text, html):
            assert headline in body
            assert "Zaproponuj rozwiązanie" in body and "Zamknij (tekst poniżej" in body
            assert "Przekaż wyżej do: Piotr Nowak <piotr@example.com> (poziom 2, dostępność: tak)" in body
            assert "Przypisz do: Ewa Kowalska <ewa@example.com> (poziom 1, dostępność: tak)" in body
            assert "Czarna lista: john@customer.test, tylko ten temat" in body
            for english in ENGLISH:
                assert english not in body, (english, body)
    assert "Notatka wewnętrzna, autor: " + assignee in text_of(again)
