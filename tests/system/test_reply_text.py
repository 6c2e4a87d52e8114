"""Reply text through a real Postfix (built from contrib/postfix/) and the real
``casegate serve``: the customer gets one greeting and one sign-off when the
CSR typed their own; a German Outlook reply has its unquoted history cut, on
the CSR's side and on the customer's.

Customers write from 127.0.0.2 (the internet); the CSR from 127.0.0.1 (the
trusted network).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove, postfix_available
from tests.support.mail import make, text_of
from tests.support.postfix import PostfixInstance, free_ports
from tests.support.sink import Delivery, Sink

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available())),
]

SUPPORT, JANE, ANNA = "support@example.com", "jane@example.com", "anna@customer.test"


@dataclass
class Env:
    postfix: PostfixInstance
    sink: Sink
    casegate: Casegate

    def wait(self, to: str, pred=lambda d: True, count: int = 1, timeout: float = 30) -> list[Delivery]:
        return self.sink.wait_for(lambda d: to in d.rcpt_tos and pred(d), timeout=timeout, count=count)

    def open(self, subject: str, body: str) -> tuple[str, Delivery]:
        self.postfix.send(ANNA, [SUPPORT], make(from_=f"Anna Nowak <{ANNA}>", to=SUPPORT,
                                                subject=subject, body=body), source="127.0.0.2")
        ack = self.wait(ANNA, lambda d: subject in str(d.message["Subject"]))[0]
        note = self.wait(JANE, lambda d: subject in str(d.message["Subject"]))[0]
        number = str(ack.message["Subject"]).split("#", 1)[1].split("]", 1)[0]
        return number, note

    def csr(self, number: str, body: str, note: Delivery) -> Delivery:
        """Jane answers the notification; the customer's copy."""
        plus = f"support+{number}@example.com"
        before = len(self.sink.messages(to=ANNA))
        raw = make(from_=f"Jane Doe <{JANE}>", to=plus, subject=f"Re: {note.message['Subject']}",
                   body=body, in_reply_to=note.message["Message-ID"],
                   references=[note.message["Message-ID"]])
        self.postfix.send(JANE, [plus], raw, source="127.0.0.1")
        return self.wait(ANNA, count=before + 1)[-1]


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    root = _new_root()
    sink = Sink().start()
    filter_port, reinject_port = free_ports(2)
    pf = PostfixInstance(root=root / "pf", sink_port=sink.port, filter_port=filter_port,
                         reinject_port=reinject_port, supervised=[SUPPORT])
    cg = Casegate(root / "cg")
    try:
        cg.run("init")
        cg.run("mailbox", "add", SUPPORT, "--pool", "default", "--name", "Example Support")
        cg.run("csr", "add", JANE, "--name", "Jane Doe", "--signature",
               "Jane Doe\\nCustomer Care", "--pool", "default")
        pf.start()
        cg.start(listen_port=filter_port, reinject_port=reinject_port)
        yield Env(pf, sink, cg)
    finally:
        cg.close()
        pf.stop()
        sink.stop()
        _remove(root)


def _greeting_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("Hello", "Hi "))]


def test_own_greeting_and_signoff_reach_the_customer_once(env: Env) -> None:
    number, note = env.open("test_own_greeting kettle", "My kettle broke after two days.\n")
    quoted = "\n".join("> " + line for line in text_of(note.message).splitlines())
    got = env.csr(number, "Hi Anna,\n\nA new kettle ships today.\n\nBest regards, Jane\n\n"
                  f"On Mon, 3 Jun 2024 at 10:15, Example Support <{SUPPORT}> wrote:\n{quoted}\n",
                  note)
    text = text_of(got.message)
    assert text.startswith("Hi Anna,\n\nA new kettle ships today.\n\nBest regards, Jane\n"
                           "Customer Care\nExample Support\n"), text
    assert _greeting_lines(text) == ["Hi Anna,"]
    assert "Hello Anna" not in text and text.count("Best regards") == 1
    assert "Jane Doe\nCustomer Care" not in text  # her name not a second time
    assert "My kettle broke after two days." in text  # the case history below


def test_german_outlook_history_is_cut_both_ways(env: Env) -> None:
    number, note = env.open("test_german_outlook Wasserkocher", "Mein Wasserkocher ist kaputt.\n")
    # Outlook in German: the notification below a "Von:" block, unquoted, and
    # the marker line lost (as when a client re-flows the text).
    history = text_of(note.message).replace("##- Please type your reply above this line -##", "")
    got = env.csr(number, "Ihr neuer Wasserkocher ist unterwegs.\n\n"
                  f"Von: Anna Nowak via Example Support <support+{number}@example.com>\n"
                  "Gesendet: Montag, 3. Juni 2024 10:15\nAn: Jane Doe <jane@example.com>\n"
                  f"Betreff: {note.message['Subject']}\n\n{history}\n", note)
    text = text_of(got.message)
    assert text.startswith("Hello Anna,\n\nIhr neuer Wasserkocher ist unterwegs.\n\nJane Doe\n")
    for leak in ("Von:", "Gesendet:", "Reply to this email", "Status:"):
        assert leak not in text, leak
    assert text.count("Mein Wasserkocher ist kaputt.") == 1  # in the history, once

    # Anna answers from Outlook in German, the answer below a "Von:" block.
    before = len(env.sink.messages(to=JANE))
    plus = f"support+{number}@example.com"
    raw = make(from_=f"Anna Nowak <{ANNA}>", to=plus, subject=f"AW: {got.message['Subject']}",
               body="Danke, er ist angekommen.\n\n"
                    f"Von: Jane Doe (Example Support) <{SUPPORT}>\n"
                    "Gesendet: Dienstag, 4. Juni 2024 09:00\nAn: Anna Nowak <anna@customer.test>\n"
                    f"Betreff: {got.message['Subject']}\n\n{text}\n",
               in_reply_to=got.message["Message-ID"], references=[got.message["Message-ID"]])
    env.postfix.send(ANNA, [plus], raw, source="127.0.0.2")
    seen = env.wait(JANE, count=before + 1)[-1]
    body = text_of(seen.message)
    new = body.split("---- New message from", 1)[1].split("---- History ----", 1)[0]
    assert "Danke, er ist angekommen." in new
    assert "Von:" not in new and "Ihr neuer Wasserkocher" not in new
    assert body.count("Ihr neuer Wasserkocher ist unterwegs.") == 1  # the history, once
    shown = env.casegate.json("case", "show", number)
    assert "Danke, er ist angekommen." in str(shown)
