"""Writing outgoing mail: jinja2 templates (sandboxed, StrictUndefined) into
RFC 5322 messages.

Every mail casegate writes comes from a template pair chosen by audience and
event: ``customer/ack.txt.j2`` (plain text) and ``customer/ack.html.j2``
(HTML, autoescaped). Built-ins are English (``templates/<audience>/``) and
Polish (``templates/pl/<audience>/``). An admin overrides any of them from
``templates_dir`` (docs/templates.md); the most specific file wins:

1. ``<mailbox address>/<audience>/<name>.<ext>.j2`` (e.g. ``billing@example.com/customer/ack.txt.j2``)
2. ``<pool>/<audience>/<name>.<ext>.j2``
3. ``<audience>/<name>.<ext>.j2``
4. the built-in in the pool's language, then the English built-in.

An override that fails at run time is logged and the built-in pair is used:
a typo in a template never turns mail into a 451. ``Renderer.check`` finds
such errors ahead (``casegate template check``, ``serve`` at start).
"""

from __future__ import annotations

import datetime as dt
import email.headerregistry
import email.policy
import email.utils
import html as htmllib
import logging
import random
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from rules.headerclasses import CachedHeaderRegistry

SMTP_POLICY = email.policy.SMTP.clone(max_line_length=998, header_factory=CachedHeaderRegistry())

log = logging.getLogger("casegate.render")

AUDIENCES = ("customer", "csr", "department")
LANGUAGES = ("en", "pl")
BUILTIN = "builtin/"
OVERRIDE = "override/"
TEMPLATE_RE = re.compile(r"^(?P<name>[a-z_]+)\.(?P<ext>txt|html)\.j2$")


@dataclass(frozen=True)
class OutgoingFile:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class InlineImage:
    """A picture the HTML part shows by ``cid:``: it travels in the message,
    never as a link to fetch."""

    cid: str  # without the angle brackets
    content_type: str
    data: bytes
    filename: str = ""


@dataclass(frozen=True)
class Rendered:
    text: str
    html: str | None  # None: text only (the pool says so)
    sources: tuple[str, ...] = ()  # the template files used, for logs and `template render`


@dataclass(frozen=True)
class TemplateProblem:
    """A broken override: where, and what."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


def _autoescape(name: str | None) -> bool:
    return bool(name) and str(name).endswith(".html.j2")


def paragraphs(text: Any) -> Markup:
    """Plain text as HTML: escaped, blank lines make paragraphs, line breaks
    stay, ``<https://…>`` and ``<mailto:…>`` become links."""
    blocks = re.split(r"\n[ \t]*\n", str(text or "").strip("\n"))
    out = []
    for block in blocks:
        if not block.strip():
            continue
        escaped = htmllib.escape(block, quote=False)
        escaped = _LINK_RE.sub(_link, escaped)
        out.append("<p>" + escaped.replace("\n", "<br>\n") + "</p>")
    return Markup("\n".join(out))


_LINK_RE = re.compile(r"&lt;((?:https?|mailto):[^\s&]*(?:&amp;[^\s&]*)*)&gt;")


def _link(m: re.Match[str]) -> str:
    url = m.group(1)
    return f'&lt;<a href="{url}">{url}</a>&gt;'


def text_to_html(text: str) -> str:
    """A whole text mail as a minimal HTML document (an override with no HTML twin)."""
    return ('<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>'
            '<body style="font-family: sans-serif;">\n' + paragraphs(text) + "\n</body></html>\n")


# The greeting of each built-in language; a pool may set its own.
GREETINGS = {"en": "Hello {first_name},", "pl": "Dzień dobry {first_name},"}
_NAME_RE = re.compile(r"[ \t]*\{(first[ _]name|name)\}", re.I)


def greeting_line(display_name: str, template: str = "", language: str = "en") -> str:
    """The customer's greeting: ``Hello John,``; ``Hello,`` with no usable
    name. ``template`` may say ``{first_name}`` (or ``{first name}``) and
    ``{name}`` (the whole display name)."""
    from rules.names import first_name

    template = template or GREETINGS.get(language or "en", GREETINGS["en"])
    first = first_name(display_name)
    whole = " ".join((display_name or "").split()) if first else ""

    def fill(m: re.Match[str]) -> str:
        value = first if m.group(1).lower().startswith("first") else whole
        return m.group(0)[: m.start(1) - m.start(0) - 1] + value if value else ""

    return _NAME_RE.sub(fill, template).strip()


class Renderer:
    def __init__(self, templates_dir: Path | None = None) -> None:
        self.templates_dir = templates_dir
        loaders: dict[str, jinja2.BaseLoader] = {
            BUILTIN.rstrip("/"): jinja2.PackageLoader("smtpd_hook", "templates")}
        if templates_dir is not None:
            loaders[OVERRIDE.rstrip("/")] = jinja2.FileSystemLoader(str(templates_dir))
        self.env = SandboxedEnvironment(
            loader=jinja2.PrefixLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=_autoescape,
            keep_trailing_newline=True,
            trim_blocks=True,
            # Read once: no stat() of every template on every use. SIGHUP
            # (Engine.reload -> reload()) reads the files again.
            auto_reload=False,
        )
        self.env.filters["paragraphs"] = paragraphs
        # The old name-based loader, for ``text()``: an override of the same
        # relative name beats the built-in.
        self._plain = SandboxedEnvironment(
            loader=jinja2.ChoiceLoader(
                ([jinja2.FileSystemLoader(str(templates_dir))] if templates_dir is not None else [])
                + [jinja2.PackageLoader("smtpd_hook", "templates")]),
            undefined=jinja2.StrictUndefined, autoescape=_autoescape,
            keep_trailing_newline=True, trim_blocks=True, auto_reload=False)
        self._plain.filters["paragraphs"] = paragraphs
        self._uses: dict[str, tuple[jinja2.Template, set[str]]] = {}
        # Candidates with no file (the overrides an installation does not
        # have): looked up on disk once, not for every mail, until reload().
        self._missing: set[str] = set()

    def reload(self) -> None:
        """Read the template files again (SIGHUP): compiled templates and the
        names found missing are forgotten."""
        self.env.cache.clear()  # type: ignore[union-attr]
        self._plain.cache.clear()  # type: ignore[union-attr]
        self._missing = set()
        self._uses = {}

    # -- one template ---------------------------------------------------------------

    def text(self, template: str, context: Mapping[str, Any]) -> str:
        """One text template by relative name (``customer/ack.txt.j2``)."""
        return _tidy_text(self._plain.get_template(template).render(**context))

    # -- a pair -------------------------------------------------------------------

    def candidates(self, audience: str, name: str, ext: str, *, pool: str = "", mailbox: str = "",
                   language: str = "en") -> list[str]:
        """Where a template may come from, most specific first."""
        rel = f"{audience}/{name}.{ext}.j2"
        found: list[str] = []
        if self.templates_dir is not None:
            if mailbox:
                found.append(f"{OVERRIDE}{mailbox.lower()}/{rel}")
            if pool and "/" not in pool and pool not in (".", ".."):
                found.append(f"{OVERRIDE}{pool}/{rel}")
            found.append(f"{OVERRIDE}{rel}")
        if language and language != "en" and language in LANGUAGES:
            found.append(f"{BUILTIN}{language}/{rel}")
        found.append(f"{BUILTIN}{rel}")
        return found

    def _first(self, names: Sequence[str]) -> tuple[int, jinja2.Template | None]:
        missing = self._missing
        for i, name in enumerate(names):
            if name in missing:
                continue
            try:
                return i, self.env.get_template(name)
            except jinja2.TemplateNotFound:
                missing.add(name)
                continue
        return len(names), None

    def uses(self, audience: str, name: str, variables: Sequence[str], *, pool: str = "",
             mailbox: str = "", language: str = "en") -> bool:
        """Whether the templates this mail would use name any of ``variables``
        (the thread and the files cost queries: load them only then)."""
        wanted = set(variables)
        for ext in ("txt", "html"):
            names = self.candidates(audience, name, ext, pool=pool, mailbox=mailbox, language=language)
            for candidate in names[: self._first(names)[0] + 1]:
                if wanted & self._variables(candidate):
                    return True
        return False

    def _variables(self, name: str) -> set[str]:
        if name in self._missing:
            return set()
        try:
            template = self.env.get_template(name)
        except jinja2.TemplateNotFound:
            self._missing.add(name)
            return set()
        cached = self._uses.get(name)
        if cached is not None and cached[0] is template:
            return cached[1]
        try:
            found = set(meta.find_undeclared_variables(self.env.parse(self.source(name))))
        except Exception:
            found = set()
        self._uses[name] = (template, found)
        return found

    def render(self, audience: str, name: str, context: Mapping[str, Any], *, pool: str = "",
               mailbox: str = "", language: str = "en", html: bool = True) -> Rendered:
        """The text and HTML parts of one mail. An override that fails is
        logged and the built-ins are used instead (both parts, so they agree)."""
        text_names = self.candidates(audience, name, "txt", pool=pool, mailbox=mailbox, language=language)
        html_names = self.candidates(audience, name, "html", pool=pool, mailbox=mailbox, language=language)
        chosen: list[str] = []
        complete = False
        try:
            ti, text_t = self._first(text_names)
            if text_t is None:
                raise jinja2.TemplateNotFound(text_names[-1])
            chosen.append(text_names[ti])
            hi, html_t = self._first(html_names) if html else (len(html_names), None)
            if html_t is not None and hi <= ti:
                chosen.append(html_names[hi])
            complete = True
            text = _tidy_text(text_t.render(**context))
            html_out: str | None = None
            if html:
                # An override of the text with no HTML twin at least as
                # specific: the HTML says the same words.
                html_out = (html_t.render(**context) if html_t is not None and hi <= ti
                            else text_to_html(text))
            return Rendered(text, html_out, tuple(chosen))
        except jinja2.TemplateNotFound:
            raise
        except Exception as exc:
            # A built-in that fails is a bug (the tests render each one): raise.
            # An override that fails, or fails to compile, is the admin's: fall back.
            if self.templates_dir is None or (complete and not any(
                    n.startswith(OVERRIDE) for n in chosen)):
                raise
            log.error("template %s failed (%s: %s): using the built-in %s/%s", _where(exc, chosen),
                      type(exc).__name__, getattr(exc, "message", None) or exc, audience, name)
            return self._builtin(audience, name, context, language=language, html=html)

    def _builtin(self, audience: str, name: str, context: Mapping[str, Any], *, language: str,
                 html: bool) -> Rendered:
        names_t = [n for n in self.candidates(audience, name, "txt", language=language)
                   if n.startswith(BUILTIN)]
        names_h = [n for n in self.candidates(audience, name, "html", language=language)
                   if n.startswith(BUILTIN)]
        ti, text_t = self._first(names_t)
        assert text_t is not None, names_t
        text = _tidy_text(text_t.render(**context))
        if not html:
            return Rendered(text, None, (names_t[ti],))
        hi, html_t = self._first(names_h)
        html_out = html_t.render(**context) if html_t is not None else text_to_html(text)
        return Rendered(text, html_out, (names_t[ti],) + ((names_h[hi],) if html_t is not None else ()))

    # -- what the admin has -------------------------------------------------------------

    def builtin_names(self) -> list[tuple[str, str]]:
        """(audience, name) of every built-in template."""
        root = Path(__file__).with_name("templates")
        names = {(p.parent.name, m["name"]) for p in root.glob("*/*.j2")
                 if (m := TEMPLATE_RE.match(p.name)) and p.parent.name in AUDIENCES}
        return sorted(names)

    def overrides(self) -> list[Path]:
        """Every override file under templates_dir (relative paths)."""
        if self.templates_dir is None or not self.templates_dir.is_dir():
            return []
        return sorted(p.relative_to(self.templates_dir) for p in self.templates_dir.rglob("*.j2")
                      if p.is_file())

    def source(self, name: str) -> str:
        """A template's text, by loader name (``builtin/customer/ack.txt.j2``)."""
        loader = self.env.loader
        assert loader is not None
        text, _, _ = loader.get_source(self.env, name)
        return text

    def check(self, sample: Callable[[str, str], Mapping[str, Any]]) -> list[TemplateProblem]:
        """Compile every override and render it against ``sample(audience,
        name)``; the problems, naming file and line."""
        problems: list[TemplateProblem] = []
        known = {n for _, n in self.builtin_names()}
        for rel in self.overrides():
            shown = str(self.templates_dir / rel) if self.templates_dir else str(rel)
            parts = rel.parts
            m = TEMPLATE_RE.match(parts[-1])
            if m is None or len(parts) < 2 or parts[-2] not in AUDIENCES or len(parts) > 3:
                if not parts[-1].startswith("_"):
                    problems.append(TemplateProblem(shown, None, (
                        "not where casegate looks: use [POOL/ or MAILBOX@ADDRESS/]AUDIENCE/NAME.txt.j2 "
                        "or NAME.html.j2 (AUDIENCE: customer, csr, department)")))
                continue
            audience, name = parts[-2], m["name"]
            if name not in known:
                problems.append(TemplateProblem(shown, None, (
                    f"no built-in template {audience}/{name}: known are "
                    + ", ".join(sorted(n for a, n in self.builtin_names() if a == audience)))))
                continue
            try:
                template = self.env.get_template(OVERRIDE + rel.as_posix())
                template.render(**sample(audience, name))
            except jinja2.TemplateSyntaxError as exc:
                problems.append(TemplateProblem(shown, exc.lineno, exc.message or str(exc)))
            except Exception as exc:
                problems.append(TemplateProblem(shown, _line(exc, OVERRIDE + rel.as_posix()),
                                                f"{type(exc).__name__}: {exc}"))
        return problems


def _line(exc: BaseException, name: str) -> int | None:
    """The line of template ``name`` where a render error happened."""
    import traceback

    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith(name.removeprefix(OVERRIDE).removeprefix(BUILTIN)) \
                or frame.filename == "<template>":
            line = frame.lineno
    return line


def _where(exc: BaseException, chosen: Sequence[str]) -> str:
    """``file:line`` of a template error, as best known."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"{exc.filename or exc.name}:{exc.lineno}"
    for name in reversed([n for n in chosen if n.startswith(OVERRIDE)]):
        line = _line(exc, name)
        if line:
            return f"{name.removeprefix(OVERRIDE)}:{line}"
    return ", ".join(n.removeprefix(OVERRIDE) for n in chosen if n.startswith(OVERRIDE)) or "?"


def _tidy_text(body: str) -> str:
    lines = [line.rstrip() for line in body.splitlines()]
    return "\n".join(lines).strip("\n") + "\n"


def format_address(name: str, address: str) -> str:
    """An address header value; names in any script are RFC 2047-encoded by the policy."""
    local, _, domain = address.rpartition("@")
    try:
        return str(Address(display_name=name, username=local, domain=domain))
    except Exception:
        return address


def build_message(
    *,
    from_: str,
    to: Sequence[str],
    subject: str,
    body: str,
    message_id: str,
    date: dt.datetime,
    reply_to: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    files: Sequence[OutgoingFile] = (),
    cc: Sequence[str] = (),
    html: str | None = None,
    inline: Sequence[InlineImage] = (),
) -> bytes:
    """One message: text, or multipart/alternative of text and HTML (the
    HTML in a multipart/related with its ``inline`` images), then the files."""
    fields: list[tuple[str, str]] = [("From", from_), ("To", ", ".join(to))]
    if cc:
        fields.append(("Cc", ", ".join(cc)))
    if reply_to:
        fields.append(("Reply-To", reply_to))
    fields += [("Subject", subject), ("Date", email.utils.format_datetime(date.astimezone(dt.UTC))),
               ("Message-ID", message_id)]
    if in_reply_to:
        fields.append(("In-Reply-To", in_reply_to))
    if references:
        # Keep the header to a sane size: the first (thread root) and the newest.
        refs = list(dict.fromkeys(references))
        if len(refs) > 20:
            refs = refs[:1] + refs[-19:]
        fields.append(("References", " ".join(refs)))
    fields += list((headers or {}).items())
    cte = "7bit" if body.isascii() else "quoted-printable"
    if not files and not inline and all(_plain_field(name, value) for name, value in fields):
        return _build_plain(fields, body, cte, html)
    msg = EmailMessage(policy=SMTP_POLICY)
    for name, value in fields:
        msg[name] = value
    msg["MIME-Version"] = "1.0"
    msg.set_content(body, charset="utf-8", cte=cte)
    if html is not None:
        msg.add_alternative(html, subtype="html", charset="utf-8",
                            cte="7bit" if html.isascii() and _short_lines(html) else "quoted-printable")
        html_part = msg.get_payload()[-1]  # type: ignore[index]
        assert isinstance(html_part, EmailMessage)
        for image in inline:
            maintype, _, subtype = image.content_type.partition("/")
            if maintype != "image" or not subtype:
                maintype, subtype = "application", "octet-stream"
            html_part.add_related(image.data, maintype=maintype, subtype=subtype,
                                  cid=f"<{image.cid}>", disposition="inline",
                                  filename=image.filename or None)
    for f in files:
        maintype, _, subtype = f.content_type.partition("/")
        if maintype == "message" or maintype == "multipart":
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(
            f.data, maintype=maintype or "application", subtype=subtype or "octet-stream",
            filename=f.filename,
        )
    if needs_smtputf8([*to, *cc]):
        # RFC 6531/6532: an address with a non-ASCII local part cannot be
        # RFC 2047-encoded; its headers go as UTF-8 and the outbox sends the
        # message with SMTPUTF8.
        return msg.as_bytes(policy=SMTP_POLICY.clone(utf8=True))
    return msg.as_bytes(policy=SMTP_POLICY)


# A header the SMTP policy writes back exactly as given (checked byte for
# byte against the email package by tests/unit/test_render.py): printable
# ASCII in single-spaced words, no encoded words, on one line well under
# the policy's 998.
_PLAIN_TEXT = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PLAIN_ADDRESSES = re.compile(rf"(?:(?:{_ATOM}(?: {_ATOM})* <{_ADDR}>|{_ADDR})(?:, (?!$)|$))+")
_PLAIN_IDS = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+>(?: <[\x21-\x3b\x3d\x3f-\x7e]+>)*")
_ADDRESS_FIELDS = frozenset({"from", "to", "cc", "reply-to"})
_ID_FIELDS = frozenset({"message-id", "in-reply-to", "references"})
# Read as unstructured text by the policy: Subject, Date (as we write it) and
# every name without a class of its own (X-Loop, Auto-Submitted, …).
_STRUCTURED = frozenset(email.headerregistry.HeaderRegistry().registry) - {"subject", "date"}


def _plain_field(name: str, value: str) -> bool:
    key = name.lower()
    if len(name) + len(value) > 900 or not value.isascii():
        return False
    if key in _ADDRESS_FIELDS:
        return _PLAIN_ADDRESSES.fullmatch(value) is not None
    if key in _ID_FIELDS:
        return _PLAIN_IDS.fullmatch(value) is not None
    return (key not in _STRUCTURED and "=?" not in value
            and _PLAIN_TEXT.fullmatch(value) is not None)


def _text_part(text: str, subtype: str, cte: str) -> tuple[str, str]:
    from email.contentmanager import _encode_text  # type: ignore[attr-defined]

    _, payload = _encode_text(text, "utf-8", cte, SMTP_POLICY)
    return (f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n',
            payload.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n"))


def _boundary(text: str) -> str:
    """A boundary as Generator._make_boundary makes it, tested by substring
    (stricter than its line match) instead of a fresh regex per message."""
    while True:
        token = random.randrange(sys.maxsize)
        boundary = "=" * 15 + str(token).zfill(_BOUNDARY_WIDTH) + "=="
        if "--" + boundary not in text:
            return boundary


_BOUNDARY_WIDTH = len(repr(sys.maxsize - 1))


def _build_plain(fields: Sequence[tuple[str, str]], body: str, cte: str, html: str | None) -> bytes:
    """``build_message`` for the common mail (ASCII headers, no files), as
    the email package would write it, without its header objects: a third
    of casegate's CPU per message went into them (issue 12)."""
    head = "".join(f"{name}: {value}\r\n" for name, value in fields) + "MIME-Version: 1.0\r\n"
    text_head, text_payload = _text_part(body, "plain", cte)
    if html is None:
        return (head + text_head + "\r\n" + text_payload).encode("ascii")
    html_cte = "7bit" if html.isascii() and _short_lines(html) else "quoted-printable"
    html_head, html_payload = _text_part(html, "html", html_cte)
    parts = [text_head + "\r\n" + text_payload,
             html_head + "MIME-Version: 1.0\r\n\r\n" + html_payload]
    boundary = _boundary("\r\n".join(parts))
    return (head + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            + f"--{boundary}\r\n" + f"\r\n--{boundary}\r\n".join(parts)
            + f"\r\n--{boundary}--\r\n").encode("ascii")


def needs_smtputf8(addresses: Sequence[str]) -> bool:
    """Does any of these addresses (``Name <addr>`` or bare) have a non-ASCII
    local part (the domain is IDNA-encoded elsewhere)?"""
    for value in addresses:
        if value.isascii():  # then so is what parseaddr makes of it
            continue
        address = email.utils.parseaddr(value)[1] or value
        if not address.rpartition("@")[0].isascii():
            return True
    return False
def _short_lines(text: str) -> bool:
    return all(len(line) <= 900 for line in text.splitlines())
