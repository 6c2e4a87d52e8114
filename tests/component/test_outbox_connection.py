"""The re-injection connection is kept between batches (issue 12), replaced
when the listener ended it, and closed when idle; real sockets, real store."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from aiosmtpd.smtp import SMTP

from casestore.models import Outbox
from casestore.store import Store
from smtpd_hook import outbox
from smtpd_hook.outbox import OutboxWorker
from smtpd_hook.settings import Settings
from tests.support.sink import ServerThread


class Listener:
    """An SMTP listener that counts connections and keeps what it accepts."""

    def __init__(self, port: int = 0) -> None:
        self.connections = 0
        self.quits = 0
        self.got: list[str] = []
        listener = self

        class Counting(SMTP):
            def connection_made(self, transport) -> None:
                listener.connections += 1
                super().connection_made(transport)

            async def smtp_QUIT(self, arg) -> None:
                listener.quits += 1
                await super().smtp_QUIT(arg)

        class Handler:
            async def handle_DATA(self, server, session, envelope) -> str:
                listener.got.append(envelope.rcpt_tos[0])
                return "250 2.0.0 Ok"

        self.server = ServerThread(lambda loop: Counting(Handler(), loop=loop), port=port)

    def __enter__(self) -> Listener:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()  # its connections end with it, as Postfix's do


def enqueue(store: Store, n: int) -> Outbox:
    raw = (f"From: support@example.com\r\nTo: c{n}@customer.test\r\nSubject: kept {n}\r\n"
           f"Message-ID: <k{n}@example.com>\r\n\r\nHello\r\n").encode()
    with store.atomic():
        msg = store.add_message(direction="out", kind="ack", sender="support@example.com",
                                recipients=f"c{n}@customer.test", raw=raw, message_id=f"<k{n}@example.com>")
        return store.enqueue(msg, mail_from="support@example.com", rcpt_to=[f"c{n}@customer.test"])


@pytest.fixture
def store(sqlite_url: str):
    s = Store(sqlite_url, clock=lambda: dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC))
    yield s
    outbox.close_idle()
    s.close()


def worker(store: Store, port: int) -> OutboxWorker:
    w = OutboxWorker(store, Settings(secret=b"x" * 32, reinject_port=port, retry_min_seconds=30), None)
    w.attach()
    return w


def kept_after_listener_gone(store: Store) -> tuple[OutboxWorker, int]:
    """A worker that sent one message and kept its connection to a listener
    that has stopped since; the worker and the listener's port."""
    with Listener() as first:
        w = worker(store, first.server.port)
        enqueue(store, 0)
        assert asyncio.run(w.run_once()) == 1
    return w, first.server.port


def test_batches_share_one_connection_closed_when_idle(store: Store) -> None:
    with Listener() as listener:
        w = worker(store, listener.server.port)
        for n in range(3):
            enqueue(store, n)
            assert asyncio.run(w.run_once()) == 1
        assert listener.got == ["c0@customer.test", "c1@customer.test", "c2@customer.test"]
        assert listener.connections == 1
        assert outbox.close_idle(older_than=3600) == 0  # not idle that long
        assert outbox.close_idle() == 1
        assert listener.quits == 1
        enqueue(store, 3)
        assert asyncio.run(w.run_once()) == 1
        assert listener.connections == 2


def test_a_connection_idle_too_long_is_not_used_again(store: Store, monkeypatch) -> None:
    monkeypatch.setattr(outbox, "KEEP_SECONDS", 0.0)
    with Listener() as listener:
        w = worker(store, listener.server.port)
        for n in range(2):
            enqueue(store, n)
            assert asyncio.run(w.run_once()) == 1
        assert listener.connections == 2 and listener.quits == 1


def test_a_listener_restart_costs_no_retry(store: Store) -> None:
    w, port = kept_after_listener_gone(store)
    # the kept connection was ended with the listener: a new one, no back-off
    with Listener(port=port) as second:
        enqueue(store, 1)
        assert asyncio.run(w.run_once()) == 1
        assert second.got == ["c1@customer.test"] and second.connections == 1
    assert w.hold_until is None and w.failed_rounds == 0
    assert {row.status for row in Outbox.select()} == {"sent"}


def test_a_connection_ended_between_the_check_and_the_send_is_replaced(store: Store, monkeypatch) -> None:
    w, port = kept_after_listener_gone(store)
    monkeypatch.setattr(outbox, "_quiet", lambda client: True)  # the close lands after the check
    with Listener(port=port) as second:
        enqueue(store, 1)
        enqueue(store, 2)
        assert asyncio.run(w.run_once()) == 2
        assert second.got == ["c1@customer.test", "c2@customer.test"]
    assert w.hold_until is None
    assert {row.status for row in Outbox.select()} == {"sent"}


def test_a_listener_down_for_good_still_backs_off(store: Store, monkeypatch) -> None:
    w, _ = kept_after_listener_gone(store)
    monkeypatch.setattr(outbox, "_quiet", lambda client: True)
    row = enqueue(store, 1)
    assert asyncio.run(w.run_once()) == 1  # kept one dead, a new one refused
    assert w.hold_until is not None
    row = Outbox.get_by_id(row.id)
    assert row.status == "pending" and row.attempts == 1 and row.last_error
