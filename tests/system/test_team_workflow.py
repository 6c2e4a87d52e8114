"""The support team's workflow by mail, end to end through the private
Postfix and the real `casegate serve` (1 s tick): away with and without a
deputy, #escalate with a note, a department consulted (answered, and one
overdue), a held answer approved and one rejected, a close refused for a
missing answer and then accepted."""

from __future__ import annotations

import time
from collections.abc import Iterator

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

SUPPORT = "team@example.com"
ANN, BEN, LEAD, NEW = "ann@example.com", "ben@example.com", "lead@example.com", "new@example.com"
LEGAL, SHIP = "legal@example.com", "ship@example.com"


class Env:
    def __init__(self, pf: PostfixInstance, sink: Sink, cg: Casegate) -> None:
        self.pf, self.sink, self.cg = pf, sink, cg

    def open(self, tag: str) -> tuple[str, str]:
        customer = f"{tag}@customer.test"
        self.pf.send(customer, [SUPPORT], make(from_=f"Kim {tag} <{customer}>", to=SUPPORT,
                                                subject=f"test_{tag}"), source="127.0.0.2")
        ack = self.sink.wait_for(lambda d: customer in d.rcpt_tos, timeout=20)[0]
        number = str(ack.message["Subject"]).split("#", 1)[1].split("]", 1)[0]
        return number, customer

    def staff(self, sender: str, number: str | None, body: str, *, subject: str = "x") -> None:
        to = SUPPORT.replace("@", f"+{number}@") if number else SUPPORT
        self.pf.send(sender, [to], make(from_=sender, to=to, subject=subject, body=body),
                     source="127.0.0.1")

    def mail(self, to: str, has: str, count: int = 1, timeout: float = 20) -> list[Delivery]:
        return self.sink.wait_for(lambda d: to in d.rcpt_tos and has in text_of(d.message),
                                  timeout=timeout, count=count)

    def case(self, number: str) -> dict:
        return self.cg.json("case", "show", number)

    def until(self, what, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while not (value := what()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return value


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
        cg.run("mailbox", "add", SUPPORT, "--pool", "team")
        cg.run("csr", "add", ANN, "--name", "Ann", "--pool", "team:1:1")
        cg.run("csr", "add", BEN, "--name", "Ben", "--pool", "team:1:2")
        cg.run("csr", "add", LEAD, "--name", "Lead", "--pool", "team:2")
        cg.run("csr", "add", NEW, "--name", "Newbie", "--pool", "spare")
        cg.run("csr", "set", NEW, "--needs-approval", "--supervisor", LEAD)
        cg.run("pool", "set", "team", "--assign", "round_robin")
        cg.run("department", "add", "legal", LEGAL, "--deadline", "1d")
        cg.run("department", "add", "shipping", SHIP, "--deadline", "2s")
        cg.run("question", "add", "team", "product", "--choices", "Router,Switch", "--required")
        pf.start()
        cg.start(listen_port=filter_port, reinject_port=reinject_port, extra=["--tick", "1s"])
        yield Env(pf, sink, cg)
    finally:
        cg.close()
        pf.stop()
        sink.stop()
        _remove(root)


def test_away_with_and_without_a_deputy(env: Env) -> None:
    number, customer = env.open("away1")
    owner = env.case(number)["assignee"]
    other = BEN if owner == ANN else ANN
    env.staff(owner, None, f"#away until 1d deputy {other}\n")
    env.mail(owner, "You are away in all your pools")
    env.pf.send(customer, [SUPPORT.replace("@", f"+{number}@")],
                make(from_=customer, to=SUPPORT, subject=f"Re: [Case #{number}]", body="Hello?\n"),
                source="127.0.0.2")
    told = env.mail(other, "who is away; the case stays theirs")[0]
    assert number in str(told.message["Subject"]) and env.case(number)["assignee"] == owner
    env.staff(owner, None, "#back\n")
    env.mail(owner, "You are back")
    # Without a deputy the case moves to another CSR.
    env.staff(owner, None, "#away\n")
    env.mail(owner, "another CSR of the pool")
    env.pf.send(customer, [SUPPORT.replace("@", f"+{number}@")],
                make(from_=customer, to=SUPPORT, subject=f"Re: [Case #{number}]", body="Anyone?\n"),
                source="127.0.0.2")
    assert env.until(lambda: env.case(number)["assignee"] == other)
    env.staff(owner, None, "#back\n")


def test_escalate_with_a_note_the_customer_never_sees(env: Env) -> None:
    number, customer = env.open("esc1")
    owner = env.case(number)["assignee"]
    env.staff(owner, number, "#escalate\nLead: the firmware is corrupt.\n")
    note = env.mail(LEAD, "Escalated to you by")[0]
    assert "the firmware is corrupt" in text_of(note.message)
    assert env.case(number)["assignee"] == LEAD
    assert all("firmware" not in text_of(d.message) for d in env.sink.messages(to=customer))


def test_department_answered_and_one_overdue(env: Env) -> None:
    number, customer = env.open("dept1")
    owner = env.case(number)["assignee"]
    env.staff(owner, number, "#consult legal\nMay we refund without a receipt?\n")
    ask = env.mail(LEGAL, "May we refund without a receipt?")[0].message
    assert env.until(lambda: env.case(number)["status"] == "under_consultation")
    env.pf.send(LEGAL, [str(ask["Reply-To"])], make(
        from_=LEGAL, to=str(ask["Reply-To"]), subject="Re: " + str(ask["Subject"]),
        body="Yes, up to 100 EUR.\n", in_reply_to=ask["Message-ID"]), source="127.0.0.1")
    env.mail(owner, "Yes, up to 100 EUR.")
    assert env.until(lambda: env.case(number)["status"] == "in_progress")
    assert all("100 EUR" not in text_of(d.message) for d in env.sink.messages(to=customer))
    env.staff(owner, number, "#consult shipping\nWhere is parcel 42?\n")
    env.mail(SHIP, "Where is parcel 42?")
    env.mail(SHIP, "and has\nnot answered", timeout=30)
    env.mail(owner, "has not answered your consultation", timeout=30)
    listed = env.cg.json("case", "list", "--overdue")
    assert [c["number"] for c in listed] == [number]


def test_held_answers_approved_and_rejected(env: Env) -> None:
    number, customer = env.open("appr1")
    env.staff(NEW, number, "We will replace it.\n")
    env.mail(LEAD, "We will replace it.")
    assert not [d for d in env.sink.messages(to=customer) if "replace" in text_of(d.message)]
    draft = env.cg.json("approval", "list")[0]["id"]
    env.staff(LEAD, number, f"#approve {draft}\n")
    got = env.mail(customer, "We will replace it.")[0].message
    assert "Newbie" in str(got["From"])
    env.staff(NEW, number, "Sorry, no.\n")
    env.mail(LEAD, "Sorry, no.")
    draft = env.cg.json("approval", "list")[0]["id"]
    env.staff(LEAD, number, f"#reject {draft}\nBe kinder.\n")
    env.mail(NEW, "Be kinder.")
    assert not [d for d in env.sink.messages(to=customer) if "Sorry, no." in text_of(d.message)]


def test_close_refused_for_a_missing_answer_then_accepted(env: Env) -> None:
    number, customer = env.open("quest1")
    owner = env.case(number)["assignee"]
    env.staff(owner, number, "#close\nAll done.\n")
    env.mail(owner, "product is required")
    assert env.case(number)["status"] != "closed"
    env.staff(owner, number, "#close product=Router\nAll done.\n")
    env.mail(customer, "All done.")
    shown = env.until(lambda: (c := env.case(number))["status"] == "closed" and c)
    assert shown["answers"] == {"product": "Router"}
