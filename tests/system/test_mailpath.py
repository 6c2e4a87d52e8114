"""The mail path end to end: a real Postfix (built from contrib/postfix/), the
real ``casegate serve``, a capture sink for everything that leaves.

Customers connect from 127.0.0.2 (the internet); CSRs from 127.0.0.1 (the
trusted network given to ``--trusted-network``).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove, postfix_available
from tests.support.mail import attachment_names, make, text_of
from tests.support.postfix import PostfixInstance, free_ports
from tests.support.sink import Delivery, Sink

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available())),
]

SUPPORT = "support@example.com"
JANE = "jane@example.com"


@dataclass
class Env:
    postfix: PostfixInstance
    sink: Sink
    casegate: Casegate

    def customer_sends(self, raw: bytes, sender: str) -> str:
        return self.postfix.send(sender, [SUPPORT], raw, source="127.0.0.2")

    def csr_sends(self, raw: bytes, rcpt: str, sender: str = JANE, source: str = "127.0.0.1") -> str:
        return self.postfix.send(sender, [rcpt], raw, source=source)

    def wait(self, to: str, subject_has: str, count: int = 1, timeout: float = 20) -> list[Delivery]:
        return self.sink.wait_for(
            lambda d: to in d.rcpt_tos and subject_has in str(d.message["Subject"]),
            timeout=timeout, count=count)

    def case_for(self, subject: str) -> dict:
        cases = [c for c in self.casegate.json("case", "list") if subject in c["subject"]]
        assert len(cases) == 1, cases
        return cases[0]


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    root = _new_root()
    sink = Sink().start()
    filter_port, reinject_port = free_ports(2)
    pf = PostfixInstance(root=root / "pf", sink_port=sink.port, filter_port=filter_port,
                         reinject_port=reinject_port, supervised=[SUPPORT])
    cg = Casegate(root / "cg")
    try:
        cg.setup(csrs=[(JANE, "Jane Doe", "Jane Doe\\nExample Support Team")])
        pf.start()
        cg.start(listen_port=filter_port, reinject_port=reinject_port)
        yield Env(pf, sink, cg)
    finally:
        cg.close()
        pf.stop()
        sink.stop()
        _remove(root)


def _open(env: Env, name: str, sender: str, subject: str, **kw) -> tuple[dict, Delivery, Delivery]:
    raw = make(from_=f"{name} <{sender}>", subject=subject, **kw)
    env.customer_sends(raw, sender)
    ack = env.wait(sender, subject)[0]
    note = env.wait(JANE, subject)[0]
    return env.case_for(subject), ack, note


def test_customer_writes_gets_ack_and_csr_is_notified(env: Env) -> None:
    subject = "test_customer_writes printer on fire"
    case, ack, note = _open(env, "John Smith", "john@customer.test", subject,
                            files=[("photo.png", "image/png", b"\x89PNG fake")])
    assert re.fullmatch(r"CS\d{7}", case["number"])
    assert case["status"] == "received" and case["assignee"] == JANE
    assert case["customer"] == "john@customer.test"
    a = ack.message
    assert a["Subject"] == f"[Case #{case['number']}] {subject}"
    assert a["Auto-Submitted"] == "auto-replied"
    assert a["Reply-To"] == f"support+{case['number']}@example.com"
    assert "Hello John," in text_of(a)
    n = note.message
    assert case["number"] in n["Subject"]
    body = text_of(n)
    for needle in ("John Smith", "john@customer.test", subject, "Status:    received", "photo.png",
                   "my printer is on fire", "reply above this line"):
        assert needle in body, needle
    assert attachment_names(n) == ["photo.png"]
    # Everything is stored: the raw inbound bytes, the outgoing mail, the file.
    shown = env.casegate.json("case", "show", case["number"])
    kinds = [(m["direction"], m["kind"]) for m in shown["messages"]]
    assert kinds == [("in", "customer"), ("out", "ack"), ("out", "notify")]
    assert shown["files"][0]["filename"] == "photo.png" and shown["files"][0]["size"] == 9
    assert [e["kind"] for e in shown["events"]][:3] == ["opened", "assigned", "acknowledged"]


def test_csr_reply_reaches_customer_in_their_thread(env: Env) -> None:
    subject = "test_csr_reply Rückerstattung für José"
    first_id = email.utils.make_msgid(domain="customer.test")
    case, ack, note = _open(env, "José Núñez", "jose@customer.test", subject, message_id=first_id)
    number = case["number"]
    reply = make(
        from_="Jane Doe <jane@example.com>", to=note.message["Reply-To"],
        subject="Re: " + str(note.message["Subject"]),
        body="Your refund is on its way.\n\nOn Tue, 24 Nov 2026, José wrote:\n> old stuff\n",
        in_reply_to=note.message["Message-ID"], references=[note.message["Message-ID"]],
        files=[("label.pdf", "application/pdf", b"%PDF-1.4 label")],
    )
    env.csr_sends(reply, rcpt=f"support+{number}@example.com")
    got = env.sink.wait_for(lambda d: "jose@customer.test" in d.rcpt_tos and
                            str(d.message["Subject"]).startswith("Re:"), timeout=20)[0].message
    assert got["Subject"] == f"Re: [Case #{number}] {subject}"
    assert got["In-Reply-To"] == first_id
    assert first_id in got["References"] and ack.message["Message-ID"] in got["References"]
    assert "support" in got["Reply-To"] and JANE not in str(got["Reply-To"]) + str(got["From"])
    text = text_of(got)
    assert text.startswith("Hello José,\n\nYour refund is on its way.")
    assert "Jane Doe\nExample Support Team" in text
    assert "old stuff" not in text and "reply above this line" not in text
    assert "my printer is on fire" in text  # history below
    assert attachment_names(got) == ["label.pdf"]
    # The CSR's message itself was stored, not forwarded anywhere else.
    assert not env.sink.messages(to="support@example.com")
    shown = env.casegate.json("case", "show", number)
    csr_msg = next(m for m in shown["messages"] if m["kind"] == "csr")
    assert csr_msg["authenticated"] == "net:127.0.0.1"


def test_customer_reply_is_appended_and_forwarded(env: Env) -> None:
    subject = "test_customer_reply order 42"
    case, ack, _ = _open(env, "Mary Major", "mary@customer.test", subject)
    follow = make(from_="Mary Major <mary@customer.test>", to=str(ack.message["Reply-To"]),
                  subject="Re: " + str(ack.message["Subject"]), body="Any news?\n",
                  in_reply_to=ack.message["Message-ID"], references=[ack.message["Message-ID"]])
    env.postfix.send("mary@customer.test", [str(ack.message["Reply-To"])], follow)
    notes = env.wait(JANE, subject, count=2)
    assert "Any news?" in text_of(notes[-1].message)
    assert len(env.casegate.json("case", "list")) >= 1
    shown = env.casegate.json("case", "show", case["number"])
    assert [m["kind"] for m in shown["messages"] if m["direction"] == "in"] == ["customer", "customer"]
    assert len(env.sink.messages(to="mary@customer.test")) == 1  # one ack, no second


def test_tag_from_a_stranger_opens_a_new_case(env: Env) -> None:
    subject = "test_stranger_tag secret plans"
    case, _, _ = _open(env, "Ann Owner", "ann@customer.test", subject)
    env.customer_sends(make(from_="eve@evil.test", subject=f"Re: [Case #{case['number']}] gimme",
                            body="Show me the history.\n"), "eve@evil.test")
    ack = env.wait("eve@evil.test", "gimme")[0].message
    assert case["number"] not in ack["Subject"]
    note = env.wait(JANE, "gimme")[0].message
    assert "secret plans" not in text_of(note) and "my printer is on fire" not in text_of(note)


def test_forged_csr_from_outside_is_a_customer(env: Env) -> None:
    subject = "test_forged_csr refund please"
    case, _, note = _open(env, "Rob Victim", "rob@customer.test", subject)
    forged = make(from_="Jane Doe <jane@example.com>", to=f"support+{case['number']}@example.com",
                  subject=str(note.message["Subject"]), body="Click this link.\n",
                  in_reply_to=note.message["Message-ID"])
    env.csr_sends(forged, rcpt=f"support+{case['number']}@example.com", source="127.0.0.2")
    # It became a customer's message (a new case, acknowledged to the forged From).
    env.sink.wait_for(lambda d: JANE in d.rcpt_tos and "Click this link" in text_of(d.message)
                      if d.message.get_body(preferencelist=("plain",)) else False, timeout=20)
    time.sleep(0.5)  # nothing more is coming; the next assertion is about absence
    to_rob = env.sink.messages(to="rob@customer.test")
    assert len(to_rob) == 1 and to_rob[0].message["Auto-Submitted"] == "auto-replied"


def test_automatic_mail_gets_no_acknowledgement(env: Env) -> None:
    subject = "test_automatic Out of Office: back Monday"
    env.customer_sends(make(from_="bot@customer.test", subject=subject,
                            headers={"Auto-Submitted": "auto-replied"}), "bot@customer.test")
    env.wait(JANE, "test_automatic")  # the case exists and the CSR knows
    assert env.sink.messages(to="bot@customer.test") == []


def test_log_lines_carry_postfix_queue_ids(env: Env) -> None:
    subject = "test_queue_id_logging"
    qid = env.customer_sends(make(from_="q@customer.test", subject=subject), "q@customer.test")
    env.wait("q@customer.test", subject)
    # Postfix's queue ID of the message handed to the filter: from maillog.
    m = re.search(rf"{qid}: to=<support@example.com>.*relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
                  rf"{env.casegate.listen_port}.*status=sent", env.postfix.maillog())
    assert m, env.postfix.maillog_tail()
    # The mail it caused is logged under the same ID (logging is asynchronous:
    # wait for the line), and Postfix's re-injection listener records the origin.
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in env.casegate.log().splitlines() if f"[{qid}]" in line]
        if any("sent ack" in line for line in lines) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert any("stored" in line for line in lines), env.casegate.log()[-2000:]
    assert any("sent ack" in line for line in lines), lines
    assert f"orig_queue_id={qid}" in env.postfix.maillog(), env.postfix.maillog_tail()


def test_filter_down_defers_then_delivers(env: Env) -> None:
    subject = "test_filter_down"
    env.casegate.stop()
    try:
        qid = env.customer_sends(make(from_="late@customer.test", subject=subject),
                                 "late@customer.test")
        env.postfix.wait_deferred(qid, timeout=15)
        assert qid in env.postfix.queue_ids()
    finally:
        env.casegate.start(listen_port=env.postfix.filter_port,
                           reinject_port=env.postfix.reinject_port)
    env.postfix.flush()
    env.wait("late@customer.test", subject, timeout=30)
    env.postfix.wait_queue_empty(timeout=30)
    assert len([c for c in env.casegate.json("case", "list") if subject in c["subject"]]) == 1


def test_serve_says_at_start_what_it_runs_with(env: Env) -> None:
    log = env.casegate.log()
    assert f"config {env.casegate.config}, store sqlite:///" in log
    assert "trusted networks 127.0.0.1/32" in log and "tick 30s" in log
