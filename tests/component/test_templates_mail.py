"""The mail casegate writes, through the engine on real stores (a SQLite
file and PostgreSQL): multipart/alternative, pools' language, greeting,
acknowledgement and text-only settings, overrides per pool and mailbox with
the seed's tags, a broken override falling back, the CSR's own HTML with its
inline pictures, and the CSR's footer with its picture."""

from __future__ import annotations

import logging
from email.message import EmailMessage
from pathlib import Path

import pytest

from casestore.models import Case, Event, Message
from casestore.store import Store
from rules import replies
from rules.classify import parse_networks
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.sanitize import footer_cid
from smtpd_hook.settings import Settings
from tests.support.clock import Clock
from tests.support.htmlmail import PNG, QUOTED_MARKER, outlook_answer
from tests.support.mail import make, parse, text_of

SECRET = b"t" * 32
SUPPORT, BILLING, VIP = "support@example.com", "billing@example.com", "vip@example.com"
JANE = "jane@example.com"
_qid = iter(range(1, 10**6))


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    root.mkdir()
    return root


@pytest.fixture
def engine(store_url: str, templates: Path) -> Engine:
    store = Store(store_url, clock=Clock())
    store.migrate()
    store.add_mailbox(SUPPORT, "default", "Example Support")
    store.add_mailbox(BILLING, "billing", "Example Billing")
    store.add_mailbox(VIP, "default", "Example VIP")
    store.add_csr(JANE, "Jane Doe", ["default", "billing"], "Jane Doe\nSupport Team")
    settings = Settings(secret=SECRET, trusted_networks=parse_networks(["127.0.0.1/32"]),
                        templates_dir=templates)
    yield Engine(store, settings)
    store.close()


def deliver(engine: Engine, raw: bytes, *, rcpt: str = SUPPORT, client: str = "127.0.0.2",
            mail_from: str = "john@customer.test") -> replies.Reply:
    return engine.process(Delivery(mail_from=mail_from, rcpt_tos=(rcpt,), data=raw,
                                   client_addr=client, queue_id=f"T{next(_qid)}"))


def out(kind: str, to: str | None = None) -> list[EmailMessage]:
    q = Message.select().where((Message.direction == "out") & (Message.kind == kind)).order_by(Message.id)
    return [parse(bytes(m.raw)) for m in q if to is None or m.recipients == to]


def open_case(engine: Engine, rcpt: str = SUPPORT, subject: str = "test_templates printer",
              files=()) -> Case:
    reply = deliver(engine, make(from_="John Smith <john@customer.test>", to=rcpt, subject=subject,
                                 files=files), rcpt=rcpt)
    case = Case.select().order_by(Case.id.desc()).get()
    assert reply == replies.stored(case.number)
    return case


def html_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("html",))
    assert part is not None, msg.get_content_type()
    return str(part.get_content())


def write(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def test_every_mail_is_text_and_html(engine: Engine) -> None:
    case = open_case(engine)
    [ack] = out("ack")
    assert ack.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in ack.iter_parts()] == ["text/plain", "text/html"]
    assert text_of(ack).startswith("Hello John,\n\nThank you for contacting Example Support.")
    assert f"<b>{case.number}</b>" in html_of(ack) and "<p>Hello John,</p>" in html_of(ack)
    [notify] = out("notify")
    assert notify.get_content_type() == "multipart/alternative"
    assert "test_templates printer" in html_of(notify) and "<table" in html_of(notify)


def test_pool_text_only_language_greeting_and_no_ack(engine: Engine) -> None:
    engine.store.set_pool("billing", text_only=True, language="pl", greeting="Szanowni Państwo,")
    open_case(engine, rcpt=BILLING)
    [ack] = out("ack")
    assert ack.get_content_type() == "text/plain"
    assert text_of(ack).startswith("Szanowni Państwo,\n\ndziękujemy za kontakt z Example Billing.")
    engine.store.set_pool("billing", acknowledge=False, text_only=False, greeting="")
    case = open_case(engine, rcpt=BILLING, subject="test_templates second")
    assert len(out("ack")) == 1  # none for the second case
    assert any(e.kind == "no_ack" and "acknowledgements off" in e.detail
               for e in Event.select().where(Event.case == case))
    assert len(out("notify")) == 2  # the CSR still hears of it


def test_overrides_per_pool_and_mailbox_with_seed_tags(engine: Engine, templates: Path) -> None:
    write(templates, "customer/ack.txt.j2", "global {{ case.number }}\n")
    write(templates, "billing/customer/ack.txt.j2",
          "billing {{ threadcount }} {{ threadlast.text | trim }} "
          "{% for f in filelist %}{{ f.filename }}:{{ f.size }}{% endfor %}\n")
    write(templates, "billing/customer/ack.html.j2", "<p>billing {{ customer.first_name }}</p>\n")
    write(templates, f"{VIP}/customer/ack.txt.j2", "vip {{ mailbox.display_name }} {{ pool.name }}\n")
    open_case(engine, rcpt=SUPPORT)
    open_case(engine, rcpt=BILLING, files=[("bill.pdf", "application/pdf", b"%PDF-1.4 x")])
    open_case(engine, rcpt=VIP)
    acks = out("ack")
    assert [text_of(m).strip() for m in acks] == [
        f"global {Case.get(Case.mailbox == 1).number}",
        "billing 1 Hello, my printer is on fire. bill.pdf:10",
        "vip Example VIP default"]
    assert html_of(acks[1]).strip() == "<p>billing John</p>"


def test_broken_override_falls_back_and_mail_flows(engine: Engine, templates: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    write(templates, "customer/ack.txt.j2", "{{ case.numbr }}\n")
    write(templates, "csr/notify.html.j2", "{% if %}\n")
    with caplog.at_level(logging.ERROR, logger="casegate.render"):
        case = open_case(engine)
    [ack] = out("ack")
    assert text_of(ack).startswith("Hello John,\n\nThank you") and case.number in text_of(ack)
    assert "<table" in html_of(out("notify")[0])
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "customer/ack.txt.j2:1" in logged and "csr/notify.html.j2:1" in logged


def _csr_answer(engine: Engine, case: Case, answer_html: str, images=()) -> replies.Reply:
    note = Message.select().where((Message.kind == "notify") & (Message.case == case)).get()
    raw = outlook_answer(from_=JANE, to=f"support+{case.number}@example.com",
                         subject=f"RE: [Case #{case.number}] {case.subject}",
                         answer_html=answer_html, images=images, in_reply_to=note.message_id)
    return deliver(engine, raw, client="127.0.0.1", rcpt=f"support+{case.number}@example.com",
                   mail_from=JANE)


def test_outlook_html_answer_keeps_formatting_and_inline_picture(engine: Engine) -> None:
    case = open_case(engine)
    assert _csr_answer(engine, case, (
        '<p class="MsoNormal"><b>Switch it off</b> first.</p>'
        '<table border="1"><tr><td>cell</td></tr></table>'
        '<p><img src="cid:image001.png@01DB" width="1"><img src="https://t.example/p.gif"></p>'
        '<script>alert(1)</script>'), images=[("image001.png@01DB", PNG)]) == replies.stored("CS0000001")
    [reply] = out("reply")
    assert reply.get_content_type() == "multipart/alternative"
    text = text_of(reply)
    assert text.startswith("Hello John,\n\nSwitch it off first.") and QUOTED_MARKER not in text
    html = html_of(reply)
    assert "<b>Switch it off</b> first." in html and "<td>cell</td>" in html
    assert "<p>Hello John,</p>" in html and "Jane Doe<br>" in html
    for gone in (QUOTED_MARKER, "script", "t.example", "Please type", "MsoNormal"):
        assert gone not in html, gone
    related = reply.get_body(preferencelist=("related",))
    assert related is not None and related.get_content_type() == "multipart/related"
    [image] = [p for p in related.iter_parts() if p.get_content_maintype() == "image"]
    assert image["Content-ID"] == "<image001.png@01DB>" and image.get_content() == PNG
    assert 'src="cid:image001.png@01DB"' in html
    assert list(reply.iter_attachments()) == []  # inline, not attached a second time


def test_footer_with_picture_in_both_parts(engine: Engine) -> None:
    engine.store.set_csr(JANE, footer_html='<p><b>Example Ltd</b> <img src="cid:footer"></p>',
                         footer_image=PNG, footer_image_type="image/png",
                         footer_image_name="logo.png")
    case = open_case(engine)
    deliver(engine, make(from_=JANE, to=f"support+{case.number}@example.com",
                         subject=f"Re: [Case #{case.number}] {case.subject}", body="Plain answer.\n"),
            client="127.0.0.1", rcpt=f"support+{case.number}@example.com", mail_from=JANE)
    [reply] = out("reply")
    assert "Plain answer.\n\nJane Doe\nSupport Team\nExample Support\n\nExample Ltd" in text_of(reply)
    html = html_of(reply)
    cid = footer_cid(PNG)
    assert f'<b>Example Ltd</b> <img src="cid:{cid}">' in html
    related = reply.get_body(preferencelist=("related",))
    assert related is not None
    [image] = [p for p in related.iter_parts() if p.get_content_maintype() == "image"]
    assert image["Content-ID"] == f"<{cid}>" and image.get_content() == PNG
    assert image.get_content_disposition() == "inline"
