"""Finding cases (``casegate case search``, ``case list`` filters and sorting).

SQLite: two contentless FTS5 tables kept in step by triggers (``case_fts``
over number, customer name and address, subject; ``message_fts`` over the
messages' readable text), tokenizer ``unicode61 remove_diacritics 2`` (case
and accents do not matter), filled here from the existing rows.

PostgreSQL: a stored generated ``tsvector`` column ``search_tsv`` on
support_case and message (the ``simple`` configuration: no stemming, any
language; through the immutable SQL function ``casegate_tsv``), with a GIN
index each: the database keeps them in step by itself, and adding the
columns fills them from the existing rows (the tables are rewritten once). Accents fold with the ``unaccent`` extension
when it can be created (it is trusted from PostgreSQL 13: a database owner
may create it); without it the search still works, only accents count.

Both: an index on the cases' creation date for ``case list --since`` and
``--sort created``.
"""
from peewee import *  # noqa: F403

# Letters unicode61's remove_diacritics leaves alone (they do not decompose)
# but PostgreSQL's unaccent folds: folded by the triggers so both stores
# find "lodz" in "Łódź". casestore.search.FOLD is the same table (a test
# checks), applied to the query's words.
FOLD = (("ł", "l"), ("Ł", "L"), ("đ", "d"), ("Đ", "D"), ("ø", "o"), ("Ø", "O"), ("ß", "ss"),
        ("æ", "ae"), ("Æ", "AE"), ("œ", "oe"), ("Œ", "OE"), ("ı", "i"))


def fold(expr):
    for a, b in FOLD:
        expr = f"replace({expr}, '{a}', '{b}')"
    return expr


CASE_COLUMNS = ("number", "customer_name", "customer_address", "subject")


def _case_values(row):
    return ", ".join(fold(f"{row}.{c}") for c in CASE_COLUMNS)


# Contentless FTS5 tables (content=''): they hold the index only, filled by
# triggers with the folded text; a 'delete' gives the values indexed.
SQLITE = [
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS case_fts USING fts5(
        {', '.join(CASE_COLUMNS)}, content='', tokenize='unicode61 remove_diacritics 2')""",
    f"""CREATE TRIGGER IF NOT EXISTS case_fts_insert AFTER INSERT ON support_case BEGIN
        INSERT INTO case_fts(rowid, {', '.join(CASE_COLUMNS)}) VALUES (new.id, {_case_values('new')});
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS case_fts_delete AFTER DELETE ON support_case BEGIN
        INSERT INTO case_fts(case_fts, rowid, {', '.join(CASE_COLUMNS)})
        VALUES ('delete', old.id, {_case_values('old')});
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS case_fts_update
        AFTER UPDATE OF {', '.join(CASE_COLUMNS)} ON support_case BEGIN
        INSERT INTO case_fts(case_fts, rowid, {', '.join(CASE_COLUMNS)})
        VALUES ('delete', old.id, {_case_values('old')});
        INSERT INTO case_fts(rowid, {', '.join(CASE_COLUMNS)}) VALUES (new.id, {_case_values('new')});
    END""",
    """CREATE VIRTUAL TABLE IF NOT EXISTS message_fts USING fts5(
        text, content='', tokenize='unicode61 remove_diacritics 2')""",
    f"""CREATE TRIGGER IF NOT EXISTS message_fts_insert AFTER INSERT ON message BEGIN
        INSERT INTO message_fts(rowid, text) VALUES (new.id, {fold('new.text')});
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS message_fts_delete AFTER DELETE ON message BEGIN
        INSERT INTO message_fts(message_fts, rowid, text) VALUES ('delete', old.id, {fold('old.text')});
    END""",
    f"""CREATE TRIGGER IF NOT EXISTS message_fts_update AFTER UPDATE OF text ON message BEGIN
        INSERT INTO message_fts(message_fts, rowid, text) VALUES ('delete', old.id, {fold('old.text')});
        INSERT INTO message_fts(rowid, text) VALUES (new.id, {fold('new.text')});
    END""",
    f"""INSERT INTO case_fts(rowid, {', '.join(CASE_COLUMNS)})
        SELECT s.id, {_case_values('s')} FROM support_case s""",
    f"INSERT INTO message_fts(rowid, text) SELECT m.id, {fold('m.text')} FROM message m",
]

# Everything schema-qualified: index expressions are also evaluated by
# autovacuum and pg_restore with an empty search_path. The text is cut at
# 100,000 characters: to_tsvector refuses a vector over 1 MB, and a huge
# message must never fail to store because of its index (200,000 distinct
# 4-byte words made 1,000,008 bytes; 100,000 stay near half of the limit).
PG_FOLD = """CREATE OR REPLACE FUNCTION casegate_fold(t text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.regexp_replace(pg_catalog.lower({unaccent}),
                                     '[^[:alnum:]]+', ' ', 'g') $$"""
PG = [
    """CREATE OR REPLACE FUNCTION casegate_tsv(t text) RETURNS tsvector
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT pg_catalog.to_tsvector('pg_catalog.simple'::regconfig,
                                      public.casegate_fold(pg_catalog.left(t, 100000))) $$""",
    # Stored (generated) columns: a query's recheck reads the stored vector
    # instead of parsing the text again, so a common word costs no more than
    # reading rows. Adding them rewrites both tables once (the backfill).
    """ALTER TABLE support_case ADD COLUMN IF NOT EXISTS search_tsv tsvector GENERATED ALWAYS AS
        (public.casegate_tsv(coalesce(number, '') || ' ' || coalesce(customer_name, '') || ' '
                             || coalesce(customer_address, '') || ' ' || coalesce(subject, '')))
        STORED""",
    """ALTER TABLE message ADD COLUMN IF NOT EXISTS search_tsv tsvector GENERATED ALWAYS AS
        (public.casegate_tsv(text)) STORED""",
    "CREATE INDEX IF NOT EXISTS support_case_search ON support_case USING gin (search_tsv)",
    "CREATE INDEX IF NOT EXISTS message_text_search ON message USING gin (search_tsv)",
    "ANALYZE support_case",
    "ANALYZE message",
]


def _unaccent_schema(db):
    """The schema of the unaccent extension, creating it when allowed; None without it."""
    row = db.execute_sql("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                         "ON n.oid = e.extnamespace WHERE e.extname = 'unaccent'").fetchone()
    if row:
        return row[0]
    try:
        with db.atomic():  # a savepoint: a refusal must not abort the migration
            db.execute_sql("CREATE EXTENSION IF NOT EXISTS unaccent SCHEMA public")
    except Exception:
        return None
    return "public"


def up(migrator, db):
    if isinstance(db, SqliteDatabase):  # noqa: F405
        for sql in SQLITE:
            db.execute_sql(sql)
    else:
        schema = _unaccent_schema(db)
        if schema:
            unaccent = f"\"{schema}\".unaccent('\"{schema}\".unaccent'::regdictionary, t)"
        else:
            unaccent = "t"
        db.execute_sql("SET search_path = public")
        db.execute_sql(PG_FOLD.format(unaccent=unaccent))
        for sql in PG:
            db.execute_sql(sql)
        db.execute_sql("RESET search_path")
    db.execute_sql("CREATE INDEX IF NOT EXISTS support_case_created ON support_case (created)")
