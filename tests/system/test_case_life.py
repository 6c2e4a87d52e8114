"""A case's life end to end: a real Postfix (built from contrib/postfix/), the
real ``casegate serve`` with a 1 s scheduler tick, the real CLI, and a sink
that captures everything that leaves.

Customers write from 127.0.0.2 (the internet); CSRs from 127.0.0.1 (the
trusted network). Three supervised addresses, one pool each, so each test's
pool policy is its own: support@ (defaults), linked@ (closed cases open a
linked follow-up), quick@ (remind after 2 s, close after 5 s).
"""

from __future__ import annotations

import time
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

SUPPORT, LINKED, QUICK = "support@example.com", "linked@example.com", "quick@example.com"
JANE, BOB = "jane@example.com", "bob@example.com"


@dataclass
class Env:
    postfix: PostfixInstance
    sink: Sink
    casegate: Casegate

    def wait(self, to: str, pred=lambda d: True, count: int = 1, timeout: float = 20) -> list[Delivery]:
        return self.sink.wait_for(lambda d: to in d.rcpt_tos and pred(d), timeout=timeout, count=count)

    def to(self, address: str) -> list[Delivery]:
        return self.sink.messages(to=address)

    def case(self, number: str) -> dict:
        return self.casegate.json("case", "show", number)

    def open(self, customer: str, subject: str, mailbox: str = SUPPORT,
             name: str = "John Smith") -> tuple[str, Delivery, Delivery]:
        self.postfix.send(customer, [mailbox], make(from_=f"{name} <{customer}>", to=mailbox,
                                                     subject=subject), source="127.0.0.2")
        ack = self.wait(customer, lambda d: subject in str(d.message["Subject"]))[0]
        note = self.wait(JANE, lambda d: subject in str(d.message["Subject"]))[0]
        number = str(ack.message["Subject"]).split("#", 1)[1].split("]", 1)[0]
        return number, ack, note

    def csr(self, number: str, body: str, *, sender: str = JANE, mailbox: str = SUPPORT,
            source: str = "127.0.0.1", subject: str | None = None) -> None:
        plus = mailbox.replace("@", f"+{number}@")
        raw = make(from_=sender, to=plus, subject=subject or f"Re: [Case #{number}] answer", body=body)
        self.postfix.send(sender, [plus], raw, source=source)

    def customer(self, number: str, customer: str, body: str, mailbox: str = SUPPORT) -> None:
        last = self.to(customer)[-1].message
        plus = mailbox.replace("@", f"+{number}@")
        raw = make(from_=customer, to=plus, subject=f"Re: {last['Subject']}", body=body,
                   in_reply_to=last["Message-ID"], references=[last["Message-ID"]])
        self.postfix.send(customer, [plus], raw, source="127.0.0.2")

    def until(self, what, timeout: float = 20):
        """Poll the CLI until ``what()`` is truthy; return it."""
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.2)


def one(deliveries: list[Delivery], needle: str):
    """The one message among these whose text holds ``needle``."""
    found = [d.message for d in deliveries if needle in text_of(d.message)]
    assert len(found) == 1, (needle, [str(d.message["Subject"]) for d in deliveries])
    return found[0]


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    root = _new_root()
    sink = Sink().start()
    filter_port, reinject_port = free_ports(2)
    pf = PostfixInstance(root=root / "pf", sink_port=sink.port, filter_port=filter_port,
                         reinject_port=reinject_port, supervised=[SUPPORT, LINKED, QUICK])
    cg = Casegate(root / "cg")
    try:
        cg.run("init")
        for mailbox, pool in ((SUPPORT, "default"), (LINKED, "linked"), (QUICK, "quick")):
            cg.run("mailbox", "add", mailbox, "--pool", pool, "--name", "Example Support")
        # Jane serves every pool, so each new case is hers; Bob is a CSR in a
        # pool of his own (cases reach him by #assign and the shell).
        cg.run("csr", "add", JANE, "--name", "Jane Doe", "--signature", "Jane Doe\\nExample Support",
               "--pool", "default", "--pool", "linked", "--pool", "quick")
        cg.run("csr", "add", BOB, "--name", "Bob Roe", "--pool", "spare")
        cg.run("pool", "set", "linked", "--closed-policy", "new_linked")
        cg.run("pool", "set", "quick", "--remind-after", "2s", "--autoclose-after", "5s")
        pf.start()
        cg.start(listen_port=filter_port, reinject_port=reinject_port, extra=["--tick", "1s"])
        yield Env(pf, sink, cg)
    finally:
        cg.close()
        pf.stop()
        sink.stop()
        _remove(root)


def test_pool_policies_are_listed(env: Env) -> None:
    pools = {p["name"]: p for p in env.casegate.json("pool", "list")}
    assert pools["default"] == {"name": "default", "rule": "least_load", "closed_policy": "reopen",
                                "close_on_reply": False, "remind_after": "3d",
                                "autoclose_after": "2w", "unassigned_notify": None,
                                "escalation_notice": False, "cc_participants": True,
                                "max_participants": 10, "language": "en", "acknowledge": True,
                                "greeting": "", "text_only": False, "resolve_within": "off"}
    assert pools["linked"]["closed_policy"] == "new_linked"
    assert (pools["quick"]["remind_after"], pools["quick"]["autoclose_after"]) == ("2s", "5s")


def test_close_by_mail_sends_answer_closing_and_survey(env: Env) -> None:
    number, _, note = env.open("close@customer.test", "test_close_by_mail")
    # The notification offers the commands as mailto links to the case's address.
    body = text_of(note.message)
    assert f"mailto:support+{number}@example.com?subject=" in body and "body=%23close" in body
    for command in ("%23solution", "%23note", "%23take", "%23blacklist"):
        assert f"body={command}" in body, command
    assert note.message["X-Casegate-Rules"] and "least_load" not in note.message["X-Casegate-Rules"]
    env.csr(number, "#close\n\nAll fixed. Goodbye!\n")
    got = env.wait("close@customer.test", count=4)
    kinds = [str(d.message["Subject"]) for d in got]
    assert all(number in k for k in kinds)
    # One outbox batch: Postfix may deliver its mails in any order.
    answer = one(got, "All fixed. Goodbye!")
    assert text_of(answer).startswith("Hello John,\n\nAll fixed. Goodbye!") and "#close" not in text_of(answer)
    closed, survey = one(got, "is now closed"), one(got, "grade from 1 (poor) to 5")
    assert f"support+{number}@example.com" in text_of(survey)
    assert survey["Auto-Submitted"] == closed["Auto-Submitted"] == "auto-replied"
    assert answer["Auto-Submitted"] is None  # the CSR's own words are not automatic
    assert env.case(number)["status"] == "closed"


def test_note_never_reaches_the_customer(env: Env) -> None:
    number, _, _ = env.open("note@customer.test", "test_note_by_mail")
    env.csr(number, "#note\nSecret: he owes us 300 EUR.\n")
    shown = env.until(lambda: [n for n in env.case(number)["notes"]])
    assert shown[0]["text"] == "Secret: he owes us 300 EUR." and shown[0]["by"] == JANE
    env.csr(number, "We are on it.\n")
    reply = env.wait("note@customer.test", count=2)[-1].message
    assert "We are on it." in text_of(reply) and "300 EUR" not in text_of(reply)
    assert all("300 EUR" not in text_of(d.message) for d in env.to("note@customer.test"))
    # CSRs see it in the next notification.
    env.customer(number, "note@customer.test", "Any news?\n")
    again = env.wait(JANE, lambda d: number in str(d.message["Subject"]), count=2)[-1]
    assert "300 EUR" in text_of(again.message)


def test_assign_take_and_reopen_by_mail(env: Env) -> None:
    number, _, _ = env.open("assign@customer.test", "test_assign_by_mail")
    env.csr(number, "#assign bob@example.com\nBob, this one is yours.\n")
    to_bob = env.wait(BOB, lambda d: number in str(d.message["Subject"]))[0]
    assert "Bob, this one is yours." in text_of(to_bob.message)
    assert env.case(number)["assignee"] == BOB
    env.csr(number, "#take\n")
    assert env.until(lambda: env.case(number)["assignee"] == JANE)
    env.csr(number, "#close\n")
    assert env.until(lambda: env.case(number)["status"] == "closed")
    env.csr(number, "#reopen\n")
    assert env.until(lambda: env.case(number)["status"] == "reopened")
    assert len([d for d in env.to("assign@customer.test")]) == 3  # ack, closed, survey


def test_unknown_command_is_explained_to_the_csr_and_changes_nothing(env: Env) -> None:
    number, _, _ = env.open("unknown@customer.test", "test_unknown_command")
    env.csr(number, "#clsoe\nThanks for writing.\n")
    notice = env.wait(JANE, lambda d: "Not done" in str(d.message["Subject"]))[0].message
    assert "#clsoe: unknown command" in text_of(notice) and "#close [" in text_of(notice)
    assert notice["Auto-Submitted"] == "auto-replied"
    shown = env.case(number)
    assert shown["status"] == "received"
    assert [e["kind"] for e in shown["events"]][-1] == "command_refused"
    assert len(env.to("unknown@customer.test")) == 1  # the acknowledgement only


def test_a_customer_typing_close_is_ordinary_text(env: Env) -> None:
    number, _, _ = env.open("typist@customer.test", "test_customer_close")
    env.customer(number, "typist@customer.test", "#close\nplease close my account\n")
    forwarded = env.wait(JANE, lambda d: number in str(d.message["Subject"]), count=2)[-1]
    assert "#close" in text_of(forwarded.message)
    assert env.case(number)["status"] == "received"


def test_forged_csr_commands_are_not_obeyed(env: Env) -> None:
    number, _, _ = env.open("forged@customer.test", "test_forged_close")
    env.csr(number, "#close\n", source="127.0.0.2")  # From: Jane, but from the internet
    env.wait(JANE, lambda d: "#close" in text_of(d.message))
    assert env.case(number)["status"] == "received"


def test_solution_accept_and_survey_rating(env: Env) -> None:
    number, _, _ = env.open("accept@customer.test", "test_solution_accept")
    env.csr(number, "#solution\nRestart the router.\n")
    sol = env.wait("accept@customer.test", count=2)[-1].message
    assert "Restart the router." in text_of(sol) and "Accept" in text_of(sol)
    assert env.case(number)["status"] == "solution_proposed"
    env.customer(number, "accept@customer.test", "Accept\n")
    got = env.wait("accept@customer.test", count=4)
    one(got, "is now closed"), one(got, "grade")
    assert env.case(number)["status"] == "closed"
    env.customer(number, "accept@customer.test", "5\nVery quick, thanks.\n")
    thanks = env.wait("accept@customer.test", count=5)[-1].message
    assert "Thank you for rating" in text_of(thanks)
    shown = env.case(number)
    assert (shown["status"], shown["rating"], shown["rating_comment"]) == (
        "closed", 5, "Very quick, thanks.")


def test_solution_reject_reopens(env: Env) -> None:
    number, _, _ = env.open("reject@customer.test", "test_solution_reject")
    env.csr(number, "#solution\nRestart the router.\n")
    env.wait("reject@customer.test", count=2)
    env.customer(number, "reject@customer.test", "Reject\nIt did not help.\n")
    told = env.wait(JANE, lambda d: "rejected your solution" in text_of(d.message))[0]
    assert "It did not help." in text_of(told.message)
    assert env.case(number)["status"] == "reopened"


def test_closed_policy_reopen(env: Env) -> None:
    number, _, _ = env.open("reopen@customer.test", "test_policy_reopen")
    env.casegate.run("case", "close", number)
    env.wait("reopen@customer.test", count=3)  # ack, closed, survey
    env.customer(number, "reopen@customer.test", "It broke again.\n")
    assert env.until(lambda: env.case(number)["status"] == "reopened")
    env.wait(JANE, lambda d: "closed case: it is reopened" in text_of(d.message))


def test_closed_policy_new_linked(env: Env) -> None:
    number, _, _ = env.open("linked@customer.test", "test_policy_linked", mailbox=LINKED)
    env.casegate.run("case", "close", number)
    env.wait("linked@customer.test", count=3)
    env.customer(number, "linked@customer.test", "It broke again.\n", mailbox=LINKED)
    ack = env.wait("linked@customer.test", count=4)[-1].message
    new_number = str(ack["Subject"]).split("#", 1)[1].split("]", 1)[0]
    assert new_number != number
    assert env.case(number)["status"] == "closed"
    assert env.case(number)["follow_ups"] == [new_number]
    assert env.case(new_number)["follow_up_of"] == number
    note = env.wait(JANE, lambda d: new_number in str(d.message["Subject"]))[0]
    assert f"Follow-up of: {number}" in text_of(note.message)


def test_proactive_case_by_mail_and_the_customers_answer(env: Env) -> None:
    raw = make(from_=JANE, subject="test_proactive your order",
               body="#new Mary Major <mary@customer.test>\nYour order has shipped.\n")
    env.postfix.send(JANE, [SUPPORT], raw, source="127.0.0.1")
    first = env.wait("mary@customer.test")[0].message
    assert text_of(first).startswith("Hello Mary,\n\nYour order has shipped.")
    number = str(first["Subject"]).split("#", 1)[1].split("]", 1)[0]
    assert env.case(number)["customer"] == "mary@customer.test"
    env.customer(number, "mary@customer.test", "Great, thanks!\n")
    fwd = env.wait(JANE, lambda d: number in str(d.message["Subject"]))[0]
    assert "Great, thanks!" in text_of(fwd.message)
    assert len([c for c in env.casegate.json("case", "list") if c["customer"] == "mary@customer.test"]) == 1


def test_proactive_case_from_the_shell(env: Env, tmp_path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("Your heater model is recalled; we will replace it.\n")
    opened = env.casegate.json("case", "open", "--customer", "ann@customer.test", "--mailbox", SUPPORT,
                               "--csr", BOB, "--subject", "test_shell_open recall", "--body-file",
                               str(body))
    first = env.wait("ann@customer.test")[0].message
    assert opened["number"] in str(first["Subject"]) and "Bob Roe" in text_of(first)


def test_shell_commands_and_their_errors(env: Env) -> None:
    number, _, _ = env.open("shell@customer.test", "test_shell_commands")
    assert env.casegate.json("case", "note", number, "Called", "him")["outcome"] == "csr_command"
    bad = env.casegate.run("case", "reopen", number, check=False)
    assert bad.returncode == 1 and "#reopen applies to closed cases" in bad.stderr
    missing = env.casegate.run("case", "close", "CS9999999", check=False)
    assert missing.returncode == 1 and "no case CS9999999" in missing.stderr
    done = env.casegate.json("case", "close", number, "--csr", JANE, "--text", "Sorted.")
    assert (done["status"], done["sent"]) == ("closed", ["reply", "closed", "survey"])
    assert env.casegate.run("case", "status", number).stdout.strip() == "closed"
    texts = [text_of(d.message) for d in env.wait("shell@customer.test", count=4)]
    assert text_of(one(env.to("shell@customer.test"), "Sorted.")).startswith("Hello John,\n\nSorted.")
    assert "Called him" not in "".join(texts)


def test_reminder_then_autoclose(env: Env) -> None:
    number, _, _ = env.open("quick@customer.test", "test_timers", mailbox=QUICK)
    env.csr(number, "Try the blue button.\n", mailbox=QUICK)
    got = env.wait("quick@customer.test", count=5, timeout=30)
    for needle in ("Try the blue button.", "have not\nheard back from you", "is now closed", "grade"):
        one(got, needle)
    shown = env.case(number)
    assert shown["status"] == "closed"
    assert [e["kind"] for e in shown["events"] if e["kind"] in ("reminded", "autoclosed")] == [
        "reminded", "autoclosed"]
    assert [t["status"] for t in shown["timers"]] == ["done", "done"]
