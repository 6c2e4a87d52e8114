"""Re-injecting outgoing mail into Postfix's filter-free listener.

The engine stores each outgoing message, bytes and Message-ID final, in the
outbox in the same transaction as the inbound message that caused it. This
worker sends what is due, marks it sent, and retries with back-off what
could not be sent (listener down, 4xx): nothing is lost when casegate or
Postfix restarts, and a message re-sent after a crash is the same message.
Rows are leased, so several hosts sharing a PostgreSQL store never send the
same row at the same time (``FOR UPDATE SKIP LOCKED``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import smtplib
import socket
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from casestore.models import Outbox
from casestore.store import Store, StoreUnavailable
from rules.logctx import queue_id
from smtpd_hook.settings import Settings

log = logging.getLogger("casegate.outbox")

T = TypeVar("T")


class PermanentSendError(Exception):
    pass


def send_batch(
    host: str, port: int, helo: str, items: list[Outbox], timeout: float = 30.0
) -> list[tuple[Outbox, Exception | None]]:
    """Send each item over one SMTP connection; per item None (sent) or the error."""
    results: list[tuple[Outbox, Exception | None]] = []
    try:
        client = smtplib.SMTP(host, port, local_hostname=helo, timeout=timeout)
    except (OSError, smtplib.SMTPException) as exc:
        return [(item, exc) for item in items]
    try:
        for item in items:
            rcpts = [r for r in item.rcpt_to.split(",") if r]
            try:
                refused = client.sendmail(item.mail_from, rcpts, bytes(item.message.raw))
            except smtplib.SMTPRecipientsRefused as exc:
                results.append((item, _classify(exc.recipients)))
                _rset(client)
                continue
            except smtplib.SMTPResponseException as exc:
                err: Exception = exc
                if exc.smtp_code >= 500:
                    err = PermanentSendError(f"{exc.smtp_code} {exc.smtp_error!r}")
                results.append((item, err))
                _rset(client)
                continue
            except (OSError, smtplib.SMTPException) as exc:
                # The connection is gone: this and every later item retry.
                results.append((item, exc))
                done = {r[0].id for r in results}
                results.extend((i, exc) for i in items if i.id not in done)
                return results
            if refused:
                # Some recipients refused: Postfix accepted the rest. Record
                # it; re-sending would duplicate for the accepted ones.
                log.error("outbox %s: recipients refused: %r", item.id, refused)
            results.append((item, None))
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()
    return results


def _classify(recipients: dict[str, tuple[int, bytes]]) -> Exception:
    codes = [code for code, _ in recipients.values()]
    if codes and all(code >= 500 for code in codes):
        return PermanentSendError(f"all recipients refused: {recipients!r}")
    return smtplib.SMTPException(f"recipients refused (temporary): {recipients!r}")


def _rset(client: smtplib.SMTP) -> None:
    try:
        client.rset()
    except (OSError, smtplib.SMTPException):
        pass


class OutboxWorker:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        db_executor: Executor | None,
        *,
        send: Callable[..., list[tuple[Outbox, Exception | None]]] = send_batch,
    ) -> None:
        self.store = store
        self.settings = settings
        self.db_executor = db_executor
        self.send = send
        self.wakeup = asyncio.Event()
        self.sent = 0

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(self.db_executor, functools.partial(ctx.run, fn, *args))

    def poke(self) -> None:
        self.wakeup.set()

    async def run_once(self) -> int:
        """Send what is due now; the number of rows handled."""
        s = self.settings
        items = await self._db(self.store.claim_outbox, s.outbox_batch, s.outbox_lease_seconds)
        if not items:
            return 0
        results = await asyncio.to_thread(
            self.send, s.reinject_host, s.reinject_port, s.helo_name, items
        )
        for item, error in results:
            token = queue_id.set(f"out:{item.id}")
            try:
                if error is None:
                    await self._db(self.store.outbox_sent, item)
                    self.sent += 1
                    log.info("sent %s to %s (%s)", item.message.kind, item.rcpt_to,
                             item.message.message_id)
                elif isinstance(error, PermanentSendError):
                    log.error("giving up on outbox %s: %s", item.id, error)
                    await self._db(self.store.outbox_failed, item, str(error))
                else:
                    delay = min(s.retry_max_seconds, s.retry_min_seconds * (2 ** item.attempts))
                    log.warning("re-injection failed (%s); retry in %.0fs", error, delay)
                    await self._db(self.store.outbox_retry, item, str(error), delay)
            finally:
                queue_id.reset(token)
        return len(results)

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until ``stop``: send when poked, and at least every second."""
        while not stop.is_set():
            try:
                handled = await self.run_once()
            except StoreUnavailable as exc:
                log.warning("outbox: store unavailable: %s", exc)
                handled = 0
            except (OSError, socket.error) as exc:  # pragma: no cover - defensive
                log.warning("outbox: %s", exc)
                handled = 0
            except Exception:
                log.exception("outbox: unexpected error")
                handled = 0
            if handled:
                continue
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=1.0)
            except TimeoutError:
                pass
