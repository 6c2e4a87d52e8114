"""The SMTP edge: an aiosmtpd server that Postfix's ``casegate`` transport talks to.

It stays thin: it reads XFORWARD (the client address and Postfix's queue ID),
hands each message to a synchronous processor in a worker thread and turns
the outcome into a reply. Whatever goes wrong becomes a ``451`` — never
aiosmtpd's default ``500``, never a 5xx after the queue.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import re
import socket
import weakref
from collections.abc import Callable
from concurrent.futures import Executor
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax

from rules import replies
from rules.logctx import queue_id
from rules.replies import Reply
from smtpd_hook.delivery import Delivery

log = logging.getLogger("casegate.filter")

XFORWARD_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
Processor = Callable[[Delivery], Reply]
Enricher = Callable[[Delivery], Delivery]


_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")

# <dot-atom@dot-atom>, then spaces or the end: what email's get_angle_addr
# reads as that addr-spec, leaving the rest after the spaces it skips.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(
    rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:[ \t]+(?=[^ \t(])|$)")


def xtext_decode(value: str) -> str:
    """RFC 3461 xtext: ``+HH`` is the character with hex value HH."""
    return _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)


class XEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.xforward: dict[str, str] = {}


class FilterSMTP(SMTP):
    """aiosmtpd's SMTP plus Postfix's XFORWARD (XFORWARD_README).

    The attributes live on the envelope, which aiosmtpd renews after EHLO,
    RSET and each DATA, so they belong to the next transaction only. Postfix
    may split them over several commands; they accumulate. ``[UNAVAILABLE]``
    and ``[TEMPUNAVAIL]`` are kept as empty strings."""

    # aiosmtpd answers "500 Line too long" past 1001 bytes: after the queue
    # that would bounce. Postfix folds at 998 unless smtp_line_length_limit = 0.
    line_length_limit = 1 << 20

    def _create_envelope(self) -> Envelope:
        return XEnvelope()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd 1.4's DATA, reading the content in a few large pieces
        instead of one ``readuntil`` (and a debug log call) per line, which
        was a sixth of the SMTP edge's CPU. Same replies, same content:
        everything up to the line ``.``, dot-stuffing undone (RFC 5321
        4.5.2), ``500 Line too long`` for a line over ``line_length_limit``,
        ``552`` over ``data_size_limit``; never reads past the ``.`` line."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data = bytearray()
        reader = self._reader
        while self.transport is not None:  # pragma: nobranch
            try:
                # Each piece ends with ".\r\n" (the end, or a line ending in
                # a full stop), or is what the reader held with none in it.
                piece = await reader.readuntil(b".\r\n")
            except asyncio.CancelledError:
                log.info("Connection lost during DATA")
                self._writer.close()
                raise
            except asyncio.LimitOverrunError as exc:
                piece = await reader.readexactly(exc.consumed)
            data += piece
            if piece.endswith(b".\r\n") and (len(data) == 3 or data.endswith(b"\r\n.\r\n")):
                break
        del data[-3:]  # the ".\r\n" that ends it
        limit = self.data_size_limit
        if (len(data) > self.line_length_limit
                and max(map(len, data.split(b"\r\n"))) + 2 > self.line_length_limit):
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            self._set_post_data_state()
            return
        if limit and len(data) > limit:
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()
            return
        if data.startswith(b"."):
            del data[0]
        original_content = bytes(data.replace(b"\r\n.", b"\r\n"))
        del data
        content: str | bytes = original_content
        if self._decode_data:
            if self.enable_SMTPUTF8:
                content = original_content.decode("utf-8", errors="surrogateescape")
            else:
                try:
                    content = original_content.decode("ascii", errors="strict")
                except UnicodeDecodeError:
                    await self.push("500 Error: strict ASCII mode")
                    return
        self.envelope.content = content
        self.envelope.original_content = original_content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's ``_getaddr`` (MAIL FROM, RCPT TO), without the class it
        defined on every call (a typing.Protocol: an ABC made twice per
        message, a tenth of the SMTP edge's CPU) and with a fast path for the
        plain ``<local@domain>`` Postfix sends, giving the same result."""
        if not arg:
            return "", ""
        m = _PLAIN_PATH.match(arg)
        if m is not None:
            addr, rest = m.group(1), arg[m.end():]
        else:
            try:
                if arg.lstrip().startswith("<"):
                    address, rest = get_angle_addr(arg)
                else:
                    address, rest = get_addr_spec(arg)
            except HeaderParseError:
                return None, None
            addr = address.addr_spec
        localpart = addr.rpartition("@")[0]
        if self.local_part_limit and len(localpart) > self.local_part_limit:
            return None, None
        return addr, rest

    @syntax("XFORWARD attribute=value ...")
    async def smtp_XFORWARD(self, arg: str | None) -> None:
        if await self.check_helo_needed("EHLO"):
            return
        envelope = self.envelope
        assert isinstance(envelope, XEnvelope)
        if envelope.mail_from is not None:
            await self.push("503 5.5.1 Error: MAIL transaction in progress")
            return
        if not arg:
            await self.push("501 5.5.4 Syntax: XFORWARD attribute=value...")
            return
        attrs: dict[str, str] = {}
        for item in arg.split():
            name, eq, value = item.partition("=")
            name = name.upper()
            if not eq or name not in XFORWARD_ATTRS:
                await self.push(f"501 5.5.4 Bad XFORWARD attribute: {name}")
                return
            value = xtext_decode(value)
            attrs[name] = "" if value in ("[UNAVAILABLE]", "[TEMPUNAVAIL]") else value
        envelope.xforward.update(attrs)
        await self.push("250 2.0.0 Ok")


def xforward_ehlo(session: Session, hostname: str, responses: list[str]) -> list[str]:
    """The EHLO reply with PIPELINING and XFORWARD advertised (for a
    5-argument handle_EHLO). With PIPELINING, Postfix's smtp client sends
    XFORWARD, MAIL, RCPT and DATA in one write and reads the replies
    together (RFC 2920): four round trips fewer per message, about 0.4 ms of
    casegate's CPU (the event loop's wake-ups) and some of Postfix's.
    aiosmtpd reads one command at a time from its buffer and answers each in
    order, which is all RFC 2920 asks of a server; DATA's content is read up
    to its dot only, so what Postfix sends behind it waits its turn."""
    session.host_name = hostname  # the 5-argument hook must do this itself
    return [*responses[:-1], "250-PIPELINING", "250-XFORWARD " + " ".join(XFORWARD_ATTRS),
            responses[-1]]


class FilterHandler:
    """aiosmtpd hooks; ``process`` runs in ``executor``."""

    def __init__(self, process: Processor, executor: Executor | None = None,
                 enrich: Enricher | None = None,
                 enrich_when: Callable[[Delivery], bool] | None = None,
                 after: Callable[[], None] | None = None) -> None:
        self.process = process
        self.executor = executor
        # Slow, store-free work (DKIM's DNS lookups) runs before the
        # processor, in the default pool, so it never holds the store's thread;
        # only for the deliveries ``enrich_when`` picks (default: all).
        self.enrich = enrich
        self.enrich_when = enrich_when
        # Called on the loop when a processor call is done (or failed).
        self.after = after
        self.inflight: set[asyncio.Future[Any]] = set()

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        return xforward_ehlo(session, hostname, responses)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        xf = getattr(envelope, "xforward", {})
        qid = xf.get("IDENT", "")
        token = queue_id.set(qid or "-")
        try:
            content = envelope.original_content or b""
            if isinstance(content, str):
                content = content.encode("utf-8", "surrogateescape")
            delivery = Delivery(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=bytes(content),
                client_addr=xf.get("ADDR", ""),
                client_name=xf.get("NAME", ""),
                helo=xf.get("HELO", ""),
                queue_id=qid,
            )
            reply = await self._run(delivery)
            if reply.is_permanent:  # never a 5xx after the queue
                log.error("processor answered %s after the queue; deferring instead", reply)
                reply = replies.TEMPFAIL
            return str(reply)
        except Exception:
            log.exception("unexpected error while processing; deferring")
            return str(replies.TEMPFAIL.because("Temporary failure in casegate, try again later"))
        finally:
            queue_id.reset(token)

    async def _run(self, delivery: Delivery) -> Reply:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        if self.enrich is not None and (self.enrich_when is None or self.enrich_when(delivery)):
            delivery = await loop.run_in_executor(None, functools.partial(ctx.run, self.enrich,
                                                                          delivery))
        future = loop.run_in_executor(self.executor, functools.partial(ctx.run, self.process, delivery))
        if self.after is not None:
            after = self.after
            future.add_done_callback(lambda _: after())
        self.inflight.add(future)
        try:
            # shield: a dropped client connection must not abandon a
            # transaction half-way; it completes and the duplicate check
            # catches Postfix's retry.
            return await asyncio.shield(future)
        finally:
            self.inflight.discard(future)

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %r", error)
        return str(replies.TEMPFAIL.because("Temporary failure in casegate, try again later"))


class FilterServer:
    """Listening socket + protocol instances, with a drain for clean shutdown."""

    def __init__(self, handler: FilterHandler, *, hostname: str | None = None) -> None:
        self.handler = handler
        self.hostname = hostname or socket.getfqdn()
        self.server: asyncio.base_events.Server | None = None
        self.protocols: weakref.WeakSet[FilterSMTP] = weakref.WeakSet()

    def _factory(self) -> FilterSMTP:
        proto = FilterSMTP(
            self.handler,
            hostname=self.hostname,
            data_size_limit=None,  # Postfix enforces message_size_limit before the queue
            enable_SMTPUTF8=True,
            decode_data=False,
            ident="casegate",
        )
        self.protocols.add(proto)
        return proto

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> tuple[str, int]:
        """Listen on ``host:port``, or on ``sock``: a listening socket bound
        by a parent and shared by several worker processes."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            self.server = await loop.create_server(self._factory, sock=sock)
        else:
            self.server = await loop.create_server(self._factory, host, port, reuse_address=True)
        sockname = self.server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def drain(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 (bounded by design)
        """Stop listening, let what was accepted finish, then close connections."""
        if self.server is not None:
            self.server.close()
        pending = list(self.handler.inflight)
        if pending:
            log.info("waiting for %d message(s) in progress", len(pending))
            await asyncio.wait(pending, timeout=timeout)
        for proto in list(self.protocols):
            transport = proto.transport
            if transport is not None and not transport.is_closing():
                transport.close()
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), timeout=5)
            except TimeoutError:
                pass
