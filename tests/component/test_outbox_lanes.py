"""The outbox's lanes (issue 12): a batch goes over several connections, each
message written up to its final dot, the dots one at a time in the rows'
order, each after the one before was answered and recorded. So the server
takes the messages in order, at most one is ever taken and not yet recorded,
and a message whose dot was never sent is never taken."""

from __future__ import annotations

import threading

import pytest

from casestore.models import Outbox
from casestore.store import Store, StoreUnavailable
from smtpd_hook.outbox import send_batch
from tests.support.sink import PipeliningSMTP, ServerThread, Sink, _SinkHandler


def rows(url: str, n: int) -> tuple[Store, list[Outbox]]:
    store = Store(url)
    store.migrate()
    out = []
    with store.atomic():
        for i in range(n):
            raw = (f"From: support@example.com\r\nTo: c{i}@customer.test\r\nSubject: lane {i}\r\n"
                   f"Message-ID: <lane{i}@example.com>\r\n\r\n.starts with a dot\r\nbody {i}\r\n").encode()
            msg = store.add_message(direction="out", kind="ack", sender="support@example.com",
                                    recipients=f"c{i}@customer.test", raw=raw,
                                    message_id=f"<lane{i}@example.com>", queue_id=f"Q{i}")
            out.append(store.enqueue(msg, mail_from="support@example.com",
                                     rcpt_to=[f"c{i}@customer.test"]))
    return store, out


class Listener:
    """A pipelining listener (as Postfix's) in front of a sink, counting the
    connections it saw; ``mail_reply`` answers MAIL FROM for a chosen
    message (by its index, counted in arrival order of MAIL commands)."""

    def __init__(self, sink: Sink, mail_reply: dict[int, str] | None = None) -> None:
        inner = _SinkHandler(sink)
        self.peers: set[tuple[str, int]] = set()
        self.mails = 0
        listener = self

        class Handler:
            async def handle_MAIL(self, server, session, envelope, address, options):
                n, listener.mails = listener.mails, listener.mails + 1
                listener.peers.add(session.peer)
                if mail_reply and n in mail_reply:
                    return mail_reply[n]
                envelope.mail_from = address
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                return await inner.handle_DATA(server, session, envelope)

        self.server = ServerThread(lambda loop: PipeliningSMTP(Handler()))

    def __enter__(self) -> Listener:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def port(self) -> int:
        return self.server.port


def subjects(sink: Sink) -> list[str]:
    return [d.message["Subject"] for d in sink.messages()]


def test_a_batch_goes_over_several_lanes_in_order_with_one_message_unrecorded_at_most(
        sqlite_url: str) -> None:
    store, items = rows(sqlite_url, 12)
    results: list[tuple[int, Exception | None]] = []
    with Sink() as sink, Listener(sink) as listener:
        def on_result(item: Outbox, error: Exception | None) -> None:
            if error is None:
                # taken by the server: this one and those recorded before, no other
                assert len(sink.messages()) == sum(e is None for _, e in results) + 1
            results.append((item.id, error))

        send_batch("127.0.0.1", listener.port, "casegate.test", items, on_result)
        assert results == [(item.id, None) for item in items]
        assert subjects(sink) == [f"lane {i}" for i in range(12)]
        assert 1 < len(listener.peers) <= 4  # several lanes, never more than four
        # dot-stuffing undone by the server: the content arrives as stored
        assert [d.raw for d in sink.messages()] == [bytes(i.message.raw) for i in items]
    store.close()


def test_a_lost_lane_retries_that_message_and_every_later_one_none_taken_twice(
        sqlite_url: str) -> None:
    """421 to the fifth MAIL: the first message had its dot and is recorded;
    the others staged meanwhile never had theirs, so the server never took
    them, and they are all retried."""
    store, items = rows(sqlite_url, 8)
    results: dict[int, Exception | None] = {}
    with Sink() as sink, Listener(sink, {4: "421 4.3.2 shutting down"}) as listener:
        def on_result(item: Outbox, error: Exception | None) -> None:
            assert item.id not in results  # each item answered once
            results[item.id] = error

        send_batch("127.0.0.1", listener.port, "casegate.test", items, on_result)
        assert sorted(results) == sorted(i.id for i in items)
        sent = [i for i in items if results[i.id] is None]
        assert sent and len(sent) < len(items)
        # what the server took is exactly what was recorded as sent
        assert subjects(sink) == [f"lane {items.index(i)}" for i in sent]
    store.close()


def test_a_record_that_fails_stops_the_batch_and_no_staged_message_goes(sqlite_url: str) -> None:
    store, items = rows(sqlite_url, 6)
    seen: list[int] = []
    with Sink() as sink, Listener(sink) as listener:
        def on_result(item: Outbox, error: Exception | None) -> None:
            seen.append(item.id)
            raise StoreUnavailable("disk full")

        with pytest.raises(StoreUnavailable):
            send_batch("127.0.0.1", listener.port, "casegate.test", items, on_result)
        assert seen == [items[0].id]
        assert len(listener.peers) > 1  # other lanes held staged messages
        # the lanes are closed before send_batch returns: nothing more can arrive
        threading.Event().wait(0.2)
        assert subjects(sink) == ["lane 0"]
    store.close()
