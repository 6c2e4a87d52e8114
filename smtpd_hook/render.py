"""Writing outgoing mail: jinja2 templates (sandboxed, StrictUndefined) into
RFC 5322 messages.

Templates are chosen by audience and event (``customer/ack.txt.j2``,
``csr/notify.txt.j2``); an admin may override any of them by putting a file
of the same relative name in the configured templates directory.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

SMTP_POLICY = email.policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True)
class OutgoingFile:
    filename: str
    content_type: str
    data: bytes


class Renderer:
    def __init__(self, templates_dir: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if templates_dir is not None:
            loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
        loaders.append(jinja2.PackageLoader("smtpd_hook", "templates"))
        self.env = SandboxedEnvironment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            trim_blocks=True,
        )

    def text(self, template: str, context: Mapping[str, Any]) -> str:
        body = self.env.get_template(template).render(**context)
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
) -> bytes:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = from_
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(date.astimezone(dt.UTC))
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        # Keep the header to a sane size: the first (thread root) and the newest.
        refs = list(dict.fromkeys(references))
        if len(refs) > 20:
            refs = refs[:1] + refs[-19:]
        msg["References"] = " ".join(refs)
    for name, value in (headers or {}).items():
        msg[name] = value
    msg["MIME-Version"] = "1.0"
    cte = "7bit" if body.isascii() else "quoted-printable"
    msg.set_content(body, charset="utf-8", cte=cte)
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


def needs_smtputf8(addresses: Sequence[str]) -> bool:
    """Does any of these addresses (``Name <addr>`` or bare) have a non-ASCII
    local part (the domain is IDNA-encoded elsewhere)?"""
    for value in addresses:
        address = email.utils.parseaddr(value)[1] or value
        if not address.rpartition("@")[0].isascii():
            return True
    return False
