"""Intake end to end (issue 10, sections 4-6): a real Postfix (built from
contrib/postfix/), the real ``casegate serve``, the real CLI, and a sink that
captures everything that leaves. Customers write from 127.0.0.2; CSRs from
127.0.0.1 (the trusted network)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from email.message import EmailMessage

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

SUPPORT, ORDERS, JANE = "support@example.com", "orders@example.com", "jane@example.com"
EVERY_BYTE = bytes(range(256)) * 16


class Env:
    def __init__(self, postfix: PostfixInstance, sink: Sink, casegate: Casegate) -> None:
        self.postfix, self.sink, self.casegate = postfix, sink, casegate

    def wait(self, to: str, needle: str, count: int = 1) -> list[Delivery]:
        return self.sink.wait_for(lambda d: to in d.rcpt_tos and needle in str(d.message["Subject"]),
                                  timeout=20, count=count)

    def open(self, raw: bytes, customer: str, subject: str) -> tuple[str, Delivery]:
        self.postfix.send(customer, [SUPPORT], raw, source="127.0.0.2")
        ack = self.wait(customer, subject)[0]
        number = str(ack.message["Subject"]).split("#", 1)[1].split("]", 1)[0]
        self.wait(JANE, subject)
        return number, ack


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    root = _new_root()
    sink = Sink().start()
    filter_port, reinject_port = free_ports(2)
    pf = PostfixInstance(root=root / "pf", sink_port=sink.port, filter_port=filter_port,
                         reinject_port=reinject_port, supervised=[SUPPORT, ORDERS])
    cg = Casegate(root / "cg")
    try:
        cg.run("init")
        cg.run("mailbox", "add", SUPPORT, "--pool", "default", "--name", "Example Support")
        cg.run("csr", "add", JANE, "--name", "Jane Doe", "--pool", "default")
        cg.run("product", "add", "Router", "--keyword", "RT-100")
        cg.run("mailbox", "add", ORDERS, "--pool", "default", "--name", "Example Orders")
        cg.run("mailbox", "set", ORDERS, "--subject-prefix", "[ORDER]", "--unknown", "hold")
        pf.start()
        cg.start(listen_port=filter_port, reinject_port=reinject_port)
        yield Env(pf, sink, cg)
    finally:
        cg.close()
        pf.stop()
        sink.stop()
        _remove(root)


def test_a_cc_on_the_second_message_gets_the_csrs_next_answer(env: Env) -> None:
    subject = "test_sys_cc printer"
    number, ack = env.open(make(from_="Ann <ann@customer.test>", subject=subject), "ann@customer.test",
                           subject)
    second = make(from_="Ann <ann@customer.test>", to=f"support+{number}@example.com",
                  subject=f"Re: {ack.message['Subject']}", body="My colleague Carol joins.\n",
                  headers={"Cc": "Carol <carol@customer.test>"}, in_reply_to=ack.message["Message-ID"],
                  references=[ack.message["Message-ID"]])
    env.postfix.send("ann@customer.test", [f"support+{number}@example.com"], second, source="127.0.0.2")
    note = env.wait(JANE, subject, count=2)[-1]
    assert "carol@customer.test" in text_of(note.message)
    answer = make(from_=JANE, to=f"support+{number}@example.com", subject=f"Re: [Case #{number}] x",
                  body="A technician comes on Monday.\n")
    env.postfix.send(JANE, [f"support+{number}@example.com"], answer, source="127.0.0.1")
    carol = env.sink.wait_for(lambda d: "carol@customer.test" in d.rcpt_tos, timeout=20)[0]
    assert "ann@customer.test" in carol.rcpt_tos  # one message to both
    assert carol.message["To"] == "ann@customer.test" and carol.message["Cc"] == "carol@customer.test"
    assert "A technician comes on Monday." in text_of(carol.message)


def test_a_case_opened_by_a_product_keyword(env: Env) -> None:
    subject = "test_sys_product my rt-100 blinks red"
    number, _ = env.open(make(from_="bo@customer.test", subject=subject), "bo@customer.test", subject)
    assert env.casegate.json("case", "show", number)["product"] == "Router"
    assert "Product: Router" in text_of(env.wait(JANE, subject)[0].message)
    assert "product: Router" in env.casegate.run("case", "show", number).stdout


def test_a_binary_attachment_round_trips_byte_for_byte(env: Env, tmp_path) -> None:
    subject = "test_sys_binary"
    raw = make(from_="cy@customer.test", subject=subject,
               files=[("dump.bin", "application/octet-stream", EVERY_BYTE)])
    number, _ = env.open(raw, "cy@customer.test", subject)
    files = env.casegate.json("case", "show", number)["files"]
    assert [(f["name"], f["type"], f["size"], f["inline"]) for f in files] == [
        ("dump.bin", "application/octet-stream", len(EVERY_BYTE), False)]
    out = tmp_path / "dump.bin"
    env.casegate.run("case", "file", str(files[0]["id"]), "--output", str(out))
    assert out.read_bytes() == EVERY_BYTE


def test_an_inline_cid_only_image_is_captured_and_listed(env: Env) -> None:
    subject = "test_sys_cid screenshot"
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "di@customer.test", SUPPORT, subject
    msg.set_content("See the screenshot.\n")
    msg.add_alternative('<p>See <img src="cid:shot@customer.test"></p>', subtype="html")
    msg.get_payload()[1].add_related(b"\x89PNG\r\n\x1a\n" + EVERY_BYTE[:100], maintype="image",
                                     subtype="png", cid="<shot@customer.test>")
    number, _ = env.open(msg.as_bytes(), "di@customer.test", subject)
    files = env.casegate.json("case", "show", number)["files"]
    assert [(f["name"], f["type"], f["inline"], f["content_id"]) for f in files] == [
        ("shot.png", "image/png", True, "shot@customer.test")]
    assert "shot.png (image/png, 108 bytes, inline)" in env.casegate.run("case", "show", number).stdout


def test_mail_to_a_non_ascii_local_part_goes_with_smtputf8(env: Env) -> None:
    customer = "josé.núñez@customer.test"
    subject = "test_sys_smtputf8"
    raw = make(from_="Jose <jose@customer.test>", subject=subject).replace(
        b"From: Jose <jose@customer.test>", f"From: José <{customer}>".encode())
    with smtplib.SMTP("127.0.0.1", env.postfix.smtpd_port, local_hostname="client.test",
                      source_address=("127.0.0.2", 0)) as smtp:
        smtp.sendmail(customer, [SUPPORT], raw, mail_options=["SMTPUTF8"])
    ack = env.wait(customer, subject)[0]
    assert ack.rcpt_tos == (customer,)
    # (Postfix takes a non-ASCII RCPT TO only with SMTPUTF8: the outbox gave it.)
    assert ack.message["To"] == customer and f"To: {customer}".encode() in ack.raw


def test_orders_needs_its_prefix_and_holds_a_new_sender_for_accept(env: Env) -> None:
    customer = "eli@customer.test"
    env.postfix.send(customer, [ORDERS], make(from_=customer, to=ORDERS, subject="test_sys_hold parcel"),
                     source="127.0.0.2")
    refused = env.wait(customer, "test_sys_hold parcel")[0]
    assert refused.message["Auto-Submitted"] == "auto-replied"
    assert 'starts with "[ORDER]"' in text_of(refused.message)
    subject = "[ORDER] test_sys_hold 42"
    env.postfix.send(customer, [ORDERS], make(from_=customer, to=ORDERS, subject=subject),
                     source="127.0.0.2")
    note = env.wait(JANE, "test_sys_hold 42")[0]
    assert "#accept opens it" in text_of(note.message)
    number = str(note.message["Subject"]).split("#", 1)[1].split("]", 1)[0]
    assert env.casegate.json("case", "show", number)["status"] == "held"
    assert not [d for d in env.sink.messages(to=customer) if "test_sys_hold 42" in str(d.message["Subject"])]
    accept = make(from_=JANE, to=f"orders+{number}@example.com", subject=f"Re: {note.message['Subject']}",
                  body="#accept\n")
    env.postfix.send(JANE, [f"orders+{number}@example.com"], accept, source="127.0.0.1")
    ack = env.wait(customer, "test_sys_hold 42")[0]
    assert f"[Case #{number}]" in str(ack.message["Subject"])
    assert env.casegate.json("case", "show", number)["status"] == "received"
