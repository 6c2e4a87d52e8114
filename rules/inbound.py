"""An inbound message as the rules see it, parsed from the bytes Postfix handed over.

``parse`` never raises, for any bytes, and its cost is bounded by the
message's size, whatever its shape (issue 8). Broken MIME, 8-bit garbage in
headers and headers the modern parser rejects fall back to their raw text;
headers, MIME structure and text beyond the limits of ``rules.limits`` are
cut, and a message whose structure is beyond them (or that the stdlib parser
cannot follow at all) is *opaque*: its headers are read, its body is one
text part, it has no files, and ``Inbound.opaque`` and ``Inbound.defects``
say why. The original bytes are kept untouched by the engine (they are what
the store keeps), so nothing is lost.

The parsed message carries ``POLICY``: ``email.policy.default`` whose header
reads never raise and never see more than ``limits.MAX_PARSED_CHARS`` of a
field, nor comments nested deeper than ``limits.MAX_COMMENT_DEPTH``. Every
header read on the message or its parts, here or in the engine, goes
through it.

Body or file (issue 7): ``part_role`` is the one place that decides whether
a MIME part is the message's text (``rules.quotes``) or a file
(``attachments``); every leaf is one or the other, never neither.
"""

from __future__ import annotations

import email
import email.headerregistry
import email.parser
import email.policy
import email.utils
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from typing import Any, Literal

from rules import limits
from rules.headerclasses import CachedHeaderRegistry

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def clean(text: str, limit: int = 998) -> str:
    """One line of valid Unicode: 8-bit garbage (surrogate escapes) replaced,
    control characters (CR, LF, NUL …) dropped, at most ``limit`` characters.
    Everything the store keeps or a template prints from a header goes
    through here; the raw bytes keep the original."""
    text = text[: limit * 4].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL.sub("", text)[:limit]


# --------------------------------------------------------------------------
# Comments nested too deep for the stdlib parsers


def comment_depth(value: str) -> int:
    """The deepest nesting of RFC 5322 comments in ``value`` (quoted strings
    and backslash escapes respected); linear."""
    if value.count("(") <= limits.MAX_COMMENT_DEPTH:
        return value.count("(")  # an upper bound, exact enough below the limit
    depth = deepest = 0
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quoted:
            quoted = ch != '"'
        elif ch == '"' and not depth:
            quoted = True
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")" and depth:
            depth -= 1
    return deepest


def strip_comments(value: str) -> str:
    """``value`` without its RFC 5322 comments, each replaced by a space
    (quoted strings and escapes respected; an unclosed comment runs to the
    end); linear, never recursive."""
    out: list[str] = []
    depth = 0
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
            if not depth:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            if not depth:
                out.append(ch)
            continue
        if quoted:
            out.append(ch)
            quoted = ch != '"'
            continue
        if depth:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            continue
        if ch == "(":
            depth = 1
            out.append(" ")
        elif ch == '"':
            quoted = True
            out.append(ch)
        else:
            out.append(ch)
    return "".join(out)


def bounded(value: str, limit: int = limits.MAX_PARSED_CHARS) -> str:
    """A header value as the stdlib's structured parsers may see it: at most
    ``limit`` characters, comments removed when nested too deep."""
    value = value[:limit]
    if comment_depth(value) > limits.MAX_COMMENT_DEPTH:
        value = strip_comments(value)
    return value


# --------------------------------------------------------------------------
# The policy: policy.default, bounded and never raising on a header read

_UNSTRUCTURED = email.headerregistry.HeaderRegistry(use_default_map=False)


class _BoundedPolicy(EmailPolicy):
    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        return name, value[: limits.MAX_FIELD_CHARS]

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):  # already a header object (a message built in code)
            return value
        key = (name, value, self.header_factory)
        found = _PARSED.get(key)
        if found is None:
            found = self._parse_header(name, value)
            if len(value) <= _PARSED_VALUE_CHARS:
                if len(_PARSED) >= _PARSED_MAX:
                    _PARSED.clear()
                _PARSED[key] = found
        return found

    def _parse_header(self, name: str, value: str) -> Any:
        value = bounded(value)
        try:
            return super().header_fetch_parse(name, value)
        except Exception:
            pass
        try:  # the registry's structured parser gave up: read it as text
            return _UNSTRUCTURED(name, "".join(value.splitlines()))
        except Exception:
            return _UNSTRUCTURED(name, "")


# Parsed header objects by (name, raw value): the engine, the rules and the
# quote stripper read Content-Type and friends 20-30 times per message, and
# the stdlib parses the field anew on every read (a seventh of casegate's CPU,
# bench/profiles/). The objects are immutable (str subclasses with read-only
# properties), so one is shared by every reader; short values only, and at
# most _PARSED_MAX of them (a parsed header keeps its token tree, ~4 KB: 2048 of them
# would hold about 8 MB; a message needs a dozen).
_PARSED: dict[tuple[str, str, Any], Any] = {}
_PARSED_MAX = 256
_PARSED_VALUE_CHARS = 2000


#: The policy of every message ``parse`` returns. Serializing keeps header
#: fields as received (no refolding, which would parse them unbounded).
POLICY = _BoundedPolicy(refold_source="none", header_factory=CachedHeaderRegistry())


# --------------------------------------------------------------------------
# The message as the rules see it


@dataclass(frozen=True)
class Part:
    filename: str
    content_type: str
    data: bytes
    inline: bool = False  # shown in the text (disposition inline, or a Content-ID only)
    content_id: str = ""  # without the angle brackets

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
    # The MIME structure was beyond rules.limits or unparseable: msg holds
    # the headers and the body as one text part, and there are no files.
    opaque: bool = False


def _raw_values(msg: Message, name: str) -> list[str]:
    wanted = name.lower()
    try:
        items = msg.raw_items() if hasattr(msg, "raw_items") else msg.items()
        return [str(raw) for key, raw in items if isinstance(key, str) and key.lower() == wanted]
    except Exception:
        return []


def header_text(msg: Message, name: str) -> str:
    """A header as readable text (RFC 2047 decoded), never raising."""
    try:
        value = msg.get(name)
    except Exception:  # the parser chokes on some malformed headers
        raws = _raw_values(msg, name)
        value = raws[0][: limits.MAX_PARSED_CHARS] if raws else None
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
    raws = _raw_values(msg, name)
    return raws[0] if raws else ""


# A cheap, bounded reading of an address: <local@domain>, else a bare addr-spec.
_ANGLE_ADDR = re.compile(r"<\s*([^<>\s@\"]{1,64}@[^<>\s@]{1,255})\s*>")
_BARE_ADDR = re.compile(r"(?<![\w.!#$%&'*+/=?^`{|}~-])([\w.!#$%&'*+/=?^`{|}~-]{1,64}@[\w.-]{1,255}\w)")


def _regex_addresses(value: str) -> list[tuple[str, str]]:
    text = strip_comments(value[: limits.MAX_ADDRESS_CHARS])
    found = [("", m) for m in _ANGLE_ADDR.findall(text)]
    return found or [("", m) for m in _BARE_ADDR.findall(text)]


def addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    """(display name, lower-case address) pairs of an address header; at most
    ``limits.MAX_ADDRESSES`` from ``limits.MAX_ADDRESS_CHARS`` characters.
    Never raises: when the address parser gives up, a regex finds them."""
    values: list[str] = []
    budget = limits.MAX_ADDRESS_CHARS
    for raw in _raw_values(msg, name):
        if budget <= 0:
            break
        values.append(bounded(raw, budget))
        budget -= len(values[-1])
    try:
        found = email.utils.getaddresses(values)
    except Exception:  # RecursionError, or anything the compat32 parser trips on
        found = [pair for value in values for pair in _regex_addresses(value)]
    pairs: list[tuple[str, str]] = []
    for display, addr in found:
        if len(pairs) >= limits.MAX_ADDRESSES:
            break
        if not addr or "@" not in addr:
            continue
        if "=?" in display:
            try:
                display = str(make_header(decode_header(display[:1000])))
            except Exception:
                pass
        addr = ascii_domain(clean(addr.strip().lower(), 320))
        local, at, domain = addr.rpartition("@")
        if not at or not local or not domain:
            # "spam@x.test gmail@gmail.com" parses as "@gmail.com": a whole
            # domain is never an author (a CSR's one-click #blacklist on it
            # would block gmail.com).
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


_MSGID = re.compile(r"<[^<>\s]{1,998}>")


def message_ids(value: str, limit: int = 200) -> tuple[str, ...]:
    """Message-IDs in a header (at most ``limit``, the newest of References kept)."""
    found = [clean(m, 998) for m in _MSGID.findall(value or "")]
    return tuple(found[-limit:])


# --------------------------------------------------------------------------
# Body or file: the one decision

Role = Literal["container", "text", "file"]
_BODY_TYPES = frozenset({"text/plain", "text/html"})


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def part_role(part: Message, *, root: bool = False) -> Role:
    """What a MIME part is to casegate; ``root`` for the message itself.

    - ``container``: a multipart with parts, whose parts are looked at;
    - ``file``: an attached message (``message/*``: a forward, a bounced
      message, a delivery report), anything with an attachment disposition
      or a file name, and any leaf that is not text/plain or text/html;
    - ``text``: the rest: text/plain and text/html parts without a file name
      or attachment disposition, and a multipart whose boundary is broken
      (shown as text). The message itself, when it is text/plain or
      text/html, is text whatever its disposition says.

    ``rules.quotes`` reads the ``text`` parts (one of each
    multipart/alternative, the root of a multipart/related) and
    ``attachments`` lists the ``file`` parts: no part is in neither.
    """
    ctype = _content_type(part)
    maintype = ctype.partition("/")[0]
    if maintype == "message":
        return "file"
    if part.is_multipart():
        return "container"
    if maintype == "multipart":
        return "text"
    if root and ctype in _BODY_TYPES:
        return "text"
    try:
        disposition = (part.get_content_disposition() or "").lower()
        filename = part.get_filename()
    except Exception:
        disposition, filename = "", None
    if disposition == "attachment" or filename:
        return "file"
    return "text" if ctype in _BODY_TYPES else "file"


def children(part: Message) -> list[Message]:
    """The parts of a multipart (none for a leaf)."""
    try:
        payload = part.get_payload()
    except Exception:
        return []
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []


def _walk(msg: Message) -> Iterator[tuple[Message, int]]:
    """(part, depth) of every part in document order, attached messages
    included; iterative (no recursion, whatever the depth)."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        yield part, depth
        stack.extend((child, depth + 1) for child in reversed(children(part)))


def walk_parts(msg: Message) -> Iterator[Message]:
    """Every part of ``msg`` (itself first) in document order, attached
    messages included: ``Message.walk`` without its recursion."""
    for part, _ in _walk(msg):
        yield part


def _part_data(part: Message) -> bytes:
    if _content_type(part).startswith("message/"):
        inner = children(part)
        try:
            return b"".join(p.as_bytes() for p in inner) if inner else _payload_bytes(part)
        except Exception:
            return _payload_bytes(part)
    return _payload_bytes(part)


def _payload_bytes(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return payload
    try:
        raw = part.get_payload()
    except Exception:
        return b""
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def attachments(msg: Message) -> tuple[Part, ...]:
    """The parts ``part_role`` calls files, in document order (an attached
    message is one file, its own parts are not looked into)."""
    found: list[Part] = []
    stack: list[tuple[Message, bool]] = [(msg, True)]
    while stack:
        part, root = stack.pop()
        role = part_role(part, root=root)
        if role == "container":
            stack.extend((child, False) for child in reversed(children(part)))
            continue
        if role != "file":
            continue
        ctype = _content_type(part)
        try:
            filename = part.get_filename() or ""
        except Exception:
            filename = ""
        inline, cid = _placement(part)
        if not filename:
            filename = _unnamed(ctype, cid)
        found.append(Part(clean(filename, 255) or "attachment", clean(ctype, 255), _part_data(part),
                          inline=inline, content_id=cid))
    return tuple(found)


_CID = re.compile(r"<?\s*([^<>\s]{1,250})\s*>?")
_NAME_UNSAFE = re.compile(r"[^\w.+-]+")
# Names for files that come without one (a cid-only image, an invitation).
_EXTENSIONS = {"message/rfc822": ".eml", "message/global": ".eml", "text/calendar": ".ics",
               "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
               "image/webp": ".webp", "image/svg+xml": ".svg", "application/pdf": ".pdf",
               "text/plain": ".txt", "text/html": ".html"}
_BASES = {"message/rfc822": "message", "message/global": "message", "text/calendar": "invite"}


def _placement(part: Message) -> tuple[bool, str]:
    """(inline, Content-ID) of a file part: inline when its disposition says
    so, or when it has a Content-ID and no disposition (an image a
    multipart/related text refers to by ``cid:``)."""
    try:
        disposition = (part.get_content_disposition() or "").lower()
    except Exception:
        disposition = ""
    m = _CID.fullmatch(clean(raw_header(part, "Content-ID"), 300).strip())
    cid = m.group(1) if m else ""
    return disposition == "inline" or (not disposition and bool(cid)), cid


def _unnamed(ctype: str, cid: str) -> str:
    """A name for a file that has none: ``message.eml``, ``invite.ics``, or
    the Content-ID's local part (``logo.png`` for ``<logo@x>``)."""
    ext = _EXTENSIONS.get(ctype, "")
    base = _BASES.get(ctype, "")
    if not base and cid:
        base = _NAME_UNSAFE.sub("_", cid.partition("@")[0]).strip("._")[:60]
        if base.lower().endswith(ext) and ext:
            ext = ""
    if not base:
        base = "inline" if cid else "attachment"
    return base + ext


# --------------------------------------------------------------------------
# Parsing within limits


def _bound_headers(part: Message) -> str | None:
    """Trim the header fields of one part to ``rules.limits``; what was cut."""
    headers: list[tuple[str, str]] = getattr(part, "_headers", [])
    total = sum(len(v) for _, v in headers)
    if len(headers) <= limits.MAX_SAME_FIELD and total <= limits.MAX_HEADER_CHARS:
        return None  # nothing can be over a limit
    kept: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    size = 0
    for name, value in headers:
        key = str(name).lower()
        if seen.get(key, 0) >= limits.MAX_SAME_FIELD:
            continue
        within = len(kept) < limits.MAX_HEADER_FIELDS and size + len(value) <= limits.MAX_HEADER_CHARS
        if not within and key not in limits.ESSENTIAL_HEADERS:
            continue
        seen[key] = seen.get(key, 0) + 1
        kept.append((name, value))
        size += len(value)
    if len(kept) == len(headers):
        return None
    # The stdlib keeps fields in this list; there is no public call to drop
    # some of many in linear time.
    part._headers = kept  # type: ignore[attr-defined]
    return f"headers: kept {len(kept)} of {len(headers)} fields ({total} characters)"


_BOUNDARY_PARAM = re.compile(rb"""boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))""", re.I)
# A line that may be a delimiter: after CR or LF (the parser takes either as a
# line end), "--" and up to 200 characters to the end of the line.
_DELIMITER_LINE = re.compile(rb"[\r\n]--([^\r\n]{1,200}?)[ \t]*(?=[\r\n]|\Z)")


def _count_delimiters(data: bytes) -> int:
    """How many lines of ``data`` are MIME boundary delimiters (an upper bound
    of its parts), in linear time, without parsing."""
    if data.count(b"--") <= limits.MAX_MIME_PARTS:
        return 0  # cannot be over the limit
    boundaries = {a or b for a, b in _BOUNDARY_PARAM.findall(data)}
    count = 0
    for m in _DELIMITER_LINE.finditer(data):
        line = m.group(1)
        if line in boundaries or (line.endswith(b"--") and line[:-2] in boundaries):
            count += 1
    return count


_STATUS_PART = re.compile(rb"content-type:[ \t]*message/(?:global-)?delivery-status", re.I)
_BLANK_LINE = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def _count_status_blocks(data: bytes) -> int:
    """How many header blocks the delivery-status parts of ``data`` hold (the
    parser makes a part of each), in linear time, without parsing."""
    count = 0
    for n, m in enumerate(_STATUS_PART.finditer(data)):
        if n >= limits.MAX_MIME_PARTS:
            return n
        end = min((i for i in (data.find(b"\n--", m.end()), data.find(b"\r--", m.end())) if i >= 0),
                  default=-1)
        count += len(_BLANK_LINE.findall(data, m.end(), end if end >= 0 else len(data)))
        if count > limits.MAX_MIME_PARTS:
            break
    return count


def _shape(msg: Message) -> tuple[int, int]:
    """(parts, deepest nesting) of a parsed message; stops counting past the limits."""
    parts = deepest = 0
    for _, depth in _walk(msg):
        parts += 1
        deepest = max(deepest, depth)
        if parts > limits.MAX_MIME_PARTS:
            break
    return parts, deepest


def _opaque_message(data: bytes) -> EmailMessage:
    """The headers of ``data``, and its body as one text payload."""
    try:
        msg = email.parser.BytesParser(policy=POLICY).parsebytes(data, headersonly=True)
        assert isinstance(msg, EmailMessage)
    except Exception:
        msg = EmailMessage(policy=POLICY)
        msg.set_payload(data.decode("ascii", "surrogateescape"))
    _bound_headers(msg)
    try:
        payload = msg.get_payload()
    except Exception:
        payload = ""
    if not isinstance(payload, str):
        payload = ""
    if len(payload) > limits.MAX_OPAQUE_CHARS:
        payload = payload[: limits.MAX_OPAQUE_CHARS]
    msg.set_payload(payload)
    return msg


def _parse_message(data: bytes) -> tuple[EmailMessage, list[str], bool]:
    """The parsed message, what was cut, and whether it is opaque."""
    defects: list[str] = []
    why = ""
    delimiters = _count_delimiters(data)
    blocks = _count_status_blocks(data)
    if delimiters > limits.MAX_MIME_PARTS:
        why = f"{delimiters} MIME boundaries, over the limit of {limits.MAX_MIME_PARTS} parts"
    elif blocks > limits.MAX_MIME_PARTS:
        why = f"over {limits.MAX_MIME_PARTS} delivery-status blocks"
    else:
        try:
            parsed = email.message_from_bytes(data, policy=POLICY)
            assert isinstance(parsed, EmailMessage)
            parts, depth = _shape(parsed)
            if parts > limits.MAX_MIME_PARTS:
                why = f"over {limits.MAX_MIME_PARTS} MIME parts"
            elif depth > limits.MAX_MIME_DEPTH:
                why = f"MIME nested {depth} deep, over the limit of {limits.MAX_MIME_DEPTH}"
            else:
                for part, _ in _walk(parsed):
                    cut = _bound_headers(part)
                    if cut:
                        defects.append(cut)
                defects.extend(type(d).__name__ for d in getattr(parsed, "defects", []))
                return parsed, defects, False
        except Exception as exc:  # RecursionError, MemoryError, a parser bug
            why = f"MIME structure unparseable ({type(exc).__name__})"
    msg = _opaque_message(data)
    return msg, [f"opaque: {why}"], True


def parse(data: bytes) -> Inbound:
    """The message in ``data`` as the rules see it. Never raises, for any bytes."""
    try:
        msg, defects, opaque = _parse_message(data)
    except Exception as exc:  # a last resort: an empty message, the bytes are stored
        msg, defects, opaque = EmailMessage(policy=POLICY), [f"opaque: {type(exc).__name__}"], True
    froms = addresses(msg, "From") or addresses(msg, "Sender")
    from_name, from_address = froms[0] if froms else ("", "")
    files: tuple[Part, ...] = ()
    if not opaque:
        try:
            files = attachments(msg)
        except Exception as exc:  # a structure the walker cannot follow
            defects.append(f"attachments: {type(exc).__name__}")
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
        defects=tuple(defects),
        opaque=opaque,
    )
