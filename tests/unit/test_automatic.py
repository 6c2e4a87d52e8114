"""rules.automatic: bounces, auto-replies, bulk and feedback are never answered.

Three tables of hand-written cases (one row per rule, plus the human mail
each rule must leave alone), robustness against headers the email policy
cannot parse, and the real-world corpus beside the checkout
(``../shared/corpus``): every automatic message detected, every human reply
left alone. A few corpus files are copied into ``tests/data`` so that core
runs without ``../shared``.
"""

from __future__ import annotations

import collections
import email
import email.policy
import email.utils
import re
from dataclasses import FrozenInstanceError
from email.message import Message
from email.policy import EmailPolicy
from pathlib import Path
from typing import Any

import pytest

from rules import inbound, loop
from rules.automatic import (
    RULES,
    Verdict,
    detect_automatic,
    never_autoreply_to,
    suppresses_autoreply,
)

HERE = Path(__file__).resolve()
DATA = HERE.parents[1] / "data"
CORPUS = HERE.parents[2].parent / "shared" / "corpus"

HUMAN = (
    "From: Alice Customer <alice@example.com>\n"
    "To: support@example.net\n"
    "Message-ID: <human-1@example.com>\n"
    "Date: Mon, 01 Jan 2024 10:00:00 +0000\n"
    "MIME-Version: 1.0\n"
)


SECRET = b"k" * 32


def parse(raw: bytes, policy: Any = None) -> Message:
    """As the engine parses (``rules.inbound.parse``), or with another policy."""
    if policy is None:
        return inbound.parse(raw).msg
    return email.message_from_bytes(raw, policy=policy)


def detect(msg: Message, envelope: str | None) -> Verdict | None:
    """What the engine calls (``rules.loop.detect``); it must agree with
    ``detect_automatic``, which it delegates to, on mail that is not ours."""
    verdict = loop.detect(msg, envelope, secret=SECRET, prefix="CS")
    assert verdict == detect_automatic(msg, envelope)
    return verdict


def make(headers: str, body: str = "Hello\n", subject: str = "Help with my order") -> Message:
    """A message from ``headers`` (one per line); From/To/Subject default to a human's."""
    lines = headers.strip("\n").split("\n") if headers.strip() else []
    names = {line.split(":", 1)[0].strip().lower() for line in lines if ":" in line}
    base = [
        line for line in HUMAN.strip("\n").split("\n") if line.split(":", 1)[0].lower() not in names
    ]
    if "subject" not in names:
        base.append(f"Subject: {subject}")
    if "content-type" not in names:
        base.append("Content-Type: text/plain; charset=utf-8")
    text = "\n".join(base + lines) + "\n\n" + body
    return parse(text.encode("utf-8"))


def with_part(content_type: str, subject: str, extra: str = "") -> Message:
    """A multipart/mixed message whose second part is ``content_type``."""
    body = (
        "--b\nContent-Type: text/plain\n\nSee below.\n"
        f"--b\nContent-Type: {content_type}\n\n"
        "From: someone@example.org\nSubject: original\n\noriginal body\n"
        "--b--\n"
    )
    headers = f'Content-Type: multipart/mixed; boundary="b"\n{extra}'
    return make(headers, body=body, subject=subject)


def report(report_type: str | None) -> Message:
    param = f"; report-type={report_type}" if report_type else ""
    body = (
        "--r\nContent-Type: text/plain\n\nA report.\n"
        "--r\nContent-Type: text/plain\n\nfields\n"
        "--r--\n"
    )
    return make(
        f'Content-Type: multipart/report{param}; boundary="r"',
        body=body,
        subject="A report",
    )


def return_path_sender(msg: Message) -> str | None:
    """The corpus convention: the envelope sender is Return-Path, if any."""
    values = msg.get_all("Return-Path")
    if not values:
        return None
    value = str(values[0]).strip()
    match = re.match(r"<([^>]*)>", value)
    return match.group(1).strip() if match else value


def from_sender(msg: Message) -> str | None:
    return email.utils.parseaddr(str(msg.get("From", "")))[1] or None


# --------------------------------------------------------------------------
# The rules, one row each (and the human mail next to them)


def test_rules_are_walked_in_the_documented_order() -> None:
    assert [name for name, _ in RULES] == [
        "null_sender",
        "multipart_report",
        "mailer_daemon",
        "auto_submitted",
        "precedence",
        "list_headers",
        "autoreply_headers",
        "x_loop",
        "exchange_generated",
        "autoreply_subject",
        "dsn_shape",
        "feedback_shape",
        "noreply_sender",
    ]


AUTOMATIC: list[Any] = [
    # a. null sender, reports, MAILER-DAEMON
    pytest.param(make(""), "", "null_sender", "bounce", id="null-envelope-sender"),
    pytest.param(make("Return-Path: <>"), None, "null_sender", "bounce", id="return-path-null"),
    pytest.param(
        make("Auto-Submitted: auto-replied", subject="Back on Monday"),
        "",
        "null_sender",
        "autoreply",
        id="null-sender-rfc3834-vacation-is-autoreply",
    ),
    pytest.param(
        make("X-Autoreply: yes", subject="Back on Monday"),
        "",
        "null_sender",
        "autoreply",
        id="null-sender-x-autoreply-is-autoreply",
    ),
    pytest.param(
        make("Auto-Submitted: auto-replied\nX-Failed-Recipients: bob@example.org"),
        "",
        "null_sender",
        "bounce",
        id="null-sender-exim-bounce-stays-bounce",
    ),
    pytest.param(report("feedback-report"), "", "null_sender", "feedback", id="null-sender-arf"),
    pytest.param(report("delivery-status"), None, "multipart_report", "bounce", id="report-dsn"),
    pytest.param(
        report("global-delivery-status"), None, "multipart_report", "bounce", id="report-dsn-i18n"
    ),
    pytest.param(report("feedback-report"), None, "multipart_report", "feedback", id="report-arf"),
    pytest.param(
        report("disposition-notification"), None, "multipart_report", "autoreply", id="report-mdn"
    ),
    pytest.param(report('"Delivery-Status"'), None, "multipart_report", "bounce", id="report-case"),
    pytest.param(report(None), None, "multipart_report", "bounce", id="report-without-type"),
    pytest.param(
        make("From: MAILER-DAEMON@mx.example.org"), None, "mailer_daemon", "bounce", id="from-md"
    ),
    pytest.param(
        make("From: Mail Delivery System <Mailer-Daemon@mx.example.org>"),
        "bounce@example.org",
        "mailer_daemon",
        "bounce",
        id="from-md-mixed-case",
    ),
    pytest.param(
        make("From: Postmaster <POSTMASTER@example.org>"),
        None,
        "mailer_daemon",
        "bounce",
        id="from-postmaster",
    ),
    pytest.param(
        make("Sender: mailer-daemon@example.org"), None, "mailer_daemon", "bounce", id="sender-md"
    ),
    pytest.param(
        make("Return-Path: <MAILER-DAEMON>"), None, "mailer_daemon", "bounce", id="return-path-md"
    ),
    pytest.param(
        make(""), "MAILER-DAEMON@example.org", "mailer_daemon", "bounce", id="envelope-md"
    ),
    pytest.param(
        make("From: MAILER-DAEMON <>"), None, "mailer_daemon", "bounce", id="from-null-address"
    ),
    # b. RFC 3834 Auto-Submitted
    pytest.param(
        make("Auto-Submitted: auto-replied"), None, "auto_submitted", "autoreply", id="as-replied"
    ),
    pytest.param(
        make("Auto-Submitted: auto-generated"),
        None,
        "auto_submitted",
        "autoreply",
        id="as-generated",
    ),
    pytest.param(
        make("Auto-Submitted: auto-notified"), None, "auto_submitted", "autoreply", id="as-notified"
    ),
    pytest.param(
        make("Auto-Submitted: Auto-Replied (zimbra; vacation)"),
        None,
        "auto_submitted",
        "autoreply",
        id="as-zimbra-comment",
    ),
    pytest.param(
        make("Auto-Submitted: auto-replied; owner-email=bob@example.org"),
        None,
        "auto_submitted",
        "autoreply",
        id="as-parameters",
    ),
    pytest.param(
        make("Auto-Submitted: auto-generated", subject="Undelivered Mail Returned to Sender"),
        None,
        "auto_submitted",
        "bounce",
        id="as-on-a-bounce",
    ),
    pytest.param(
        make("Auto-Submitted: no\nAuto-Submitted: auto-generated"),
        None,
        "auto_submitted",
        "autoreply",
        id="as-second-value",
    ),
    # c. Precedence
    pytest.param(make("Precedence: bulk"), None, "precedence", "bulk", id="precedence-bulk"),
    pytest.param(make("Precedence: JUNK"), None, "precedence", "bulk", id="precedence-junk"),
    pytest.param(make("Precedence:list"), None, "precedence", "bulk", id="precedence-list"),
    pytest.param(
        make("Precedence: auto_reply"), None, "precedence", "autoreply", id="precedence-auto-reply"
    ),
    pytest.param(
        make("X-Precedence: auto_reply"), None, "precedence", "autoreply", id="x-precedence"
    ),
    # d. lists
    pytest.param(make("List-Id: <cats.example.org>"), None, "list_headers", "bulk", id="list-id"),
    pytest.param(
        make("List-Unsubscribe: <mailto:unsub@example.org>"),
        None,
        "list_headers",
        "bulk",
        id="list-unsubscribe",
    ),
    pytest.param(
        make("Mailing-List: contact cats-help@example.org; run by ezmlm"),
        None,
        "list_headers",
        "bulk",
        id="ezmlm",
    ),
    pytest.param(
        make("X-BeenThere: cats@example.org"), None, "list_headers", "bulk", id="mailman-2"
    ),
    # e. auto-responder and vendor headers
    pytest.param(
        make("X-Autoreply: yes"), None, "autoreply_headers", "autoreply", id="x-autoreply"
    ),
    pytest.param(
        make("X-Autorespond: Out of office"),
        None,
        "autoreply_headers",
        "autoreply",
        id="x-autorespond",
    ),
    pytest.param(
        make("X-Autoresponder: true"), None, "autoreply_headers", "autoreply", id="x-autoresponder"
    ),
    pytest.param(
        make("X-Auto-Reply: yes"), None, "autoreply_headers", "autoreply", id="x-auto-reply"
    ),
    pytest.param(
        make("X-AutoReply-From: bob@example.org"),
        None,
        "autoreply_headers",
        "autoreply",
        id="x-autoreply-from",
    ),
    pytest.param(
        make("X-Mail-Autoreply: bob@example.org"),
        None,
        "autoreply_headers",
        "autoreply",
        id="x-mail-autoreply",
    ),
    pytest.param(
        make("X-Autogenerated: Reply"), None, "autoreply_headers", "autoreply", id="communigate"
    ),
    pytest.param(
        make("X-FC-MachineGenerated: true"), None, "autoreply_headers", "autoreply", id="firstclass"
    ),
    pytest.param(
        make("X-POST-MessageClass: 9; Autoresponder"),
        None,
        "autoreply_headers",
        "autoreply",
        id="mailtraq",
    ),
    pytest.param(
        make("Delivered-To: Autoresponder"),
        None,
        "autoreply_headers",
        "autoreply",
        id="qmail-autoresponder",
    ),
    pytest.param(
        make("X-Apple-Action: VACATION", subject="Away"),
        None,
        "autoreply_headers",
        "autoreply",
        id="icloud-vacation",
    ),
    pytest.param(make("X-Loop: helpdesk@example.org"), None, "x_loop", "autoreply", id="x-loop"),
    pytest.param(
        make("X-MS-Exchange-Message-Is-Ndr:"),
        None,
        "exchange_generated",
        "bounce",
        id="exchange-ndr",
    ),
    pytest.param(
        make("X-Auto-Response-Suppress: All\nX-MS-Exchange-Inbox-Rules-Loop: bob@example.org"),
        None,
        "exchange_generated",
        "autoreply",
        id="exchange-inbox-rule",
    ),
    pytest.param(
        make("X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent"),
        None,
        "exchange_generated",
        "autoreply",
        id="exchange-generated",
    ),
    # e. out-of-office subjects, for responders that set no header
    *(
        pytest.param(
            make("", subject=subject), None, "autoreply_subject", "autoreply", id=f"oof-{subject}"
        )
        for subject in (
            "Automatic reply: Help with my order",
            "Out of Office: Help with my order",
            "Out of Office AutoReply: Help with my order",
            "Out of Office",
            "Auto Response",
            "Auto reply: Nyaan",
            "AutoReply: Help",
            "Autosvar: Hjälp",
            "Automatisk svar: Hjælp",
            "Abwesenheitsnotiz: Hilfe",
            "Automatische Antwort: Hilfe",
            "Automatisch antwoord: Hulp",
            "Réponse automatique : Aide",
            "Respuesta automática: Ayuda",
            "Risposta automatica: Aiuto",
            "AUTO: Jane Doe is out of the office (returning 05/01/2024)",
            "Jane Doe is out of the office.",
        )
    ),
    pytest.param(
        make("", subject="=?utf-8?q?R=C3=A9ponse_automatique_:_Aide?="),
        None,
        "autoreply_subject",
        "autoreply",
        id="oof-encoded-word",
    ),
    # f. DSN shapes without multipart/report or a null sender
    pytest.param(
        with_part("message/rfc822", "Undelivered Mail Returned to Sender"),
        None,
        "dsn_shape",
        "bounce",
        id="dsn-returned-message",
    ),
    pytest.param(
        with_part("text/rfc822-headers", "Delivery Status Notification (Failure)"),
        None,
        "dsn_shape",
        "bounce",
        id="dsn-returned-headers",
    ),
    pytest.param(
        make("X-Failed-Recipients: bob@example.org", subject="Mail delivery failed"),
        None,
        "dsn_shape",
        "bounce",
        id="dsn-exim-header",
    ),
    pytest.param(
        make("From: Mail Delivery Subsystem <mail-daemon@example.org>", subject="Returned mail: x"),
        None,
        "dsn_shape",
        "bounce",
        id="dsn-daemon-like-from",
    ),
    pytest.param(
        make("From: Mail Delivery System <notify@example.org>", subject="failure notice"),
        None,
        "dsn_shape",
        "bounce",
        id="dsn-daemon-display-name",
    ),
    pytest.param(
        with_part("message/rfc822", "Undeliverable: Help with my order"),
        None,
        "dsn_shape",
        "bounce",
        id="dsn-exchange-subject",
    ),
    pytest.param(
        with_part("message/rfc822", "DELIVERY FAILURE: User bob not listed"),
        None,
        "dsn_shape",
        "bounce",
        id="dsn-domino-subject",
    ),
    # Pre-ARF complaint loops and no-reply notifications
    pytest.param(
        with_part("message/rfc822", "complaint about message from 192.0.2.1"),
        None,
        "feedback_shape",
        "feedback",
        id="jmrp-complaint",
    ),
    pytest.param(
        make("From: AWS Notifications <no-reply@sns.example.com>", subject="AWS Notification"),
        None,
        "noreply_sender",
        "bulk",
        id="noreply-notification",
    ),
    pytest.param(
        make("From: DoNotReply@example.org\nReply-To: noreply@example.org"),
        None,
        "noreply_sender",
        "bulk",
        id="noreply-reply-to-noreply",
    ),
    pytest.param(
        with_part("message/rfc822", "Mail error", extra="From: no-reply@isp.example.jp"),
        None,
        "noreply_sender",
        "bounce",
        id="noreply-with-returned-message",
    ),
]


@pytest.mark.parametrize(("msg", "envelope", "rule", "kind"), AUTOMATIC)
def test_automatic_mail_is_detected(
    msg: Message, envelope: str | None, rule: str, kind: str
) -> None:
    verdict = detect(msg, envelope)
    assert verdict is not None
    assert (verdict.rule, verdict.kind) == (rule, kind), verdict.reason
    assert verdict.reason and "\n" not in verdict.reason


HUMAN_CASES: list[Any] = [
    pytest.param(make(""), "alice@example.com", id="plain-human"),
    pytest.param(make(""), None, id="plain-human-unknown-envelope"),
    pytest.param(make("Auto-Submitted: no"), None, id="auto-submitted-no"),
    pytest.param(
        make("Auto-Submitted: No (sent by a person)"), None, id="auto-submitted-no-comment"
    ),
    pytest.param(make("X-Auto-Response-Suppress: All"), None, id="x-auto-response-suppress-all"),
    pytest.param(
        make("X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply"), None, id="x-ars-outlook"
    ),
    pytest.param(make("Precedence: first-class"), None, id="precedence-first-class"),
    pytest.param(make("X-Autoreply: no"), None, id="x-autoreply-no"),
    pytest.param(make("X-FC-MachineGenerated: false"), None, id="firstclass-false"),
    pytest.param(make("X-Apple-Action: FORWARD"), None, id="apple-not-vacation"),
    pytest.param(
        make("", subject="Re: Delivery failure of my parcel"), None, id="reply-on-delivery"
    ),
    pytest.param(
        make("", subject="Delivery failure: the parcel never came"), None, id="delivery-no-sign"
    ),
    pytest.param(
        with_part("message/rfc822", "Fwd: Undelivered Mail Returned to Sender"),
        None,
        id="customer-forwards-a-bounce",
    ),
    pytest.param(
        with_part("message/rfc822", "Fwd: my invoice"), None, id="forwarded-message-attached"
    ),
    pytest.param(make("", subject="Out of office hours support?"), None, id="out-of-office-hours"),
    pytest.param(make("", subject="Auto reply not working in your app"), None, id="auto-reply-bug"),
    pytest.param(make("", subject="Auto: Reifenwechsel"), None, id="german-car"),
    pytest.param(
        make("", subject="Re: Automatic reply: Help with my order"), None, id="reply-to-an-oof"
    ),
    pytest.param(
        make("", subject="My colleague is out of the office, can you help?"),
        None,
        id="colleague-out-of-office",
    ),
    pytest.param(
        make("From: Web shop <noreply@shop.example>\nReply-To: Alice <alice@example.com>"),
        None,
        id="web-form-with-reply-to",
    ),
    pytest.param(
        make("From: Bob Postmaster-Fan <bob@example.org>"), None, id="postmaster-in-display-name"
    ),
    pytest.param(make("X-MS-Exchange-Transport-Rules-Loop: 1"), None, id="exchange-transport-rule"),
]


@pytest.mark.parametrize(("msg", "envelope"), HUMAN_CASES)
def test_human_mail_is_not_automatic(msg: Message, envelope: str | None) -> None:
    assert detect(msg, envelope) is None


def test_verdict_is_a_frozen_value() -> None:
    verdict = Verdict(rule="x_loop", reason="X-Loop: a", kind="autoreply")
    with pytest.raises(FrozenInstanceError):
        verdict.rule = "other"  # type: ignore[misc]
    assert verdict == Verdict("x_loop", "X-Loop: a", "autoreply")


def test_reasons_show_the_header_that_fired() -> None:
    verdict = detect(make("Auto-Submitted: auto-replied"), None)
    assert verdict is not None
    assert verdict.reason == "Auto-Submitted: auto-replied"


def test_long_values_are_shortened_in_reasons() -> None:
    verdict = detect(make("X-Loop: " + "x" * 500), None)
    assert verdict is not None
    assert len(verdict.reason) < 120


# --------------------------------------------------------------------------
# Asking not to be answered; addresses never answered


@pytest.mark.parametrize(
    ("value", "suppressed"),
    [
        ("All", True),
        ("all", True),
        ("OOF", True),
        ("AutoReply", True),
        ("DR, RN, NRN, OOF, AutoReply", True),
        ("OOF,AutoReply", True),
        ("RN, NRN", False),
        ("DR", False),
        ("NDR", False),
        ("None", False),
        ("", False),
    ],
)
def test_x_auto_response_suppress(value: str, suppressed: bool) -> None:
    msg = make(f"X-Auto-Response-Suppress: {value}")
    reason = suppresses_autoreply(msg)
    assert (reason is not None) is suppressed
    if reason:
        assert "X-Auto-Response-Suppress" in reason
    # Asking for no auto-reply does not make a message automatic.
    assert detect(msg, "alice@example.com") is None


def test_no_suppression_without_the_header() -> None:
    assert suppresses_autoreply(make("Precedence: bulk")) is None


@pytest.mark.parametrize(
    "address",
    [
        "MAILER-DAEMON@example.org",
        "mailer-daemon@example.org",
        "postmaster@example.org",
        "Postmaster@EXAMPLE.ORG",
        "abuse@example.org",
        "root@host.example.org",
        "noreply@example.org",
        "no-reply@example.org",
        "no_reply@example.org",
        "donotreply@example.org",
        "do-not-reply@example.org",
        "DoNotReply@example.org",
        "bounce@example.org",
        "bounces+cats=example.org@lists.example.org",
        "noreply+tag@example.org",
        "noreply-notifications@example.org",
        '"root"@example.org',
        "Mail Delivery System <MAILER-DAEMON@example.org>",
        "MAILER-DAEMON",
        "",
        "<>",
    ],
)
def test_never_autoreply_to_role_addresses(address: str) -> None:
    assert never_autoreply_to(address) is not None


@pytest.mark.parametrize(
    "address",
    [
        "alice@example.com",
        "Alice <alice@example.com>",
        "rooter@example.org",
        "abuse.team.lead@example.org",
        "postmasterful@example.org",
        "reply@example.org",
        "bouncer@example.org",
        "support+noreply@example.org",
    ],
)
def test_people_may_get_automatic_answers(address: str) -> None:
    assert never_autoreply_to(address) is None


# --------------------------------------------------------------------------
# Never raising


class ExplodingPolicy(EmailPolicy):
    """A policy that cannot parse any header, as policy.default sometimes cannot."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        raise ValueError(f"cannot parse {name}")


def test_unparseable_headers_fall_back_to_raw_text() -> None:
    raw = (
        HUMAN + "Subject: Help\n"
        "Auto-Submitted: =?utf-8?q?auto-replied?=\n"
        "X-Auto-Response-Suppress: OOF\n\nHello\n"
    ).encode()
    msg = parse(raw, policy=ExplodingPolicy())
    verdict = detect(msg, None)
    assert verdict is not None
    assert verdict.rule == "auto_submitted"
    assert suppresses_autoreply(msg) is not None


MALFORMED = [
    b'From: "=?utf-8?q?=E2?=" <>\nSubject: =?bogus?q?x?=\n'
    b"Content-Type: multipart/report; report-type*=utf-8''delivery-status\n"
    b"Return-Path: <\nAuto-Submitted: \n\n",
    b"From: \xff\xfe@\xc3\nSender: <<<>>>\nTo: ,,,@\nSubject: \xe9t\xe9\n"
    b'Content-Type: multipart/report; boundary="\nList-Id: \n\n',
    b"From: undisclosed-recipients:;\nReply-To: (comment only)\n"
    b"X-Auto-Response-Suppress: \xff OOF\nMessage-ID: <<<>\n\nbody",
    b"Content-Type: ;;;\nContent-Type: multipart/report; report-type=feedback-report\n\n",
    b"From: =?utf-8?b?invalid base64!!?= <x@y>\nSubject: =?utf-8?b?QXV0bw==?=\n\n",
    b"Subject: \x00\x01\x02\nFrom: <@>\nReturn-Path: <@@@>\n\n",
    b"",
    b"no headers at all",
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_messages_never_raise(raw: bytes) -> None:
    for policy in (None, email.policy.default, email.policy.compat32):
        msg = parse(raw, policy=policy)
        verdict = detect(msg, None)
        if verdict is not None:
            assert verdict.reason.isprintable()
        suppresses_autoreply(msg)


def test_compat32_messages_are_understood() -> None:
    raw = (HUMAN + "Subject: x\nAuto-Submitted: auto-replied\n\nHello\n").encode()
    verdict = detect(parse(raw, policy=email.policy.compat32), None)
    assert verdict is not None and verdict.rule == "auto_submitted"


# --------------------------------------------------------------------------
# Real-world mail: the copies in tests/data, then the whole corpus


def _eml(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.eml"))


DATA_AUTOMATIC = {
    "arf-01.eml": ("multipart_report", "feedback"),
    "arf-23.eml": ("feedback_shape", "feedback"),
    "lhost-amazonses-09.eml": ("noreply_sender", "bulk"),
    "lhost-exim-01.eml": ("mailer_daemon", "bounce"),
    "lhost-fml-03.eml": ("list_headers", "bulk"),
    "lhost-postfix-01.eml": ("null_sender", "bounce"),
    "rfc3834-01.eml": ("auto_submitted", "autoreply"),
    "rfc3834-03.eml": ("autoreply_headers", "autoreply"),
}


def test_data_copies_are_all_there() -> None:
    assert {p.name for p in _eml(DATA / "automatic")} == set(DATA_AUTOMATIC)
    assert (DATA / "automatic" / "LICENSE.sisimai").is_file()
    assert (DATA / "replies" / "talon" / "LICENSE").is_file()


@pytest.mark.parametrize("name", sorted(DATA_AUTOMATIC))
def test_data_automatic(name: str) -> None:
    msg = parse((DATA / "automatic" / name).read_bytes())
    verdict = detect(msg, return_path_sender(msg))
    assert verdict is not None
    assert (verdict.rule, verdict.kind) == DATA_AUTOMATIC[name]


@pytest.mark.parametrize("path", _eml(DATA / "replies" / "talon"), ids=lambda p: p.name)
def test_data_replies_are_human(path: Path) -> None:
    msg = parse(path.read_bytes())
    assert detect(msg, from_sender(msg)) is None


def _corpus(folder: str) -> Path:
    path = CORPUS / folder
    if not path.is_dir():
        pytest.skip(
            f"corpus not found at {path} (it lives in ../shared/corpus beside the checkout)"
        )
    return path


# Kinds the corpus README gives by file name.
LABELLED_KINDS = {"arf-": "feedback", "rfc3834-": "autoreply", "rfc3464-": "bounce"}


def test_corpus_automatic_is_all_detected() -> None:
    folder = _corpus("automatic")
    files = _eml(folder)
    assert files, f"no .eml files in {folder}"
    by_rule: collections.Counter[str] = collections.Counter()
    by_kind: collections.Counter[str] = collections.Counter()
    missed: list[str] = []
    mislabelled: list[str] = []
    for path in files:
        msg = parse(path.read_bytes())
        verdict = detect(msg, return_path_sender(msg))
        if verdict is None:
            missed.append(path.name)
            continue
        by_rule[verdict.rule] += 1
        by_kind[verdict.kind] += 1
        for prefix, kind in LABELLED_KINDS.items():
            if path.name.startswith(prefix) and verdict.kind != kind:
                mislabelled.append(f"{path.name}: {verdict}")
    summary = (
        f"{len(files) - len(missed)}/{len(files)} detected; "
        f"by rule {dict(by_rule.most_common())}; by kind {dict(by_kind.most_common())}"
    )
    print(summary)
    assert not missed, f"{summary}; missed {missed}"
    assert not mislabelled, mislabelled


def test_corpus_automatic_without_envelope_or_return_path() -> None:
    """Most automatic mail is still recognised from its content alone."""
    folder = _corpus("automatic")
    files = _eml(folder)
    missed = []
    for path in files:
        msg = parse(path.read_bytes())
        del msg["Return-Path"]
        if detect(msg, None) is None:
            missed.append(path.name)
    assert len(missed) <= len(files) // 100, missed


def test_corpus_replies_are_human() -> None:
    folder = _corpus("replies/talon")
    files = _eml(folder)
    assert files, f"no .eml files in {folder}"
    flagged = {}
    for path in files:
        msg = parse(path.read_bytes())
        verdict = detect(msg, from_sender(msg))
        if verdict is not None:
            flagged[path.name] = verdict
    assert not flagged


def test_corpus_malformed_never_raises() -> None:
    folder = _corpus("malformed")
    files = sorted(folder.rglob("*.eml"))
    assert files, f"no .eml files under {folder}"
    for path in files:
        msg = parse(path.read_bytes())
        detect(msg, None)
        suppresses_autoreply(msg)
