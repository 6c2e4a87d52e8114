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
import datetime as dt
import functools
import logging
import os
import smtplib
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from casestore.models import Outbox
from casestore.store import Store, StoreUnavailable
from rules.logctx import queue_id
from smtpd_hook.render import needs_smtputf8
from smtpd_hook.settings import Settings

log = logging.getLogger("casegate.outbox")

T = TypeVar("T")


class PermanentSendError(Exception):
    pass


Result = Callable[[Outbox, "Exception | None"], None]


def send_batch(
    host: str, port: int, helo: str, items: list[Outbox], on_result: Result,
    timeout: float = 30.0, lanes: int = 4,
) -> None:
    """Send the items in order, calling ``on_result(item, error)`` right after
    each (error None: sent), so a crash can catch at most one message between
    Postfix's 250 and our record of it.

    Up to ``lanes`` connections carry the batch. Each message goes to a lane
    and is written there up to its last line (the envelope, then the content
    without the final ``.``); the final dots go one at a time, in the items'
    order, each only after the one before was answered and recorded. Postfix
    takes in the staged messages meanwhile, so the one wait per message is its
    final dot's answer; a message whose dot was never sent (casegate killed,
    a lane lost) is not queued by Postfix."""
    pending = deque(items)
    try:
        first = _Lane(smtplib.SMTP(host, port, local_hostname=helo, timeout=timeout))
    except (OSError, smtplib.SMTPException) as exc:
        for item in items:
            on_result(item, exc)
        return
    alive, free = [first], [first]
    staged: deque[_Lane] = deque()  # content written, final dot not yet: oldest first
    try:
        while pending or staged:
            while len(alive) < min(lanes, len(pending) + len(staged)):
                try:
                    lane = _Lane(smtplib.SMTP(host, port, local_hostname=helo, timeout=timeout))
                except (OSError, smtplib.SMTPException) as exc:
                    log.debug("outbox: one lane fewer (%s)", exc)
                    lanes = len(alive)
                    break
                alive.append(lane)
                free.append(lane)
            begun = []
            while pending and free:
                lane = free.pop()
                if _step(lane, lane.begin, pending.popleft(), on_result):
                    begun.append(lane)
                else:
                    free.append(lane)
            if staged:
                lane = staged.popleft()
                if _step(lane, lane.finish, lane.item, on_result):
                    item, refused = lane.done()
                    if refused:
                        # Postfix took the other recipients; re-sending would
                        # double their copy, so this counts as sent, with a log line.
                        log.error("outbox %s: recipients refused: %r", item.id, refused)
                    on_result(item, None)
                free.append(lane)
            for lane in begun:
                if _step(lane, lane.stage, lane.item, on_result):
                    staged.append(lane)
                else:
                    free.append(lane)
    except _Gone as gone:
        # The connection is gone: this and every later item retry (a staged
        # message without its final dot was not queued).
        rest = [gone.item, *(lane.item for lane in alive if lane.item is not None
                             and lane.item is not gone.item), *pending]
        for item in sorted(rest, key=lambda i: i.id):
            on_result(item, gone.error)
    finally:
        for lane in alive:
            lane.close()


class _Gone(Exception):
    def __init__(self, item: Outbox, error: Exception) -> None:
        self.item, self.error = item, error


def _step(lane: _Lane, step: Callable[[Outbox], None], item: Outbox, on_result: Result) -> bool:
    """Run one of ``lane``'s steps for ``item``; False when the item failed on
    its own (recorded through ``on_result``, the lane ready for the next).
    Raises :class:`_Gone` when the connection is lost."""
    try:
        step(item)
        return True
    except smtplib.SMTPNotSupportedError as exc:
        # Postfix without smtputf8_enable: this item waits and retries (the
        # log says why); the others go.
        error: Exception = smtplib.SMTPException(
            f"the re-injection server does not offer SMTPUTF8 ({exc}): set smtputf8_enable = yes")
    except smtplib.SMTPRecipientsRefused as exc:
        error = _classify(exc.recipients)
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code == 421:  # the server is closing the connection
            raise _Gone(item, exc) from exc
        error = exc
        if exc.smtp_code >= 500:
            error = PermanentSendError(f"{exc.smtp_code} {exc.smtp_error!r}")
    except (OSError, smtplib.SMTPException) as exc:
        raise _Gone(item, exc) from exc
    except Exception as exc:
        # Something about this message itself (an address smtplib cannot
        # encode …): it never goes, the others must.
        error = PermanentSendError(f"cannot send: {type(exc).__name__}: {exc}")
    lane.reset()
    on_result(item, error)
    return False


class _Lane:
    """One connection to the re-injection listener and the message it
    carries, in three steps: :meth:`begin` writes the envelope commands (in
    one go when the server offers PIPELINING, RFC 2920), :meth:`stage` reads
    their answers and writes the content without its final dot, and
    :meth:`finish` writes the dot and reads Postfix's answer. The steps raise
    what smtplib's ``sendmail`` raises, and leave the connection as it would
    (closed on 421)."""

    def __init__(self, client: smtplib.SMTP) -> None:
        self.client = client
        # The final dot is a small write after the content: without NODELAY,
        # Nagle holds it until the server acknowledges the content, which a
        # delayed ACK puts off by up to 40 ms.
        if client.sock is not None:
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.item: Outbox | None = None
        self.in_data = False
        self.refused: dict[str, tuple[int, bytes]] = {}
        self._commands: list[str] = []
        self._pipelined = False

    def begin(self, item: Outbox) -> None:
        client = self.client
        self.item, self.refused = item, {}
        rcpts = self._rcpts(item)
        client.ehlo_or_helo_if_needed()
        # A non-ASCII local part (ana.maría@…) needs SMTPUTF8 (RFC 6531).
        options = ["SMTPUTF8"] if needs_smtputf8([item.mail_from, *rcpts]) else []
        if options:
            if not client.has_extn("smtputf8"):
                raise smtplib.SMTPNotSupportedError("SMTPUTF8 not supported by server")
            client.command_encoding = "utf-8"  # as smtplib's mail() does, for the connection
        esmtp = ([f"size={len(item.message.raw)}"] if client.has_extn("size") else []) + options
        commands: list[str] = []
        qid = item.message.queue_id
        if qid and "IDENT" in client.esmtp_features.get("xforward", "").upper():
            commands.append(f"XFORWARD IDENT={qid}")
        commands.append(f"MAIL FROM:{smtplib.quoteaddr(item.mail_from)}"
                        + "".join(f" {o}" for o in esmtp))
        commands += [f"RCPT TO:{smtplib.quoteaddr(r)}" for r in rcpts]
        commands.append("DATA")
        wire = [f"{c}\r\n".encode(client.command_encoding) for c in commands]
        self._commands = commands
        self._pipelined = client.has_extn("pipelining")
        if self._pipelined:
            client.send(b"".join(wire))

    def stage(self, item: Outbox) -> None:
        client, rcpts = self.client, self._rcpts(item)
        replies = iter(self._commands)

        def answer() -> tuple[int, bytes]:
            command = next(replies)
            if not self._pipelined:
                client.send(f"{command}\r\n".encode(client.command_encoding))
            return client.getreply()

        if self._commands[0].startswith("XFORWARD"):
            answer()  # ignored, as _xforward_ident ignores it
        code, resp = answer()
        if code != 250:
            self._abandon(code, rest=len(rcpts) + 1)
            raise smtplib.SMTPSenderRefused(code, resp, item.mail_from)
        for rcpt in rcpts:
            code, resp = answer()
            if code not in (250, 251):
                self.refused[rcpt] = (code, resp)
            if code == 421:
                client.close()
                raise smtplib.SMTPRecipientsRefused(self.refused)
        if len(self.refused) == len(rcpts):
            if self._pipelined:
                code, _ = client.getreply()  # DATA's
                if code == 354:  # a server that takes DATA anyway: end it with nothing sent
                    client.send(b".\r\n")
                    client.getreply()
            raise smtplib.SMTPRecipientsRefused(self.refused)
        code, resp = answer()  # DATA's
        if code != 354:
            raise smtplib.SMTPDataError(code, resp)
        content = smtplib._quote_periods(bytes(item.message.raw))  # type: ignore[attr-defined]
        if content[-2:] != b"\r\n":
            content += b"\r\n"
        self.in_data = True
        client.send(content)

    def finish(self, item: Outbox) -> None:
        self.in_data = False
        self.client.send(b".\r\n")
        code, resp = self.client.getreply()
        if code != 250:
            if code == 421:
                self.client.close()
            raise smtplib.SMTPDataError(code, resp)

    def done(self) -> tuple[Outbox, dict[str, tuple[int, bytes]]]:
        item, self.item = self.item, None
        assert item is not None
        return item, self.refused

    def reset(self) -> None:
        """After an item failed on its own: ready for the next one."""
        self.item = None
        if self.in_data:  # cannot happen after stage(); never let a half message through
            self.in_data = False
            self.client.close()
            return
        _rset(self.client)

    def close(self) -> None:
        """QUIT; a lane holding a message without its final dot is closed
        without a word, so the server drops the message."""
        if self.in_data or self.client.sock is None:
            self.client.close()
            return
        try:
            self.client.quit()
        except (OSError, smtplib.SMTPException):
            self.client.close()

    def _abandon(self, code: int, rest: int) -> None:
        """After a refused MAIL: read the pipelined answers still due (the
        RCPTs' and DATA's), then RSET; on 421 close."""
        if code == 421:
            self.client.close()
            return
        if self._pipelined:
            try:
                for _ in range(rest):
                    self.client.getreply()
            except (OSError, smtplib.SMTPException):
                self.client.close()

    @staticmethod
    def _rcpts(item: Outbox) -> list[str]:
        return [r for r in item.rcpt_to.split("\n") if r]


def _xforward_ident(client: smtplib.SMTP, qid: str) -> None:
    """Tell Postfix which message caused this one: mail.log then shows
    ``orig_queue_id=`` (needs smtpd_authorized_xforward_hosts, as contrib sets)."""
    if not qid:
        return
    client.ehlo_or_helo_if_needed()
    if "IDENT" in client.esmtp_features.get("xforward", "").upper():
        client.docmd("XFORWARD", f"IDENT={qid}")


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
        send: Callable[..., None] = send_batch,
        record_executor: Executor | None = None,
        record_in_sender: bool = False,
    ) -> None:
        self.store = store
        self.settings = settings
        self.db_executor = db_executor
        # Where a message's "sent" is written (default: the store's thread),
        # always committed before the next message is sent. serve on SQLite
        # passes its GroupCommit's urgent door: the record goes ahead of the
        # deliveries waiting (or ends the batch in hand). On PostgreSQL it
        # is written by the sending thread itself (``record_in_sender``, a
        # connection of its own), never queued behind deliveries.
        self.record_executor = None if record_in_sender else (record_executor or db_executor)
        self.send = send
        self.wakeup = asyncio.Event()
        self.sent = 0
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}"
        # Rows the store handed over at their commit (Store.handoff), leased
        # to ``handed_owner``: sent without a claiming transaction. A claim
        # frees rows leased to ``owner`` itself, never these (one in memory
        # would go twice); should one stay here past half its lease, it is
        # let go and claimed like any row when the lease has run out.
        self.handed_owner = f"{self.owner}:handed"
        self.handed: deque[tuple[float, Outbox]] = deque()
        self._last_claim = 0.0
        # Sent, but the store could not record it (disk full, database
        # down): recorded at the next round, never sent again meanwhile.
        self.unrecorded: dict[int, Outbox] = {}
        # The listener itself unreachable (refused, dropped, 421): the worker
        # backs off as a whole, not message by message, and claims nothing
        # until hold_until; then every waiting row is due at once and goes
        # in the order it was stored (a per-row back-off sent a case's later
        # answer before its earlier one when the listener came back).
        self.failed_rounds = 0
        self.hold_until: dt.datetime | None = None
        self._round_retry_at: dt.datetime | None = None

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(self.db_executor, functools.partial(ctx.run, fn, *args))

    def poke(self) -> None:
        self.wakeup.set()

    def attach(self) -> None:
        """Have the store hand this worker the rows it enqueues (serve)."""
        self.store.handoff_owner = self.handed_owner
        self.store.handoff_lease_seconds = self.settings.outbox_lease_seconds
        self.store.handoff = self.take

    def detach(self) -> None:
        self.store.handoff = None

    def take(self, items: list[Outbox]) -> None:
        """Rows just committed, leased to ``handed_owner`` (any thread)."""
        now = time.monotonic()
        self.handed.extend((now, item) for item in items)

    def _take_handed(self, limit: int) -> list[tuple[float, Outbox]]:
        stale = time.monotonic() - self.settings.outbox_lease_seconds / 2
        taken: list[tuple[float, Outbox]] = []
        while self.handed and len(taken) < limit:
            at, item = self.handed.popleft()
            if at < stale:
                log.info("outbox %s waited past half its lease: it goes when claimed", item.id)
                continue
            taken.append((at, item))
        return taken

    async def run_once(self) -> int:
        """Send what is due now; the number of rows handled."""
        s = self.settings
        if self.unrecorded:
            await self._db(self._record_unrecorded)  # StoreUnavailable: still not; claim nothing
        if self.hold_until is not None:
            # The listener was down: what waits goes by claim, in the order
            # it was stored, so rows handed meanwhile are let go first.
            await self._let_go_handed()
            if self.store.now() < self.hold_until:
                return 0
        self._round_retry_at = None
        # Rows handed over first; a claim when none are (or at least once a
        # second under a steady stream, for rows due again after a retry and
        # rows other processes enqueued).
        handed = self._take_handed(s.outbox_batch)
        items = [item for _, item in handed]
        if not items or time.monotonic() - self._last_claim >= 1.0:
            self._last_claim = time.monotonic()
            try:
                items += await self._db(
                    self.store.claim_outbox, s.outbox_batch, s.outbox_lease_seconds, self.owner
                )
            except BaseException:
                self._give_back(handed, set())
                raise
        if not items:
            return 0
        items.sort(key=lambda item: item.id)  # as stored: a case's answers in their order
        done: set[int] = set()

        def record(item: Outbox, error: Exception | None) -> None:
            done.add(item.id)
            self._record(item, error)

        ctx = contextvars.copy_context()
        try:
            await asyncio.to_thread(
                ctx.run, self.send, s.reinject_host, s.reinject_port, s.helo_name, items, record
            )
        finally:
            self._give_back(handed, done)
        return len(items)

    async def _let_go_handed(self) -> None:
        taken = [self.handed.popleft() for _ in range(len(self.handed))]
        if not taken:
            return
        try:
            await self._db(self.store.release_outbox, [item.id for _, item in taken],
                           self.handed_owner)
        except BaseException:
            self.handed.extendleft(reversed(taken))
            raise

    def _give_back(self, handed: list[tuple[float, Outbox]], done: set[int]) -> None:
        """Handed rows a stopped round did not get to: first in line again,
        with the time they were handed (a claim would not take them before
        their lease runs out)."""
        self.handed.extendleft(reversed([(at, item) for at, item in handed if item.id not in done]))

    def _record_unrecorded(self) -> None:
        for item_id, item in list(self.unrecorded.items()):
            self.store.outbox_sent(item)
            del self.unrecorded[item_id]
            self.sent += 1
            log.info("recorded outbox %s as sent (sent while the store was unavailable)", item_id)

    def _record(self, item: Outbox, error: Exception | None) -> None:
        """Called in the sending thread right after each message; the write
        runs on the store's thread, or here (the sender waits for it)."""
        if self.record_executor is None:
            self._write_result(item, error)
        else:
            self.record_executor.submit(contextvars.copy_context().run, self._write_result, item,
                                        error).result()

    def _write_result(self, item: Outbox, error: Exception | None) -> None:
        s = self.settings
        token = queue_id.set(item.message.queue_id or f"out:{item.id}")
        try:
            if error is None:
                self.failed_rounds, self.hold_until = 0, None
                self.store.outbox_sent(item)
                self.sent += 1
                log.info("sent %s to %s (%s)", item.message.kind, item.rcpt_to,
                         item.message.message_id)
            elif isinstance(error, PermanentSendError):
                log.error("giving up on outbox %s: %s", item.id, error)
                self.store.outbox_failed(item, str(error))
            elif _listener_down(error):
                if self._round_retry_at is None:  # the first of this round: back off
                    delay = min(s.retry_max_seconds, s.retry_min_seconds * (2 ** self.failed_rounds))
                    self.failed_rounds += 1
                    self._round_retry_at = self.store.now() + dt.timedelta(seconds=delay)
                    self.hold_until = self._round_retry_at
                    log.warning("re-injection failed (%s); retry in %.0fs", error, delay)
                self.store.outbox_retry(item, str(error), 0, at=self._round_retry_at)
            else:
                delay = min(s.retry_max_seconds, s.retry_min_seconds * (2 ** item.attempts))
                log.warning("re-injection failed (%s); retry in %.0fs", error, delay)
                self.store.outbox_retry(item, str(error), delay)
        except StoreUnavailable as exc:
            # A failure unrecorded is tried again when the lease runs out; a
            # sent message is remembered here and recorded before anything
            # else is claimed (only a restart meanwhile sends it again). The
            # rest of the batch must not go out unrecorded: raising stops
            # send_batch, and run() waits for the store.
            if error is None:
                self.unrecorded[item.id] = item
            log.error("could not record outbox %s (%s): %s", item.id,
                      "sent" if error is None else "failed", exc)
            raise
        finally:
            queue_id.reset(token)

    async def release_dead_leases(self) -> int:
        freed = await self._db(self.store.release_dead_leases, self.host, _pid_alive)
        if freed:
            log.info("released %d outgoing message(s) leased by a process that died", freed)
        return freed

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until ``stop``: send when poked, and at least every second."""
        try:
            await self.release_dead_leases()
        except StoreUnavailable as exc:
            log.warning("outbox: store unavailable: %s", exc)
        while not stop.is_set():
            try:
                handled = await self.run_once()
            except StoreUnavailable as exc:
                log.warning("outbox: store unavailable: %s", exc)
                handled = 0
            except OSError as exc:  # pragma: no cover - defensive
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


def _listener_down(error: Exception) -> bool:
    """The listener, not this message: no connection, a dropped one, or 421."""
    if isinstance(error, (OSError, smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError)):
        return True
    return isinstance(error, smtplib.SMTPResponseException) and error.smtp_code == 421


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
