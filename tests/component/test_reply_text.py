"""What a CSR typed and what a customer quoted, through the engine on a real
store (SQLite file and PostgreSQL): one greeting and one sign-off for the
customer; the customer's quoted history cut in what the CSR sees."""

from __future__ import annotations

import pytest

from casestore.models import Case, Message
from casestore.store import Store
from rules import replies
from rules.classify import parse_networks
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.settings import Settings
from tests.support.mail import make, parse, text_of

SECRET = b"s" * 32
SUPPORT = "support@example.com"


@pytest.fixture
def engine(store_url: str) -> Engine:
    store = Store(store_url)
    store.migrate()
    store.add_mailbox(SUPPORT, "default", "Example Support")
    store.add_csr("jane@example.com", "Jane Doe", ["default"], "Jane Doe\nSupport Team\n+1 555 0100")
    settings = Settings(secret=SECRET, trusted_networks=parse_networks(["127.0.0.1/32"]))
    yield Engine(store, settings)
    store.close()


def deliver(engine: Engine, raw: bytes, *, client: str, rcpt: str, mail_from: str) -> replies.Reply:
    return engine.process(Delivery(mail_from=mail_from, rcpt_tos=(rcpt,), data=raw,
                                   client_addr=client, queue_id="QID1"))


def outgoing(kind: str) -> list[Message]:
    q = Message.select().where((Message.direction == "out") & (Message.kind == kind))
    return list(q.order_by(Message.id))


def open_case(engine: Engine, subject: str) -> Case:
    raw = make(from_="Anna Nowak <anna@customer.test>", subject=subject,
               body="My kettle broke after two days.\n")
    assert deliver(engine, raw, client="127.0.0.2", rcpt=SUPPORT,
                   mail_from="anna@customer.test") == replies.OK
    return Case.select().order_by(Case.id.desc()).get()


def csr_answer(engine: Engine, case: Case, body: str) -> str:
    plus = f"support+{case.number}@example.com"
    raw = make(from_="Jane Doe <jane@example.com>", to=plus,
               subject=f"Re: [Case #{case.number}] answer", body=body)
    assert deliver(engine, raw, client="127.0.0.1", rcpt=plus,
                   mail_from="jane@example.com") == replies.OK
    return text_of(parse(bytes(outgoing("reply")[-1].raw)))


# (answer the CSR typed, what the customer's mail starts with, what follows the text)
SALUTATION_CASES = {
    "none": ("A new kettle ships today.",
             "Hello Anna,\n\nA new kettle ships today.\n\nJane Doe\nSupport Team\n+1 555 0100"),
    "own_greeting": ("Hi Anna,\n\nA new kettle ships today.",
                     "Hi Anna,\n\nA new kettle ships today.\n\nJane Doe\nSupport Team"),
    "own_signoff": ("A new kettle ships today.\n\nBest regards,\nJane",
                    "Hello Anna,\n\nA new kettle ships today.\n\nBest regards,\nJane\n"
                    "Support Team\n+1 555 0100\nExample Support"),
    "both_one_line": ("Hi Anna,\n\nA new kettle ships today.\n\nBest regards, Jane",
                      "Hi Anna,\n\nA new kettle ships today.\n\nBest regards, Jane\n"
                      "Support Team\n+1 555 0100\nExample Support"),
    "polish": ("Dzień dobry,\n\nNowy czajnik wysłaliśmy dziś.\n\nPozdrawiam,\nJane Doe",
               "Dzień dobry,\n\nNowy czajnik wysłaliśmy dziś.\n\nPozdrawiam,\nJane Doe\n"
               "Support Team\n+1 555 0100\nExample Support"),
}


@pytest.mark.parametrize("name", sorted(SALUTATION_CASES))
def test_one_greeting_and_one_signoff(engine: Engine, name: str) -> None:
    typed, expected = SALUTATION_CASES[name]
    case = open_case(engine, f"test_one_greeting[{name}]")
    text = csr_answer(engine, case, typed)
    assert text.startswith(expected), text
    greetings = [line for line in text.splitlines()
                 if line.startswith(("Hello", "Hi ", "Dzień dobry"))]
    assert len(greetings) == 1, text
    assert text.count("Best regards") + text.count("Pozdrawiam") <= 1
    assert "My kettle broke" in text  # the case history still follows


def test_customer_reply_quotes_are_cut_for_the_csr(engine: Engine) -> None:
    case = open_case(engine, "test_customer_quotes_cut")
    csr_answer(engine, case, "Please send a photo of the kettle.")
    answer = parse(bytes(outgoing("reply")[-1].raw))
    quoted = "\n".join("> " + line for line in text_of(answer).splitlines())
    body = (f"Here is the photo, the lid is cracked.\n\nOn Mon, 3 Jun 2024 at 10:15, Jane Doe "
            f"<{SUPPORT}> wrote:\n{quoted}\n")
    plus = f"support+{case.number}@example.com"
    raw = make(from_="Anna Nowak <anna@customer.test>", to=plus, subject=f"Re: {answer['Subject']}",
               body=body, in_reply_to=answer["Message-ID"], references=[answer["Message-ID"]])
    assert deliver(engine, raw, client="127.0.0.2", rcpt=plus,
                   mail_from="anna@customer.test") == replies.OK
    stored = Message.select().where((Message.direction == "in") & (Message.kind == "customer")
                                    ).order_by(Message.id.desc()).get()
    assert bytes(stored.raw) == raw  # the raw message, whole
    assert "> Please send a photo" in bytes(stored.raw).decode()
    note = text_of(parse(bytes(outgoing("notify")[-1].raw)))
    new = note.split("---- New message from", 1)[1].split("---- History ----", 1)[0]
    assert "Here is the photo, the lid is cracked." in new
    assert "Please send a photo" not in new and "wrote:" not in new
    # The history shows each earlier message once, not nested in the newest.
    assert note.count("Please send a photo of the kettle.") == 1
    assert note.count("My kettle broke after two days.") == 1
    # ... and so does the next answer to the customer.
    text = csr_answer(engine, case, "Thanks, a new one ships today.")
    assert text.count("Please send a photo of the kettle.") <= 1
    assert text.count("My kettle broke after two days.") == 1


def test_first_message_keeps_a_forwarded_history(engine: Engine) -> None:
    """A new case's first message is not cut: what it forwards is the problem."""
    body = ("See the mail below from your shop.\n\n-----Original Message-----\n"
            "From: Shop <shop@example.net>\nSent: Monday, 3 June 2024 10:15\nTo: Anna\n"
            "Subject: Order\n\nYour order 12345 is cancelled.\n")
    raw = make(from_="Anna Nowak <anna@customer.test>", subject="test_first_message_forward",
               body=body)
    assert deliver(engine, raw, client="127.0.0.2", rcpt=SUPPORT,
                   mail_from="anna@customer.test") == replies.OK
    note = text_of(parse(bytes(outgoing("notify")[-1].raw)))
    assert "Your order 12345 is cancelled." in note
