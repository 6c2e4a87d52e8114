"""Gatekeeping end to end through a real Postfix: the milter inside smtpd (the
blacklist's 550 during the SMTP session), SASL-proven CSRs against forged
ones, bounces of our own mail by VERP, vacation replies, and two casegate
installations answering each other.

Customers connect from 127.0.0.2; nothing is a trusted network here, so a
CSR is proven only by a real SASL login on the submission listener.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove, sasl_available
from tests.support.mail import make, text_of
from tests.support.postfix import PostfixError, PostfixInstance, free_ports
from tests.support.sink import Delivery, Sink

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(sasl_available() is not None, reason=str(sasl_available())),
]

SUPPORT, HELP = "support@example.com", "help@other.test"
JANE, BOB = "jane@example.com", "bob@example.com"


class Postfix(PostfixInstance):
    """The harness, plus transport lines of this test (a second filter, a bouncing domain)."""

    def __init__(self, *, extra_transport: Sequence[tuple[str, str]] = (), **kw) -> None:
        super().__init__(**kw)
        self.extra_transport = list(extra_transport)

    def transport_map(self) -> str:
        return super().transport_map() + "".join(f"{k}\t{v}\n" for k, v in self.extra_transport)


@dataclass
class Env:
    pf: Postfix
    sink: Sink
    a: Casegate
    b: Casegate

    def wait(self, to: str, pred=lambda d: True, count: int = 1, timeout: float = 20) -> list[Delivery]:
        return self.sink.wait_for(lambda d: to in d.rcpt_tos and pred(d), count=count, timeout=timeout)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    root = _new_root()
    sink = Sink().start()
    fa, fb, reinject, milter, submission = free_ports(5)
    pf = Postfix(
        root=root / "pf", sink_port=sink.port, filter_port=fa, reinject_port=reinject,
        supervised=[SUPPORT], milter=f"inet:127.0.0.1:{milter}", submission_port=submission,
        sasl_users={JANE: "jane-secret", BOB: "bob-secret"},
        extra_transport=[(HELP, f"casegate:[127.0.0.1]:{fb}"),
                         ("bounce.test", "error:5.1.1 mailbox does not exist")],
        extra_main={"relay_domains": "example.com, other.test"},
    )
    a, b = Casegate(root / "a"), Casegate(root / "b")
    try:
        a.setup(csrs=[(JANE, "Jane Doe", ""), (BOB, "Bob Roe", "")])
        b.setup(mailboxes=[HELP], csrs=[("kim@other.test", "Kim Lee", "")])
        pf.start()
        a.start(listen_port=fa, reinject_port=reinject, trusted=(),
                extra=["--milter", f"127.0.0.1:{milter}"])
        b.start(listen_port=fb, reinject_port=reinject, trusted=())
        yield Env(pf, sink, a, b)
    finally:
        a.close()
        b.close()
        pf.stop()
        sink.stop()
        _remove(root)


def _case(env: Env, subject: str, who: Casegate | None = None) -> dict:
    cases = [c for c in (who or env.a).json("case", "list") if subject in c["subject"]]
    assert len(cases) == 1, cases
    return cases[0]


def _open(env: Env, sender: str, subject: str) -> tuple[dict, Delivery, Delivery]:
    env.pf.send(sender, [SUPPORT], make(from_=f"Cus Tomer <{sender}>", subject=subject))
    ack = env.wait(sender, lambda d: subject in str(d.message["Subject"]))[0]
    case = _case(env, subject)
    note = env.wait(case["assignee"], lambda d: subject in str(d.message["Subject"]))[0]
    return case, ack, note


def test_blacklisted_sender_gets_550_in_the_smtp_session_and_nothing_is_stored(env: Env) -> None:
    env.a.run("blacklist", "add", "@spammer.test", "--reason", "test")
    env.a.run("blacklist", "add", "nice@customer.test", "--subject", "(?i)casino")
    time.sleep(5.5)  # the milter refreshes its copy of the blacklist every 5 s
    before = len(env.a.json("case", "list"))
    # Refused at RCPT TO of the supervised address (the same sender may
    # write to anyone else on this server).
    with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
        env.pf.send("boss@spammer.test", [SUPPORT], make(from_="boss@spammer.test",
                                                         subject="test_blacklist"))
    ((code, text),) = err.value.recipients.values()
    assert code == 550 and b"5.7.1" in text
    with pytest.raises(PostfixError, match=r"550 5\.7\.1"):
        env.pf.send("nice@customer.test", [SUPPORT], make(from_="nice@customer.test",
                                                          subject="Big CASINO win"))
    # The same sender with another subject gets through.
    env.pf.send("nice@customer.test", [SUPPORT], make(from_="nice@customer.test",
                                                      subject="test_blacklist_subject ok"))
    env.wait("nice@customer.test")
    assert len(env.a.json("case", "list")) == before + 1
    log = env.pf.maillog()
    assert "milter-reject: RCPT from" in log
    assert env.sink.messages(to="boss@spammer.test") == []


def test_sasl_login_proves_a_csr_and_forgeries_are_customers(env: Env) -> None:
    subject = "test_sasl refund"
    case, _, note = _open(env, "sam@customer.test", subject)
    number = case["number"]

    def reply(login: tuple[str, str] | None, from_: str, body: str) -> None:
        raw = make(from_=from_, to=f"support+{number}@example.com", subject=f"Re: [Case #{number}]",
                   body=body, in_reply_to=note.message["Message-ID"])
        if login:
            env.pf.submit(login, JANE if "jane" in from_ else BOB, [f"support+{number}@example.com"], raw)
        else:
            env.pf.send(JANE, [f"support+{number}@example.com"], raw)

    reply(None, f"Jane Doe <{JANE}>", "forged from outside\n")
    reply((BOB, "bob-secret"), f"Jane Doe <{JANE}>", "bob posing as jane\n")
    reply((JANE, "jane-secret"), f"Jane Doe <{JANE}>", "The real answer from Jane.\n")
    got = env.wait("sam@customer.test", lambda d: str(d.message["Subject"]).startswith("Re:"))
    assert "The real answer from Jane." in text_of(got[0].message)
    time.sleep(1)
    to_sam = [text_of(d.message) for d in env.sink.messages(to="sam@customer.test")]
    assert len(to_sam) == 2  # the acknowledgement and Jane's real answer
    assert not any("forged" in t or "posing" in t for t in to_sam)
    shown = env.a.json("case", "show", number)
    csr = [m for m in shown["messages"] if m["kind"] == "csr"]
    assert len(csr) == 1 and csr[0]["authenticated"] == f"sasl:{JANE}"
    # The forgeries became customers' cases of their own (From: jane).
    assert len([c for c in env.a.json("case", "list") if c["customer"] == JANE]) >= 1


def test_vacation_reply_to_our_ack_gets_no_answer(env: Env) -> None:
    subject = "test_vacation printer"
    case, ack, _ = _open(env, "away@customer.test", subject)
    vacation = make(from_="away@customer.test", to=str(ack.message["Reply-To"]),
                    subject=f"Out of Office: {ack.message['Subject']}",
                    body="I am away until Monday.\n", in_reply_to=ack.message["Message-ID"],
                    headers={"Auto-Submitted": "auto-replied"})
    env.pf.send("", [str(ack.message["Reply-To"])], vacation)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        msgs = env.a.json("case", "show", case["number"])["messages"]
        if any(m["kind"] == "automatic" for m in msgs):
            break
        time.sleep(0.2)
    assert [m["kind"] for m in msgs if m["direction"] == "in"] == ["customer", "automatic"]
    time.sleep(1)
    assert len(env.sink.messages(to="away@customer.test")) == 1  # just the first ack
    assert env.a.json("case", "show", case["number"])["status"] == "received"


def test_bounce_of_our_reply_lands_on_its_case(env: Env) -> None:
    subject = "test_bounce gone customer"
    sender = "gone@bounce.test"
    env.pf.send(sender, [SUPPORT], make(from_=sender, subject=subject))
    # The acknowledgement to gone@bounce.test bounces (error transport) to its VERP address.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        cases = [c for c in env.a.json("case", "list") if subject in c["subject"]]
        events = env.a.json("case", "show", cases[0]["number"])["events"] if cases else []
        if any(e["kind"] == "delivery_failed" for e in events):
            break
        time.sleep(0.3)
    failed = [e for e in events if e["kind"] == "delivery_failed"]
    assert failed and "ack to gone@bounce.test" in failed[0]["detail"]
    assert "5.1.1" in failed[0]["detail"]
    # The CSR answers (SASL-proven); that reply bounces too and lands on the case.
    number = cases[0]["number"]
    note = env.wait(cases[0]["assignee"], lambda d: subject in str(d.message["Subject"]))[0]
    login = (JANE, "jane-secret") if cases[0]["assignee"] == JANE else (BOB, "bob-secret")
    answer = make(from_=login[0], to=f"support+{number}@example.com", subject=f"Re: [Case #{number}]",
                  body="We will call you.\n", in_reply_to=note.message["Message-ID"])
    env.pf.submit(login, login[0], [f"support+{number}@example.com"], answer)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = env.a.json("case", "show", number)["events"]
        if any(e["kind"] == "delivery_failed" and "reply to gone@bounce.test" in e["detail"]
               for e in events):
            break
        time.sleep(0.3)
    assert any(e["kind"] == "delivery_failed" and "reply to gone@bounce.test" in e["detail"]
               for e in events), events
    # The bounce opened no case and got no answer.
    assert len([c for c in env.a.json("case", "list") if "Undelivered" in c["subject"]
                or "MAILER-DAEMON" in c["customer"].upper()]) == 0
    assert env.sink.messages(to="mailer-daemon@mx.test.example") == []


def test_two_casegates_answering_each_other_stop(env: Env) -> None:
    subject = "test_two_instances hello"
    # B's address writes to A (as if a person there did): A acknowledges to B,
    # B sees automatic mail and answers nothing.
    env.pf.send(HELP, [SUPPORT], make(from_=f"Other Helpdesk <{HELP}>", subject=subject),
                source="127.0.0.1")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        b_cases = [c for c in env.b.json("case", "list") if subject in c["subject"]]
        if b_cases:
            break
        time.sleep(0.2)
    time.sleep(3)  # any further ping-pong would happen now
    a_cases = [c for c in env.a.json("case", "list") if subject in c["subject"]]
    b_cases = [c for c in env.b.json("case", "list") if subject in c["subject"]]
    assert len(a_cases) == 1 and len(b_cases) == 1
    b_msgs = env.b.json("case", "show", b_cases[0]["number"])["messages"]
    assert [m["kind"] for m in b_msgs if m["direction"] == "in"] == ["automatic"]
    assert not [m for m in b_msgs if m["kind"] == "ack"]
    a_msgs = env.a.json("case", "show", a_cases[0]["number"])["messages"]
    assert len([m for m in a_msgs if m["kind"] == "ack"]) == 1


def test_milter_refuses_several_from_addresses_and_strips_forged_stamps(env: Env) -> None:
    with pytest.raises(PostfixError, match=r"550 5\.7\.1"):
        env.pf.send("x@customer.test", [SUPPORT],
                    make(from_="a@customer.test, jane@example.com", subject="test_two_froms"))
    with pytest.raises(PostfixError, match=r"550 5\.7\.1"):
        env.pf.send("x@customer.test", [SUPPORT],
                    make(from_="staff: jane@example.com, bob@example.com;", subject="test_group"))
    # A stamp written by an outsider never reaches the filter: the milter
    # deletes it and writes its own (no SASL login here).
    subject = "test_forged_stamp"
    forged = make(from_=f"Jane Doe <{JANE}>", subject=subject, body="I am Jane, trust me.\n",
                  headers={"X-Casegate-Auth": "v=1; authen=jane@example.com; addr=127.0.0.1; "
                                              "qid=X; t=1; sig=AAAA"})
    env.pf.send(JANE, [SUPPORT], forged)
    case = None
    deadline = time.monotonic() + 20
    while case is None and time.monotonic() < deadline:
        found = [c for c in env.a.json("case", "list") if subject in c["subject"]]
        case = found[0] if found else None
        time.sleep(0.2)
    assert case is not None
    env.wait(case["assignee"], lambda d: subject in str(d.message["Subject"]))
    # No acknowledgement to a CSR's (forged) address: ours are never answered.
    assert not [d for d in env.sink.messages(to=JANE) if subject in str(d.message["Subject"])
                and d.message["Auto-Submitted"] == "auto-replied"]
    shown = env.a.json("case", "show", case["number"])
    assert shown["messages"][0]["kind"] == "customer"
    raw_headers = [m for m in shown["messages"] if m["direction"] == "in"]
    assert raw_headers and raw_headers[0]["authenticated"] == ""
