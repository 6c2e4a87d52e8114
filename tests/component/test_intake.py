"""Intake through the engine on a real store (SQLite file, PostgreSQL):
files and inline images, participants, products, the mailbox's intake
policy (issue 10, sections 4-6)."""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from casestore.models import Case, Message, Participant
from casestore.store import Store
from rules import replies
from rules.classify import parse_networks
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.settings import Settings
from tests.support.mail import attachment_names, make, parse, text_of

SECRET = b"s" * 32
EVERY_BYTE = bytes(range(256)) * 4


def build(store_url: str, **settings) -> Engine:
    store = Store(store_url)
    store.migrate()
    store.add_mailbox("support@example.com", "default", "Example Support")
    store.add_csr("jane@example.com", "Jane Doe", ["default"], "Jane Doe\nSupport Team")
    return Engine(store, Settings(secret=SECRET, trusted_networks=parse_networks(["127.0.0.1/32"]),
                                  **settings))


@pytest.fixture
def engine(store_url: str):
    e = build(store_url)
    yield e
    e.store.close()


def deliver(engine: Engine, raw: bytes, *, client: str = "127.0.0.2", rcpt: str = "support@example.com",
            qid: str = "QID1") -> replies.Reply:
    return engine.process(Delivery(mail_from="sender@client.test", rcpt_tos=(rcpt,), data=raw,
                                   client_addr=client, queue_id=qid))


def outgoing(kind: str) -> list[EmailMessage]:
    return [parse(bytes(m.raw)) for m in Message.select().where(
        (Message.direction == "out") & (Message.kind == kind)).order_by(Message.id)]


def related_with_cid_image(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ann <ann@customer.test>"
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = "<rel1@customer.test>"
    msg.set_content("See the screenshot.\n")
    msg.add_alternative('<p>See <img src="cid:shot1@customer.test"></p>', subtype="html")
    html = msg.get_payload()[1]
    html.add_related(b"\x89PNG\r\n\x1a\n" + EVERY_BYTE[:64], maintype="image", subtype="png",
                     cid="<shot1@customer.test>")
    msg.add_attachment(b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", maintype="text", subtype="calendar")
    msg.add_attachment(EVERY_BYTE, maintype="application", subtype="octet-stream",
                       filename="all-bytes.bin")
    return msg.as_bytes()


def test_every_file_is_captured_listed_and_returned_byte_for_byte(engine: Engine, store_url: str,
                                                                  tmp_path: Path) -> None:
    assert deliver(engine, related_with_cid_image("test_files screenshot")) == replies.OK
    case = Case.get()
    history = engine.store.case_history(case)
    files = {f["name"]: f for f in history["files"]}
    assert sorted(files) == ["all-bytes.bin", "invite.ics", "shot1.png"]
    shot = files["shot1.png"]
    assert (shot["type"], shot["inline"], shot["content_id"], shot["size"]) == (
        "image/png", True, "shot1@customer.test", 8 + 64)
    assert (files["all-bytes.bin"]["inline"], files["all-bytes.bin"]["size"]) == (False, 1024)
    assert files["invite.ics"]["type"] == "text/calendar"
    assert history["product"] is None
    for f in history["files"]:
        assert {"id", "name", "type", "size", "inline"} <= set(f)

    runner = CliRunner()
    base = ["--config", str(tmp_path / "c.toml"), "--store", store_url]
    assert runner.invoke(cli.main, [*base, "init"]).exit_code == 0
    out = tmp_path / "out.bin"
    got = runner.invoke(cli.main, [*base, "case", "file", str(files["all-bytes.bin"]["id"]),
                                   "--output", str(out)])
    assert got.exit_code == 0, got.output
    assert out.read_bytes() == EVERY_BYTE
    shown = runner.invoke(cli.main, [*base, "case", "show", case.number])
    assert f"file {shot['id']}: shot1.png (image/png, 72 bytes, inline)" in shown.output
    assert "all-bytes.bin (application/octet-stream, 1024 bytes, attachment)" in shown.output
    as_json = json.loads(runner.invoke(cli.main, [*base, "case", "show", case.number, "--json"]).output)
    assert [f["inline"] for f in as_json["files"]] == [f["inline"] for f in history["files"]]
    missing = runner.invoke(cli.main, [*base, "case", "file", "999999"])
    assert missing.exit_code == 1 and "no file with id 999999" in missing.output


def test_a_file_over_the_limit_stays_stored_and_the_csr_is_told(store_url: str) -> None:
    engine = build(store_url, files_message_max=2000, files_case_max=3000)
    try:
        raw = make(from_="ann@customer.test", subject="test_file_limits",
                   files=[("small.txt", "text/plain", b"s" * 500),
                          ("big.bin", "application/octet-stream", b"b" * 2500)])
        assert deliver(engine, raw) == replies.OK
        note = outgoing("notify")[0]
        assert attachment_names(note) == ["small.txt"]
        body = text_of(note)
        assert "Not attached to this mail" in body
        assert "big.bin" in body and "too large to forward (2.5 kB; the limit is 2.0 kB per message)" in body
        # the case's limit: 500 of 3000 used, the next 2600 does not fit
        raw2 = make(from_="ann@customer.test", subject=f"Re: [Case #{Case.get().number}] test_file_limits",
                    files=[("second.bin", "application/octet-stream", b"x" * 1900),
                           ("third.bin", "application/octet-stream", b"y" * 700)])
        assert deliver(engine, raw2, qid="QID2") == replies.OK
        second = outgoing("notify")[-1]
        assert attachment_names(second) == []
        assert "the case's files are over 3.0 kB together" in text_of(second)
        stored = {f.filename: f.size for f in engine.store.attachments(Case.get())}
        assert stored == {"small.txt": 500, "big.bin": 2500, "second.bin": 1900, "third.bin": 700}
    finally:
        engine.store.close()


# -- participants -----------------------------------------------------------------------------


def csr_answer(engine: Engine, case: Case, text: str, qid: str) -> replies.Reply:
    note = outgoing("notify")[-1]
    raw = make(from_="Jane Doe <jane@example.com>", to=f"support+{case.number}@example.com",
               subject=f"Re: {note['Subject']}", body=text,
               in_reply_to=note["Message-ID"], references=[note["Message-ID"]])
    return deliver(engine, raw, client="127.0.0.1", rcpt=f"support+{case.number}@example.com", qid=qid)


def test_a_cc_on_a_later_message_joins_gets_the_answer_and_may_write(engine: Engine) -> None:
    assert deliver(engine, make(from_="Ann <ann@customer.test>", subject="test_cc printer")) == replies.OK
    case = Case.get()
    ack = outgoing("ack")[0]
    second = make(from_="Ann <ann@customer.test>", subject=f"Re: {ack['Subject']}",
                  body="Adding my colleague and, by mistake, Jane.\n",
                  headers={"Cc": "Carol <carol@customer.test>, jane@example.com, "
                                 "support+x@example.com, noreply@customer.test"},
                  in_reply_to=ack["Message-ID"], references=[ack["Message-ID"]])
    assert deliver(engine, second, qid="QID2") == replies.OK
    people = {p.address: p.role for p in Participant.select().where(Participant.case == case)}
    assert people == {"ann@customer.test": "customer", "carol@customer.test": "cc"}
    note = text_of(outgoing("notify")[-1])
    assert "Also taking part" in note and "carol@customer.test" in note

    assert csr_answer(engine, case, "A technician comes on Monday.\n", "QID3") == replies.OK
    reply = outgoing("reply")[-1]
    assert reply["To"] == "ann@customer.test" and reply["Cc"] == "carol@customer.test"
    envelope = Message.select().where(Message.kind == "reply").get().outbox.get().rcpt_to
    assert envelope.split() == ["ann@customer.test", "carol@customer.test"]

    carol = make(from_="carol@customer.test", subject=f"Re: {reply['Subject']}",
                 body="Monday is fine for me.\n", in_reply_to=reply["Message-ID"],
                 references=[reply["Message-ID"]])
    assert deliver(engine, carol, qid="QID4") == replies.OK
    assert Case.select().count() == 1
    last = Message.select().where(Message.direction == "in").order_by(Message.id.desc()).get()
    assert (last.case_id, last.kind, last.sender) == (case.id, "customer", "carol@customer.test")

    engine.store.set_pool("default", cc_participants=False)
    engine._cached_directory = None
    assert csr_answer(engine, case, "Off the list now.\n", "QID5") == replies.OK
    assert outgoing("reply")[-1]["Cc"] is None


def test_a_stranger_with_the_tag_does_not_add_participants_and_the_cap_holds(store_url: str) -> None:
    engine = build(store_url)
    try:
        engine.store.set_pool("default", max_participants=2)
        first = make(from_="ann@customer.test", subject="test_cap",
                     headers={"Cc": "a@c.test, b@c.test, c@c.test"})
        assert deliver(engine, first) == replies.OK
        case = Case.get()
        assert engine.store.participants(case) == {"ann@customer.test", "a@c.test", "b@c.test"}
        stranger = make(from_="eve@evil.test", subject=f"[Case #{case.number}] me too",
                        headers={"Cc": "mallory@evil.test"})
        assert deliver(engine, stranger, qid="QID2") == replies.OK
        assert engine.store.participants(case) == {"ann@customer.test", "a@c.test", "b@c.test"}
        assert Case.select().count() == 2  # the stranger got a case of their own
    finally:
        engine.store.close()
