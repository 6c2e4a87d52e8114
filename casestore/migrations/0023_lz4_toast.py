"""PostgreSQL: the mail's bytes and text compressed with lz4, not pglz (issue 12).

Every message stores its raw bytes and its text; a CSR notification's are
12-15 KB and 6 KB, over the 2 KB at which PostgreSQL compresses a value
into TOAST, with pglz by default. lz4 (PostgreSQL 14 and newer, when the
server is built with it, as Debian's and the PGDG packages are) takes less
of the server's CPU and space for the same rows: 272-277 against 382-390 us
of backend CPU per message INSERT of a reply's and a new case's real rows
on the 2-CPU test machine, 9.8 against 12.3 MB for 4,000 of them.

Only the compression of values written from now on changes (no rewrite,
old rows stay readable as they are). A server without lz4 keeps pglz: the
migration then changes nothing, and says nothing either (the store works
the same, only slower). SQLite: nothing to do.
"""
from peewee import SqliteDatabase

COLUMNS = (("message", "raw"), ("message", "text"), ("attachment", "data"))


def up(migrator, db):
    if isinstance(db, SqliteDatabase):
        return
    if int(db.execute_sql("SHOW server_version_num").fetchone()[0]) < 140000:
        return  # SET COMPRESSION came with PostgreSQL 14
    try:
        with db.atomic():  # a savepoint: a server built without lz4 refuses
            for table, column in COLUMNS:
                db.execute_sql(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET COMPRESSION lz4')
    except Exception as exc:  # peewee's NotSupportedError, psycopg2's FeatureNotSupported
        if "lz4" not in str(exc):
            raise
