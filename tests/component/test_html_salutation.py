"""A CSR's HTML answer with and without their own greeting and sign-off,
through the engine on real stores (a SQLite file and PostgreSQL): the
customer's text part and HTML part each show exactly one greeting and one
sign-off, in the same order (issue 10, "never both")."""

from __future__ import annotations

import re
from email.message import EmailMessage

import pytest

from casestore.models import Case, Message
from casestore.store import Store
from rules import replies
from rules.classify import parse_networks
from rules.quotes import html_to_text
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.settings import Settings
from tests.support.clock import Clock
from tests.support.htmlmail import QUOTED_MARKER, outlook_answer
from tests.support.mail import make, parse, text_of

SECRET = b"h" * 32
SUPPORT = "support@example.com"
JANE = "jane@example.com"
_qid = iter(range(1, 10**6))


@pytest.fixture
def engine(store_url: str) -> Engine:
    store = Store(store_url, clock=Clock())
    store.migrate()
    store.add_mailbox(SUPPORT, "default", "Example Support")
    store.add_csr(JANE, "Jane Doe", ["default"], "Jane Doe\nSupport Team")
    yield Engine(store, Settings(secret=SECRET, trusted_networks=parse_networks(["127.0.0.1/32"])))
    store.close()


def deliver(engine: Engine, raw: bytes, *, rcpt: str, client: str, mail_from: str) -> replies.Reply:
    return engine.process(Delivery(mail_from=mail_from, rcpt_tos=(rcpt,), data=raw,
                                   client_addr=client, queue_id=f"H{next(_qid)}"))


def open_case(engine: Engine) -> Case:
    raw = make(from_="John Smith <john@customer.test>", subject="test_html_salutation printer")
    case_reply = deliver(engine, raw, rcpt=SUPPORT, client="127.0.0.2", mail_from="john@customer.test")
    case = Case.select().order_by(Case.id.desc()).get()
    assert case_reply == replies.stored(case.number)
    return case


# What the CSR typed, as lines: (greeting or None, body, sign-off lines or None)
GREETINGS = {"en": "Hi John,", "pl": "Dzień dobry Panie Janie,"}
SIGNOFFS = {"en": ["Best regards,", "Jane"], "pl": ["Pozdrawiam,", "Jane"]}
OURS = {"en": "Hello John,", "pl": "Dzień dobry John,"}
QUESTION = {"en": "Does this solve your problem?", "pl": "Czy to rozwiązuje problem?"}
HISTORY = {"en": "Case CS", "pl": "Sprawa CS"}


def answer_html(style: str, command: str, greeting: str | None, signoff: list[str] | None) -> str:
    lines = [*([command] if command else []), *([greeting] if greeting else []),
             "<b>Switch it off</b> first.", *(signoff or [])]
    if style == "outlook":
        paras = [f'<p class="MsoNormal">{line}</p><p class="MsoNormal">&nbsp;</p>' for line in lines]
        if signoff:  # Outlook: one paragraph, a line break
            paras[-len(signoff):] = ['<p class="MsoNormal">' + "<br>".join(signoff) + "</p>"]
        return "".join(paras)
    return '<div dir="ltr">' + "".join(f"<div>{line}</div><div><br></div>" for line in lines) + "</div>"


def answer(engine: Engine, case: Case, style: str, command: str, greeting: str | None,
           signoff: list[str] | None) -> EmailMessage:
    plus = f"support+{case.number}@example.com"
    note = Message.select().where((Message.kind == "notify") & (Message.case == case)).get()
    html = answer_html(style, command, greeting, signoff)
    if style == "outlook":  # HTML only, quoted history under a header block
        raw = outlook_answer(from_=JANE, to=plus, subject=f"RE: [Case #{case.number}] {case.subject}",
                             answer_html=html, in_reply_to=note.message_id)
    else:  # Gmail: multipart/alternative, the text part says the same
        text = "\n\n".join([*([command] if command else []), *([greeting] if greeting else []),
                            "Switch it off first.", *(["\n".join(signoff)] if signoff else [])])
        raw = make(from_=f"Jane Doe <{JANE}>", to=plus, subject=f"Re: [Case #{case.number}] {case.subject}",
                   body=text + "\n", html=html + "\n", in_reply_to=note.message_id)
    assert deliver(engine, raw, rcpt=plus, client="127.0.0.1", mail_from=JANE) == replies.stored(case.number)
    kind = "solution" if command == "#solution" else "reply"
    [mail] = [parse(bytes(m.raw)) for m in Message.select().where(
        (Message.direction == "out") & (Message.kind == kind)).order_by(Message.id)]
    return mail


def visible(text: str, language: str) -> list[str]:
    """The lines a customer reads above the case history, blank lines gone."""
    text = text.split("---- " + HISTORY[language])[0].split(HISTORY[language])[0]
    return [re.sub(r"\s+", " ", line).strip() for line in text.splitlines() if line.strip()]


VARIANTS = {  # name: (own greeting, own sign-off)
    "none": (False, False), "greeting": (True, False), "signoff": (False, True), "both": (True, True)}


@pytest.mark.parametrize(("style", "language"), [("outlook", "en"), ("gmail", "en"), ("gmail", "pl")])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("command", ["", "#solution"])
def test_html_answer_one_greeting_one_signoff(engine: Engine, language: str, style: str, variant: str,
                                             command: str) -> None:
    if language == "pl":
        engine.store.set_pool("default", language="pl")
    own_greeting, own_signoff = VARIANTS[variant]
    greeting = GREETINGS[language] if own_greeting else None
    signoff = SIGNOFFS[language] if own_signoff else None
    case = open_case(engine)
    mail = answer(engine, case, style, command, greeting, signoff)
    assert mail.get_content_type() == "multipart/alternative"
    text = text_of(mail)
    html_part = mail.get_body(preferencelist=("html",))
    assert html_part is not None
    html = str(html_part.get_content())
    for gone in (QUOTED_MARKER, "#solution", "MsoNormal"):
        assert gone not in text and gone not in html, gone
    assert "<b>Switch it off</b> first." in html

    # Exactly one greeting, first; one sign-off: theirs (or ours) and then
    # the lines of ours they did not write. The same in both parts.
    ours_after = ["Support Team", "Example Support"]
    expected = [greeting or OURS[language], "Switch it off first."]
    closing = [*signoff, *ours_after] if signoff else ["Jane Doe", *ours_after]
    if command != "#solution":
        expected += closing
    for part, lines in (("text", visible(text, language)), ("html", visible(html_to_text(html), language))):
        if command == "#solution":
            # The question sits between the answer and our sign-off; a CSR's
            # own sign-off stays under their words, with ours joined to it.
            question = next(i for i, line in enumerate(lines) if line.startswith(QUESTION[language]))
            block = closing if signoff else []
            assert lines[: len(expected) + len(block)] == expected + block, (part, lines)
            if not signoff:
                assert lines[-len(closing):] == closing, (part, lines)
            assert question >= len(expected) + len(block), (part, lines)
        else:
            assert lines == expected, (part, lines)
        joined = "\n".join(lines)
        assert joined.count("Hello John") + joined.count("Hi John") + joined.count("Dzień dobry") == 1, \
            (part, lines)
        assert joined.count("Jane") == 1 and joined.count("Support Team") == 1, (part, lines)
        assert joined.count("Best regards") + joined.count("Pozdrawiam") == (1 if signoff else 0), \
            (part, lines)
