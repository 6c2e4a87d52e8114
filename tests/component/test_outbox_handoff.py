"""The outbox hand-off (issue 12): a row ``serve`` enqueues is leased to its
worker in the transaction that stores it and handed over after the commit,
so it goes without a claiming transaction; never twice, never before the
commit, and back to the claim path whenever the hand-off cannot finish."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from casestore.models import Outbox
from casestore.store import Store, StoreUnavailable
from smtpd_hook.outbox import OutboxWorker
from smtpd_hook.settings import Settings
from tests.support.postfix import free_port
from tests.support.sink import Sink


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def raw(n: int) -> bytes:
    return (f"From: support@example.com\r\nTo: c{n}@customer.test\r\nSubject: handoff {n}\r\n"
            f"Message-ID: <h{n}@example.com>\r\n\r\nHello {n}\r\n").encode()


def enqueue(store: Store, n: int) -> Outbox:
    msg = store.add_message(direction="out", kind="ack", sender="support@example.com",
                            recipients=f"c{n}@customer.test", raw=raw(n), message_id=f"<h{n}@example.com>")
    return store.enqueue(msg, mail_from="support@example.com", rcpt_to=[f"c{n}@customer.test"])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_url: str, clock: Clock):
    s = Store(store_url, clock=clock)
    yield s
    s.close()


def worker_for(store: Store, port: int, **settings) -> OutboxWorker:
    worker = OutboxWorker(store, Settings(secret=b"x" * 32, reinject_port=port, **settings), None)
    worker.attach()
    return worker


def test_rows_are_handed_after_the_commit_leased_and_sent_once(store: Store) -> None:
    with Sink() as sink:
        worker = worker_for(store, sink.port)
        with store.atomic():
            first = enqueue(store, 1)
            second = enqueue(store, 2)
            assert not worker.handed  # nothing before the commit
        assert [item.id for _, item in worker.handed] == [first.id, second.id]
        for row in Outbox.select():
            assert row.lease_owner == worker.handed_owner and row.lease_until is not None
        # the process's own claim (which frees its own leases) does not take them
        assert store.claim_outbox(10, 600, worker.owner) == []

        assert asyncio.run(worker.run_once()) == 2
        got = sink.wait_for(count=2, timeout=5)
        assert asyncio.run(worker.run_once()) == 0
    assert sorted(d.rcpt_tos for d in got) == [("c1@customer.test",), ("c2@customer.test",)]
    assert {row.status for row in Outbox.select()} == {"sent"}
    assert not worker.handed


def test_nothing_is_handed_from_a_rollback_or_from_someone_elses_transaction(store: Store) -> None:
    worker = worker_for(store, free_port())
    with pytest.raises(RuntimeError), store.atomic():
        enqueue(store, 1)
        raise RuntimeError("boom")
    assert not worker.handed and Outbox.select().count() == 0

    with store.atomic():  # a savepoint rolled back inside a committed transaction
        kept = enqueue(store, 2)
        with pytest.raises(RuntimeError), store.atomic():
            enqueue(store, 3)
            raise RuntimeError("boom")
    assert [item.id for _, item in worker.handed] == [kept.id]
    assert Outbox.select().count() == 1
    worker.handed.clear()

    with store.db.atomic(), store.atomic():  # not our commit: claimed as before
        plain = enqueue(store, 4)
    assert not worker.handed
    assert Outbox.get_by_id(plain.id).lease_owner == ""
    assert [r.id for r in store.claim_outbox(10, 600, worker.owner)] == [plain.id]

    worker.detach()
    with store.atomic():
        enqueue(store, 5)
    assert not worker.handed


def test_handed_leases_of_a_dead_process_are_released(store: Store) -> None:
    store.handoff, store.handoff_owner, store.handoff_lease_seconds = (
        lambda items: None), "thishost:999999:handed", 600
    with store.atomic():
        row = enqueue(store, 1)
    store.handoff = None
    assert store.claim_outbox(10, 600, "thishost:999999") == []
    assert store.release_dead_leases("thishost", lambda pid: pid != 999999) == 1
    assert [r.id for r in store.claim_outbox(10, 600, "thishost:2")] == [row.id]


def test_listener_down_sends_everything_by_claim_in_stored_order(store: Store, clock: Clock) -> None:
    port = free_port()
    worker = worker_for(store, port, retry_min_seconds=5)
    with store.atomic():
        first = enqueue(store, 1)
    assert asyncio.run(worker.run_once()) == 1  # refused: the worker holds back
    assert worker.hold_until is not None and not worker.handed
    with store.atomic():
        second = enqueue(store, 2)  # handed while the listener is down
    assert asyncio.run(worker.run_once()) == 0
    assert not worker.handed  # let go: it waits in the table like the first
    assert Outbox.get_by_id(second.id).lease_owner == ""

    clock.now += dt.timedelta(seconds=6)
    with Sink(port=port) as sink:
        assert asyncio.run(worker.run_once()) == 2
        got = sink.wait_for(count=2, timeout=5)
    assert [d.rcpt_tos for d in got] == [("c1@customer.test",), ("c2@customer.test",)]
    assert {Outbox.get_by_id(i).status for i in (first.id, second.id)} == {"sent"}


def test_a_row_held_past_half_its_lease_goes_by_claim_not_from_memory(store: Store, clock: Clock) -> None:
    with Sink() as sink:
        worker = worker_for(store, sink.port, outbox_lease_seconds=60)
        with store.atomic():
            row = enqueue(store, 1)
        at, item = worker.handed.popleft()
        worker.handed.append((at - 31, item))  # handed 31 s ago: past half of 60
        assert asyncio.run(worker.run_once()) == 0  # not sent, and still leased
        assert Outbox.get_by_id(row.id).status == "pending"
        clock.now += dt.timedelta(seconds=61)  # the lease ran out: any claim takes it
        assert asyncio.run(worker.run_once()) == 1
        assert len(sink.wait_for(count=1, timeout=5)) == 1
    assert Outbox.get_by_id(row.id).status == "sent"


def test_a_round_stopped_by_the_store_gives_the_rest_back(store: Store) -> None:
    with Sink() as sink:
        worker = worker_for(store, sink.port)
        with store.atomic():
            rows = [enqueue(store, n) for n in range(3)]
        handed_at = [at for at, _ in worker.handed]
        real = store.outbox_sent
        calls = []

        def outbox_sent(item):
            calls.append(item.id)
            if len(calls) == 2:
                raise StoreUnavailable("store unavailable: disk I/O error")
            real(item)

        store.outbox_sent = outbox_sent
        with pytest.raises(StoreUnavailable, match="disk I/O"):
            asyncio.run(worker.run_once())
        # the second was sent but not recorded: remembered, never sent again;
        # the third was not tried: handed again, with the time it was handed
        assert list(worker.unrecorded) == [rows[1].id]
        assert [(at, item.id) for at, item in worker.handed] == [(handed_at[2], rows[2].id)]
        store.outbox_sent = real
        assert asyncio.run(worker.run_once()) == 1
        got = sink.wait_for(count=3, timeout=5)
    assert len(got) == 3
    assert {Outbox.get_by_id(r.id).status for r in rows} == {"sent"}
