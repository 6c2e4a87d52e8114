"""What customers receive, end to end: a real Postfix (contrib/postfix/),
the real ``casegate serve`` and CLI, and a sink that captures what leaves.

- An HTML-only Outlook answer from a CSR reaches the customer as
  multipart/alternative with its bold text, a table and its inline picture
  (the same bytes, referenced by cid) and without the quoted history.
- A CSR's footer picture (``csr set --footer-image``) arrives inline.
- A pool in Polish with an override for its mailbox from ``templates_dir``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove, postfix_available
from tests.support.htmlmail import PNG, QUOTED_MARKER, outlook_answer
from tests.support.mail import make, text_of
from tests.support.postfix import PostfixInstance, free_ports
from tests.support.sink import Delivery, Sink

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available())),
]

SUPPORT, FOOTER, POLSKI = "support@example.com", "footer@example.com", "polski@example.com"
JANE, BOB = "jane@example.com", "bob@example.com"
LOGO = PNG + b"footer-logo"  # distinct bytes from the answer's picture


@dataclass
class Env:
    postfix: PostfixInstance
    sink: Sink
    casegate: Casegate

    def wait(self, to: str, pred=lambda d: True, count: int = 1, timeout: float = 30) -> list[Delivery]:
        return self.sink.wait_for(lambda d: to in d.rcpt_tos and pred(d), timeout=timeout, count=count)

    def open(self, customer: str, subject: str, mailbox: str, csr: str) -> tuple[str, Delivery, Delivery]:
        self.postfix.send(customer, [mailbox], make(from_=f"John Smith <{customer}>", to=mailbox,
                                                     subject=subject), source="127.0.0.2")
        note = self.wait(csr, lambda d: subject in str(d.message["Subject"]))[0]
        number = str(note.message["Subject"]).split("#", 1)[1].split("]", 1)[0]
        ack = [d for d in self.sink.messages(to=customer) if subject in str(d.message["Subject"])]
        return number, (ack[0] if ack else None), note


def html_of(message) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None, message.get_content_type()
    return str(part.get_content())


def images_of(message) -> list:
    related = message.get_body(preferencelist=("related",))
    assert related is not None and related.get_content_type() == "multipart/related"
    return [p for p in related.iter_parts() if p.get_content_maintype() == "image"]


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    root = _new_root()
    sink = Sink().start()
    filter_port, reinject_port = free_ports(2)
    pf = PostfixInstance(root=root / "pf", sink_port=sink.port, filter_port=filter_port,
                         reinject_port=reinject_port, supervised=[SUPPORT, FOOTER, POLSKI])
    cg = Casegate(root / "cg")
    try:
        cg.run("init")
        templates = root / "templates"
        (templates / POLSKI / "customer").mkdir(parents=True)
        (templates / POLSKI / "customer" / "ack.txt.j2").write_text(
            "{{ greeting }}\n\nSprawa {{ case.number }}: wiadomości {{ threadcount }}.\n")
        cg.config.write_text(f'templates_dir = "{templates}"\n' + cg.config.read_text())
        cg.run("mailbox", "add", SUPPORT, "--pool", "default", "--name", "Example Support")
        cg.run("mailbox", "add", FOOTER, "--pool", "footer", "--name", "Example Footer")
        cg.run("mailbox", "add", POLSKI, "--pool", "polski", "--name", "Przykład")
        cg.run("csr", "add", JANE, "--name", "Jane Doe", "--signature", "Jane Doe\\nExample Support",
               "--pool", "default", "--pool", "polski")
        cg.run("csr", "add", BOB, "--name", "Bob Roe", "--pool", "footer")
        (root / "footer.html").write_text('<p><b>Example Ltd</b><br><img src="cid:footer" alt="logo"></p>')
        (root / "logo.png").write_bytes(LOGO)
        cg.run("csr", "set", BOB, "--footer-file", str(root / "footer.html"),
               "--footer-image", str(root / "logo.png"))
        cg.run("pool", "set", "polski", "--language", "pl")
        assert cg.run("template", "check").returncode == 0
        pf.start()
        cg.start(listen_port=filter_port, reinject_port=reinject_port, extra=["--tick", "1s"])
        yield Env(pf, sink, cg)
    finally:
        cg.close()
        pf.stop()
        sink.stop()
        _remove(root)


def test_outlook_html_answer_arrives_with_formatting_and_inline_picture(env: Env) -> None:
    customer = "html@customer.test"
    number, ack, note = env.open(customer, "test_outlook_html_answer", SUPPORT, JANE)
    assert ack is not None and ack.message.get_content_type() == "multipart/alternative"
    plus = SUPPORT.replace("@", f"+{number}@")
    raw = outlook_answer(
        from_=JANE, to=plus, subject=f"RE: [Case #{number}] test_outlook_html_answer",
        in_reply_to=note.message["Message-ID"],
        answer_html=('<p class="MsoNormal"><b>Restart the router</b>, then:</p>'
                     '<ol><li>open the app</li><li>press <i>Sync</i></li></ol>'
                     '<table border="1"><tr><td>Model</td><td>X200</td></tr></table>'
                     '<p class="MsoNormal"><img width="1" height="1" src="cid:image001.png@01DB1234">'
                     '<img src="https://tracker.example/open.gif"></p>'),
        images=[("image001.png@01DB1234", PNG)])
    env.postfix.send(JANE, [plus], raw, source="127.0.0.1")
    reply = env.wait(customer, lambda d: "Restart the router" in text_of(d.message))[0].message
    assert reply.get_content_type() == "multipart/alternative"
    text = text_of(reply)
    assert text.startswith("Hello John,\n\nRestart the router, then:")
    html = html_of(reply)
    assert "<b>Restart the router</b>" in html and "<li>press <i>Sync</i></li>" in html
    assert "<td>X200</td>" in html and "<p>Hello John,</p>" in html
    for gone in (QUOTED_MARKER, "Please type your reply", "tracker.example", "MsoNormal", "<style"):
        assert gone not in text + html, gone
    [image] = images_of(reply)
    assert image["Content-ID"] == "<image001.png@01DB1234>" and image.get_content() == PNG
    assert 'src="cid:image001.png@01DB1234"' in html
    assert list(reply.iter_attachments()) == []


def test_footer_picture_arrives_inline(env: Env) -> None:
    customer = "footer@customer.test"
    number, _, _ = env.open(customer, "test_footer_picture", FOOTER, BOB)
    plus = FOOTER.replace("@", f"+{number}@")
    env.postfix.send(BOB, [plus], make(from_=BOB, to=plus, subject=f"Re: [Case #{number}] x",
                                       body="Your parcel left today.\n"), source="127.0.0.1")
    reply = env.wait(customer, lambda d: "Your parcel left today." in text_of(d.message))[0].message
    assert "Bob Roe\nExample Footer\n\nExample Ltd" in text_of(reply)
    html = html_of(reply)
    [image] = images_of(reply)
    assert image.get_content() == LOGO and image.get_content_disposition() == "inline"
    cid = image["Content-ID"].strip("<>")
    assert f'<b>Example Ltd</b><br><img src="cid:{cid}" alt="logo">' in html
    assert "src=\"http" not in html and "url(" not in html  # nothing to fetch on open


def test_polish_pool_with_mailbox_override(env: Env) -> None:
    customer = "anna@customer.test"
    env.postfix.send(customer, [POLSKI], make(from_=f"Anna Nowak <{customer}>", to=POLSKI,
                                               subject="test_polish_pool"), source="127.0.0.2")
    ack = env.wait(customer, lambda d: "test_polish_pool" in str(d.message["Subject"]))[0].message
    number = str(ack["Subject"]).split("#", 1)[1].split("]", 1)[0]
    assert text_of(ack) == f"Dzień dobry Anna,\n\nSprawa {number}: wiadomości 1.\n"
    # No HTML twin for the override: the HTML says the same words.
    assert f"Sprawa {number}: wiadomości 1." in html_of(ack)
    note = env.wait(JANE, lambda d: "test_polish_pool" in str(d.message["Subject"]))[0].message
    assert "Klient:" in text_of(note) and "Temat:" in text_of(note)
