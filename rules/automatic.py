"""Deciding that a message is automatic: bounces, auto-replies, bulk, feedback.

casegate never sends automatic mail (acknowledgement, reminder, survey) in
answer to a message that is itself automatic (DESIGN.md, "No mail loops").
This module decides that, from the headers and the MIME structure only,
never from the body text.

``detect_automatic`` walks ``RULES`` in order and returns the first hit as a
``Verdict`` (rule name, a human reason, a kind). It is the one walk of the
rules: ``rules.loop.detect``, what the engine calls, is this walk with
casegate's own-mail checks put in their place (the ``own_mail`` hook). The rules come from the
standards first and from what real mail systems emit second:

- RFC 5321 §4.5.5: notifications are sent with the null reverse-path ``<>``;
- RFC 6522 / RFC 3464 / RFC 5965 / RFC 8098: ``multipart/report`` carries
  delivery status (DSN), abuse feedback (ARF) and read receipts (MDN);
- RFC 3834: ``Auto-Submitted`` other than ``no`` means automatic;
- RFC 2076 / RFC 2919 / RFC 2369: ``Precedence``, ``List-Id``,
  ``List-Unsubscribe``;
- vendor headers that auto-responders stamp (``X-Autoreply``,
  ``X-Autorespond``, ``X-Loop``, Exchange's ``X-MS-Exchange-*``, ...) and the
  subject shapes of out-of-office replies and of non-delivery reports from
  MTAs that send neither a report nor a null sender;
- conventions without a standard, each kept narrow: the headers list
  managers stamp (ezmlm, Mailman, fml), complaint loops older than ARF
  (a complaint subject with the message attached, as Hotmail's JMRP), and
  senders that declare they take no replies (``no-reply@`` with no
  answerable ``Reply-To``: a web form's customer in Reply-To stays human).

The kind follows the evidence, not the rule: an out-of-office reply from
``<>`` is an ``autoreply``, an Exim bounce with ``Auto-Submitted`` is a
``bounce``.

``X-Auto-Response-Suppress`` is deliberately *not* a sign of automatic mail:
Outlook and Exchange put it on ordinary human mail to ask *us* not to answer
automatically (MS-OXCMAIL 2.1.3.2.20). Helpdesks that treated it as
"auto-generated" lost real customer mail (osTicket #5320, Discourse #21367,
sisimai #491). It is honoured separately by ``suppresses_autoreply``.

Nothing here raises on a malformed message: a header that the email policy
cannot parse is read as its raw string instead. Nothing here costs more than
the limits of ``rules.limits`` allow: a rule reads at most
``MAX_VALUES_READ`` values of a header, each cut to ``MAX_PARSED_CHARS``
(comments nested too deep removed), and at most ``MAX_MIME_PARTS`` parts.
"""

from __future__ import annotations

import email.header
import email.utils
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from typing import Any, Final, Literal, TypeVar

from rules import limits
from rules.inbound import bounded, walk_parts

__all__ = [
    "RULES",
    "Kind",
    "Verdict",
    "detect_automatic",
    "never_autoreply_to",
    "suppresses_autoreply",
]

Kind = Literal["bounce", "autoreply", "bulk", "feedback"]


@dataclass(frozen=True)
class Verdict:
    """Why a message is automatic: the rule that fired, a reason, a kind.

    ``kind`` is ``"bounce"`` (DSN, delivery failure, MAILER-DAEMON),
    ``"autoreply"`` (vacation, out-of-office, auto-responders, read
    receipts, other machine-generated answers), ``"bulk"`` (lists, bulk,
    junk) or ``"feedback"`` (ARF abuse reports).
    """

    rule: str
    reason: str
    kind: Kind


# A rule looks at the message and the SMTP envelope sender and answers
# (kind, reason) when it fires; the detector adds the rule's name.
Hit = tuple[Kind, str]
Rule = Callable[[Message, str | None], Hit | None]

_REASON_VALUE_MAX: Final = 80


# --------------------------------------------------------------------------
# Reading headers without ever raising


def _printable(text: str) -> str:
    """One line of text, without surrogates (8-bit header bytes) or controls."""
    text = text.encode("utf-8", "replace").decode("utf-8", "replace")
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def _decode_raw(value: object) -> str:
    """A raw header value as text: unfolded, RFC 2047 words decoded if possible."""
    text = bounded(str(value))
    try:
        text = str(email.header.make_header(email.header.decode_header(text)))
    except Exception:  # malformed encoded words, unknown charsets: keep raw
        pass
    return _printable(text)


def _header_values(msg: Message, name: str, most: int = limits.MAX_VALUES_READ) -> list[str]:
    """The first ``most`` values of header ``name`` (case-insensitive), as
    printable text.

    Each value, cut to ``limits.MAX_PARSED_CHARS``, goes through the
    message's policy (``policy.default`` decodes RFC 2047 and structures
    addresses); when that raises, the raw string is used instead.
    """
    wanted = name.lower()
    try:
        index = _header_index(msg)
    except Exception:
        return []
    done = index.values.get((wanted, most))
    if done is not None:
        return list(done)
    values: list[str] = []
    try:
        for key, raw in index.fields.get(wanted, ())[:max(most, 0)]:
            try:
                values.append(_printable(str(msg.policy.header_fetch_parse(key, bounded(str(raw))))))
            except Exception:
                values.append(_decode_raw(raw))
    except Exception:
        pass
    index.values[(wanted, most)] = tuple(values)
    return values


class _HeaderIndex:
    """A message's raw fields by lower-case name, and the values read so far:
    the rules ask for some thirty names per message, each of which scanned
    every field (issue 12). Valid while the message's fields are the same
    objects (any change to them makes a new index)."""

    __slots__ = ("fields", "items", "values")

    def __init__(self, items: tuple[tuple[Any, Any], ...]) -> None:
        self.items = items
        self.fields: dict[str, list[tuple[str, Any]]] = {}
        for key, raw in items:
            if isinstance(key, str):
                self.fields.setdefault(key.lower(), []).append((key, raw))
        self.values: dict[tuple[str, int], tuple[str, ...]] = {}


_INDEX_ATTR: Final = "_casegate_header_index"


def _header_index(msg: Message) -> _HeaderIndex:
    items = tuple(msg.raw_items())
    cached = msg.__dict__.get(_INDEX_ATTR)
    if isinstance(cached, _HeaderIndex) and cached.items == items:
        return cached
    index = _HeaderIndex(items)
    msg.__dict__[_INDEX_ATTR] = index
    return index


def _first(msg: Message, name: str) -> str | None:
    values = _header_values(msg, name, most=1)
    return values[0] if values else None


def _has(msg: Message, name: str) -> bool:
    try:
        return name.lower() in _header_index(msg).fields
    except Exception:
        return False


def _show(value: str) -> str:
    """A header value shortened for a reason string."""
    if len(value) <= _REASON_VALUE_MAX:
        return value
    return value[: _REASON_VALUE_MAX - 1] + "…"


def _strip_comments(value: str) -> str:
    """Drop RFC 5322 comments ``(...)`` (not nested-aware beyond one level)."""
    return re.sub(r"\([^()]*\)", " ", value)


def _token(value: str) -> str:
    """The first word of a structured value: no comments, parameters, case."""
    value = _strip_comments(value).split(";", 1)[0]
    return value.strip().lower()


def _subject(msg: Message) -> str:
    return _first(msg, "Subject") or ""


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _report_type(msg: Message) -> str:
    try:
        value = msg.get_param("report-type", header="content-type")
    except Exception:
        return ""
    if isinstance(value, tuple):  # RFC 2231 (charset, language, text)
        value = value[2]
    return str(value or "").strip().strip('"').lower()


def _walk(msg: Message) -> Iterator[Message]:
    """The parts of ``msg``, iteratively, at most ``limits.MAX_MIME_PARTS``."""
    try:
        for count, part in enumerate(walk_parts(msg)):
            if count >= limits.MAX_MIME_PARTS:
                return
            yield part
    except Exception:
        return


# --------------------------------------------------------------------------
# Addresses


_NULL_PATH: Final = re.compile(r"<\s*>")
_DAEMON_LOCAL: Final = re.compile(r"(?:mailer[-_.]?daemon|post[-_.]?master)", re.I)


def _addresses(value: str) -> list[str]:
    """The addr-specs in a header value (``Name <a@b>``, ``<a>``, ``a@b (c)``)."""
    try:
        pairs = email.utils.getaddresses([bounded(value)])
    except Exception:
        pairs = []
    found = [addr for _, addr in pairs if addr]
    if not found:  # getaddresses gave up: take anything between angle brackets
        found = re.findall(r"<([^<>\s]+)>", value)
    return found


def _local_part(address: str) -> str:
    """The local part without quotes and without a ``+tag`` (RFC 5233)."""
    local = address.strip().strip("<>").rsplit("@", 1)[0].strip().strip('"')
    return local.split("+", 1)[0]


def _sender_fields(msg: Message, envelope_sender: str | None) -> Iterator[tuple[str, str]]:
    """(where, value) for the envelope sender and the From/Sender/Return-Path headers."""
    if envelope_sender:
        yield "envelope sender", envelope_sender
    for name in ("From", "Sender", "Return-Path"):
        for value in _header_values(msg, name):
            yield name, value


# --------------------------------------------------------------------------
# Shared evidence


_DSN_PARTS: Final = frozenset(
    {
        "message/delivery-status",  # RFC 3464
        "message/global-delivery-status",  # RFC 6533
        "message/rfc822",  # the returned message
        "message/global",
        "text/rfc822-headers",  # RFC 6522: the returned headers only
        "message/rfc822-headers",
        "message/global-headers",
    }
)

_REPORT_KINDS: Final[dict[str, Kind]] = {
    "delivery-status": "bounce",  # RFC 3464
    "global-delivery-status": "bounce",  # RFC 6533
    "feedback-report": "feedback",  # RFC 5965 (ARF)
    "disposition-notification": "autoreply",  # RFC 8098 (MDN, read receipts)
    "global-disposition-notification": "autoreply",  # RFC 6533
}

# Subjects that MTAs give their non-delivery reports and delay warnings.
# Anchored at the start, so "Re:"/"Fwd:" of a bounce (a human writing about
# it) never matches.
_DSN_SUBJECT: Final = re.compile(
    r"""^\s*(?:
        undelivered\ mail\ returned\ to\ sender        # Postfix
      | undeliver(?:ed|able)\b                         # Exchange "Undeliverable:", others
      | delivery\ status\ notification                 # Exchange, Gmail, SES
      | delivery\ (?:failure|notification|report)      # Notes/Domino, various
      | (?:mail\ )?delivery\ (?:failed|failure|problem|delayed)
      | message\ (?:delivery\ failure|not\ delivered|could\ not\ be\ delivered)
      | mail\ could\ not\ be\ delivered
      | failure\ notice                                # qmail
      | returned\ mail\b                               # Sendmail
      | mail\ (?:system\ error|failed,\ returning)
      | non-?deliver(?:able|y)\b                       # "Nondeliverable mail"
      | delayed\ mail\b                                # delay warnings
      | warning:\ (?:could\ not\ send\ message|message\ .*\ delayed)
      | postmaster\ notify\b
      | unzustellbar\b                                 # Exchange, German
      | non\ remis\b                                   # Exchange, French
      | non\ recapitabile\b                            # Exchange, Italian
      | onbestelbaar\b                                 # Exchange, Dutch
      | no\ se\ puede\ entregar\b                      # Exchange, Spanish
    )""",
    re.I | re.X,
)

# Subjects of out-of-office and other automatic replies (Exchange/Outlook
# in their UI languages, Lotus Notes, Gmail/Zimbra-style vacation replies).
_AUTOREPLY_SUBJECT: Final = re.compile(
    r"""^\s*(?:
        automatic\ reply\s*:                        # Exchange 2010+, Outlook
      | autosvar\s*:                               # Swedish, Norwegian
      | automatisk\ svar\s*:                       # Danish, Norwegian
      | automatisch\ antwoord\s*:                  # Dutch
      | automatische\ antwort\s*:                  # German
      | r[ée]ponse\ automatique\s*:                # French
      | respuesta\ autom[áa]tica\s*:               # Spanish
      | risposta\ automatica\s*:                   # Italian
      | resposta\ autom[áa]tica\s*:                # Portuguese
      | automaattinen\ vastaus\s*:                 # Finnish
      | automatyczna\ odpowied[źz]\s*:             # Polish
      | automatick[áa]\ odpov[ěe]ď\s*:             # Czech
      | автоматический\ ответ\s*:                  # Russian
      | 自动回复\s*[:：]                            # Chinese
      | 自動回覆\s*[:：]
      | 自動応答\s*[:：]                            # Japanese
      # Only as the whole subject or followed by a colon: "Out of office
      # hours?" or "Auto reply not working" are questions, not replies.
      | (?: out\ of\ (?:the\ )?office
            (?:\ (?:auto-?reply|reply|alert|notice|notification|message|response))?
          | auto(?:matic)?[-\ ]?(?:reply|response)
          | abwesenheitsnotiz                       # German (Outlook 2003/2007)
          | vacation\ (?:reply|message|notice|auto-?reply)
          | on\ vacation
        )\s*(?::|$)
    )
    # Lotus Notes: "AUTO: Jane Doe is out of the office (returning 05/01/2013)"
    | \bis\ out\ of\ (?:the\ )?office\.?\s*(?:\(returning\b[^()]*\))?\s*$
    """,
    re.I | re.X,
)

# Lotus Notes/Domino prefixes its out-of-office replies with "AUTO:" in
# capitals; "Auto:" in mixed case is too common in human subjects
# ("Auto: Reifenwechsel") to count.
_NOTES_AUTO_PREFIX: Final = re.compile(r"^\s*AUTO:\s")


def _report_kind(msg: Message) -> Kind | None:
    if _content_type(msg) != "multipart/report":
        return None
    return _REPORT_KINDS.get(_report_type(msg), "bounce")


def _dsn_part(msg: Message) -> str | None:
    """The content type of a part that returns a message or its status."""
    for part in _walk(msg):
        if part is msg:
            continue
        ctype = _content_type(part)
        if ctype in _DSN_PARTS:
            return ctype
    return None


def _daemon_sender(msg: Message, envelope_sender: str | None) -> str | None:
    """A reason when the sender is MAILER-DAEMON/postmaster or the null address."""
    for where, value in _sender_fields(msg, envelope_sender):
        if where in ("From", "Sender") and _NULL_PATH.search(value) and "@" not in value:
            return f"{where}: {_show(value)} is the null address"
        for address in _addresses(value) or [value]:
            local = _local_part(address)
            if _DAEMON_LOCAL.fullmatch(local):
                return f"{where}: {_show(address)} is {local}"
    return None


def _dsn_evidence(msg: Message, envelope_sender: str | None) -> bool:
    """Signs that a message reports on the delivery of another one."""
    if _has(msg, "X-Failed-Recipients") or _has(msg, "X-MS-Exchange-Message-Is-Ndr"):
        return True
    if _daemon_sender(msg, envelope_sender):
        return True
    return bool(_DSN_SUBJECT.search(_subject(msg)))


def _autoreply_evidence(msg: Message, envelope_sender: str | None) -> bool:
    return any(
        rule(msg, envelope_sender) is not None
        for rule in (_auto_submitted, _autoreply_headers, _autoreply_subject)
    )


# --------------------------------------------------------------------------
# The rules


def _null_sender(msg: Message, envelope_sender: str | None) -> Hit | None:
    """RFC 5321 §4.5.5: bounces and other notifications come from ``<>``."""
    if envelope_sender == "":
        where = "envelope sender is <> (null reverse-path)"
    elif any(_NULL_PATH.fullmatch(v.strip()) for v in _header_values(msg, "Return-Path")):
        where = "Return-Path: <> (null reverse-path)"
    else:
        return None
    # Null senders carry DSNs, MDNs, ARF reports and RFC 3834 auto-replies
    # (Exchange sends its out-of-office replies from <>): name the kind.
    kind = _report_kind(msg)
    if kind is None:
        if _dsn_evidence(msg, None):
            kind = "bounce"
        elif _autoreply_evidence(msg, None):
            kind = "autoreply"
        else:
            kind = "bounce"
    return kind, where


def _multipart_report(msg: Message, envelope_sender: str | None) -> Hit | None:
    """RFC 6522 reports: DSN (RFC 3464), ARF (RFC 5965), MDN (RFC 8098)."""
    kind = _report_kind(msg)
    if kind is None:
        return None
    report_type = _report_type(msg) or "(none)"
    return kind, f"Content-Type: multipart/report; report-type={_show(report_type)}"


def _mailer_daemon(msg: Message, envelope_sender: str | None) -> Hit | None:
    """MAILER-DAEMON and postmaster send bounces, not customer mail."""
    reason = _daemon_sender(msg, envelope_sender)
    return ("bounce", reason) if reason else None


def _auto_submitted(msg: Message, envelope_sender: str | None) -> Hit | None:
    """RFC 3834 §5: any ``Auto-Submitted`` other than ``no`` is automatic."""
    for value in _header_values(msg, "Auto-Submitted"):
        keyword = _token(value)
        if keyword == "no":
            continue
        kind: Kind = "bounce" if _dsn_evidence(msg, envelope_sender) else "autoreply"
        return kind, f"Auto-Submitted: {_show(value) or '(empty)'}"
    return None


_PRECEDENCE: Final[dict[str, Kind]] = {
    "bulk": "bulk",
    "junk": "bulk",
    "list": "bulk",
    "auto_reply": "autoreply",  # cPanel, BoxTrapper
}


def _precedence(msg: Message, envelope_sender: str | None) -> Hit | None:
    """RFC 2076 ``Precedence`` (and cPanel's ``X-Precedence``): bulk|junk|list|auto_reply."""
    for name in ("Precedence", "X-Precedence"):
        for value in _header_values(msg, name):
            keyword = _token(value).replace("-", "_")
            if keyword in _PRECEDENCE:
                return _PRECEDENCE[keyword], f"{name}: {_show(value)}"
    return None


# RFC 2919 List-Id and RFC 2369 List-Unsubscribe, then the headers that
# list managers stamp on everything they send, posts and notices alike.
_LIST_HEADERS: Final = (
    "List-Id",
    "List-Unsubscribe",
    "Mailing-List",  # ezmlm
    "X-Mailing-List",  # SmartList, vger (majordomo)
    "X-BeenThere",  # Mailman 2
    "X-Mailman-Version",  # Mailman
    "X-List-Administrivia",  # Mailman's own notices
    "X-ML-Name",  # fml
    "X-MLServer",  # fml
)


def _list_headers(msg: Message, envelope_sender: str | None) -> Hit | None:
    """List or newsletter mail: ``List-Id``, ``List-Unsubscribe``, list managers' headers."""
    for name in _LIST_HEADERS:
        values = _header_values(msg, name)
        if values:
            return "bulk", f"{name}: {_show(values[0]) or '(empty)'}"
    return None


# Headers that auto-responders stamp on their replies; present means
# automatic unless the value says no.
_AUTOREPLY_HEADERS: Final = (
    "X-Autoreply",  # Gmail vacation, Sieve vacation implementations
    "X-Autorespond",  # cPanel, BoxTrapper
    "X-Autoresponder",
    "X-Auto-Reply",
    "X-AutoReply-From",  # Domain Technologie Control
    "X-Mail-Autoreply",  # Domain Technologie Control
    "X-Autogenerated",  # CommuniGate Pro: Reply, Forward, Group, Mirror, ...
)
_FALSE_VALUES: Final = frozenset({"no", "false", "0", "off"})


def _autoreply_headers(msg: Message, envelope_sender: str | None) -> Hit | None:
    """Vendor headers of auto-responders (multi_mail's autoresponder survey)."""
    for name in _AUTOREPLY_HEADERS:
        for value in _header_values(msg, name):
            if _token(value) not in _FALSE_VALUES:
                return "autoreply", f"{name}: {_show(value) or '(empty)'}"
    for value in _header_values(msg, "X-FC-MachineGenerated"):  # FirstClass
        if _token(value) == "true":
            return "autoreply", f"X-FC-MachineGenerated: {_show(value)}"
    for value in _header_values(msg, "X-POST-MessageClass"):  # Mailtraq
        if "autoresponder" in value.lower():
            return "autoreply", f"X-POST-MessageClass: {_show(value)}"
    for value in _header_values(msg, "X-Apple-Action"):  # iCloud vacation replies
        if _token(value) == "vacation":
            return "autoreply", f"X-Apple-Action: {_show(value)}"
    for value in _header_values(msg, "Delivered-To"):  # qmail autoresponder
        if value.strip().lower() == "autoresponder":
            return "autoreply", f"Delivered-To: {_show(value)}"
    return None


def _x_loop(msg: Message, envelope_sender: str | None) -> Hit | None:
    """``X-Loop``: set by list managers, procmail recipes and ticket systems.

    casegate's own signed X-Loop is recognised before this detector runs;
    any other X-Loop means the message already went through a machine.
    """
    values = _header_values(msg, "X-Loop")
    if values:
        return "autoreply", f"X-Loop: {_show(values[0]) or '(empty)'}"
    return None


def _exchange_generated(msg: Message, envelope_sender: str | None) -> Hit | None:
    """Headers Exchange/Office 365 put only on messages it generated itself.

    ``X-MS-Exchange-Message-Is-Ndr`` marks its non-delivery reports;
    ``X-MS-Exchange-Inbox-Rules-Loop`` a message made by an inbox rule (the
    out-of-office assistant is one); ``X-MS-Exchange-Generated-Message-Source``
    names the agent that generated it ("Mailbox Rules Agent" for OOF,
    "Transport Rule Agent", "Journal Agent").
    """
    if _has(msg, "X-MS-Exchange-Message-Is-Ndr"):
        return "bounce", "X-MS-Exchange-Message-Is-Ndr: Exchange non-delivery report"
    for name in ("X-MS-Exchange-Inbox-Rules-Loop", "X-MS-Exchange-Generated-Message-Source"):
        values = _header_values(msg, name)
        if values:
            return "autoreply", f"{name}: {_show(values[0]) or '(empty)'}"
    return None


def _autoreply_subject(msg: Message, envelope_sender: str | None) -> Hit | None:
    """Out-of-office subjects, for responders that set no header at all."""
    subject = _subject(msg)
    if _AUTOREPLY_SUBJECT.search(subject) or _NOTES_AUTO_PREFIX.match(subject):
        return "autoreply", f"Subject: {_show(subject)} looks like an automatic reply"
    return None


def _dsn_shape(msg: Message, envelope_sender: str | None) -> Hit | None:
    """A non-delivery report without multipart/report or a null sender.

    Needs both a bounce subject and a second sign: a returned message or
    headers part, an Exim/Exchange bounce header, or a daemon-like From.
    """
    subject = _subject(msg)
    if not _DSN_SUBJECT.search(subject):
        return None
    sign = _dsn_part(msg)
    if sign is not None:
        sign = f"a {sign} part"
    elif _has(msg, "X-Failed-Recipients"):
        sign = "X-Failed-Recipients"
    else:
        sign = _loose_daemon_from(msg)
    if sign is None:
        return None
    return "bounce", f"Subject: {_show(subject)} with {sign}"


_LOOSE_DAEMON_LOCAL: Final = re.compile(
    r"(?:mailer|mail|smtp|mta)[-_.]?daemon|post[-_.]?(?:master|office)|mail[-_.]?delivery"
    r"|mail[-_.]?(?:admin|system)|bounces?|returned[-_.]?mail|nobody",
    re.I,
)
_DAEMON_NAME: Final = re.compile(
    r"^\s*\"?(?:mail\ delivery\ (?:system|subsystem|service)|mailer[-_ ]?daemon"
    r"|mail\ administrator|system\ administrator|postmaster)\b",
    re.I | re.X,
)


def _loose_daemon_from(msg: Message) -> str | None:
    """A From that names a mail system rather than a person."""
    for value in _header_values(msg, "From"):
        for name, address in _name_address_pairs(value):
            if _LOOSE_DAEMON_LOCAL.fullmatch(_local_part(address)):
                return f"From: {_show(address)}"
            if _DAEMON_NAME.match(name):
                return f"From: {_show(name)}"
    return None


def _name_address_pairs(value: str) -> list[tuple[str, str]]:
    try:
        return email.utils.getaddresses([bounded(value)])
    except Exception:
        return []


# Feedback loops that predate ARF (RFC 5965), such as Hotmail's JMRP, send
# the complained-about message as an attachment under a subject like these.
_FEEDBACK_SUBJECT: Final = re.compile(
    r"""^\s*(?:
        complaint\ about\ message\ from\b
      | (?:e-?mail\ )?(?:abuse|spam|feedback)\ (?:loop\ )?report\b
      | client\ tos\ notification\b
    )""",
    re.I | re.X,
)


def _feedback_shape(msg: Message, envelope_sender: str | None) -> Hit | None:
    """A complaint report without multipart/report: its subject and an attached message."""
    subject = _subject(msg)
    if not _FEEDBACK_SUBJECT.search(subject):
        return None
    part = _dsn_part(msg)
    if part is None:
        return None
    return "feedback", f"Subject: {_show(subject)} with a {part} part"


_NOREPLY_LOCAL: Final = re.compile(r"(?:no[-_.]?reply|do[-_.]?not[-_.]?reply)(?:[-_.].*)?", re.I)


def _is_noreply(address: str) -> bool:
    return bool(_NOREPLY_LOCAL.fullmatch(_local_part(address)))


def _noreply_sender(msg: Message, envelope_sender: str | None) -> Hit | None:
    """A From that declares it takes no replies, with no Reply-To offering another.

    Web forms send from ``noreply@`` with the customer in Reply-To: those stay
    human. Without an answerable Reply-To the message is a notification.
    """
    senders = [a for v in _header_values(msg, "From") for a in _addresses(v)]
    noreply = [a for a in senders if _is_noreply(a)]
    if not noreply:
        return None
    replies = [a for v in _header_values(msg, "Reply-To") for a in _addresses(v)]
    if any(not _is_noreply(a) for a in replies):
        return None
    part = _dsn_part(msg)
    kind: Kind = "bounce" if part is not None else "bulk"
    return kind, f"From: {_show(noreply[0])} takes no replies"


RULES: Final[tuple[tuple[str, Rule], ...]] = (
    ("null_sender", _null_sender),
    ("multipart_report", _multipart_report),
    ("mailer_daemon", _mailer_daemon),
    ("auto_submitted", _auto_submitted),
    ("precedence", _precedence),
    ("list_headers", _list_headers),
    ("autoreply_headers", _autoreply_headers),
    ("x_loop", _x_loop),
    ("exchange_generated", _exchange_generated),
    ("autoreply_subject", _autoreply_subject),
    ("dsn_shape", _dsn_shape),
    ("feedback_shape", _feedback_shape),
    ("noreply_sender", _noreply_sender),
)


#: The rules that decide before an installation's own-mail checks: a bounce
#: or a report of our own mail is a bounce first (``rules.loop``).
EARLY_RULES: Final = frozenset({"null_sender", "multipart_report", "mailer_daemon"})


def detect_automatic(
    msg: Message,
    envelope_sender: str | None,
    *,
    own_mail: Callable[[Message], Verdict | None] | None = None,
) -> Verdict | None:
    """The first rule that finds ``msg`` automatic, or None for human mail.

    ``envelope_sender`` is the SMTP MAIL FROM: ``""`` for the null sender
    ``<>``, None when unknown. ``own_mail``, when given, runs after
    ``EARLY_RULES`` and before the others (``rules.loop.detect`` passes
    casegate's own-mail checks). Never raises.
    """
    checked_own = own_mail is None
    for name, rule in RULES:
        if not checked_own and name not in EARLY_RULES:
            checked_own = True
            own = _safely(lambda: own_mail(msg) if own_mail else None)
            if own is not None:
                return own
        hit = _safely(lambda: rule(msg, envelope_sender))  # noqa: B023 (called at once)
        if hit is not None:
            kind, reason = hit
            return Verdict(rule=name, reason=reason, kind=kind)
    return None


_T = TypeVar("_T")


def _safely(call: Callable[[], _T | None]) -> _T | None:
    """``call()``, or None when it raises: a rule that trips on a message
    does not fire, and the others still run."""
    try:
        return call()
    except Exception:
        return None


# --------------------------------------------------------------------------
# Asking for no auto-reply; addresses never to answer

# MS-OXCMAIL 2.1.3.2.20: the values that cover an acknowledgement.
_SUPPRESS_TOKENS: Final = frozenset({"all", "autoreply", "oof"})


def suppresses_autoreply(msg: Message) -> str | None:
    """A reason when the sender asked not to get automatic replies.

    Such a message is still human mail (a case is opened or updated) but
    gets no acknowledgement. Automatic mail is ``detect_automatic``'s job.
    """
    for value in _header_values(msg, "X-Auto-Response-Suppress"):
        tokens = {t.lower() for t in re.split(r"[\s,;]+", value) if t}
        asked = sorted(tokens & _SUPPRESS_TOKENS)
        if asked:
            return f"X-Auto-Response-Suppress: {_show(value)} asks for no automatic replies"
    return None


# Local parts (before any +tag, separators ignored) that are never a person.
_NEVER_ANSWER: Final = frozenset(
    {
        "mailerdaemon",
        "postmaster",
        "abuse",
        "root",
        "noreply",
        "donotreply",
        "bounce",
        "bounces",
    }
)


def never_autoreply_to(address: str) -> str | None:
    """A reason when ``address`` must never get an automatic answer."""
    candidates = _addresses(address) if "<" in address else [address]
    if not candidates or not any(c.strip().strip("<>").strip() for c in candidates):
        return "the null address <> never gets an automatic answer"
    for candidate in candidates:
        local = _local_part(candidate)
        if re.sub(r"[-_.]", "", local).lower() in _NEVER_ANSWER or _is_noreply(candidate):
            return f"{_show(local)} is a role address that never gets an automatic answer"
    return None
