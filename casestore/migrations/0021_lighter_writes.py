"""Fewer pages written per message (issue 12).

1. Six indexes that only repeat the first column(s) of another index are
   dropped: every insert and status change paid a B-tree update and a
   written page for each, and the other index answers the same lookups.

   ========================  ===============================================
   dropped                   still served by
   ========================  ===============================================
   message_case_id           message (case_id, kind, created)
   case_assignee_id          support_case (assignee_id, status)
   case_status               support_case (status, closed, created, ...)
   support_case_created      support_case (created, assignee_id, ...)
   participant_case_id       participant UNIQUE (case_id, address)
   timer_case_id             timer (case_id, kind, status)
   ========================  ===============================================

2. The notifications to CSRs (kind ``notify``) leave the full-text index.
   Each repeats the case's messages (the new one and the history, all
   indexed as themselves) inside the same template words, and was the
   largest text stored per message: indexing it cost more than indexing
   the customer's own mail (SQLite: FTS5 pages at every commit;
   PostgreSQL: ``to_tsvector`` of some 6 KB per notification in the
   server). ``case search --body`` finds the same cases, minus matches on
   the notification template's own words.

   SQLite: the triggers skip ``notify`` rows and the ones already indexed
   are taken out (a contentless table is told the indexed values).
   PostgreSQL: ``message.search_tsv`` is NULL for ``notify`` rows; a
   generated column's expression cannot be altered before PostgreSQL 17,
   so the column is dropped and added again, which rewrites the message
   table once (as 0011_search did) under an exclusive lock (97 s for
   600,000 messages, 2 GB, on the 2-CPU test machine): on a large store,
   run ``casegate init`` in a quiet hour (Postfix keeps the mail meanwhile
   and retries).
"""
import importlib

from peewee import SqliteDatabase

REDUNDANT = (
    ("message", "message_case_id"),
    ("support_case", "case_assignee_id"),
    ("support_case", "case_status"),
    ("support_case", "support_case_created"),
    ("participant", "participant_case_id"),
    ("timer", "timer_case_id"),
)

NOT_INDEXED = "notify"  # rules.vocab.MessageKind.NOTIFY


# The letter folding of the search triggers, as 0011_search writes it.
_fold = importlib.import_module("casestore.migrations.0011_search").fold


# SQLite, in the order up() runs them; casestore.search.reindex makes the
# triggers and fills the index with the same statements.
DROP_TRIGGERS = [
    "DROP TRIGGER IF EXISTS message_fts_insert",
    "DROP TRIGGER IF EXISTS message_fts_delete",
    "DROP TRIGGER IF EXISTS message_fts_update",
]
UNINDEX = f"""INSERT INTO message_fts(message_fts, rowid, text)
    SELECT 'delete', m.id, {_fold('m.text')} FROM message m WHERE m.kind = '{NOT_INDEXED}'"""
TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS message_fts_insert AFTER INSERT ON message
        WHEN new.kind <> '{NOT_INDEXED}' BEGIN
        INSERT INTO message_fts(rowid, text) VALUES (new.id, {_fold('new.text')});
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS message_fts_delete AFTER DELETE ON message
        WHEN old.kind <> '{NOT_INDEXED}' BEGIN
        INSERT INTO message_fts(message_fts, rowid, text) VALUES ('delete', old.id, {_fold('old.text')});
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS message_fts_update AFTER UPDATE OF text, kind ON message BEGIN
        INSERT INTO message_fts(message_fts, rowid, text)
            SELECT 'delete', old.id, {_fold('old.text')} WHERE old.kind <> '{NOT_INDEXED}';
        INSERT INTO message_fts(rowid, text)
            SELECT new.id, {_fold('new.text')} WHERE new.kind <> '{NOT_INDEXED}';
    END""",
]
FILL = (f"INSERT INTO message_fts(rowid, text) SELECT m.id, {_fold('m.text')} FROM message m "
        f"WHERE m.kind <> '{NOT_INDEXED}'")

PG = [
    "ALTER TABLE message DROP COLUMN IF EXISTS search_tsv",  # and its index message_text_search
    f"""ALTER TABLE message ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS
        (CASE WHEN kind = '{NOT_INDEXED}' THEN NULL ELSE public.casegate_tsv(text) END) STORED""",
    "CREATE INDEX IF NOT EXISTS message_text_search ON message USING gin (search_tsv)",
    "ANALYZE message",
]


def up(migrator, db):
    for _, index in REDUNDANT:
        db.execute_sql(f'DROP INDEX IF EXISTS "{index}"')
    for sql in [*DROP_TRIGGERS, UNINDEX, *TRIGGERS] if isinstance(db, SqliteDatabase) else PG:
        db.execute_sql(sql)
