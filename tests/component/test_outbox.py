"""The outbox on a real store and real sockets: retried until Postfix's
listener takes it, the same bytes (and Message-ID) every time."""

from __future__ import annotations

import asyncio
import datetime as dt

from aiosmtpd.smtp import SMTP

from casestore.models import Outbox
from casestore.store import Store
from smtpd_hook.outbox import OutboxWorker
from smtpd_hook.settings import Settings
from tests.support.postfix import free_port
from tests.support.sink import PipeliningSMTP, ServerThread, Sink

RAW = (b"From: support@example.com\r\nTo: john@customer.test\r\nSubject: test_outbox\r\n"
       b"Message-ID: <cs0000001.abc.def@example.com>\r\n\r\nHello\r\n")


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def make_store(url: str, clock: Clock) -> tuple[Store, Outbox]:
    store = Store(url, clock=clock)
    store.migrate()
    with store.atomic():
        msg = store.add_message(direction="out", kind="ack", sender="support@example.com",
                                recipients="john@customer.test", raw=RAW,
                                message_id="<cs0000001.abc.def@example.com>")
        row = store.enqueue(msg, mail_from="support@example.com", rcpt_to=["john@customer.test"])
    return store, row


def test_refused_reinjection_is_retried_until_it_succeeds(store_url: str) -> None:
    clock = Clock()
    store, row = make_store(store_url, clock)
    port = free_port()
    settings = Settings(secret=b"x" * 32, reinject_port=port, retry_min_seconds=5)
    worker = OutboxWorker(store, settings, None)

    assert asyncio.run(worker.run_once()) == 1  # nothing listens: retry later
    row = Outbox.get_by_id(row.id)
    assert (row.status, row.attempts) == ("pending", 1) and row.last_error
    assert asyncio.run(worker.run_once()) == 0  # not due yet

    clock.now += dt.timedelta(seconds=6)
    assert asyncio.run(worker.run_once()) == 1  # still refused: back-off doubles
    row = Outbox.get_by_id(row.id)
    assert row.attempts == 2
    assert store.next_outbox_due() == clock.now + dt.timedelta(seconds=10)

    with Sink(port=port) as sink:
        clock.now += dt.timedelta(seconds=11)
        assert asyncio.run(worker.run_once()) == 1
        got = sink.wait_for(timeout=5)
    assert Outbox.get_by_id(row.id).status == "sent"
    assert got[0].raw.replace(b"\r\n", b"\n").strip() == RAW.replace(b"\r\n", b"\n").strip()
    assert got[0].mail_from == "support@example.com" and got[0].rcpt_tos == ("john@customer.test",)
    assert asyncio.run(worker.run_once()) == 0  # sent once, never again
    store.close()


def test_permanent_refusal_is_recorded_not_retried_forever(sqlite_url: str) -> None:
    clock = Clock()
    store, row = make_store(sqlite_url, clock)

    class Refuse:
        async def handle_RCPT(self, server, session, envelope, address, options):
            return "550 5.1.1 no such user"


    srv = ServerThread(lambda loop: SMTP(Refuse()))
    srv.start()
    try:
        worker = OutboxWorker(store, Settings(secret=b"x" * 32, reinject_port=srv.port), None)
        asyncio.run(worker.run_once())
    finally:
        srv.stop()
    row = Outbox.get_by_id(row.id)
    assert row.status == "failed" and "550" in row.last_error


def test_leases_of_a_dead_process_are_released(sqlite_url: str) -> None:
    clock = Clock()
    store, row = make_store(sqlite_url, clock)
    assert [r.id for r in store.claim_outbox(10, 600, "thishost:999999")] == [row.id]
    assert store.claim_outbox(10, 600, "thishost:1") == []  # leased: nobody else takes it
    assert store.release_dead_leases("otherhost", lambda pid: False) == 0
    assert store.release_dead_leases("thishost", lambda pid: pid != 999999) == 1
    assert [r.id for r in store.claim_outbox(10, 600, "thishost:2")] == [row.id]
    assert store.release_dead_leases("thishost", lambda pid: True) == 0


def test_an_unsendable_message_fails_alone(sqlite_url: str) -> None:
    clock = Clock()
    store, first = make_store(sqlite_url, clock)
    with store.atomic():
        msg = store.add_message(direction="out", kind="notify", sender="support@example.com",
                                recipients="ana@bär.test", raw=RAW, message_id="<x@y>")
        bad = store.enqueue(msg, mail_from="support@example.com", rcpt_to=["ana@bär.test"])
        msg2 = store.add_message(direction="out", kind="ack", sender="support@example.com",
                                 recipients='"a,b"@client.test', raw=RAW, message_id="<z@y>")
        comma = store.enqueue(msg2, mail_from="support@example.com", rcpt_to=['"a,b"@client.test'])
    with Sink() as sink:
        worker = OutboxWorker(store, Settings(secret=b"x" * 32, reinject_port=sink.port), None)
        assert asyncio.run(worker.run_once()) == 3
        got = sink.wait_for(count=2, timeout=5)
    assert Outbox.get_by_id(bad.id).status == "failed"
    assert {Outbox.get_by_id(i).status for i in (first.id, comma.id)} == {"sent"}
    assert sorted(d.rcpt_tos for d in got) == [('"a,b"@client.test',), ("john@customer.test",)]


def test_pipelined_sending_gives_the_same_outcomes(sqlite_url: str) -> None:
    """Sent, refused sender, one of two recipients refused, all refused, and
    content refused: recorded as with one command at a time."""
    from tests.support.sink import _SinkHandler

    clock = Clock()
    store, plain = make_store(sqlite_url, clock)
    rows = {"plain": plain}
    cases = {"badsender": ("bad@example.com", ["john@customer.test"]),
             "onebad": ("support@example.com", ["john@customer.test", "nobody@customer.test"]),
             "allbad": ("support@example.com", ["nobody@customer.test"]),
             "baddata": ("support@example.com", ["reject-data@customer.test"])}
    with store.atomic():
        for name, (sender, rcpts) in cases.items():
            msg = store.add_message(direction="out", kind="ack", sender=sender, recipients=rcpts[0],
                                    raw=RAW.replace(b"test_outbox", name.encode()),
                                    message_id=f"<{name}@example.com>", queue_id="4AbC")
            rows[name] = store.enqueue(msg, mail_from=sender, rcpt_to=rcpts)
    with Sink() as sink:
        handler = _SinkHandler(sink)

        class Picky:
            async def handle_MAIL(self, server, session, envelope, address, options):
                if address.startswith("bad@"):
                    return "553 5.7.1 sender refused"
                envelope.mail_from = address
                return "250 OK"

            async def handle_RCPT(self, server, session, envelope, address, options):
                if address.startswith("nobody@"):
                    return "550 5.1.1 no such user"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                if "reject-data@customer.test" in envelope.rcpt_tos:
                    return "554 5.6.0 content refused"
                return await handler.handle_DATA(server, session, envelope)

        srv = ServerThread(lambda loop: PipeliningSMTP(Picky()))
        srv.start()
        try:
            worker = OutboxWorker(store, Settings(secret=b"x" * 32, reinject_port=srv.port), None)
            assert asyncio.run(worker.run_once()) == 5
        finally:
            srv.stop()
        got = sink.wait_for(count=2, timeout=5)
    status = {name: Outbox.get_by_id(row.id) for name, row in rows.items()}
    assert {n: s.status for n, s in status.items()} == {
        "plain": "sent", "badsender": "failed", "onebad": "sent", "allbad": "failed", "baddata": "failed"}
    assert "553" in status["badsender"].last_error and "554" in status["baddata"].last_error
    assert "550" in status["allbad"].last_error
    assert sorted(d.rcpt_tos for d in got) == [("john@customer.test",), ("john@customer.test",)]
    assert sorted(d.raw.split(b"Subject: ")[1].split(b"\r\n")[0] for d in got) == [b"onebad", b"test_outbox"]
    store.close()
