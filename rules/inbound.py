"""An inbound message as the rules see it, parsed from the bytes Postfix handed over.

Parsing never raises: broken MIME, 8-bit garbage in headers and headers the
modern parser rejects fall back to their raw text. The original bytes are
kept untouched (they are what the store keeps).
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import EmailMessage, Message

_POLICY = email.policy.default
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def clean(text: str, limit: int = 998) -> str:
    """One line of valid Unicode: 8-bit garbage (surrogate escapes) replaced,
    control characters (CR, LF, NUL …) dropped, at most ``limit`` characters.
    Everything the store keeps or a template prints from a header goes
    through here; the raw bytes keep the original."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL.sub("", text)[:limit]


@dataclass(frozen=True)
class Part:
    filename: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Inbound:
    msg: EmailMessage
    from_name: str
    from_address: str  # lower-case; "" when there is none
    from_count: int  # addresses in From: (several = suspicious)
    subject: str
    message_id: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    cc: tuple[tuple[str, str], ...]
    attachments: tuple[Part, ...] = field(default=())
    defects: tuple[str, ...] = field(default=())


def header_text(msg: Message, name: str) -> str:
    """A header as readable text (RFC 2047 decoded), never raising."""
    try:
        value = msg.get(name)
    except Exception:  # the parser chokes on some malformed headers
        value = None
        for key, raw in msg.raw_items() if hasattr(msg, "raw_items") else []:
            if key.lower() == name.lower():
                value = raw
                break
    if value is None:
        return ""
    try:
        text = str(value)
    except Exception:
        text = repr(value)
    if "=?" in text:
        try:
            text = str(make_header(decode_header(text)))
        except Exception:
            pass
    return " ".join(clean(text, 10_000).split())


def raw_header(msg: Message, name: str) -> str:
    for key, raw in msg.raw_items() if hasattr(msg, "raw_items") else msg.items():
        if key.lower() == name.lower():
            return str(raw)
    return ""


def addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    """(display name, lower-case address) pairs of an address header."""
    values: list[str] = []
    for key, raw in msg.raw_items() if hasattr(msg, "raw_items") else msg.items():
        if key.lower() == name.lower():
            values.append(str(raw))
    pairs: list[tuple[str, str]] = []
    for display, addr in email.utils.getaddresses(values):
        if not addr or "@" not in addr:
            continue
        if "=?" in display:
            try:
                display = str(make_header(decode_header(display)))
            except Exception:
                pass
        addr = ascii_domain(clean(addr.strip().lower(), 320))
        if "@" not in addr:
            continue
        pairs.append((" ".join(clean(display, 200).split()), addr))
    return pairs


def ascii_domain(address: str) -> str:
    """``ana@bär.test`` → ``ana@xn--br-via.test``: the form Postfix routes and
    the CLI stores; unchanged when the domain is ASCII or not valid IDNA."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


_MSGID = re.compile(r"<[^<>\s]+>")


def message_ids(value: str, limit: int = 200) -> tuple[str, ...]:
    """Message-IDs in a header (at most ``limit``, the newest of References kept)."""
    found = [clean(m, 998) for m in _MSGID.findall(value or "")]
    return tuple(found[-limit:])


def _part_data(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def attachments(msg: Message) -> tuple[Part, ...]:
    """Parts a person would call files: an attachment disposition, or a
    non-text leaf with a file name (inline images included)."""
    found: list[Part] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        try:
            disposition = (part.get_content_disposition() or "").lower()
            filename = part.get_filename() or ""
        except Exception:
            disposition, filename = "", ""
        ctype = part.get_content_type()
        if disposition == "attachment" or (filename and not ctype.startswith("text/")) or (
            ctype.startswith("message/") and part is not msg
        ):
            if ctype == "message/rfc822" and not filename:
                filename = "message.eml"
            data = _part_data(part)
            if ctype.startswith("message/") and not data:
                try:
                    data = part.as_bytes()
                except Exception:
                    data = b""
            found.append(Part(clean(filename, 255) or "attachment", clean(ctype, 255), data))
    return tuple(found)


def parse(data: bytes) -> Inbound:
    msg = email.message_from_bytes(data, policy=_POLICY)
    assert isinstance(msg, EmailMessage)
    froms = addresses(msg, "From")
    if not froms:
        froms = addresses(msg, "Sender")
    from_name, from_address = froms[0] if froms else ("", "")
    defects = tuple(type(d).__name__ for d in getattr(msg, "defects", []))
    try:
        files = attachments(msg)
    except Exception as exc:  # a structure the walker cannot follow
        files = ()
        defects += (f"attachments: {type(exc).__name__}",)
    return Inbound(
        msg=msg,
        from_name=from_name,
        from_address=from_address,
        from_count=len(froms),
        subject=header_text(msg, "Subject"),
        message_id=(message_ids(raw_header(msg, "Message-ID")) or ("",))[0],
        in_reply_to=message_ids(raw_header(msg, "In-Reply-To")),
        references=message_ids(raw_header(msg, "References")),
        cc=tuple(addresses(msg, "Cc")),
        attachments=files,
        defects=defects,
    )
