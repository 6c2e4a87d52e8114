"""The null filter: the smallest honest after-queue content filter.

It speaks to Postfix the way ``casegate serve`` does — XFORWARD advertised and
recorded, one reply per message, ``250`` only once the message is safely
handed on, ``451`` otherwise — and does no work of its own: each message is
re-injected unchanged (same bytes, same sender) into Postfix's filter-free
listener with smtplib, in a worker thread so the event loop never blocks.
The harness test uses it to prove the Postfix plumbing; the benchmark uses it
as the baseline that casegate's own cost is measured against.

Recipients are re-addressed on the way back (``rewrite_rcpt``). With routing
idiom A the supervised address is *consumed*: ``transport_maps`` sends mail for
support@example.com to the filter whichever smtpd took it in, so re-injecting
it to the same address would loop back into the filter. The default appends
:data:`REINJECT_SUFFIX` to the domain (``support@example.com`` →
``support@example.com.reinjected.test``), which the test Postfix delivers to
the sink.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session

from smtpd_hook.server import FilterSMTP, xforward_ehlo
from smtpd_hook.server import XEnvelope as XForwardEnvelope
from tests.support.sink import ServerThread

REINJECT_SUFFIX = ".reinjected.test"

OK = "250 2.0.0 Ok: passed on by the null filter"
TEMPFAIL = "451 4.3.0 Null filter: re-injection failed, try again later"

_QUEUED_AS = re.compile(rb"queued as ([0-9A-Za-z]+)")


def xtext_encode(value: str) -> str:
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in value)


def reinjected_address(rcpt: str) -> str:
    """The default re-addressing: ``user@domain`` → ``user@domain.reinjected.test``."""
    return rcpt + REINJECT_SUFFIX


@dataclass(frozen=True)
class Transaction:
    """One message Postfix handed to the filter, and what became of it."""

    xforward: Mapping[str, str]
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes = field(repr=False)
    reply: str
    reinjected_as: str | None = None  # the queue ID the re-injection listener gave


class _Handler:
    def __init__(self, nf: NullFilter) -> None:
        self._nf = nf

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        return xforward_ehlo(session, hostname, responses)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope, XForwardEnvelope)
        return await self._nf._handle(envelope)

    async def handle_exception(self, error: Exception) -> str:
        # After the queue a 5xx would bounce the mail: anything unexpected is a 451.
        return "451 4.3.0 Null filter: internal error, try again later"


class NullFilter:
    """A pass-through after-queue filter on ``host:port`` (port 0: any free
    port, read it back from :attr:`port` after :meth:`start`).

    ``fail_with``: when set (e.g. to :data:`TEMPFAIL`), each message is answered
    with that reply and not re-injected: a filter that is up but cannot work.
    ``forward_xforward``: pass the recorded XFORWARD attributes on to the
    re-injection listener, so that its log line carries ``orig_queue_id=``."""

    def __init__(
        self,
        reinject_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        reinject_host: str = "127.0.0.1",
        rewrite_rcpt: Callable[[str], str] = reinjected_address,
        forward_xforward: bool = False,
        workers: int = 32,
        timeout: float = 60.0,
    ) -> None:
        self.reinject_host = reinject_host
        self.reinject_port = reinject_port
        self.rewrite_rcpt = rewrite_rcpt
        self.forward_xforward = forward_xforward
        self.timeout = timeout
        self.fail_with: str | None = None
        self._workers = workers
        self._executor: ThreadPoolExecutor | None = None
        handler = _Handler(self)
        self._server = ServerThread(
            lambda loop: FilterSMTP(
                handler,
                hostname="nullfilter.test",
                decode_data=False,
                enable_SMTPUTF8=True,
                loop=loop,
            ),
            host,
            port,
        )
        self._cond = threading.Condition()
        self._transactions: list[Transaction] = []

    # --- life cycle -------------------------------------------------------
    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> NullFilter:
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="reinject")
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __enter__(self) -> NullFilter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the work -----------------------------------------------------------
    async def _handle(self, envelope: XForwardEnvelope) -> str:
        fail_with = self.fail_with
        reinjected_as: str | None = None
        if fail_with is not None:
            reply = fail_with
        else:
            loop = asyncio.get_running_loop()
            try:
                reinjected_as = await loop.run_in_executor(self._executor, self._reinject, envelope)
                reply = OK
            except (OSError, smtplib.SMTPException) as exc:
                reply = f"{TEMPFAIL} ({type(exc).__name__})"
        self._record(
            Transaction(
                xforward=dict(envelope.xforward),
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=envelope.original_content or b"",
                reply=reply,
                reinjected_as=reinjected_as,
            )
        )
        return reply

    def _reinject(self, envelope: XForwardEnvelope) -> str | None:
        """Hand the message to the re-injection listener; return its queue ID.
        Raises on anything but success, so the caller answers 451."""
        mail_options = [
            o for o in envelope.mail_options if o.upper().split("=")[0] in ("BODY", "SMTPUTF8")
        ]
        with smtplib.SMTP(
            self.reinject_host,
            self.reinject_port,
            local_hostname="nullfilter.test",
            timeout=self.timeout,
        ) as smtp:
            smtp.ehlo()
            if self.forward_xforward and envelope.xforward and smtp.has_extn("xforward"):
                args = " ".join(f"{k}={xtext_encode(v)}" for k, v in envelope.xforward.items() if v)
                code, resp = smtp.docmd("XFORWARD", args) if args else (250, b"")
                if code != 250:
                    raise smtplib.SMTPResponseException(code, resp)
            code, resp = smtp.mail(envelope.mail_from or "", mail_options)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, resp, envelope.mail_from or "")
            for rcpt in envelope.rcpt_tos:
                code, resp = smtp.rcpt(self.rewrite_rcpt(rcpt))
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({rcpt: (code, resp)})
            code, resp = smtp.data(envelope.original_content or b"")
            if code != 250:
                raise smtplib.SMTPDataError(code, resp)
        m = _QUEUED_AS.search(resp)
        return m.group(1).decode() if m else None

    # --- what happened ------------------------------------------------------
    def _record(self, transaction: Transaction) -> None:
        with self._cond:
            self._transactions.append(transaction)
            self._cond.notify_all()

    def transactions(self) -> list[Transaction]:
        with self._cond:
            return list(self._transactions)

    def wait_for(
        self,
        predicate: Callable[[Transaction], bool] = lambda t: True,
        timeout: float = 10.0,
        count: int = 1,
    ) -> list[Transaction]:
        """Wait until ``count`` transactions match ``predicate``; return the
        matching ones. Raises ``TimeoutError`` listing what did arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [t for t in self._transactions if predicate(t)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = "; ".join(
                        f"{list(t.rcpt_tos)} {t.xforward.get('IDENT')} {t.reply!r}"
                        for t in self._transactions
                    )
                    raise TimeoutError(
                        f"null filter: {len(found)} of {count} expected transactions "
                        f"after {timeout}s; seen: {seen or 'nothing'}"
                    )
                self._cond.wait(remaining)

    def clear(self) -> None:
        with self._cond:
            self._transactions.clear()
