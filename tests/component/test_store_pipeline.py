"""PostgreSQL's fewer round trips (casestore.store.PipelinedPostgres, issue
12): BEGIN goes with a transaction's first statement, writes nobody reads
back go with the next statement or the COMMIT. The same rows as one round
trip per statement, the same transaction: a failure anywhere rolls all of it
back, and nothing is sent for a transaction that ran no statement."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from casestore.models import Case, Delivery, Event, Participant
from casestore.store import PipelinedPostgres, Store, StoreDataError


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    store = Store(pg_url)
    store.migrate()
    store.support = store.add_mailbox("support@example.com", "default")  # (read before any test's transaction)
    yield store
    store.close()


@pytest.fixture
def sent(store: Store) -> Iterator[list[str]]:
    """What went to the server, one item a round trip."""
    db = store.db
    original = db.cursor
    trips: list[str] = []

    class Cursor:
        def __init__(self, cursor) -> None:
            self._cursor = cursor

        def execute(self, sql, *args):
            trips.append(sql.decode() if isinstance(sql, bytes) else sql)
            return self._cursor.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._cursor, name)

    db.cursor = lambda *a, **kw: Cursor(original(*a, **kw))
    yield trips
    del db.cursor


def _case(store: Store) -> Case:
    return store.new_case(mailbox=store.support, prefix="CS",
                          customer_address="john@customer.test", customer_name="John",
                          subject="test_store_pipeline")


def test_the_store_is_pipelined(store: Store) -> None:
    assert isinstance(store.db, PipelinedPostgres)


def test_begin_rides_with_the_first_statement_and_writes_with_the_commit(store: Store, sent) -> None:
    with store.atomic():
        case = _case(store)
        store.record_event("opened", case=case, detail="one")
        store.record_event("note_like", case=case, detail="two")
        store.record_delivery("key-1", queue_id="Q1", outcome="new_case", message=None)
    assert len(sent) == 2, sent  # BEGIN + the case's INSERT; participant, events, delivery + COMMIT
    assert sent[0].startswith("BEGIN;") and "INSERT INTO \"support_case\"" in sent[0]
    assert sent[1].startswith('INSERT INTO "participant"') and sent[1].endswith("COMMIT")
    assert [e.detail for e in Event.select().where(Event.case == case).order_by(Event.id)] == ["one", "two"]
    assert [p.address for p in Participant.select().where(Participant.case == case)] == [
        "john@customer.test"]
    assert Delivery.get(Delivery.key == "key-1").queue_id == "Q1"


def test_a_read_sends_the_writes_before_it_and_sees_them(store: Store, sent) -> None:
    with store.atomic():
        case = _case(store)
        store.record_event("opened", case=case, detail="before the read")
        assert store.participants(case) == {"john@customer.test"}
        assert [e.detail for e in store.events(case)] == ["before the read"]


def test_a_transaction_without_statements_sends_nothing(store: Store, sent) -> None:
    store.db.connect(reuse_if_open=True)
    with store.atomic():
        pass
    assert sent == []
    with pytest.raises(RuntimeError), store.atomic():
        raise RuntimeError("before any statement")
    assert sent == []


def test_outside_a_transaction_a_write_runs_at_once(store: Store, sent) -> None:
    case = _case(store)
    sent.clear()
    store.record_event("opened", case=case, detail="at once")
    assert len(sent) == 1 and sent[0].startswith('INSERT INTO "event"')
    assert [e.detail for e in store.events(case)] == ["at once"]


def test_an_error_after_deferred_writes_rolls_them_back(store: Store) -> None:
    with store.atomic():
        case = _case(store)
    with pytest.raises(RuntimeError), store.atomic():
        store.record_event("lost", case=case, detail="never stored")
        store.touch(case, subject="never stored either")
        raise RuntimeError("a bug mid-way")
    assert store.events(case) == []
    assert store.case(case.number).subject == "test_store_pipeline"
    with store.atomic():  # the connection is clean: the next transaction works
        store.record_event("kept", case=case)
    assert [e.kind for e in store.events(case)] == ["kept"]


def test_a_deferred_write_refused_at_the_commit_rolls_back_everything(store: Store) -> None:
    """A second host stored the same delivery first: its key breaks the
    unique index at the COMMIT; the whole transaction goes, and the error
    is the integrity kind the engine tries once more on (then a duplicate)."""
    with store.atomic():
        store.record_delivery("same-key", queue_id="Q1", outcome="new_case", message=None)
    with pytest.raises(StoreDataError) as refused, store.atomic():
        case = _case(store)
        store.record_event("opened", case=case)
        store.record_delivery("same-key", queue_id="Q2", outcome="new_case", message=None)
    assert refused.value.integrity
    assert Case.select().where(Case.number == case.number).count() == 0
    assert Event.select().count() == 0
    assert [d.queue_id for d in Delivery.select()] == ["Q1"]


def test_case_numbers_keep_every_digit_past_seven(store: Store) -> None:
    with store.atomic():
        first = _case(store)
    store.db.execute_sql("SELECT setval(pg_get_serial_sequence('support_case', 'id'), 12345677)")
    with store.atomic():
        big = _case(store)
    assert first.number == f"CS{first.id:07d}" and len(first.number) == 9
    assert big.id == 12345678 and big.number == "CS12345678"
    assert store.case("CS12345678").id == big.id
