"""A blocking milter client that behaves like Postfix 3.7's smtpd (milter8.c).

Built on the PyPI ``miltertest`` package (its codec and :class:`MilterConnection`),
independent of ``milter.protocol`` so the two check each other. What it adds,
as Postfix does it:

* the OPTNEG reply may carry macro lists (``SMFIF_SETSYMLIST``), which
  miltertest's codec cannot decode: parsed here;
* before each event it sends ``SMFIC_MACRO`` with the macros the milter asked
  for at that stage (only those, and only when they have a value), even when
  the event itself is skipped;
* events the milter declined (``SMFIP_NO*``) are not sent, and events it
  will not answer (``SMFIP_NR_*``) are not waited for;
* a message stops at the first reply that is not "continue".

Replies are miltertest tuples ``(code, fields)``; :func:`describe` turns one
into text such as ``"550 5.7.1 Message rejected"`` or ``"continue"``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import miltertest
from miltertest import constants as c

Reply = tuple[str, dict[str, Any]]

# What Postfix 3.7 offers with milter_protocol = 6 (milter8.c: my_actions, and
# MILTER8_V6_PROTO_MASK for the events).
POSTFIX_ACTIONS = 0x1FF
POSTFIX_EVENTS = 0x1FFFFF

# Command code -> SMFIM_* stage whose macro list Postfix sends with it.
_STAGE_OF = {
    c.SMFIC_CONNECT: c.SMFIM_CONNECT,
    c.SMFIC_HELO: c.SMFIM_HELO,
    c.SMFIC_MAIL: c.SMFIM_ENVFROM,
    c.SMFIC_RCPT: c.SMFIM_ENVRCPT,
    c.SMFIC_DATA: c.SMFIM_DATA,
    c.SMFIC_HEADER: c.SMFIM_EOH,
    c.SMFIC_EOH: c.SMFIM_EOH,
    c.SMFIC_BODY: c.SMFIM_EOM,
    c.SMFIC_BODYEOB: c.SMFIM_EOM,
}
# Command code -> (SMFIP_NO* flag, SMFIP_NR_* flag)
_FLAGS = {
    c.SMFIC_CONNECT: (c.SMFIP_NOCONNECT, c.SMFIP_NR_CONN),
    c.SMFIC_HELO: (c.SMFIP_NOHELO, c.SMFIP_NR_HELO),
    c.SMFIC_MAIL: (c.SMFIP_NOMAIL, c.SMFIP_NR_MAIL),
    c.SMFIC_RCPT: (c.SMFIP_NORCPT, c.SMFIP_NR_RCPT),
    c.SMFIC_DATA: (c.SMFIP_NODATA, c.SMFIP_NR_DATA),
    c.SMFIC_HEADER: (c.SMFIP_NOHDRS, c.SMFIP_NR_HDR),
    c.SMFIC_EOH: (c.SMFIP_NOEOH, c.SMFIP_NR_EOH),
    c.SMFIC_BODY: (c.SMFIP_NOBODY, c.SMFIP_NR_BODY),
}


def describe(reply: Reply | None) -> str:
    if reply is None:
        return "no reply"
    code, fields = reply
    if code == c.SMFIR_REPLYCODE:
        return f"{fields['smtpcode']}{fields['space']}{fields['text']}"
    names = {
        c.SMFIR_CONTINUE: "continue",
        c.SMFIR_ACCEPT: "accept",
        c.SMFIR_REJECT: "reject",
        c.SMFIR_TEMPFAIL: "tempfail",
        c.SMFIR_DISCARD: "discard",
    }
    return names.get(code, f"{code} {fields}")


def is_continue(reply: Reply | None) -> bool:
    return reply is None or reply[0] == c.SMFIR_CONTINUE


def connect_socket(address: str, timeout: float = 10.0) -> socket.socket:
    """``HOST:PORT`` or ``unix:/path``."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address[len("unix:") :])
        return sock
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    # Postfix writes a macro and its event in one go; we write them one by
    # one, which Nagle's algorithm would hold for a delayed ACK (40 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@dataclass
class Outcome:
    """How one message went: where it stopped, the reply there, the EOM edits."""

    stage: str  # "mail", "rcpt", "eoh", "eom"
    reply: str
    edits: list[Reply] = field(default_factory=list)
    rcpt_replies: list[str] = field(default_factory=list)

    @property
    def added_headers(self) -> list[tuple[str, str]]:
        return [(f["name"], f["value"]) for code, f in self.edits if code == c.SMFIR_ADDHEADER]

    @property
    def changed_headers(self) -> list[tuple[int, str, str]]:
        return [
            (f["index"], f["name"], f["value"])
            for code, f in self.edits
            if code == c.SMFIR_CHGHEADER
        ]


class PostfixLikeClient(miltertest.MilterConnection):  # type: ignore[misc]
    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.version = 0
        self.macro_lists: dict[int, list[str]] = {}
        # Macro values the "MTA" knows, by name as Postfix spells them ("i", "{auth_authen}").
        self.values: dict[str, str] = {}

    @classmethod
    def open(cls, address: str, timeout: float = 10.0) -> PostfixLikeClient:
        return cls(connect_socket(address, timeout))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> PostfixLikeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- negotiation ------------------------------------------------------

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise miltertest.MilterError("EOF during option negotiation")
            data += chunk
        return data

    def negotiate(
        self, actions: int = POSTFIX_ACTIONS, protocol: int = POSTFIX_EVENTS, version: int = 6
    ) -> tuple[int, int]:
        self.sock.sendall(
            miltertest.codec.encode_msg(
                c.SMFIC_OPTNEG, version=version, actions=actions, protocol=protocol
            )
        )
        (length,) = struct.unpack("!L", self._read_exact(4))
        payload = self._read_exact(length)
        if payload[:1] != c.SMFIC_OPTNEG.encode():
            raise miltertest.MilterError(f"unexpected reply to OPTNEG: {payload[:1]!r}")
        self.version, self.action_flags, self.protocol_flags = struct.unpack("!LLL", payload[1:13])
        rest = payload[13:]
        while rest:
            (stage,) = struct.unpack("!L", rest[:4])
            names, _, rest = rest[4:].partition(b"\0")
            self.macro_lists[stage] = names.decode().split()
        if self.action_flags & ~actions:
            raise miltertest.MilterError(
                f"milter asks for actions we did not offer: {self.action_flags:#x}"
            )
        return self.action_flags, self.protocol_flags

    # -- events -------------------------------------------------------------

    def _macros_for(self, code: str) -> list[str]:
        stage = _STAGE_OF.get(code)
        if stage is None:
            return []
        if self.macro_lists:
            wanted = self.macro_lists.get(stage, [])
        else:  # no list asked for: send all we know (Postfix would send its defaults)
            wanted = list(self.values)
        out: list[str] = []
        for name in wanted:
            value = self.values.get(name)
            if value:
                out += [name, value]
        return out

    def event(self, code: str, **fields: Any) -> Reply | None:
        """Send one event the way Postfix does; the reply, or None when none is due."""
        macros = self._macros_for(code)
        if macros:
            self._send(c.SMFIC_MACRO, cmdcode=code, nameval=macros)
        no_flag, nr_flag = _FLAGS.get(code, (0, 0))
        if self.protocol_flags & no_flag:
            return None
        self._send(code, **fields)
        if self.protocol_flags & nr_flag:
            return None
        reply = self.recv()
        assert reply is not None
        return reply

    def connect_event(
        self, hostname: str = "client.example", address: str = "127.0.0.2", port: int = 40000
    ) -> Reply | None:
        self.values.setdefault("{client_addr}", address)
        self.values.setdefault("{client_name}", hostname)
        self.values.setdefault("j", "mx.test.example")
        return self.event(
            c.SMFIC_CONNECT, hostname=hostname, family="4", port=port, address=address
        )

    def helo(self, name: str = "client.example") -> Reply | None:
        return self.event(c.SMFIC_HELO, helo=name)

    def mail(self, sender: str, *args: str) -> Reply | None:
        self.values["{mail_addr}"] = sender.strip("<>")
        return self.event(c.SMFIC_MAIL, args=[sender, *args])

    def rcpt(self, recipient: str, *args: str) -> Reply | None:
        self.values["{rcpt_addr}"] = recipient.strip("<>")
        return self.event(c.SMFIC_RCPT, args=[recipient, *args])

    def data(self) -> Reply | None:
        return self.event(c.SMFIC_DATA)

    def header(self, name: str, value: str) -> Reply | None:
        return self.event(c.SMFIC_HEADER, name=name, value=value)

    def eoh(self) -> Reply | None:
        return self.event(c.SMFIC_EOH)

    def body(self, data: str) -> Reply | None:
        return self.event(c.SMFIC_BODY, buf=data)

    def eom(self) -> list[Reply]:
        macros = self._macros_for(c.SMFIC_BODYEOB)
        if macros:
            self._send(c.SMFIC_MACRO, cmdcode=c.SMFIC_BODYEOB, nameval=macros)
        return list(self.send_eom())

    def abort(self) -> None:
        self._send(c.SMFIC_ABORT)

    def quit(self) -> None:
        self._send(c.SMFIC_QUIT)

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- a whole message ---------------------------------------------------

    def message(
        self,
        sender: str,
        recipients: Iterable[str],
        headers: Iterable[tuple[str, str]],
        body: str = "Hello.\r\n",
        *,
        macros: Mapping[str, str] | None = None,
    ) -> Outcome:
        """One message, stopping where Postfix would stop."""
        if macros:
            self.values.update(macros)
        r = self.mail(sender)
        if not is_continue(r):
            return Outcome("mail", describe(r))
        rcpt_replies = [describe(self.rcpt(rcpt)) for rcpt in recipients]
        accepted = [x for x in rcpt_replies if x in ("continue", "no reply")]
        if not accepted:
            self.abort()
            return Outcome("rcpt", rcpt_replies[-1], rcpt_replies=rcpt_replies)
        r = self.data()
        if not is_continue(r):
            return Outcome("data", describe(r), rcpt_replies=rcpt_replies)
        for name, value in headers:
            r = self.header(name, value)
            if not is_continue(r):
                return Outcome("header", describe(r), rcpt_replies=rcpt_replies)
        r = self.eoh()
        if not is_continue(r):
            return Outcome("eoh", describe(r), rcpt_replies=rcpt_replies)
        if body:
            r = self.body(body)
            if not is_continue(r):
                return Outcome("body", describe(r), rcpt_replies=rcpt_replies)
        replies = self.eom()
        final = replies[-1]
        return Outcome("eom", describe(final), edits=replies[:-1], rcpt_replies=rcpt_replies)
