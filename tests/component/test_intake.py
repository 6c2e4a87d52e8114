"""Intake through the engine on a real store (SQLite file, PostgreSQL):
files and inline images, participants, products, the mailbox's intake
policy (issue 10, sections 4-6)."""

from __future__ import annotations

import gc
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
    assert deliver(engine, related_with_cid_image("test_files screenshot")) == replies.stored("CS0000001")
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
        assert deliver(engine, raw) == replies.stored("CS0000001")
        note = outgoing("notify")[0]
        assert attachment_names(note) == ["small.txt"]
        body = text_of(note)
        assert "Not attached to this mail" in body
        assert "big.bin" in body and "too large to forward (2.5 kB; the limit is 2.0 kB per message)" in body
        # the case's limit: 500 of 3000 used, the next 2600 does not fit
        raw2 = make(from_="ann@customer.test", subject=f"Re: [Case #{Case.get().number}] test_file_limits",
                    files=[("second.bin", "application/octet-stream", b"x" * 1900),
                           ("third.bin", "application/octet-stream", b"y" * 700)])
        assert deliver(engine, raw2, qid="QID2") == replies.stored("CS0000001")
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
    assert deliver(engine, make(from_="Ann <ann@customer.test>", subject="test_cc printer")) == replies.stored("CS0000001")
    case = Case.get()
    ack = outgoing("ack")[0]
    second = make(from_="Ann <ann@customer.test>", subject=f"Re: {ack['Subject']}",
                  body="Adding my colleague and, by mistake, Jane.\n",
                  headers={"Cc": "Carol <carol@customer.test>, jane@example.com, "
                                 "support+x@example.com, noreply@customer.test"},
                  in_reply_to=ack["Message-ID"], references=[ack["Message-ID"]])
    assert deliver(engine, second, qid="QID2") == replies.stored("CS0000001")
    people = {p.address: p.role for p in Participant.select().where(Participant.case == case)}
    assert people == {"ann@customer.test": "customer", "carol@customer.test": "cc"}
    note = text_of(outgoing("notify")[-1])
    assert "Also taking part" in note and "carol@customer.test" in note

    assert csr_answer(engine, case, "A technician comes on Monday.\n", "QID3") == replies.stored("CS0000001")
    reply = outgoing("reply")[-1]
    assert reply["To"] == "ann@customer.test" and reply["Cc"] == "carol@customer.test"
    envelope = Message.select().where(Message.kind == "reply").get().outbox.get().rcpt_to
    assert envelope.split() == ["ann@customer.test", "carol@customer.test"]

    carol = make(from_="carol@customer.test", subject=f"Re: {reply['Subject']}",
                 body="Monday is fine for me.\n", in_reply_to=reply["Message-ID"],
                 references=[reply["Message-ID"]])
    assert deliver(engine, carol, qid="QID4") == replies.stored("CS0000001")
    assert Case.select().count() == 1
    last = Message.select().where(Message.direction == "in").order_by(Message.id.desc()).get()
    assert (last.case_id, last.kind, last.sender) == (case.id, "customer", "carol@customer.test")

    engine.store.set_pool("default", cc_participants=False)
    engine._cached_directory = None
    assert csr_answer(engine, case, "Off the list now.\n", "QID5") == replies.stored("CS0000001")
    assert outgoing("reply")[-1]["Cc"] is None


def test_a_stranger_with_the_tag_does_not_add_participants_and_the_cap_holds(store_url: str) -> None:
    engine = build(store_url)
    try:
        engine.store.set_pool("default", max_participants=2)
        first = make(from_="ann@customer.test", subject="test_cap",
                     headers={"Cc": "a@c.test, b@c.test, c@c.test"})
        assert deliver(engine, first) == replies.stored("CS0000001")
        case = Case.get()
        assert engine.store.participants(case) == {"ann@customer.test", "a@c.test", "b@c.test"}
        stranger = make(from_="eve@evil.test", subject=f"[Case #{case.number}] me too",
                        headers={"Cc": "mallory@evil.test"})
        assert deliver(engine, stranger, qid="QID2") == replies.stored("CS0000002")
        assert engine.store.participants(case) == {"ann@customer.test", "a@c.test", "b@c.test"}
        assert Case.select().count() == 2  # the stranger got a case of their own
    finally:
        engine.store.close()


# -- products and the mailbox's intake policy ------------------------------------------------


def cli_base(store_url: str, tmp_path: Path) -> list[str]:
    """The CLI on the engine's store (migrated already). Not `init`: in one
    process its SQLite connection keeps the file locked for the engine's."""
    config = tmp_path / "c.toml"
    cli.write_initial_config(config, store_url)
    return ["--config", str(config), "--store", store_url]


def fresh(engine: Engine) -> None:
    engine._cached_directory = None  # as after DIRECTORY_TTL: serve re-reads the directory
    gc.collect()  # the CLI's store connections (each invocation's App) closed, as at a process's end


def test_product_and_mailbox_commands(store_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--config", str(tmp_path / "c.toml"), "--store", store_url]

    def run(*args: str):
        return runner.invoke(cli.main, [*base, *args], catch_exceptions=False)

    assert run("init").exit_code == 0
    assert run("mailbox", "add", "billing@example.com").exit_code == 0
    assert run("product", "list").output.strip() == "no products (`casegate product add NAME`)"
    added = run("product", "add", "Router", "--keyword", "RT-100", "--keyword", "rt-100")
    assert added.exit_code == 0 and "keywords RT-100" in added.output
    assert run("product", "add", "Invoices", "--mailbox", "Billing@Example.com").exit_code == 0
    for args, message in ((["add", "Other", "--mailbox", "billing@example.com"], "one product per mailbox"),
                          (["add", "Router"], "exists already"),
                          (["add", "X", "--mailbox", "nobody@example.com"], "not a supervised address"),
                          (["add", "a,b"], "no comma"),
                          (["set", "Nope", "--no-keywords"], "no product named"),
                          (["set", "Router"], "nothing to set"),
                          (["remove", "Nope"], "no product named")):
        bad = run("product", *args)
        assert bad.exit_code in (1, 2) and message in bad.output, (args, bad.output)
    assert json.loads(run("product", "list", "--json").output) == [
        {"name": "Invoices", "mailbox": "billing@example.com", "keywords": []},
        {"name": "Router", "mailbox": None, "keywords": ["RT-100"]}]
    assert "Router\t-\tRT-100" in run("product", "list").output
    renamed = run("product", "set", "Router", "--keyword", "RT-200", "--rename", "Routers")
    assert renamed.exit_code == 0 and renamed.output.strip() == "Routers: mailbox -, keywords RT-200"
    assert run("product", "remove", "Routers").exit_code == 0

    out = run("mailbox", "set", "billing@example.com", "--subject-prefix", " [ORDER] ", "--unknown", "hold")
    assert out.output.strip() == "billing@example.com: subject prefix [ORDER], unknown senders: hold"
    assert run("mailbox", "set", "billing@example.com", "--unknown", "maybe").exit_code == 2
    assert "nothing to set" in run("mailbox", "set", "billing@example.com").output
    assert "not a supervised address" in run("mailbox", "set", "x@example.com", "--unknown", "open").output


def test_a_product_from_a_subject_keyword_or_the_mailbox(engine: Engine, store_url: str,
                                                         tmp_path: Path) -> None:
    store = engine.store
    store.add_mailbox("billing@example.com", "default")
    store.add_product("Router", keywords=["RT-100"])
    store.add_product("Invoices", mailbox="billing@example.com")
    fresh(engine)
    assert deliver(engine, make(from_="ann@customer.test", subject="test_product my rt-100 blinks")) \
        == replies.stored("CS0000001")
    assert deliver(engine, make(from_="bob@customer.test", subject="invoice 7"),
                   rcpt="billing@example.com", qid="QID2") == replies.stored("CS0000002")
    assert deliver(engine, make(from_="cy@customer.test", subject="hello"), qid="QID3") == replies.stored("CS0000003")
    assert [c.product for c in Case.select().order_by(Case.id)] == ["Router", "Invoices", ""]
    first = Case.select().order_by(Case.id).first()
    assert "Product:   Router" in text_of(outgoing("notify")[0])
    store.remove_product("Router")
    assert Case.get_by_id(first.id).product == "Router"  # cases keep the name they were filed under
    base = cli_base(store_url, tmp_path)
    runner = CliRunner()
    assert "product: Router" in runner.invoke(cli.main, [*base, "case", "show", first.number]).output
    assert json.loads(runner.invoke(cli.main, [*base, "case", "show", first.number, "--json"])
                      .output)["product"] == "Router"


def test_subject_prefix_reject_and_hold(engine: Engine, store_url: str, tmp_path: Path) -> None:
    store = engine.store
    store.set_mailbox_intake("support@example.com", subject_prefix="[ORDER]")
    fresh(engine)
    # without the prefix: no case, a polite answer that says how
    assert deliver(engine, make(from_="Ann <ann@customer.test>", subject="where is my parcel")) == replies.OK
    assert Case.select().count() == 0
    answer = outgoing("refused")[-1]
    assert answer["To"] == "ann@customer.test" and answer["Auto-Submitted"] == "auto-replied"
    assert 'starts with "[ORDER]"' in text_of(answer)
    kept = Message.get(Message.direction == "in")
    assert kept.case_id is None and b"where is my parcel" in bytes(kept.raw)
    # a sender that asks for no automatic answers never gets one (loop-safe)
    quiet = make(from_="bob@customer.test", subject="no prefix", headers={"X-Auto-Response-Suppress": "All"})
    assert deliver(engine, quiet, qid="QID2") == replies.OK
    auto = make(from_="alerts@monitor.test", subject="disk full", headers={"Auto-Submitted": "auto-generated"})
    assert deliver(engine, auto, qid="QID2a") == replies.OK
    assert len(outgoing("refused")) == 1 and Case.select().count() == 0
    assert deliver(engine, make(from_="ann@customer.test", subject="[order] 42 is late"), qid="QID3") \
        == replies.stored("CS0000001")
    assert Case.select().count() == 1

    # reject unknown senders: Ann is known now (her case), Zed is not
    store.set_mailbox_intake("support@example.com", subject_prefix="", unknown_policy="reject")
    fresh(engine)
    assert deliver(engine, make(from_="zed@new.test", subject="hi"), qid="QID4") == replies.OK
    assert Case.select().count() == 1 and "could not" in text_of(outgoing("refused")[-1])
    assert deliver(engine, make(from_="ann@customer.test", subject="another thing"), qid="QID5") == replies.stored("CS0000002")
    assert Case.select().count() == 2

    # hold: the case waits, the CSR is told, #accept acknowledges, #reject refuses
    store.set_mailbox_intake("support@example.com", unknown_policy="hold")
    fresh(engine)
    assert deliver(engine, make(from_="yan@new.test", subject="held one"), qid="QID6") == replies.stored("CS0000003")
    assert deliver(engine, make(from_="xi@new.test", subject="held two"), qid="QID7") == replies.stored("CS0000004")
    held = list(Case.select().where(Case.status == "held").order_by(Case.id))
    assert [c.customer_address for c in held] == ["yan@new.test", "xi@new.test"]
    assert "#accept opens it" in text_of(outgoing("notify")[-1])
    acks = len(outgoing("ack"))
    close = engine.command(held[0].number, actor="jane@example.com", commands=[_given("close")])
    assert not close.ok and "#accept opens it" in close.errors[0]
    accepted = engine.command(held[0].number, actor="jane@example.com", commands=[_given("accept")])
    assert accepted.ok and Case.get_by_id(held[0].id).status == "received"
    assert len(outgoing("ack")) == acks + 1 and outgoing("ack")[-1]["To"] == "yan@new.test"
    again = engine.command(held[0].number, actor="jane@example.com", commands=[_given("accept")])
    assert not again.ok and "not held" in again.errors[0]
    rejected = engine.command(held[1].number, actor="jane@example.com", commands=[_given("reject")],
                              text="spam")
    assert rejected.ok and Case.get_by_id(held[1].id).status == "closed"
    assert outgoing("refused")[-1]["To"] == "xi@new.test"
    assert not outgoing("survey")

    # the same from the shell (last: the CLI's connection stays open in this process)
    assert deliver(engine, make(from_="wu@new.test", subject="held three"), qid="QID8") == replies.stored("CS0000005")
    third = Case.select().order_by(Case.id.desc()).get()
    runner, base = CliRunner(), cli_base(store_url, tmp_path)
    done = runner.invoke(cli.main, [*base, "case", "accept", third.number, "--csr", "jane@example.com",
                                    "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["status"] == "received" and json.loads(done.output)["sent"] == ["ack"]
    refused = runner.invoke(cli.main, [*base, "case", "refuse", third.number])
    assert refused.exit_code == 1 and "#reject needs an argument" in refused.output


def _given(name: str, arg: str = ""):
    from rules.commands import Given

    return Given(name, arg)


def test_new_by_a_csr_gets_the_product_of_a_keyword(engine: Engine) -> None:
    """#new (a proactive case) gets its product like a customer's case: a
    keyword in the subject; without one, none."""
    engine.store.add_product("Router", keywords=["RT-100"])
    for subject, product in (("Your rt-100 replacement", "Router"), ("A note from us", "")):
        raw = make(from_="Jane Doe <jane@example.com>", subject=subject,
                   body="#new Mary Major <mary@customer.test>\nHello Mary, a word from us.\n")
        reply = deliver(engine, raw, client="127.0.0.1", qid=f"NEW{len(product)}")
        case = Case.select().order_by(Case.id.desc()).get()
        assert reply == replies.stored(case.number)
        assert (case.customer_address, case.product) == ("mary@customer.test", product)
        [mail] = [m for m in outgoing("reply") if "mary@customer.test" in m["To"]
                  and case.number in m["Subject"]]
        assert "Hello Mary, a word from us." in text_of(mail)
