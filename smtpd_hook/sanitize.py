"""A CSR's HTML, made safe to send: their formatting kept, nothing active,
nothing loaded from elsewhere when the customer opens the mail.

The sanitiser is ``nh3``, the binding to Rust's Ammonia (maintained, an
allow-list parser built on html5ever; ``bleach`` is deprecated). What is
allowed: text formatting, lists, links (http, https, mailto, tel), tables,
quotes, and pictures that travel in the message (``cid:``). Scripts, styles,
event handlers, forms, frames and ``javascript:`` links go; a picture with
any other source loses its source (no tracking pixel, no remote fetch); a
``style`` keeps only properties that cannot load anything.

The quoted history is cut by ``rules.quotes.strip_quoted_html`` before this
module sees the HTML; it never detects quotes itself.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from email.message import Message

import nh3

from rules.inbound import part_role, walk_parts
from rules.quotes import html_to_text, strip_quoted_html
from smtpd_hook.render import InlineImage

log = logging.getLogger("casegate.render")

TAGS = frozenset({
    "a", "abbr", "b", "big", "blockquote", "br", "caption", "center", "cite", "code", "col",
    "colgroup", "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "small", "span",
    "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt",
    "u", "ul",
})
# Dropped with everything inside them (the rest of an unknown tag keeps its text).
CLEAN_CONTENT = frozenset({"script", "style", "title", "head", "template", "noscript", "iframe",
                           "object", "embed", "svg", "math", "select", "textarea", "button"})
_CELL = {"align", "valign", "width", "height", "colspan", "rowspan", "bgcolor"}
ATTRIBUTES: dict[str, set[str]] = {
    "*": {"style", "dir", "lang", "title"},
    "a": {"href", "name"},
    "img": {"src", "alt", "width", "height", "border", "align"},
    "table": {"width", "border", "cellpadding", "cellspacing", "align", "bgcolor"},
    "td": _CELL, "th": _CELL, "tr": {"align", "valign", "bgcolor"},
    "col": {"width", "span"}, "colgroup": {"width", "span"},
    "font": {"color", "face", "size"},
    "p": {"align"}, "div": {"align"}, "h1": {"align"}, "h2": {"align"}, "h3": {"align"},
    "ol": {"start", "type"}, "ul": {"type"}, "li": {"value"},
    "blockquote": {"cite"},
}
URL_SCHEMES = frozenset({"http", "https", "mailto", "tel", "cid"})
# Nothing here can load a URL (no background-image, no url(), no @import).
STYLE_PROPERTIES = frozenset({
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight",
    "font-variant", "text-align", "text-decoration", "text-indent", "text-transform",
    "line-height", "letter-spacing", "white-space", "vertical-align", "direction",
    "margin", "margin-top", "margin-bottom", "margin-left", "margin-right",
    "padding", "padding-top", "padding-bottom", "padding-left", "padding-right",
    "border", "border-top", "border-bottom", "border-left", "border-right", "border-color",
    "border-style", "border-width", "border-collapse", "border-spacing", "width", "height",
    "min-width", "max-width", "list-style-type", "display",
})


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if attr in ("src", "href") and value.strip().lower().startswith("cid:"):
        return value.strip() if tag == "img" and attr == "src" else None
    if tag == "img" and attr == "src":
        return None  # remote (or data:) pictures are not loaded on open
    if attr == "style" and re.search(r"url\s*\(|expression\s*\(|@import", value, re.I):
        return None
    return value


def sanitize(html: str) -> str:
    """``html`` with only what the allow-list keeps (a fragment, no <html>/<body>)."""
    return nh3.clean(
        html or "", tags=set(TAGS), clean_content_tags=set(CLEAN_CONTENT),
        attributes={k: set(v) for k, v in ATTRIBUTES.items()},
        attribute_filter=_attribute_filter, url_schemes=set(URL_SCHEMES),
        filter_style_properties=set(STYLE_PROPERTIES), strip_comments=True,
        link_rel="noopener noreferrer",
    ).strip()


def _html_body(msg: Message) -> str | None:
    """The first text/html body part's text, or None (a text-only message)."""
    for part in walk_parts(msg):
        if part is not msg and part.get_content_type().startswith("message/"):
            return None  # inside a forwarded message: not the CSR's body
        if part.get_content_type() == "text/html" and part_role(part, root=part is msg) == "text":
            try:
                return str(part.get_content())  # type: ignore[attr-defined]
            except Exception:
                payload = part.get_payload(decode=True)
                return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None
    return None


def _images(msg: Message) -> dict[str, Message]:
    """Parts with a Content-ID, by the ID without brackets."""
    found: dict[str, Message] = {}
    for part in walk_parts(msg):
        cid = str(part.get("Content-ID", "") or "").strip().strip("<>").strip()
        if cid and not part.is_multipart():
            found.setdefault(cid, part)
    return found


_CID_RE = re.compile(r'src="cid:([^"]+)"', re.I)
_LINE_END = re.compile(r"<br\s*/?>|</(?:p|div|li|h[1-6]|td|tr|table)>", re.I)


def _text_start(html: str) -> int:
    """The index of the first character of text (outside any tag), or -1."""
    inside = False
    for i, ch in enumerate(html):
        if ch == "<":
            inside = True
        elif ch == ">":
            inside = False
        elif not inside and not ch.isspace():
            return i
    return -1


def drop_command_lines(html: str, reply: str) -> str:
    """The CSR's command lines (``#close``, ``#solution`` …) at the top go:
    they are for casegate, and ``reply`` (the text the rules kept) has none."""
    first_kept = reply.lstrip().splitlines()[0].strip() if reply.strip() else ""
    for _ in range(20):
        i = _text_start(html)
        if i < 0 or html[i] != "#":
            break
        line = html_to_text(html).lstrip().splitlines()[0].strip() if html_to_text(html).strip() else ""
        if first_kept and line == first_kept:
            break
        end = _LINE_END.search(html, i)
        if end is None:
            html = html[:i]
            break
        cut = end.end() if end.group(0).lower().startswith("<br") else end.start()
        html = html[:i] + html[cut:]
    return re.sub(r"^(\s*<(p|div)[^>]*>\s*</\2>)+", "", html.strip(), flags=re.I)


_SIG_RE = re.compile(r"(?:<(p|div)[^>]*>\s*--(?:\s|&nbsp;|\xa0)*(?:<br\s*/?>\s*)?</\1>"
                     r"|(?<![\w-])--(?:[ \t]|&nbsp;|\xa0)*<br\s*/?>)", re.I)
SIGNATURE_LINES = 15  # as rules.quotes: a longer tail after "-- " is not a signature


def drop_signature(html: str) -> str:
    """The CSR's mail client's signature after a ``-- `` line goes, as in
    the text part (casegate adds the CSR's signature itself). The HTML is
    cut there and parsed again by nh3, which closes what was open."""
    for m in reversed(list(_SIG_RE.finditer(html))):
        tail = html_to_text(html[m.end():]).strip()
        if len(tail.splitlines()) > SIGNATURE_LINES:
            break
        head = html[: m.start()]
        if html_to_text(head).strip():
            return sanitize(head)
    return html


def csr_html(msg: Message, reply: str) -> tuple[str, list[InlineImage]] | None:
    """The CSR's answer as safe HTML with the pictures it shows, or None when
    the message has no HTML body (or nothing is left of it)."""
    body = _html_body(msg)
    if body is None:
        return None
    cleaned = sanitize(strip_quoted_html(body))
    cleaned = drop_signature(drop_command_lines(cleaned, reply))
    if not html_to_text(cleaned).strip() and "<img" not in cleaned:
        return None
    parts = _images(msg)
    inline: list[InlineImage] = []
    for cid in dict.fromkeys(_CID_RE.findall(cleaned)):
        part = parts.get(cid)
        if part is None:
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        inline.append(InlineImage(cid=cid, content_type=part.get_content_type(), data=data,
                                  filename=str(part.get_filename() or "")))
    return cleaned, inline


def inline_digests(images: Sequence[InlineImage]) -> set[str]:
    """SHA-256 of each picture: the same bytes are not also attached."""
    return {hashlib.sha256(i.data).hexdigest() for i in images}


def footer_cid(data: bytes) -> str:
    return f"footer.{hashlib.sha256(data).hexdigest()[:16]}@casegate"


def footer_html(html: str, image: bytes | None) -> str:
    """A CSR's footer, sanitised; ``cid:footer`` names its stored picture."""
    if image:
        html = re.sub(r'(["\'])cid:footer\1', f'"cid:{footer_cid(image)}"', html or "")
    return sanitize(html)
