"""The facts the report keeps on the case row (migration 0016_report_facts,
issue 11 §1): ``support_case.first_answer_at`` is the time of the case's
first message of kind ``reply`` or ``solution``, set by the engine when it
sends our first answer, filled by the migration for existing cases and by
``bench/seed.py``; and the report's queries read the indexes 0016 made. Real
SQLite and PostgreSQL stores, the real engine and a fake clock."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
from peewee import fn

from casestore import reports
from casestore.models import Case, Message
from casestore.reports import Period, Report, _Tally
from casestore.store import Store
from rules.classify import parse_networks
from smtpd_hook.engine import Engine
from smtpd_hook.settings import Settings
from tests.component.test_reports import BOB, JANE, SECRET, SUPPORT, Month
from tests.support.clock import Clock

REPO = Path(__file__).resolve().parents[2]


def naive(*when: int) -> dt.datetime:
    """Naive UTC, as the rows keep it."""
    return dt.datetime(*when, tzinfo=dt.UTC).replace(tzinfo=None)


def _naive(value: object) -> dt.datetime | None:
    """A timestamp as the driver returns it (SQLite: text) as naive UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=None)


def first_answers(store: Store) -> dict[int, tuple[dt.datetime | None, dt.datetime | None]]:
    """case id -> (first_answer_at on the row, the first reply/solution message's time)."""
    with store.guard():
        first = {c: _naive(at) for c, at in Message.select(Message.case, fn.MIN(Message.created))
                 .where(Message.kind.in_(["reply", "solution"]) & Message.case.is_null(False))
                 .group_by(Message.case).tuples()}
        return {c: (_naive(at), first.get(c))
                for c, at in Case.select(Case.id, Case.first_answer_at).tuples()}


def test_the_engine_keeps_the_first_answer_on_the_case(store_url: str) -> None:
    clock = Clock(dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC))
    store = Store(store_url, clock=clock)
    store.migrate()
    store.add_mailbox(SUPPORT, "default", "Example Support")
    store.add_csr(JANE, "Jane Doe", ["default"])
    store.add_csr(BOB, "Bob Roe", ["default"])
    store.set_pool("default", remind_after=None, autoclose_after=None)
    m = Month(Engine(store, Settings(secret=SECRET, trusted_networks=parse_networks(["127.0.0.1/32"]))),
              clock)
    m.at(11, 2, 9)
    a = m.opens(SUPPORT, "a@customer.test", "A")
    m.at(11, 2, 10)
    b = m.opens(SUPPORT, "b@customer.test", "B")
    m.at(11, 2, 11)
    m.customer(a, "Anyone there?\n")  # the customer again: no answer of ours yet
    with store.guard():
        assert Case.get_by_id(a.id).first_answer_at is None
        assert Case.get_by_id(b.id).first_answer_at is None
    m.at(11, 2, 12)
    m.csr(a, "Please restart it.\n")
    m.at(11, 3, 9)
    m.csr(a, "Did it help?\n")  # a second answer leaves the first one's time
    m.at(11, 3, 10)
    m.csr(b, "#solution\nUpdate the firmware.\n", csr=BOB)  # a proposed solution answers too
    m.at(11, 4, 9)
    m.csr(b, "#close\n", csr=BOB)
    with store.guard():
        assert _naive(Case.get_by_id(a.id).first_answer_at) == naive(2026, 11, 2, 12, 0)
        assert _naive(Case.get_by_id(b.id).first_answer_at) == naive(2026, 11, 3, 10, 0)
    for case_id, (kept, derived) in first_answers(store).items():
        assert kept == derived, case_id
    report = Report(store, Period(dt.date(2026, 11, 1), dt.date(2026, 11, 30))).run()
    assert report["first_answer_median_seconds"] == (3 * 3600 + 24 * 3600) / 2
    store.close()


def test_the_migration_fills_first_answer_at_from_the_messages(empty_store_url: str) -> None:
    t0 = naive(2026, 11, 2, 9, 0)
    store = Store(empty_store_url, clock=Clock(t0.replace(tzinfo=dt.UTC)))
    store.migrate(through="0015_mailbox_templates")
    mailbox = store.add_mailbox(SUPPORT, "default")
    # case 1: a customer mail, a notification, a solution, then a reply (its first
    # answer is the solution); case 2: two replies, the earlier one stored second;
    # case 3: none (an acknowledgement is no answer).
    script = {1: [("in", "customer", 0), ("out", "notify", 1), ("out", "solution", 3), ("out", "reply", 5)],
              2: [("in", "customer", 0), ("out", "reply", 7), ("out", "reply", 2)],
              3: [("in", "customer", 0), ("out", "ack", 1)]}
    ids = {}
    with store.atomic():
        for n, messages in script.items():
            case = store.new_case(mailbox=mailbox, prefix="CS", customer_address="c@customer.test",
                                  customer_name="", subject=f"case {n}")
            ids[n] = case.id
            for direction, kind, hours in messages:
                store.add_message(case=case, direction=direction, kind=kind, raw=b"",
                                  created=t0 + dt.timedelta(hours=hours))
    store.close()
    assert store.migrate(through="0016_report_facts") == ["0016_report_facts"]
    with store.guard():
        kept = {c: _naive(at) for c, at in Case.select(Case.id, Case.first_answer_at).tuples()}
    assert kept == {ids[1]: t0 + dt.timedelta(hours=3), ids[2]: t0 + dt.timedelta(hours=2), ids[3]: None}
    assert store.migrate(through="0016_report_facts") == []  # applied once
    store.close()


def test_the_seeder_fills_first_answer_at(store_url: str) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from seed import seed
    finally:
        sys.path.remove(str(REPO / "bench"))
    seed(store_url, cases=300, messages_per_case=3, pools=2, csrs=4, days=30, seed=3,
         now=dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC))
    store = Store(store_url)
    facts = first_answers(store)
    store.close()
    assert len(facts) == 300
    assert sum(1 for kept, _ in facts.values() if kept is not None) > 200  # most are answered
    for case_id, (kept, derived) in facts.items():
        assert kept == derived, case_id


def _report_sql(store: Store) -> list[tuple[str, tuple[object, ...]]]:
    """The SQL of the report's grouped queries, as the report sends it."""
    report = Report(store, Period(dt.date(2026, 11, 1), dt.date(2026, 11, 30)))
    seen: list[tuple[str, tuple[object, ...]]] = []
    rows = report._rows

    def spy(query):
        seen.append(query.sql())
        return rows(query)

    report._rows = spy  # type: ignore[method-assign]
    with store.guard():
        report._directory()
        report._load_keys()
        tally = _Tally()
        for step in (report.cases, report.backlog, report.emails_received, report.consultations,
                     report.reopenings):
            step(tally)
    return seen


def test_the_report_reads_the_indexes_of_0016(store_url: str) -> None:
    """SQLite: the passes over cases come from the covering day indexes of
    0019 alone, in order (no sort), and reopenings from the partial index.
    PostgreSQL: the partial index is one the reopenings query may use (its
    predicate matches the query's)."""
    store = Store(store_url)
    store.migrate()
    store.add_mailbox(SUPPORT, "default")
    queries = _report_sql(store)
    reopenings = next(q for q in queries if "closed -> " in q[0])
    if store.is_sqlite:
        plans = {sql: " / ".join(r[-1] for r in store.db.execute_sql("EXPLAIN QUERY PLAN " + sql, params))
                 for sql, params in queries}
        opened = next(p for s, p in plans.items() if "first_answer_at" in s)
        assert "COVERING INDEX support_case_report_opened_day" in opened and "TEMP B-TREE" not in opened
        closed = next(p for s, p in plans.items() if 'substr("t1"."closed"' in s)
        assert "COVERING INDEX support_case_report_closed_day" in closed and "TEMP B-TREE" not in closed
        assert "INDEX event_reopened" in plans[reopenings[0]]
    else:
        with store.atomic():
            store.db.execute_sql("SET LOCAL enable_seqscan = off")
            store.db.execute_sql("SET LOCAL enable_bitmapscan = off")
            plan = "\n".join(r[0] for r in store.db.execute_sql("EXPLAIN " + reopenings[0], reopenings[1]))
        assert "event_reopened" in plan, plan
    store.close()


def _case_indexes(store: Store) -> set[str]:
    """The names of support_case's indexes, as the database has them."""
    sql = ("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'support_case'"
           if store.is_sqlite else "SELECT indexname FROM pg_indexes WHERE tablename = 'support_case'")
    return {r[0] for r in store.db.execute_sql(sql)}


def test_0017_indexes_the_cases_keys_and_the_report_reads_them(empty_store_url: str) -> None:
    """0017_report_keys on a store of 0016 with cases in it: the index
    support_case_report_keys is built from them, and the report's figures are
    the same before and after (SQLite: its key pass reads that index alone,
    in order: no sort)."""
    t0 = naive(2026, 11, 2, 9, 0)
    store = Store(empty_store_url, clock=Clock(t0.replace(tzinfo=dt.UTC)))
    store.migrate(through="0016_report_facts")
    mailbox = store.add_mailbox(SUPPORT, "default")
    jane = store.add_csr(JANE, "Jane Doe", ["default"])
    with store.atomic():
        for n in range(6):
            case = store.new_case(mailbox=mailbox, prefix="CS", customer_address=f"c{n}@customer.test",
                                  customer_name="", subject=f"case {n}")
            store.add_message(case=case, direction="in", kind="customer", raw=b"",
                              created=t0 + dt.timedelta(hours=n))
            if n % 2:
                Case.update(assignee=jane.id).where(Case.id == case.id).execute()
    store.close()
    assert store.migrate(through="0019_report_days") == ["0017_report_keys", "0018_rate_cap_covering",
                                                          "0019_report_days"]
    store.migrate()  # and any later ones: what follows holds on the whole schema
    names = _case_indexes(store)
    assert "support_case_report_keys" in names
    report = Report(store, Period(dt.date(2026, 11, 1), dt.date(2026, 11, 30))).run()
    assert (report["cases_opened"], report["emails_received"]) == (6, 6)
    assert {k: v["emails_received"] for k, v in report["by_csr"].items()} == {JANE: 3, "(unassigned)": 3}
    if store.is_sqlite:
        keys = next(q for q in _report_sql(store) if "group_concat" in q[0] and "message" not in q[0]
                    and "first_answer_at" not in q[0] and "closed" not in q[0])
        plan = " / ".join(r[-1] for r in store.db.execute_sql("EXPLAIN QUERY PLAN " + keys[0], keys[1]))
        assert "COVERING INDEX support_case_report_keys" in plan and "TEMP B-TREE" not in plan, plan
    assert store.migrate(through="0017_report_keys") == []  # applied once
    store.close()


def test_0019_indexes_the_cases_days_and_the_report_reads_them(empty_store_url: str) -> None:
    """0019_report_days on a store of 0018 with cases in it: on SQLite the day
    indexes are built from them (nothing on PostgreSQL), and the report's
    figures are the same before and after, with and without --pool (SQLite:
    each case pass and the backlog is one statement from a day index alone,
    in order)."""
    t0 = naive(2026, 11, 2, 9, 0)
    store = Store(empty_store_url, clock=Clock(naive(2026, 11, 9, 9, 0).replace(tzinfo=dt.UTC)))
    store.migrate(through="0018_rate_cap_covering")
    support = store.add_mailbox(SUPPORT, "default")
    other = store.add_mailbox("help@example.com", "other")
    store.set_pool("default", resolve_within=86400)
    jane = store.add_csr(JANE, "Jane Doe", ["default"])
    with store.atomic():
        for n in range(12):
            created = t0 + dt.timedelta(hours=11 * n)
            case = store.new_case(mailbox=support if n % 3 else other, prefix="CS",
                                  customer_address=f"c{n}@customer.test", customer_name="", subject=f"case {n}")
            closed = created + dt.timedelta(hours=7 * n) if n % 4 else None
            Case.update(created=created, assignee=jane.id if n % 2 else None,
                        first_answer_at=created + dt.timedelta(minutes=5 * n) if n % 5 else None,
                        status="closed" if closed else "received", closed=closed,
                        rating=n % 5 + 1 if n % 3 == 1 else None).where(Case.id == case.id).execute()
    periods = [(Period(dt.date(2026, 11, 1), dt.date(2026, 11, 30)), None),
               (Period(dt.date(2026, 11, 3), dt.date(2026, 11, 5)), None),
               (Period(dt.date(2026, 11, 1), dt.date(2026, 11, 30)), "default")]
    before = [Report(store, period, pool=pool).run() for period, pool in periods]
    store.close()
    assert store.migrate(through="0019_report_days") == ["0019_report_days"]
    store.migrate()  # and any later ones: what follows holds on the whole schema
    names = _case_indexes(store)
    day_indexes = {"support_case_report_opened_day", "support_case_report_closed_day"}
    assert day_indexes <= names if store.is_sqlite else not day_indexes & names
    after = [Report(store, period, pool=pool).run() for period, pool in periods]
    assert after == before
    assert before[0]["cases_opened"] == 12 and before[0]["cases_closed"] == 9
    assert before[1]["cases_opened"] == 6 and before[2]["cases_opened"] == 8
    assert sum(r["cases_closed"] for r in before[0]["by_day"].values()) == 9
    if store.is_sqlite:
        report = Report(store, periods[2][0], pool="default")
        seen: list[tuple[str, list[object]]] = []
        rows = report._rows

        def spy(query):
            seen.append(query.sql())
            return rows(query)

        report._rows = spy  # type: ignore[method-assign]
        report.run()
        # The opened, the closed and the open backlog.
        passes = [q for q in seen if 'substr("t1"."created"' in q[0] or 'substr("t1"."closed"' in q[0]]
        assert len(passes) == 3
        for sql, params in passes:
            plan = " / ".join(r[-1] for r in store.db.execute_sql("EXPLAIN QUERY PLAN " + sql, params))
            assert "COVERING INDEX support_case_report_" in plan and "_day" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
    assert store.migrate() == []
    store.close()


@pytest.mark.parametrize("kind", ["reply", "solution"])
def test_note_first_answer_keeps_the_first(sqlite_url: str, kind: str) -> None:
    clock = Clock(dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC))
    store = Store(sqlite_url, clock=clock)
    store.migrate()
    mailbox = store.add_mailbox(SUPPORT, "default")
    with store.atomic():
        case = store.new_case(mailbox=mailbox, prefix="CS", customer_address="c@customer.test",
                              customer_name="", subject="s")
        first = store.add_message(case=case, direction="out", kind=kind, raw=b"")
        store.note_first_answer(case, first)
    clock.now += dt.timedelta(hours=1)
    with store.atomic():
        stale = Case.get_by_id(case.id)
        stale.first_answer_at = None  # another worker's copy, loaded before the first answer
        store.note_first_answer(stale, store.add_message(case=case, direction="out", kind=kind, raw=b""))
    with store.guard():
        assert _naive(Case.get_by_id(case.id).first_answer_at) == naive(2026, 11, 2, 9, 0)
    store.close()


@pytest.mark.parametrize("dense", [True, False])
def test_a_case_new_since_the_keys_were_read_is_counted(store_url: str, dense: bool, monkeypatch) -> None:
    """The e-mails are counted by the case keys read first (_load_keys); a case
    opened between that read and the e-mails' (the mail path does not wait for
    a report) is looked up, and another pool's case is left out of --pool.
    Keys in an array by case id (dense ids) or in a dict (sparse ids: forced
    here by the slack the array may have)."""
    if not dense:
        monkeypatch.setattr(reports, "_DENSE_SLACK", -10**9)  # no array is ever dense enough
    t0 = naive(2026, 11, 2, 9, 0)
    store = Store(store_url, clock=Clock(t0.replace(tzinfo=dt.UTC)))
    store.migrate()
    mailbox = store.add_mailbox(SUPPORT, "default")
    other = store.add_mailbox("sales@example.com", "sales")

    def mail(box, n: int) -> None:
        with store.atomic():
            case = store.new_case(mailbox=box, prefix="CS", customer_address=f"c{n}@customer.test",
                                  customer_name="", subject=f"case {n}")
            store.add_message(case=case, direction="in", kind="customer", raw=b"",
                              created=t0 + dt.timedelta(hours=n))

    mail(mailbox, 0)
    for pool, expected in ((None, {"default": 3, "sales": 1}), ("default", {"default": 3})):
        report = Report(store, Period(dt.date(2026, 11, 1), dt.date(2026, 11, 30)), pool=pool)
        with store.guard():
            report._directory()
            report._load_keys()
        assert isinstance(report._keyof, dict) is not dense
        if pool is None:
            mail(mailbox, 1)
            mail(other, 2)
            mail(mailbox, 3)
        tally = _Tally()
        with store.guard():
            report.emails_received(tally)
        by_pool: dict[str, int] = {}
        for key, acc in tally.by_key.items():
            name = report._mailbox_pool[key[1]]
            by_pool[name] = by_pool.get(name, 0) + acc.counts["emails_received"]
        assert by_pool == expected, pool
    store.close()
