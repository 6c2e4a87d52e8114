"""The engine on a real store (a SQLite file and a PostgreSQL database):
one delivery in, one transaction of case changes and outgoing mail out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from casestore.models import Case, Event, Message, Outbox
from casestore.models import Delivery as DeliveryRow
from casestore.store import Store
from rules import replies
from rules.classify import parse_networks
from rules.quotes import REPLY_MARKER
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.settings import Settings
from tests.support.mail import attachment_names, make, parse, text_of

SECRET = b"s" * 32
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


@pytest.fixture
def engine(store_url: str) -> Engine:
    store = Store(store_url)
    store.migrate()
    store.add_mailbox("support@example.com", "default", "Example Support")
    store.add_csr("jane@example.com", "Jane Doe", ["default"], "Jane Doe\nSupport Team")
    store.add_csr("bob@example.com", "Bob Roe", ["default"])
    settings = Settings(secret=SECRET, trusted_networks=parse_networks(["127.0.0.1/32"]))
    yield Engine(store, settings)
    store.close()


def deliver(engine: Engine, raw: bytes, *, client: str = "127.0.0.2", rcpt: str = "support@example.com",
            mail_from: str = "sender@client.test", qid: str = "QID1") -> replies.Reply:
    return engine.process(Delivery(mail_from=mail_from, rcpt_tos=(rcpt,), data=raw,
                                   client_addr=client, queue_id=qid))


def outgoing(kind: str | None = None) -> list[Message]:
    q = Message.select().where(Message.direction == "out").order_by(Message.id)
    return [m for m in q if kind is None or m.kind == kind]


def test_new_case_ack_and_notification(engine: Engine) -> None:
    raw = make(from_="John Smith <john@customer.test>", subject="test_new_case printer",
               files=[("photo.jpg", "image/jpeg", b"\xff\xd8jpegdata")])
    reply = deliver(engine, raw)
    case = Case.get()
    assert reply == replies.stored(case.number) and str(reply) == f"250 2.0.0 Ok: {case.number}"
    assert re.fullmatch(r"CS\d{7}", case.number)
    assert (case.customer_address, case.customer_name, case.status) == (
        "john@customer.test", "John Smith", "received")
    assert case.assignee.address == "jane@example.com"  # least load, tie -> first added
    stored = Message.get(Message.direction == "in")
    assert bytes(stored.raw) == raw and stored.queue_id == "QID1"
    assert stored.attachments.count() == 1 and bytes(stored.attachments[0].data) == b"\xff\xd8jpegdata"

    ack = parse(bytes(outgoing("ack")[0].raw))
    assert ack["Subject"] == f"[Case #{case.number}] test_new_case printer"
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["To"] == "john@customer.test"
    assert ack["Reply-To"] == f"support+{case.number}@example.com"
    assert ack["In-Reply-To"] == stored.message_id
    assert "Hello John," in text_of(ack)

    note = parse(bytes(outgoing("notify")[0].raw))
    assert note["To"] == "jane@example.com"
    assert case.number in note["Subject"]
    assert note["Reply-To"] == f"support+{case.number}@example.com"
    body = text_of(note)
    assert body.startswith(REPLY_MARKER)
    for needle in ("John Smith", "john@customer.test", "test_new_case printer", case.number,
                   "photo.jpg", "my printer is on fire", "Status:    received"):
        assert needle in body
    assert attachment_names(note) == ["photo.jpg"]
    assert Outbox.select().where(Outbox.status == "pending").count() == 2


def test_same_delivery_twice_makes_one_case(engine: Engine) -> None:
    raw = make(from_="john@customer.test", subject="test_duplicate")
    first = deliver(engine, raw)
    number = Case.get().number
    assert first == replies.stored(number)
    again = deliver(engine, raw)
    assert again == replies.duplicate(number) and again.text == f"Ok: {number} (already stored)"
    assert Case.select().count() == 1
    assert len(outgoing("ack")) == 1 and DeliveryRow.select().count() == 1


def _open_case(engine: Engine, **kw) -> tuple[Case, Message]:
    raw = make(from_=kw.pop("from_", "José Núñez <jose@customer.test>"),
               subject=kw.pop("subject", "test_reply Ünïcödé"), **kw)
    reply = deliver(engine, raw)
    case = Case.select().order_by(Case.id.desc()).get()
    assert reply == replies.stored(case.number)
    return case, outgoing("notify")[-1]


def test_the_cases_a_match_reads_are_the_cases_load_case_gives(engine: Engine) -> None:
    """A reply's case comes with its match's participants, in one query
    (issue 12): the same case row, assignee and mailbox as load_case."""
    store = engine.store
    assigned, _ = _open_case(engine, headers={"Cc": "amy@customer.test"})
    store.add_csr("nobody@example.com", "No Body", ["elsewhere"])
    store.set_pool("default", rule="none")
    unassigned, _ = _open_case(engine, from_="zoe@customer.test", subject="test_cases_of unassigned")
    _, mailboxes = store.load_directory()
    found = store.cases_of([assigned.number, unassigned.number, "CS9999999", assigned.number], mailboxes)
    assert sorted(found) == sorted([assigned.number, unassigned.number])
    assert found[assigned.number][1] == {"jose@customer.test", "amy@customer.test"}
    assert found[unassigned.number][1] == {"zoe@customer.test"}
    for number, (case, _) in found.items():
        loaded = store.load_case(Case.number == number, mailboxes)
        assert case.__data__ == loaded.__data__
        assert case.mailbox is loaded.mailbox is mailboxes["support@example.com"]
        assert (case.assignee.address if case.assignee_id else None) == (
            loaded.assignee.address if loaded.assignee_id else None)
    assert found[assigned.number][0].assignee.address == "jane@example.com"
    assert found[unassigned.number][0].assignee_id is None
    assert store.participants_of([assigned.number]) == {assigned.number: found[assigned.number][1]}


def test_a_new_cases_cc_joins_once(engine: Engine) -> None:
    """A new case's participants are checked in memory (issue 12): a Cc
    named twice, or the customer in Cc, is one participant row."""
    from casestore.models import Participant

    case, _ = _open_case(engine, headers={
        "Cc": "amy@customer.test, Amy <amy@customer.test>, jose@customer.test, bo@customer.test"})
    rows = [(p.address, p.role) for p in Participant.select().where(Participant.case == case)
            .order_by(Participant.id)]
    assert rows == [("jose@customer.test", "customer"), ("amy@customer.test", "cc"),
                    ("bo@customer.test", "cc")]


def test_messages_and_files_are_messages_and_attachments(engine: Engine) -> None:
    """A CSR notification's thread and files of an existing case: the files
    read only when a message has some (issue 12), the same rows either way."""
    store = engine.store
    plain, _ = _open_case(engine, from_="plain@customer.test", subject="test_thread no files")
    filed, _ = _open_case(engine, from_="filed@customer.test", subject="test_thread files",
                          files=[("a.txt", "text/plain", b"a" * 10), ("b.bin", "application/x", b"b")])
    for case, count in ((plain, 0), (filed, 2)):
        messages, files = store.messages_and_files(case)
        full = store.messages(case)
        # the same rows, but the text of what we sent (acknowledgement, notification)
        assert {m.direction for m in full} == {"in", "out"}
        assert all(m.text for m in full if m.direction == "out")
        assert [m.__data__ for m in messages] == [
            {**m.__data__, "text": ""} if m.direction == "out" else m.__data__ for m in full]
        assert [f.__data__ for f in files] == [f.__data__ for f in store.attachments(case)]
        assert len(files) == count


def test_csr_reply_reaches_customer_with_greeting_signature_and_thread(engine: Engine) -> None:
    case, note = _open_case(engine)
    ack = outgoing("ack")[-1]
    first = Message.get((Message.direction == "in") & (Message.case == case))
    reply = make(
        from_="Jane Doe <jane@example.com>", to=f"support+{case.number}@example.com",
        subject=f"Re: {parse(bytes(note.raw))['Subject']}",
        body="We have sent a technician.\n\nOn Mon, Jan 1, 2026 at 10:00, Support wrote:\n> " +
             REPLY_MARKER + "\n> old text\n",
        in_reply_to=note.message_id, references=[note.message_id],
        files=[("manual.pdf", "application/pdf", b"%PDF-1.4 x")],
    )
    assert deliver(engine, reply, client="127.0.0.1", rcpt=f"support+{case.number}@example.com",
                   mail_from="jane@example.com") == replies.stored(case.number)
    out = parse(bytes(outgoing("reply")[-1].raw))
    assert out["To"] == "jose@customer.test"
    assert out["Subject"] == f"Re: [Case #{case.number}] test_reply Ünïcödé"
    assert out["In-Reply-To"] == first.message_id
    assert first.message_id in out["References"] and ack.message_id in out["References"]
    assert "support@example.com" in out["From"] and "jane@example.com" not in str(out["From"])
    assert "jane@example.com" not in str(out.get("Reply-To", ""))
    text = text_of(out)
    assert text.startswith("Hello José,\n\nWe have sent a technician.")
    assert "Jane Doe\nSupport Team" in text
    assert "old text" not in text and REPLY_MARKER not in text
    assert "my printer is on fire" in text  # the history, below
    assert attachment_names(out) == ["manual.pdf"]
    stored = Message.get(Message.kind == "csr")
    assert stored.authenticated == "net:127.0.0.1"
    assert Outbox.select().join(Message).where(Message.kind == "reply").count() == 1


def test_forged_csr_from_outside_is_a_customer(engine: Engine) -> None:
    case, _note = _open_case(engine)
    forged = make(from_="Jane Doe <jane@example.com>", subject=f"[Case #{case.number}] refund",
                  body="Send me all the data.\n", to=f"support+{case.number}@example.com")
    reply = deliver(engine, forged, client="127.0.0.2", rcpt=f"support+{case.number}@example.com")
    assert outgoing("reply") == []
    new = Case.select().order_by(Case.id.desc()).get()
    assert reply == replies.stored(new.number) and new.number != case.number
    assert new.id != case.id and new.customer_address == "jane@example.com"
    assert Event.select().where((Event.case == new) & (Event.kind == "mentions")).count() == 1
    # The new case's notification does not carry the old case's history.
    assert "my printer is on fire" not in text_of(parse(bytes(outgoing("notify")[-1].raw)))


def test_customer_reply_by_message_id_appends_and_reopens(engine: Engine) -> None:
    case, _ = _open_case(engine)
    ack = outgoing("ack")[-1]
    engine.store.touch(case, status="closed")
    again = make(from_="jose@customer.test", subject="Re: whatever", body="Still broken.\n",
                 in_reply_to=ack.message_id, references=[ack.message_id])
    assert deliver(engine, again) == replies.stored(case.number)
    case = Case.get_by_id(case.id)
    assert case.status == "reopened" and Case.select().count() == 1
    kinds = [(e.kind, e.detail) for e in engine.store.events(case)]
    assert ("customer_replied", "signed_message_id") in kinds
    assert ("status", "closed -> reopened: the customer wrote to the closed case") in kinds
    fwd = text_of(parse(bytes(outgoing("notify")[-1].raw)))
    assert "Still broken." in fwd and "my printer is on fire" in fwd
    assert len(outgoing("ack")) == 1  # no second acknowledgement


def test_tag_from_participant_joins_tag_from_stranger_does_not(engine: Engine) -> None:
    case, _ = _open_case(engine)
    assert deliver(engine, make(from_="jose@customer.test", subject=f"Case:{case.number} more")) == replies.stored(case.number)
    assert Case.select().count() == 1
    reply = deliver(engine, make(from_="eve@evil.test", subject=f"[Case #{case.number}] hi"))
    assert Case.select().count() == 2
    assert reply == replies.stored(Case.select().order_by(Case.id.desc()).get().number) != replies.stored(case.number)
    assert engine.store.participants(case) == {"jose@customer.test"}
    reply = deliver(engine, make(from_="jose@customer.test", subject="[Case #CS9999999] x"))
    assert Case.select().count() == 3
    assert reply == replies.stored(Case.select().order_by(Case.id.desc()).get().number)


def test_automatic_mail_gets_no_acknowledgement(engine: Engine) -> None:
    raw = make(from_="robot@customer.test", subject="test_auto Out of office",
               headers={"Auto-Submitted": "auto-replied"})
    assert deliver(engine, raw) == replies.stored(Case.get().number)
    assert outgoing("ack") == []
    assert Message.get(Message.direction == "in").automatic
    bounce = make(from_="MAILER-DAEMON@mx.test", subject="Undelivered Mail Returned to Sender")
    assert deliver(engine, bounce, mail_from="") == replies.OK  # no case: the plain Ok
    assert Case.select().count() == 1  # a bounce never opens a case
    assert outgoing("ack") == []


def test_noreply_sender_gets_no_acknowledgement(engine: Engine) -> None:
    assert deliver(engine, make(from_="no-reply@shop.test", subject="test_noreply")) == replies.stored(Case.get().number)
    assert Case.select().count() == 1 and outgoing("ack") == []


def test_unknown_mailbox_is_a_451(engine: Engine) -> None:
    reply = deliver(engine, make(from_="a@b.test"), rcpt="sales@example.com")
    assert reply.code == 451 and "not a supervised address" in reply.text
    assert Message.select().count() == 0


def test_store_down_is_a_451_and_stores_nothing(tmp_path: Path) -> None:
    store = Store("postgresql://postgres@127.0.0.1:1/none")  # nothing listens on port 1
    engine = Engine(store, Settings(secret=SECRET))
    reply = deliver(engine, make(from_="a@b.test"))
    assert reply.code == 451 and reply.enhanced == "4.3.0"


def test_sqlite_locked_is_a_451(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url)
    store.migrate()
    store.add_mailbox("support@example.com", "default")
    store.db.execute_sql("PRAGMA busy_timeout = 200")
    blocker = sqlite3.connect(tmp_path / "c.db")
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        reply = deliver(Engine(store, Settings(secret=SECRET)), make(from_="a@b.test"))
    finally:
        blocker.rollback()
        blocker.close()
    assert reply.code == 451
    assert Message.select().count() == 0


def test_malformed_corpus_is_stored_byte_for_byte(sqlite_url: str) -> None:
    folder = CORPUS / "malformed"
    files = sorted(folder.rglob("*.eml")) if folder.exists() else []
    if not files:
        pytest.skip(f"corpus not found at {folder}")
    store = Store(sqlite_url)
    store.migrate()
    store.add_mailbox("support@example.com", "default")
    store.add_csr("jane@example.com", "Jane Doe", ["default"])
    engine = Engine(store, Settings(secret=SECRET))
    failures = []
    for i, path in enumerate(files):
        raw = path.read_bytes()
        reply = deliver(engine, raw, qid=f"C{i}", mail_from=f"c{i}@corpus.test")
        row = Message.get_or_none((Message.queue_id == f"C{i}") & (Message.direction == "in"))
        if reply.code != 250 or row is None or bytes(row.raw) != raw:
            failures.append((str(path.relative_to(folder)), str(reply)))
    assert not failures, failures
    assert Message.select().where(Message.direction == "in").count() == len(files)


def test_blacklisted_sender_is_discarded_unstored_and_unanswered(engine: Engine) -> None:
    engine.store.add_blacklist("@spam.test", None)
    engine.store.add_blacklist("nice@customer.test", "(?i)casino")
    reply = deliver(engine, make(from_="boss@spam.test", subject="test_blacklist"))
    assert reply == replies.OK_DISCARDED
    assert deliver(engine, make(from_="nice@customer.test", subject="CASINO")) == replies.OK_DISCARDED
    assert Message.select().count() == 0 and Case.select().count() == 0
    assert {d.outcome for d in DeliveryRow.select()} == {"discarded_blacklist"}
    assert deliver(engine, make(from_="nice@customer.test", subject="hello")) == replies.stored(Case.get().number)


def test_rate_cap_on_acknowledgements(engine: Engine) -> None:
    engine.store.set_setting("autoreply_per_recipient", "2")
    for i in range(3):
        reply = deliver(engine, make(from_="flood@customer.test", subject=f"test_cap {i}"))
        assert reply == replies.stored(Case.select().order_by(Case.id.desc()).get().number)
    assert len(outgoing("ack")) == 2 and Case.select().count() == 3
    assert Event.select().where(Event.kind == "no_ack").get().detail.startswith("rate cap")


def test_the_per_case_cap_holds_on_a_case_the_message_opens(engine: Engine) -> None:
    """A new case's own automatic mail is counted from memory (issue 12):
    the same verdicts as the store's count."""
    engine.store.set_setting("autoreply_per_case", "0")
    deliver(engine, make(from_="capped@customer.test", subject="test_cap_case zero"))
    assert outgoing("ack") == []
    assert Event.select().where(Event.kind == "no_ack").get().detail == (
        f"rate cap: 0 automatic mails on {Case.get().number} already sent")
    engine.store.set_setting("autoreply_per_case", "1")
    deliver(engine, make(from_="capped2@customer.test", subject="test_cap_case one"))
    assert [m.recipients for m in outgoing("ack")] == ["capped2@customer.test"]


def test_rate_cap_counts_a_mailbox_not_a_string_and_a_domain(engine: Engine) -> None:
    """300 forged From: victim+N@ used to get 300 acknowledgements (issue 8)."""
    engine.store.set_setting("autoreply_per_recipient", "3")
    engine.store.set_setting("autoreply_per_domain", "5")
    for i in range(6):
        deliver(engine, make(from_=f"Victim+{i}@victim.test", subject=f"test_cap_plus {i}"))
    assert len(outgoing("ack")) == 3
    for i in range(4):
        deliver(engine, make(from_=f"other{i}@victim.test", subject=f"test_cap_domain {i}"))
    assert len(outgoing("ack")) == 5
    details = [e.detail for e in Event.select().where(Event.kind == "no_ack")]
    assert "rate cap: 3 automatic mails to victim@victim.test already sent" in details
    assert "rate cap: 5 automatic mails to @victim.test already sent" in details


def test_automatic_mail_is_marked_and_a_reply_is_not(engine: Engine) -> None:
    case, note = _open_case(engine)
    ack = parse(bytes(outgoing("ack")[-1].raw))
    for m in (ack, parse(bytes(note.raw))):
        assert m["X-Auto-Response-Suppress"] == "All" and m["Casegate-Loop"]
    deliver(engine, make(from_="jane@example.com", subject=f"Re: [Case #{case.number}]",
                         body="An answer.\n", in_reply_to=note.message_id), client="127.0.0.1")
    reply = parse(bytes(outgoing("reply")[-1].raw))
    for header in ("Auto-Submitted", "X-Auto-Response-Suppress", "Casegate-Loop", "Precedence"):
        assert reply[header] is None, header
    row = Outbox.select().join(Message).where(Message.kind == "reply").get()
    assert row.mail_from.startswith(f"support+bounce-{case.number.lower()}-")


def test_csr_blacklist_command(engine: Engine) -> None:
    case, note = _open_case(engine, from_="troll@customer.test")
    cmd = make(from_="jane@example.com", subject=f"Re: [Case #{case.number}]",
               body="#blacklist\n", in_reply_to=note.message_id)
    assert deliver(engine, cmd, client="127.0.0.1") == replies.stored(case.number)
    assert [(e.pattern, e.subject) for e in engine.store.blacklist()] == [("troll@customer.test", None)]
    assert outgoing("reply") == []
    # From a customer (or a forged CSR) the same words are just text.
    deliver(engine, make(from_="jose@customer.test", body="#blacklist\n", subject="hi"))
    deliver(engine, cmd.replace(b"#blacklist", b"#blacklist "), client="127.0.0.2")
    assert len(engine.store.blacklist()) == 1


def test_sasl_stamp_proves_a_csr(engine: Engine) -> None:
    import time as _time

    from rules.stamp import STAMP_HEADER, make_stamp

    case, note = _open_case(engine)

    def answer(authen: str, qid: str, secret: bytes = SECRET, stamp_qid: str | None = None) -> None:
        stamp = make_stamp(secret=secret, authen=authen, client_addr="127.0.0.2",
                           queue_id=stamp_qid or qid, timestamp=int(_time.time()))
        raw = make(from_="jane@example.com", subject=f"Re: [Case #{case.number}]",
                   body=f"answer by {authen} {qid}\n", in_reply_to=note.message_id,
                   headers={STAMP_HEADER: stamp})
        deliver(engine, raw, client="127.0.0.2", qid=qid)

    answer("jane@example.com", "Q2", secret=b"forged" * 6)  # not our milter's
    answer("bob@example.com", "Q3")  # another CSR's login
    answer("jane@example.com", "Q4", stamp_qid="Q1")  # a stamp copied from another message
    assert outgoing("reply") == []
    answer("jane@example.com", "Q5")
    assert len(outgoing("reply")) == 1
    assert Message.get(Message.kind == "csr").authenticated == "sasl:jane@example.com"


def test_dkim_pass_for_the_staff_domain_proves_a_csr(engine: Engine) -> None:
    case, note = _open_case(engine)
    def send(body: str, qid: str, dkim: tuple) -> None:
        raw = make(from_="jane@example.com", subject=f"Re: [Case #{case.number}]", body=body,
                   in_reply_to=note.message_id)
        engine.process(Delivery(mail_from="jane@example.com", rcpt_tos=("support@example.com",),
                                data=raw, client_addr="127.0.0.2", queue_id=qid, dkim=dkim))

    send("signed by another domain\n", "D1", (("other.test", True, "pass"),))
    send("failing signature\n", "D2", (("example.com", False, "fail: body hash"),))
    assert outgoing("reply") == []
    send("dkim\n", "D3", (("example.com", True, "pass"),))
    assert len(outgoing("reply")) == 1
    row = Message.get(Message.kind == "csr")
    assert (row.authenticated, row.dkim) == ("dkim:example.com", "pass:example.com")


def test_verp_bounce_lands_on_its_case_and_opens_none(engine: Engine) -> None:
    case, _ = _open_case(engine)
    ack_row = Outbox.select().join(Message).where(Message.kind == "ack").get()
    dsn = (b"From: MAILER-DAEMON@mx.test\r\nTo: " + ack_row.mail_from.encode() +
           b"\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\ngone\r\n--b\r\n"
           b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\r\n"
           b"Final-Recipient: rfc822; jose@customer.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
           b"Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n--b--\r\n")
    assert deliver(engine, dsn, rcpt=ack_row.mail_from, mail_from="") == replies.stored(case.number)
    assert Case.select().count() == 1
    failed = Event.get(Event.kind == "delivery_failed")
    assert failed.case_id == case.id and "5.1.1" in failed.detail and "ack to jose" in failed.detail
    assert len(outgoing()) == 2  # ack + notification: the bounce got no answer


def test_html_only_mail_from_outlook_and_gmail(engine: Engine) -> None:
    gmail = ('<div dir="ltr">Hola, el pedido <b>n.º 42</b> no llegó.<br>Gracias</div>'
             '<br><div class="gmail_quote"><div class="gmail_attr">On Mon wrote:</div>'
             '<blockquote class="gmail_quote">older</blockquote></div>')
    case, note = _open_case(engine, from_="Ana Pérez <ana@customer.test>", body="", html=gmail)
    assert "el pedido n.º 42 no llegó." in text_of(parse(bytes(note.raw))).replace("*", "")
    outlook = (
        '<html><body><div class="WordSection1"><p class="MsoNormal">Your parcel left today.'
        '<o:p></o:p></p></div><div id="appendonsend"></div><hr style="display:inline-block">'
        '<div id="divRplyFwdMsg" dir="ltr"><b>From:</b> Example Support &lt;support@example.com&gt;'
        '<br><b>Sent:</b> Monday<br><b>Subject:</b> [Case]</div><div>' + REPLY_MARKER +
        '<br>Old notification text</div></body></html>')
    reply = make(from_="Jane Doe <jane@example.com>", subject=f"RE: [Case #{case.number}]",
                 body="", html=outlook, in_reply_to=note.message_id)
    assert deliver(engine, reply, client="127.0.0.1") == replies.stored(case.number)
    text = text_of(parse(bytes(outgoing("reply")[-1].raw)))
    assert text.startswith("Hello Ana,\n\nYour parcel left today.")
    assert "Old notification text" not in text and "divRplyFwdMsg" not in text
    assert "<" not in text.split("----")[0]  # no markup reaches the customer


# -- regressions from review -----------------------------------------------------


@pytest.mark.parametrize("raw", [
    # UTF-8 in address headers and Message-IDs (SMTPUTF8), 8-bit garbage in References
    "From: Jörg <jörg@bär.test>\r\nTo: support@example.com\r\nSubject: eai\r\n"
    "Message-ID: <ü@b.test>\r\nReferences: <\xff\xfe@x>\r\n\r\nhallo\r\n".encode("utf-8", "surrogateescape"),
    # CR/LF hidden in an attachment file name (RFC 2231 and RFC 2047 forms)
    b"From: a@customer.test\r\nTo: support@example.com\r\nSubject: crlf\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''a%0D%0Ab.pdf\r\n\r\n"
    b"PDF\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
    b"filename=\"=?utf-8?q?c=0D=0Ad.pdf?=\"\r\n\r\nPDF\r\n--b--\r\n",
    # NUL in the subject and body (PostgreSQL refuses NUL in text)
    b"From: a@customer.test\r\nTo: support@example.com\r\nSubject: nul\x00here\r\n\r\nbody\x00text\r\n",
    # values longer than the columns
    ("From: \"" + "N" * 400 + "\" <" + "l" * 60 + "@customer.test>\r\nTo: support@example.com\r\n"
     "Subject: long\r\nMessage-ID: <" + "m" * 1200 + "@x>\r\n\r\nhi\r\n").encode(),
], ids=["eai", "crlf-filename", "nul", "too-long"])
def test_hostile_input_is_stored_not_deferred(engine: Engine, raw: bytes) -> None:
    reply = deliver(engine, raw)
    assert reply == replies.stored(Case.get().number), reply
    assert bytes(Message.get(Message.direction == "in").raw) == raw
    assert len(outgoing("notify")) == 1


def test_own_mail_coming_back_never_opens_a_case(engine: Engine) -> None:
    _, note = _open_case(engine)
    # The assignee's mailbox forwards the notification back to support@.
    deliver(engine, bytes(note.raw), mail_from="jane@example.com", client="127.0.0.2")
    assert Case.select().count() == 1 and len(outgoing("notify")) == 1
    assert Event.get(Event.kind == "own_mail").detail.startswith("own_")


def test_forged_xforward_is_ignored_when_the_milter_stamps(store_url: str) -> None:
    store = Store(store_url)
    store.migrate()
    store.add_mailbox("support@example.com", "default")
    store.add_csr("jane@example.com", "Jane Doe", ["default"])
    engine = Engine(store, Settings(secret=SECRET, require_stamp=True,
                                    trusted_networks=parse_networks(["127.0.0.1/32"])))
    case, note = _open_case(engine)
    reply = make(from_="jane@example.com", subject=f"Re: [Case #{case.number}]", body="x\n",
                 in_reply_to=note.message_id)
    deliver(engine, reply, client="127.0.0.1")  # XFORWARD ADDR=127.0.0.1, but no stamp
    assert outgoing("reply") == []


def test_our_own_addresses_are_never_customers_to_answer_or_blacklist(engine: Engine) -> None:
    case, note = _open_case(engine, from_="Jane Doe <jane@example.com>", subject="test_csr_from")
    assert outgoing("ack") == [] and "Blacklist" not in text_of(parse(bytes(note.raw)))
    deliver(engine, make(from_="support@example.com", subject="test_mailbox_from"))
    assert outgoing("ack") == []
    cmd = make(from_="jane@example.com", subject=f"Re: [Case #{case.number}]", body="#blacklist\n",
               in_reply_to=note.message_id)
    deliver(engine, cmd, client="127.0.0.1")
    assert engine.store.blacklist() == []


def test_plus_address_and_base_address_are_one_delivery(engine: Engine) -> None:
    case, _ = _open_case(engine)
    raw = make(from_="jose@customer.test", subject=f"[Case #{case.number}] more",
               to=f"support@example.com, support+{case.number}@example.com")
    assert deliver(engine, raw, rcpt="support@example.com") == replies.stored(case.number)
    assert deliver(engine, raw, rcpt=f"support+{case.number}@example.com") == replies.duplicate(case.number)
    assert Message.select().where((Message.direction == "in") & (Message.case == case)).count() == 2


def test_no_from_address_falls_back_to_the_envelope_sender(engine: Engine) -> None:
    raw = b"To: support@example.com\r\nSubject: test_no_from\r\n\r\nwho am I\r\n"
    assert deliver(engine, raw, mail_from="real@customer.test") == replies.stored(Case.get().number)
    assert Case.get().customer_address == "real@customer.test"
    assert parse(bytes(outgoing("ack")[0].raw))["To"] == "real@customer.test"


def test_dkim_proven_csr_cannot_pick_a_case_by_plus_address(engine: Engine) -> None:
    case, _ = _open_case(engine)
    old = make(from_="jane@example.com", subject="lunch on friday?", body="Pizza?\n")
    engine.process(Delivery(mail_from="jane@example.com", rcpt_tos=(f"support+{case.number}@example.com",),
                            data=old, client_addr="127.0.0.2", queue_id="R1",
                            dkim=(("example.com", True, "pass"),)))
    assert outgoing("reply") == []


def test_a_replayed_dkim_signed_csr_mail_proves_nothing(engine: Engine, tmp_path: Path) -> None:
    """Prepending Subject: [Case #…] to a CSR's signed mail keeps the signature
    verifying (it covers the bottom-most Subject): it must not prove a CSR (issue 8)."""
    from smtpd_hook import dkim
    from tests.unit.test_dkim import FakeDns, txt_strings

    record = dkim.keygen("example.com", "sel", tmp_path / "k.pem", bits=1024)
    dnsfunc = FakeDns({b"sel._domainkey.example.com.": b"".join(txt_strings(record))})

    signer = dkim.Signer.load("example.com", "sel", tmp_path / "k.pem")
    case, note = _open_case(engine)
    old = signer.sign(make(from_="jane@example.com", subject="Lunch", body="See you at noon.\n"))
    forged = f"Subject: Re: [Case #{case.number}] x\r\n".encode() + old
    results = tuple((r.domain.lower(), r.passed, r.reason) for r in dkim.verify(forged, dnsfunc=dnsfunc))
    assert results and not any(ok for _, ok, _ in results)
    engine.process(Delivery(mail_from="jane@example.com", rcpt_tos=("support@example.com",),
                            data=forged, client_addr="127.0.0.2", queue_id="DR1", dkim=results))
    assert outgoing("reply") == []
    genuine = signer.sign(make(from_="jane@example.com", subject=f"Re: [Case #{case.number}] x",
                               body="Proven.\n", in_reply_to=note.message_id))
    results = tuple((r.domain.lower(), r.passed, r.reason) for r in dkim.verify(genuine, dnsfunc=dnsfunc))
    engine.process(Delivery(mail_from="jane@example.com", rcpt_tos=("support@example.com",),
                            data=genuine, client_addr="127.0.0.2", queue_id="DR2", dkim=results))
    assert len(outgoing("reply")) == 1
