"""A capture SMTP server: where the test Postfix delivers everything that is
not for the filter (customers' and staff mailboxes).

:class:`Sink` runs aiosmtpd on its own event loop in a daemon thread, so a
synchronous test can drive Postfix with smtplib and then wait for deliveries::

    with Sink() as sink:
        ...  # Postfix's default_transport = smtp:[127.0.0.1]:<sink.port>
        [msg] = sink.wait_for(lambda m: "alice@example.com" in m.rcpt_tos, timeout=10)
        assert msg.message["Subject"] == "hello"

:class:`ServerThread` is the loop-in-a-thread part, shared with the null filter.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

Factory = Callable[[asyncio.AbstractEventLoop], SMTP]


class ServerThread:
    """An asyncio SMTP server (one ``SMTP`` protocol per connection) on its own
    loop in a daemon thread. :meth:`start` binds in the caller's thread (a busy
    port fails there); port 0 picks a free port, read back from the bound
    socket into :attr:`port` (aiosmtpd's Controller does not report it)."""

    def __init__(self, factory: Factory, host: str = "127.0.0.1", port: int = 0) -> None:
        self._factory = factory
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._protocols: weakref.WeakSet[Any] = weakref.WeakSet()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("server already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(
            loop.create_server(lambda: self._track(self._factory(loop)), self.host, self.port)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"smtp-{self.host}:{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        if loop is None or server is None or thread is None:
            return

        async def shutdown() -> None:
            server.close()
            # Its connections end with it, as a real server's do (a client
            # keeping one, as casegate's outbox does, sees the end).
            for protocol in list(self._protocols):
                transport = getattr(protocol, "transport", None)
                if transport is not None:
                    transport.close()
            await server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            self._loop = self._server = self._thread = None

    def _track(self, protocol: Any) -> Any:
        self._protocols.add(protocol)
        return protocol

    def call(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the server's loop (e.g. to change state it reads)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(fn)


@dataclass(frozen=True)
class Delivery:
    """One SMTP transaction the sink accepted. The bytes are parsed when
    first asked for (:attr:`message`, or only the header with
    :attr:`headers`), in the asking thread: the sink stands for the world
    outside, and must not spend the machine's CPU beside what it measures
    (a full parse of a notification costs about 2 ms, issue 12)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    received: datetime

    @functools.cached_property
    def message(self) -> EmailMessage:
        msg = BytesParser(policy=policy.default).parsebytes(self.raw)
        assert isinstance(msg, EmailMessage)
        return msg

    @functools.cached_property
    def headers(self) -> EmailMessage:
        """The header alone (its body left unparsed): cheaper than :attr:`message`."""
        msg = BytesHeaderParser(policy=policy.default).parsebytes(self.raw)
        assert isinstance(msg, EmailMessage)
        return msg


class _SinkHandler:
    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self._sink._add(
            Delivery(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=raw,
                received=datetime.now(UTC),
            )
        )
        return "250 2.0.0 Ok: captured"


class PipeliningSMTP(SMTP):
    """aiosmtpd (which reads pipelined commands in order) saying PIPELINING,
    as Postfix's listener does, so the outbox writes each message's commands
    in one go."""

    async def smtp_EHLO(self, hostname: str) -> None:
        original = self.push
        lines: list[str] = []

        async def push(status: str) -> None:
            lines.append(status)

        self.push = push  # type: ignore[method-assign]
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self.push = original  # type: ignore[method-assign]
        if lines and lines[-1].startswith("250 "):
            lines[-1:] = ["250-PIPELINING", lines[-1]]
        for line in lines:
            await self.push(line)


class Sink:
    """Capture server. Thread-safe: Postfix delivers on the sink's loop thread
    while the test reads and waits in its own thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = _SinkHandler(self)
        self._server = ServerThread(
            lambda loop: SMTP(
                handler,
                hostname="sink.test",
                decode_data=False,
                enable_SMTPUTF8=True,
                loop=loop,
            ),
            host,
            port,
        )
        self._cond = threading.Condition()
        self._deliveries: list[Delivery] = []

    # --- life cycle -------------------------------------------------------
    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> Sink:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- captured mail ----------------------------------------------------
    def _add(self, delivery: Delivery) -> None:
        with self._cond:
            self._deliveries.append(delivery)
            self._cond.notify_all()

    def messages(self, to: str | None = None) -> list[Delivery]:
        """Deliveries so far, oldest first; with ``to``, only those with that
        envelope recipient (compared case-insensitively)."""
        with self._cond:
            found = list(self._deliveries)
        if to is None:
            return found
        want = to.lower()
        return [d for d in found if want in (r.lower() for r in d.rcpt_tos)]

    def wait_for(
        self,
        predicate: Callable[[Delivery], bool] = lambda d: True,
        timeout: float = 10.0,
        count: int = 1,
    ) -> list[Delivery]:
        """Wait until at least ``count`` deliveries match ``predicate``; return
        all the matching ones. Raises ``TimeoutError`` listing what did arrive."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [d for d in self._deliveries if predicate(d)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = _describe(self._deliveries)
                    raise TimeoutError(
                        f"sink: {len(found)} of {count} expected deliveries after "
                        f"{timeout}s; received: {seen}"
                    )
                self._cond.wait(remaining)

    def clear(self) -> None:
        with self._cond:
            self._deliveries.clear()


def _describe(deliveries: Iterable[Delivery]) -> str:
    items = [
        f"<{d.mail_from}> -> {list(d.rcpt_tos)} Subject={d.message['Subject']!r}"
        for d in deliveries
    ]
    return "; ".join(items) or "nothing"
