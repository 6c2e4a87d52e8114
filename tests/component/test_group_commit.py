"""Group commit on SQLite (issue 12): deliveries waiting for the store's
thread are stored in one transaction and answered after its one commit; a
delivery failing on its own keeps the others; store trouble or a failed
commit stores each again on its own, nothing lost and nothing doubled."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import peewee
import pytest

from casestore.models import Case, Outbox
from casestore.models import Delivery as DeliveryRow
from casestore.store import Store
from rules import replies
from rules.classify import parse_networks
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.group import GroupCommit
from smtpd_hook.settings import Settings
from tests.support.clock import Clock
from tests.support.mail import make
from tests.support.wait import until

SUPPORT = "support@example.com"


@pytest.fixture
def engine(sqlite_url: str) -> Engine:
    store = Store(sqlite_url, clock=Clock())
    store.migrate()
    store.add_mailbox(SUPPORT, "default", "Example Support")
    store.add_csr("jane@example.com", "Jane Doe", ["default"])
    e = Engine(store, Settings(secret=b"s" * 32, trusted_networks=parse_networks(["127.0.0.1/32"])))
    yield e
    store.close()


def delivery(n: int, rcpt: str = SUPPORT) -> Delivery:
    raw = make(from_=f"c{n}@customer.test", subject=f"group {n}", body=f"Question {n}\n")
    return Delivery(mail_from=f"c{n}@customer.test", rcpt_tos=(rcpt,), data=raw,
                    client_addr="127.0.0.2", queue_id=f"G{n}")


class Commits:
    def __init__(self, store: Store, fail_first: bool = False) -> None:
        self.store, self.count, self.fail_first = store, 0, fail_first
        self.original = store.db.commit

    def __enter__(self) -> Commits:
        def commit(*a, **kw):
            self.count += 1
            if self.fail_first and self.count == 1:
                raise peewee.OperationalError("disk I/O error")
            return self.original(*a, **kw)
        self.store.db.commit = commit
        return self

    def __exit__(self, *exc) -> None:
        self.store.db.commit = self.original


def run_together(engine: Engine, deliveries: list[Delivery]) -> tuple[list[replies.Reply], GroupCommit]:
    """Submit while the store's thread is busy, so all wait, then let it go."""
    db = ThreadPoolExecutor(max_workers=1)
    group = GroupCommit(engine.store, db)
    gate = threading.Event()
    db.submit(gate.wait)
    futures = [group.submit(engine.process, d) for d in deliveries]
    gate.set()
    try:
        return [f.result(timeout=30) for f in futures], group
    finally:
        db.shutdown(wait=True)


def test_waiting_deliveries_share_one_commit(engine: Engine) -> None:
    batch = [delivery(n) for n in range(6)]
    with Commits(engine.store) as commits:
        results, group = run_together(engine, batch)
    assert all(replies.is_stored(r) for r in results), results
    assert group.batches == 1 and commits.count == 1
    assert Case.select().count() == 6 and DeliveryRow.select().count() == 6
    assert Outbox.select().count() == 12  # an acknowledgement and a notification each
    # the same deliveries again (Postfix retrying): duplicates, nothing new
    again, _ = run_together(engine, batch)
    assert again == [replies.duplicate(r.text.removeprefix("Ok: ")) for r in results]
    assert Case.select().count() == 6


def test_a_delivery_failing_alone_keeps_the_others(engine: Engine) -> None:
    batch = [delivery(0), delivery(1, rcpt="nobody@example.com"), delivery(2)]
    with Commits(engine.store) as commits:
        results, group = run_together(engine, batch)
    assert replies.is_stored(results[0]) and replies.is_stored(results[2])
    assert results[1].is_temporary  # misrouted: 451, nothing stored
    assert group.batches == 1 and commits.count == 1
    assert sorted(c.subject for c in Case.select()) == ["group 0", "group 2"]


def test_store_trouble_mid_batch_stores_each_alone(engine: Engine) -> None:
    store = engine.store
    real = store.delivery_seen
    calls = []

    def flaky(key):
        calls.append(key)
        if len(calls) == 2:  # the second delivery of the batch meets a locked store
            with store.guard():
                raise peewee.OperationalError("database is locked")
        return real(key)

    store.delivery_seen = flaky
    with Commits(store) as commits:
        results, group = run_together(engine, [delivery(n) for n in range(4)])
    assert group.batches == 0  # rolled back, then one transaction each
    assert commits.count == 4
    assert all(replies.is_stored(r) for r in results), results
    assert Case.select().count() == 4 and DeliveryRow.select().count() == 4


def test_a_failed_shared_commit_stores_each_alone(engine: Engine) -> None:
    with Commits(engine.store, fail_first=True) as commits:
        results, group = run_together(engine, [delivery(n) for n in range(3)])
    assert group.batches == 0 and commits.count == 1 + 3
    assert all(replies.is_stored(r) for r in results), results
    assert Case.select().count() == 3 and Outbox.select().count() == 6


def test_the_outbox_record_of_a_sent_message_shares_the_commit(engine: Engine) -> None:
    from smtpd_hook.outbox import OutboxWorker

    store = engine.store
    first = [delivery(0)]
    run_together(engine, first)
    row = Outbox.select().order_by(Outbox.id).first()
    db = ThreadPoolExecutor(max_workers=1)
    group = GroupCommit(store, db)
    worker = OutboxWorker(store, engine.settings, db, record_executor=group)
    gate = threading.Event()
    db.submit(gate.wait)
    futures = [group.submit(engine.process, d) for d in (delivery(1), delivery(2))]
    recorded = threading.Thread(target=worker._record, args=(row, None))  # the sender's thread
    with Commits(store) as commits:
        recorded.start()
        until("the record waits with them", lambda: len(group._waiting) == 3, timeout=10, interval=0.01)
        futures.append(group.submit(engine.process, delivery(3)))
        gate.set()
        results = [f.result(timeout=30) for f in futures]
        recorded.join(30)
    db.shutdown(wait=True)
    assert all(replies.is_stored(r) for r in results)
    assert commits.count == 1 and group.batches == 1
    assert Outbox.get_by_id(row.id).status == "sent"


def _sent_record(engine: Engine, group: GroupCommit):
    """The outbox worker and a row to record as sent, through ``group.urgent``
    as serve wires it."""
    from smtpd_hook.outbox import OutboxWorker

    row = Outbox.select().order_by(Outbox.id).first()
    worker = OutboxWorker(engine.store, engine.settings, group.executor, record_executor=group.urgent)
    return worker, row


def test_a_waiting_record_is_committed_before_the_waiting_deliveries(engine: Engine) -> None:
    store = engine.store
    run_together(engine, [delivery(0)])
    db = ThreadPoolExecutor(max_workers=1)
    group = GroupCommit(store, db)
    worker, row = _sent_record(engine, group)
    order: list[str] = []

    def process(d: Delivery):
        order.append(d.queue_id)
        return engine.process(d)

    gate = threading.Event()
    db.submit(gate.wait)
    futures = [group.submit(process, delivery(n)) for n in (1, 2, 3)]
    recorded = threading.Thread(target=worker._record, args=(row, None))
    with Commits(store) as commits:
        recorded.start()
        until("the record waits", lambda: len(group._urgent) == 1, timeout=10, interval=0.01)
        real = store.outbox_sent

        def outbox_sent(item):
            order.append("record")
            assert commits.count == 0  # nothing committed before it
            return real(item)

        store.outbox_sent = outbox_sent
        gate.set()
        results = [f.result(timeout=30) for f in futures]
        recorded.join(30)
    db.shutdown(wait=True)
    assert order == ["record", "G1", "G2", "G3"]
    # the record alone is one autocommit UPDATE; then the deliveries' one commit
    assert commits.count == 1 and group.batches == 1
    assert all(replies.is_stored(r) for r in results)
    assert Outbox.get_by_id(row.id).status == "sent"


def test_a_record_arriving_mid_batch_ends_the_batch_early(engine: Engine) -> None:
    store = engine.store
    run_together(engine, [delivery(0)])
    db = ThreadPoolExecutor(max_workers=1)
    group = GroupCommit(store, db)
    worker, row = _sent_record(engine, group)
    order: list[str] = []
    recorded = threading.Thread(target=worker._record, args=(row, None))
    real = store.outbox_sent

    def outbox_sent(item):
        order.append("record")
        return real(item)

    store.outbox_sent = outbox_sent

    def process(d: Delivery):
        order.append(d.queue_id)
        reply = engine.process(d)
        if d.queue_id == "G2":  # the sender records while the batch is at its second delivery
            recorded.start()
            until("the record waits", lambda: len(group._urgent) == 1, timeout=10, interval=0.01)
        return reply

    gate = threading.Event()
    db.submit(gate.wait)
    futures = [group.submit(process, delivery(n)) for n in (1, 2, 3, 4)]
    with Commits(store) as commits:
        gate.set()
        results = [f.result(timeout=30) for f in futures]
        recorded.join(30)
    db.shutdown(wait=True)
    # G1, G2 and the record share the first commit; G3 and G4 the next
    assert order == ["G1", "G2", "record", "G3", "G4"]
    assert commits.count == 2 and group.batches == 2
    assert all(replies.is_stored(r) for r in results), results
    assert Case.select().count() == 5 and Outbox.get_by_id(row.id).status == "sent"
