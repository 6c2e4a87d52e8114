"""Migrations on real databases: they build exactly the models' schema, are
idempotent, and an old store is refused with a message that says what to do."""

from __future__ import annotations

import pytest
from playhouse.migrations import Runner
from playhouse.schema_diff import diff_models

from casestore.models import MODELS
from casestore.search import DATABASE_ONLY_COLUMNS, DATABASE_ONLY_INDEXES
from casestore.store import HISTORY_TABLE, MIGRATIONS, Store, StoreError

ALL = sorted(p.stem for p in MIGRATIONS.glob("0*.py"))


def test_migrations_build_the_models_schema(empty_store_url: str) -> None:
    store = Store(empty_store_url)
    assert store.migrate() == ALL
    assert ALL[:6] == ["0001_initial", "0002_gatekeeping", "0003_rate_cap_indexes", "0004_case_life",
                       "0005_rate_keys", "0006_quarantine"]
    assert store.migrate() == []
    diff = diff_models(store.db, list(MODELS))
    # The full-text indexes (0011_search) are expressions the models cannot declare.
    diff = diff._replace(drop_indexes=[i for i in diff.drop_indexes
                                       if i.name not in DATABASE_ONLY_INDEXES],
                         drop_columns=[c for c in diff.drop_columns
                                       if tuple(c) not in DATABASE_ONLY_COLUMNS])
    assert not diff, diff
    store.check_schema()
    store.close()


def test_an_old_store_is_refused_with_what_to_do(empty_sqlite_url: str) -> None:
    store = Store(empty_sqlite_url)
    Runner(store.db, str(MIGRATIONS), table_name=HISTORY_TABLE).up("0001_initial")
    with pytest.raises(StoreError, match=r"needs migrations \(0002_gatekeeping, 0003.*casegate init"):
        store.check_schema()
    assert store.migrate() == ALL[1:]
    store.check_schema()


def test_open_cases_get_their_named_status(empty_store_url: str) -> None:
    """0004: "open" becomes in_progress when a CSR answered, else received."""
    store = Store(empty_store_url)
    runner = Runner(store.db, str(MIGRATIONS), table_name=HISTORY_TABLE)
    for name in ("0001_initial", "0002_gatekeeping", "0003_rate_cap_indexes"):
        runner.up(name)
    db = store.db
    db.execute_sql("INSERT INTO pool (name, rule, created) VALUES ('default', 'least_load', '2026-01-01')")
    db.execute_sql("INSERT INTO mailbox (address, pool_id, display_name, created) "
                   "VALUES ('support@example.com', 1, '', '2026-01-01')")
    for n, status in ((1, "open"), (2, "open"), (3, "closed")):
        db.execute_sql("INSERT INTO support_case (number, mailbox_id, customer_address, customer_name, "
                       "subject, status, created, updated) VALUES "
                       f"('CS000000{n}', 1, 'c@x.test', '', 's', '{status}', '2026-01-01', '2026-01-01')")
    db.execute_sql("INSERT INTO message (case_id, direction, kind, sender, recipients, message_id, "
                   "in_reply_to, subject, text, raw, queue_id, client_addr, authenticated, automatic, "
                   "dkim, created) VALUES (2, 'in', 'csr', 'j@example.com', '', '', '', '', '', %s, "
                   "'', '', '', '', '', '2026-01-01')" % ("x''" if store.is_sqlite else "''::bytea"))
    assert store.migrate() == ALL[3:]
    rows = dict(db.execute_sql("SELECT number, status FROM support_case").fetchall())
    assert rows == {"CS0000001": "received", "CS0000002": "in_progress", "CS0000003": "closed"}
    store.close()


def test_a_missing_store_is_refused(empty_sqlite_url: str) -> None:
    with pytest.raises(StoreError, match="casegate init"):
        Store(empty_sqlite_url).check_schema()


def test_bad_urls_say_what_to_use() -> None:
    for url, hint in (("mysql://x/y", "sqlite:///"), ("sqlite://", "sqlite:///"),
                      ("postgresql://host", "postgresql://host/dbname")):
        with pytest.raises(StoreError, match=hint):
            Store(url)


def test_0022_drops_the_unused_message_indexes(empty_store_url: str) -> None:
    """0022: the two indexes no query reads leave a store at 0021; the rate
    caps' count per mailbox and domain still runs from the covering index."""
    import datetime as dt

    store = Store(empty_store_url)
    Runner(store.db, str(MIGRATIONS), table_name=HISTORY_TABLE).up("0021_lighter_writes")

    def message_indexes() -> set[str]:
        return {i.name for i in store.db.get_indexes("message")}

    gone = {"message_kind_recipients_created", "message_rcpt_key_created"}
    assert gone <= message_indexes()
    assert store.migrate()[0] == "0022_unused_message_indexes"
    assert not gone & message_indexes()
    assert "message_rcpt_domain_created_direction_kind_rcpt_key" in message_indexes()
    since = store.now() - dt.timedelta(days=1)
    assert store.automatic_sent_to(since=since, recipient="c@customer.test") == (0, 0)
    if store.is_sqlite:
        plan = " ".join(str(row[-1]) for row in store.db.execute_sql(
            'EXPLAIN QUERY PLAN SELECT COUNT("id"), SUM(CASE WHEN "rcpt_key" = ? THEN 1 ELSE 0 END) '
            'FROM "message" WHERE "rcpt_domain" = ? AND "created" >= ? AND "direction" = ? '
            'AND "kind" IN (?, ?)', ["c@customer.test", "customer.test", since, "out", "ack", "notify"]))
        assert "COVERING INDEX message_rcpt_domain_created_direction_kind_rcpt_key" in plan, plan
    store.close()


def test_0023_mail_compressed_with_lz4_on_postgresql(empty_store_url: str) -> None:
    """0023: on PostgreSQL (14+, with lz4) new messages' bytes and text are
    compressed with lz4, and rows written before it (pglz) read back the same."""
    from casestore.models import Case, Message

    store = Store(empty_store_url)
    Runner(store.db, str(MIGRATIONS), table_name=HISTORY_TABLE).up("0022_unused_message_indexes")
    store.add_mailbox("support@example.com", "default")
    now = store.now()
    case = Case.create(number="CS0000001", mailbox=store.mailbox("support@example.com"),
                       customer_address="c@customer.test", subject="Old", created=now, updated=now)
    body = " ".join(f"word{i % 700} of a long notification" for i in range(3000))
    before = Message.create(case=case, direction="out", kind="notify", text=body,
                            raw=body.encode(), created=now)
    assert store.migrate() == ["0023_lz4_toast"]
    after = Message.create(case=case, direction="out", kind="notify", text=body,
                           raw=body.encode(), created=now)
    for row in (before, after):
        got = Message.get_by_id(row.id)
        assert (got.text, bytes(got.raw)) == (body, body.encode())
    if store.is_sqlite:
        store.close()
        return
    methods = dict(store.db.execute_sql(
        "SELECT a.attname, a.attcompression FROM pg_attribute a WHERE a.attrelid = 'message'::regclass "
        "AND a.attname IN ('raw', 'text')").fetchall())
    stored = store.db.execute_sql(
        "SELECT id, pg_column_compression(raw), pg_column_compression(text) FROM message ORDER BY id"
    ).fetchall()
    store.close()
    assert methods == {"raw": "l", "text": "l"}
    assert stored == [(before.id, "pglz", "pglz"), (after.id, "lz4", "lz4")]
