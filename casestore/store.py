"""Opening the store, applying migrations, and the queries the engine needs.

One :class:`Store` per process: it binds the models in ``casestore.models``
to its database. SQLite runs in WAL mode with ``synchronous=FULL`` (a commit
is on disk past a power cut); PostgreSQL as it comes. Every error from the
database that may pass (locked, down, a dropped connection) surfaces as
:class:`StoreUnavailable`, which the SMTP hook turns into a 451; a refusal of
the data itself (too long, a broken constraint) as :class:`StoreDataError`,
which trying again cannot cure.

Only :meth:`Store.migrate` (``casegate init``) creates a SQLite store: its
folder 0700, its file 0600 (SQLite gives the -wal and -shm files the mode of
the database file). Opening a missing file is an error that says to run
``casegate init``, and a file deleted or replaced while the process runs is
:class:`StoreUnavailable` at the next transaction, never a write into an
unlinked file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlparse

import peewee
from peewee import JOIN, fn
from playhouse.migrations import Runner

from casestore.models import (
    MODELS,
    Attachment,
    BlacklistEntry,
    Case,
    Consultation,
    Csr,
    Delivery,
    Department,
    Draft,
    Event,
    Mailbox,
    Membership,
    Message,
    Outbox,
    Participant,
    Pool,
    Product,
    Question,
    Setting,
    Timer,
)
from rules import defaults
from rules.decision import (
    CaseState,
    CsrInfo,
    DepartmentInfo,
    Directory,
    DraftInfo,
    MailboxInfo,
    PoolInfo,
    ProductInfo,
    QuestionInfo,
)
from rules.vocab import AUTOMATIC_OUT, OPEN_STATUSES, ClosedPolicy, MessageKind, Status

log = logging.getLogger("casegate.store")

MIGRATIONS = Path(__file__).with_name("migrations")
HISTORY_TABLE = "casegate_migration"

Clock = Callable[[], dt.datetime]
ModelT = TypeVar("ModelT", bound=peewee.Model)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class StoreError(Exception):
    """A problem the admin must fix (bad URL, old schema); the message says how."""


class StoreUnavailable(StoreError):
    """Temporary trouble: the database is locked, down or dropped the connection."""


class StoreDataError(StoreError):
    """The database refused the data itself (a value too long or malformed, a
    broken constraint): the same data fails the same way on every try, so this
    is not a reason for a 451. An IntegrityError may also come from a race with
    another writer (two hosts storing the same delivery), which one more try
    resolves; ``integrity`` says which kind it was."""

    def __init__(self, message: str, *, integrity: bool = False) -> None:
        super().__init__(message)
        self.integrity = integrity


def display_url(url: str) -> str:
    """A store URL fit for a terminal or a log: its password masked
    (``postgresql://u:***@h/db``, ``...?password=***``). Shown everywhere a
    store URL is; never raises."""
    try:
        scheme, sep, rest = url.partition("://")
        if not sep:
            return url
        netloc, slash, tail = rest.partition("/")
        userinfo, at, host = netloc.rpartition("@")
        if at and ":" in userinfo:
            netloc = f"{userinfo.partition(':')[0]}:***@{host}"
        masked = f"{scheme}://{netloc}{slash}{tail}"
        return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", masked)
    except Exception:  # pragma: no cover - a URL too odd to parse: show nothing of it
        return "(store URL)"


def no_store_message(path: str) -> str:
    return f"no store at {path}: run `casegate init` to create it (or check the store URL)"


class SqliteFile(peewee.SqliteDatabase):
    """A SQLite store file whose identity (device, inode) is the one seen by
    the first connection. With ``create`` False a connection never creates
    the file; with it True (a library default kept for tests and tools) it
    creates the file 0600 when its folder exists, never the folder."""

    identity: tuple[int, int] | None = None
    create: bool = True

    def _connect(self) -> sqlite3.Connection:
        path = self.database
        try:
            os.stat(path)
        except FileNotFoundError:
            if not self.create or not os.path.isdir(os.path.dirname(path)):
                raise StoreUnavailable(no_store_message(path)) from None
            _create_file(Path(path), folder=False)
        except OSError as exc:
            raise StoreUnavailable(f"cannot open the store at {path}: {exc.strerror}") from None
        conn = super()._connect()
        try:
            st = os.stat(path)
            found = (st.st_dev, st.st_ino)
        except OSError:
            found = None
        if self.identity is None and found is not None:
            self.identity = found
        elif found != self.identity:
            conn.close()
            raise StoreUnavailable(replaced_message(path, "deleted" if found is None else "replaced"))
        return conn

    def check_identity(self) -> None:
        """StoreUnavailable when the file at the path is no longer the one the
        connections write to (deleted or replaced); one stat."""
        if self.identity is None:
            return
        try:
            st = os.stat(self.database)
        except OSError:
            raise StoreUnavailable(replaced_message(self.database, "deleted")) from None
        if (st.st_dev, st.st_ino) != self.identity:
            raise StoreUnavailable(replaced_message(self.database, "replaced"))


def _create_file(path: Path, *, folder: bool) -> None:
    """An empty SQLite store, 0600 (and its folder 0700 when ``folder``)."""
    try:
        if folder:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the store at {path}: {exc.strerror}") from exc
    os.close(fd)  # an empty file is an empty SQLite database


def pg_backup_recipe(url: str) -> str:
    """What to run instead of ``casegate backup`` on a PostgreSQL store."""
    shown = display_url(url)
    return (
        "casegate backup copies a SQLite store; a PostgreSQL store is backed up with pg_dump "
        "(consistent while casegate runs; the password from ~/.pgpass or $PGPASSWORD):\n"
        f"  pg_dump --format=custom --file=casegate.dump '{shown}'\n"
        "and restored into a new, empty database with:\n"
        "  createdb casegate_restored\n"
        "  pg_restore --no-owner --dbname='postgresql://USER@HOST/casegate_restored' casegate.dump\n"
        "then `casegate --store postgresql://USER@HOST/casegate_restored init` checks it "
        "(docs/operations.md, Backups and restore)"
    )


def replaced_message(path: str, how: str) -> str:
    return (f"the store file {path} was {how} while casegate was running: writes would be lost, "
            "so mail is deferred; restore the file and restart casegate "
            "(docs/operations.md, When the database fails)")


def default_store_url() -> str:
    """``sqlite:///…`` in the state directory: /var/lib/casegate as root, else XDG."""
    if os.geteuid() == 0:
        base = Path("/var/lib/casegate")
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "casegate"
    return f"sqlite:///{base / 'casegate.db'}"


class PipelinedPostgres(peewee.PostgresqlDatabase):
    """PostgreSQL with fewer round trips per transaction, the same statements.

    peewee runs psycopg2 in autocommit mode and sends BEGIN, each statement
    and COMMIT as a round trip of their own (20 for a new case, issue 12).
    Here, inside a transaction:

    * BEGIN is not sent alone: it goes with the transaction's first statement;
    * a write whose result nobody reads (:meth:`defer_sql`: an event, the
      delivery record, an UPDATE of a case's columns) goes with the next
      statement, or with the COMMIT;

    as one query string (psycopg2 interpolates the parameters on the client,
    so the text sent is what the separate statements would have been). The
    server runs them in the same order in the same transaction; an error in
    one aborts the transaction there, raised by the call that sent it, and
    the transaction rolls back as before. Outside a transaction every
    statement is sent at once, as peewee does."""

    def _pending(self) -> list[bytes] | None:
        return getattr(self._state, "pending", None)

    def _take_pending(self) -> list[bytes] | None:
        pending = getattr(self._state, "pending", None)
        if pending:
            self._state.pending = []
        return pending

    def begin(self, isolation_level: Any = None) -> None:
        if not isinstance(self._adapter, peewee.Psycopg2Adapter):
            super().begin(isolation_level)  # psycopg 3 binds on the server: no mogrify, no pipelining
            self._state.pending = None
            return
        if isolation_level is not None or self._isolation_level:
            super().begin(isolation_level)
            self._state.pending = []
            return
        if self.is_closed():
            self.connect()  # now, not with the first statement: connect() resets the transaction stack
        self._state.pending = [b"BEGIN"]

    def defer_sql(self, sql: str, params: Sequence[Any]) -> None:
        """Run a statement whose result nobody reads: with the next one in a
        transaction, at once outside."""
        pending = self._pending()
        if pending is None or not self.in_transaction():
            self.execute_sql(sql, params)
            return
        with peewee.__exception_wrapper__:
            pending.append(self.cursor().mogrify(sql, list(params)))

    def _execute_cursor(self, sql: str, params: Any, **cursor_options: Any) -> Any:
        pending = self._take_pending()
        if not pending:
            return super()._execute_cursor(sql, params, **cursor_options)
        self._log_query(sql, params)
        with peewee.__exception_wrapper__:
            cursor = self.cursor(**cursor_options)
            cursor.execute(b";\n".join([*pending, cursor.mogrify(sql, params or ())]))
        return cursor

    def commit(self) -> None:
        pending = self._take_pending()
        if pending == [b"BEGIN"]:
            return  # nothing sent: the server saw no transaction
        if not pending:
            super().commit()
            return
        if self.is_closed():
            raise peewee.InterfaceError("Cannot commit, database connection not open.")
        with peewee.__exception_wrapper__:
            self.cursor().execute(b";\n".join([*pending, b"COMMIT"]))

    def rollback(self) -> None:
        pending = self._take_pending()
        if pending and pending[0] == b"BEGIN":
            return  # nothing of the transaction reached the server
        super().rollback()

    def close(self) -> bool:
        if not self.in_transaction():  # (peewee refuses to close in one)
            self._state.pending = None
        return bool(super().close())


def open_database(url: str) -> peewee.Database:
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "sqlite":
        # sqlite:///relative.db or sqlite:////absolute/path.db (as peewee, SQLAlchemy)
        path = unquote(url[len("sqlite:///"):]) if url[:10].lower() == "sqlite:///" else ""
        if not path:
            raise StoreError(f"no file in store URL {display_url(url)!r}: "
                             "use sqlite:///path/to/casegate.db")
        return SqliteFile(
            os.path.abspath(path),
            pragmas={
                "journal_mode": "wal",
                "synchronous": "full",
                "foreign_keys": 1,
                "busy_timeout": 10000,
                # 20 MB of page cache (SQLite's default is 2 MB): the rate
                # caps' and the assignment's reads and the indexes each
                # message touches stay in memory instead of costing a
                # pread() each (some 170 per new case in `serve`, issue 12).
                "cache_size": -20000,
            },
            timeout=10,
            # BEGIN IMMEDIATE: take the write lock up front. A deferred BEGIN
            # that reads and then writes fails at once with "database is
            # locked" (no busy wait) when another connection committed in
            # between, e.g. the outbox recording a sent message.
            lock_type="IMMEDIATE",
        )
    if scheme in ("postgresql", "postgres"):
        kwargs: dict[str, Any] = {
            "host": parsed.hostname or None,
            "port": parsed.port or None,
            "user": unquote(parsed.username) if parsed.username else None,
            "password": unquote(parsed.password) if parsed.password else None,
            "connect_timeout": 5,
        }
        name = parsed.path.lstrip("/")
        if not name:
            raise StoreError(f"no database name in store URL {display_url(url)!r}: "
                             "use postgresql://host/dbname")
        return PipelinedPostgres(name, **{k: v for k, v in kwargs.items() if v is not None})
    raise StoreError(
        f"unsupported store URL {display_url(url)!r}: use sqlite:///path/to/casegate.db "
        "or postgresql://host/db"
    )


def _first_error(exc: BaseException) -> BaseException:
    """The error that matters. SQLite rolls a transaction back by itself on
    some errors (disk full, I/O error); the ROLLBACK that follows then fails
    with "cannot rollback - no transaction is active", which would hide the
    cause (``database or disk is full``) from the log."""
    seen = exc
    for _ in range(4):
        if "no transaction is active" not in str(seen):
            return seen
        context = seen.__context__
        if not isinstance(context, (peewee.DatabaseError, sqlite3.Error)):
            break
        seen = context
    return exc


def _safe(value: Any) -> Any:
    """Strings the databases accept: no NUL (PostgreSQL refuses it), no lone
    surrogates (8-bit garbage decoded with surrogateescape)."""
    if isinstance(value, str):
        if value.isascii():  # no surrogates: the round trip below gives it back unchanged
            return value.replace("\x00", "") if "\x00" in value else value
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\x00", "")
    return value


def bounded(model: type[peewee.Model], values: dict[str, Any]) -> dict[str, Any]:
    """Values as the database stores them, after every conversion (IDNA,
    decoding): strings made safe, and each cut to its CharField's max_length,
    read from the model (PostgreSQL refuses a longer value on every try;
    SQLite ignores lengths). The one place every stored value goes through."""
    fields = model._meta.fields
    out: dict[str, Any] = {}
    for name, value in values.items():
        value = _safe(value)
        field = fields.get(name)
        if (isinstance(value, str) and isinstance(field, peewee.CharField)
                and field.max_length and len(value) > field.max_length):
            value = value[:field.max_length]
        out[name] = value
    return out


def _create(model: type[ModelT], **values: Any) -> ModelT:
    """``model.create(**values)`` (after :func:`bounded`), with the INSERT's
    text made once per model and column set instead of by peewee's query
    builder on every call (see :func:`_insert_sql`)."""
    row = model(**bounded(model, values))
    meta = model._meta
    pk = meta.primary_key
    data = row.__data__
    if (not meta.auto_increment or pk is False or data.get(pk.name) is not None
            or any(isinstance(v, peewee.Model) and v._pk is None for v in data.values())):
        row.save(force_insert=True)  # anything unusual: peewee's own path
        return row
    db = meta.database
    names = tuple(name for name in data if name != pk.name)
    sql = _insert_sql(model, names, db)
    fields = meta.fields
    cursor = db.execute_sql(sql, [fields[name].db_value(data[name]) for name in names])
    row._pk = cursor.fetchone()[0] if db.returning_clause else cursor.lastrowid
    row._dirty.clear()
    return row


def _create_later(model: type[peewee.Model], **values: Any) -> None:
    """``_create`` of a row whose id nobody reads: no RETURNING, and on
    PostgreSQL sent with the transaction's next statement (see
    :class:`PipelinedPostgres`)."""
    row = model(**bounded(model, values))
    meta = model._meta
    data = row.__data__
    if (not meta.auto_increment or data.get(meta.primary_key.name) is not None
            or any(isinstance(v, peewee.Model) and v._pk is None for v in data.values())):
        row.save(force_insert=True)  # anything unusual: peewee's own path
        return
    db = meta.database
    names = tuple(name for name in data if name != meta.primary_key.name)
    fields = meta.fields
    _later(db, _insert_sql(model, names, db, returning=False),
           [fields[name].db_value(data[name]) for name in names])


def _later(db: peewee.Database, sql: str, params: Sequence[Any]) -> None:
    """A write whose result nobody reads: deferred where the database can
    (PostgreSQL, in a transaction), else run now."""
    defer = getattr(db, "defer_sql", None)
    if defer is not None:
        defer(sql, params)
    else:
        db.execute_sql(sql, list(params))


_INSERT_SQL: dict[tuple[type, tuple[str, ...], bool, str], str] = {}


def _insert_sql(model: type[peewee.Model], names: tuple[str, ...], db: peewee.Database,
                *, returning: bool = True) -> str:
    """The INSERT of ``model`` with columns ``names``, made once. Building it
    with peewee's query objects took about a third of casegate's SQL work per
    message (py-spy; bench/profiles/); the text and the converted values
    (each field's ``db_value``, as peewee's Insert passes them) are the same."""
    returning = returning and bool(db.returning_clause)
    key = (model, names, returning, db.param)
    sql = _INSERT_SQL.get(key)
    if sql is None:
        meta = model._meta
        columns = ", ".join(f'"{meta.fields[name].column_name}"' for name in names)
        marks = ", ".join([db.param] * len(names))
        sql = f'INSERT INTO "{meta.table_name}" ({columns}) VALUES ({marks})'
        if returning:
            sql += f' RETURNING "{meta.primary_key.column_name}"'
        _INSERT_SQL[key] = sql
    return sql


def _create_numbered_case(db: peewee.Database, prefix: str, values: dict[str, Any]) -> Case:
    """The case row with its number (``prefix`` + the id in at least 7
    digits) in one INSERT, so no UPDATE of the number follows (and with it
    no second pass of SQLite's search index triggers, case_fts: a delete and
    an insert; on PostgreSQL one round trip less). SQLite: the id is the one
    SQLite would give (the largest + 1: no AUTOINCREMENT), named in the
    statement. PostgreSQL: the id is the next value of the id's sequence,
    as the column's default would take it."""
    row = Case(**bounded(Case, values))
    data = row.__data__
    fields = Case._meta.fields
    names = tuple(name for name in data if name not in ("id", "number"))
    sqlite = isinstance(db, peewee.SqliteDatabase)
    sql = _NUMBERED_SQL.get((names, sqlite))
    if sql is None:
        columns = ", ".join(f'"{fields[name].column_name}"' for name in names)
        if sqlite:
            next_id = '(SELECT coalesce(max("id"), 0) + 1 FROM "support_case")'
            marks = ", ".join(["?"] * len(names))
            sql = (f'INSERT INTO "support_case" ("id", "number", {columns}) '
                   f"VALUES ({next_id}, ? || printf('%07d', {next_id}), {marks})")
        else:
            marks = ", ".join(["%s"] * len(names))
            # lpad to 7, never cutting a longer id (as Python's :07d)
            sql = (f'INSERT INTO "support_case" ("id", "number", {columns}) '
                   "SELECT v.id, %s || lpad(v.id::text, greatest(7, length(v.id::text)), '0'), "
                   f"{marks} FROM (SELECT nextval(pg_get_serial_sequence('support_case', 'id')) "
                   'AS id) AS v RETURNING "id"')
        _NUMBERED_SQL[(names, sqlite)] = sql
    cursor = db.execute_sql(sql, [prefix, *[fields[name].db_value(data[name]) for name in names]])
    row._pk = cursor.lastrowid if sqlite else cursor.fetchone()[0]
    row.number = f"{prefix}{row.id:07d}"
    row._dirty.clear()
    return row


_NUMBERED_SQL: dict[tuple[tuple[str, ...], bool], str] = {}

_SELECT_SQL: dict[tuple[str, str], str] = {}


def _select(model: type[ModelT], name: str, tail: str, params: Sequence[Any],
            fields: Sequence[peewee.Field] | None = None) -> list[ModelT]:
    """``SELECT <fields of model> FROM <its table> AS t1 <tail>`` as model
    instances, the text made once per ``name`` (``?`` in ``tail`` marks a
    parameter). For the hot path's fixed-shape SELECTs: peewee's query
    builder cost more than SQLite running them (py-spy, bench/profiles/).
    ``params`` go to the driver as given: pass what the field's ``db_value``
    makes of them."""
    meta = model._meta
    db = meta.database
    key = (name, db.param)
    sql = _SELECT_SQL.get(key)
    if sql is None:
        columns = ", ".join(f'"t1"."{f.column_name}"' for f in (fields or meta.sorted_fields))
        sql = f'SELECT {columns} FROM "{meta.table_name}" AS "t1" {tail}'.replace("?", db.param)
        _SELECT_SQL[key] = sql
    return list(peewee.ModelRaw(model, sql, list(params)))  # not model.raw: Message has a column "raw"


def _text(db: peewee.Database, name: str, sql: str) -> str:
    """A fixed-shape statement's text for this driver (``?`` marks a parameter), made once."""
    key = (name, db.param)
    text = _SELECT_SQL.get(key)
    if text is None:
        text = _SELECT_SQL[key] = sql.replace("?", db.param)
    return text


def _scalar_rows(db: peewee.Database, name: str, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of a fixed-shape statement (``?`` marks a parameter), text made once."""
    return list(db.execute_sql(_text(db, name, sql), list(params)).fetchall())


def _instance(model: type[ModelT], fields: Sequence[peewee.Field], values: Sequence[Any]) -> ModelT:
    """A model instance from a row, as peewee's cursor wrappers make it."""
    row = model(__no_default__=1, **{f.name: f.python_value(v) for f, v in zip(fields, values, strict=True)})
    row._dirty.clear()
    return row


def _id(row: Any) -> Any:
    return row.id if isinstance(row, peewee.Model) else row


def _naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """Rows keep naive UTC; hand them out aware."""
    if value is None:
        return None
    if isinstance(value, str):  # SQLite returns what it stored when the type is loose
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


class Store:
    def __init__(self, url: str, *, clock: Clock = utc_now, create: bool = True) -> None:
        """Opens nothing yet. With ``create`` False (the CLI, and so the server,
        for every command but ``init``) a missing SQLite file is an error that
        says to run ``casegate init``; :meth:`migrate` creates it either way."""
        self.url = url
        self.db = open_database(url)
        if isinstance(self.db, SqliteFile):
            self.db.create = create
        self.is_sqlite = isinstance(self.db, peewee.SqliteDatabase)
        self.clock = clock
        # Bumped by this process's changes to pools, mailboxes and CSRs, so a
        # cached directory (Engine) is re-read at once; other processes' changes
        # reach it within defaults.DIRECTORY_TTL.
        self.directory_generation = 0
        # Outbox hand-off (``serve``; issue 12): a row enqueued in a transaction
        # of this process is leased to ``handoff_owner`` in that transaction
        # and, once the transaction has committed, given to ``handoff`` (the
        # outbox worker) with its message, so it is sent without a claiming
        # transaction and a read back. Nothing is handed when unset (the CLI).
        self.handoff: Callable[[list[Outbox]], None] | None = None
        self.handoff_owner = ""
        self.handoff_lease_seconds = 0
        self._tx = threading.local()  # per thread: depth of atomic(), rows to hand
        self.db.bind(MODELS)

    @property
    def display_url(self) -> str:
        """The URL with its password masked: the only form to print or log."""
        return display_url(self.url)

    @property
    def path(self) -> Path | None:
        """The SQLite file (absolute), or None for PostgreSQL."""
        return Path(self.db.database) if self.is_sqlite else None

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"

    # -- plumbing ---------------------------------------------------------

    def now(self) -> dt.datetime:
        """The injected clock, as the naive UTC the rows store."""
        return _naive(self.clock())

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction; database trouble becomes StoreUnavailable, a refusal
        of the data StoreDataError. On SQLite it first checks (one stat) that
        the file at the path is still the one the connections write to."""
        if isinstance(self.db, SqliteFile):
            self.db.check_identity()
        tx = self._tx
        depth = getattr(tx, "depth", 0)
        if depth == 0:
            # Only a transaction of our own hands rows over: inside one that
            # someone else began, our commit would not be the durable one.
            tx.handing = self.handoff is not None and not self.db.in_transaction()
            tx.handed = []
        start = len(tx.handed)
        tx.depth = depth + 1
        try:
            with self.guard(), self.db.atomic():
                yield
        except BaseException:
            del tx.handed[start:]  # rolled back (a savepoint, or all): nothing to send
            raise
        finally:
            tx.depth = depth
        if depth == 0 and tx.handed:
            handed, tx.handed = tx.handed, []
            if self.handoff is not None:
                self.handoff(handed)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Outside a transaction: the same error mapping for single queries."""
        try:
            yield
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            self._tx.trouble = True  # a batch (smtpd_hook.group) is abandoned
            self._drop_connection()
            raise StoreUnavailable(f"store unavailable: {_first_error(exc)}".strip()) from exc
        except (peewee.DataError, peewee.IntegrityError) as exc:
            raise StoreDataError(f"the store refused the data: {exc}".strip(),
                                 integrity=isinstance(exc, peewee.IntegrityError)) from exc

    def clear_trouble(self) -> None:
        """Forget, in this thread, that the store was unavailable."""
        self._tx.trouble = False

    def trouble_seen(self) -> bool:
        """Whether, in this thread, the store was unavailable (StoreUnavailable
        raised, even if caught) since :meth:`clear_trouble`."""
        return bool(getattr(self._tx, "trouble", False))

    def _drop_connection(self) -> None:
        # A dropped PostgreSQL connection stays broken in this thread until
        # closed; the next query then reconnects.
        try:
            if not self.db.is_closed():
                self.db.close()
        except Exception:  # pragma: no cover - closing a dead socket
            log.debug("closing a broken connection failed", exc_info=True)

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    def _runner(self) -> Runner:
        return Runner(self.db, str(MIGRATIONS), table_name=HISTORY_TABLE)

    def migrate(self, through: str | None = None) -> list[str]:
        """Create or upgrade the schema; idempotent. Returns what was applied.
        ``through``: stop after that migration (init's progress bar).

        The one place a SQLite store is created: its folder 0700 (when made
        here; an existing folder is left as it is), its file 0600."""
        if self.path is not None:
            _create_file(self.path, folder=True)
        with self.guard():
            applied = list(self._runner().up(target=through))
        if applied:
            # A migration that rebuilds a SQLite table drops its triggers,
            # the search index's among them: made again, the index refilled.
            from casestore.search import repair_index

            repair_index(self)
        return applied

    @staticmethod
    def migration_names() -> list[str]:
        """Every migration of the code, in order (from the files: no database)."""
        return sorted(p.stem for p in MIGRATIONS.glob("[0-9]*.py"))

    def backup(self, target: Path) -> dict[str, int]:
        """Copy a SQLite store to ``target`` while it is in use, with SQLite's
        online backup API in one step: one read transaction, so the copy is a
        consistent snapshot (every transaction committed before it began, none
        after), and in WAL mode writers go on meanwhile. The copy is written
        0600 next to ``target``, checked (``PRAGMA quick_check``), synced and
        renamed into place, so ``target`` is never a half copy. Returns the
        rows per table of the copy. PostgreSQL: StoreError with the pg_dump
        recipe."""
        if self.path is None:
            raise StoreError(pg_backup_recipe(self.url))
        source = self.path
        if not source.exists():
            raise StoreError(no_store_message(str(source)))
        target = Path(os.path.abspath(target))
        if target == source or (target.exists() and os.path.samefile(target, source)):
            raise StoreError(f"{target} is the store itself: back it up to another file")
        if not target.parent.is_dir():
            raise StoreError(f"cannot write {target}: no folder {target.parent}")
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            src = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True, timeout=30)
            try:
                dst = sqlite3.connect(tmp)
                try:
                    src.backup(dst)  # pages=-1: all in one step, one snapshot
                    dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                    check = dst.execute("PRAGMA quick_check").fetchone()[0]
                    if check != "ok":
                        raise StoreError(f"the copy in {tmp} fails its check: {check}")
                    tables = {row[0] for row in dst.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table'")}
                    counts = {t: int(dst.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0])
                              for t in (m._meta.table_name for m in MODELS) if t in tables}
                finally:
                    dst.close()
            finally:
                src.close()
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            folder = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except sqlite3.OperationalError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreUnavailable(f"backup of {source} failed: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"backup of {source} failed: {exc}") from exc
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write {target}: {exc.strerror or exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return counts

    def wide_modes(self) -> list[str]:
        """Warnings about a SQLite store other local users can read or replace."""
        if self.path is None:
            return []
        found = []
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            try:
                mode = path.stat().st_mode & 0o777
            except OSError:
                continue
            if mode & 0o006:
                found.append(f"{path} is readable by every local user (mode {mode:04o}): "
                             f"chmod 600 {path}")
        try:
            folder = self.path.parent.stat().st_mode
        except OSError:
            folder = 0
        if folder & 0o002 and not folder & 0o1000:
            found.append(f"{self.path.parent} is writable by every local user: chmod 700 {self.path.parent}")
        return found

    def pending_migrations(self) -> list[str]:
        with self.guard():
            return [m.name for m in self._runner().status() if not m.applied and m.path]

    def check_schema(self) -> None:
        """Raise a clear StoreError when the store is missing or older than the code."""
        pending = self.pending_migrations()
        if pending:
            raise StoreError(
                f"the store at {self.display_url} needs migrations ({', '.join(pending)}): "
                "run `casegate init` to create or upgrade it"
            )

    # -- directory: pools, mailboxes, CSRs ---------------------------------

    def pool(self, name: str, *, create: bool = True) -> Pool:
        pool = Pool.get_or_none(Pool.name == name)
        if pool is None:
            if not create:
                raise StoreError(f"no pool named {name!r}")
            pool = _create(Pool, name=name, created=self.now())
        return pool

    def add_mailbox(self, address: str, pool_name: str, display_name: str = "") -> Mailbox:
        self.directory_generation += 1
        with self.atomic():
            if Mailbox.get_or_none(Mailbox.address == address) is not None:
                raise StoreError(f"{address} is already a supervised address")
            return _create(
                Mailbox,
                address=address,
                pool=self.pool(pool_name),
                display_name=display_name,
                created=self.now(),
            )

    def mailboxes(self) -> list[Mailbox]:
        with self.guard():
            return list(Mailbox.select(Mailbox, Pool).join(Pool).order_by(Mailbox.address))

    def mailbox(self, address: str) -> Mailbox | None:
        return Mailbox.get_or_none(Mailbox.address == address)

    def add_csr(
        self, address: str, name: str, pools: Sequence[str], signature: str = ""
    ) -> Csr:
        self.directory_generation += 1
        with self.atomic():
            if Csr.get_or_none(Csr.address == address) is not None:
                raise StoreError(f"{address} is already a CSR")
            csr = _create(Csr, address=address, name=name, signature=signature, created=self.now())
            self._memberships(csr, pools)
            return csr

    def _memberships(self, csr: Csr, pools: Sequence[str]) -> None:
        """``NAME[:LEVEL[:PRIORITY]]`` each (ValueError for a bad one)."""
        for spec in pools:
            name, level, priority = parse_membership(spec)
            Membership.create(csr=csr, pool=self.pool(name), level=level, priority=priority)

    def set_csr(self, address: str, *, pools: Sequence[str] | None = None,
                **changes: Any) -> Csr:
        """Change a CSR; ``pools`` replaces their memberships."""
        self.directory_generation += 1
        with self.atomic():
            csr = Csr.get_or_none(Csr.address == address)
            if csr is None:
                raise StoreError(f"{address} is not a CSR (`casegate csr list`)")
            if changes:
                for key, value in changes.items():
                    setattr(csr, key, value)
                csr.save(only=[getattr(Csr, key) for key in changes])
            if pools is not None:
                Membership.delete().where(Membership.csr == csr).execute()
                self._memberships(csr, pools)
            return csr

    def csrs(self) -> list[Csr]:
        with self.guard():
            return list(Csr.select().order_by(Csr.address))

    def csr(self, address: str) -> Csr | None:
        rows = _select(Csr, "csr", 'WHERE "t1"."address" = ? LIMIT 1', [address])
        return rows[0] if rows else None

    def csr_pools(self, csr: Csr) -> list[str]:
        return [m["pool"] for m in self.memberships(csr)]

    def memberships(self, csr: Csr) -> list[dict[str, Any]]:
        """A CSR's pools with level, priority and absence, in pull order."""
        now = self.now()
        return [
            {"pool": m.pool.name, "level": m.level, "priority": m.priority,
             "away": away_now(m.away, m.away_until, now),
             "away_until": _iso(m.away_until) if away_now(m.away, m.away_until, now) else None,
             "deputy": (m.deputy or None) if away_now(m.away, m.away_until, now) else None}
            for m in Membership.select(Membership, Pool).join(Pool).where(Membership.csr == csr)
            .order_by(Membership.priority, Pool.name)
        ]

    def candidates(self, pool: Pool) -> list[tuple[Csr, int, int, bool]]:
        """Every CSR of a pool with their open cases, level and whether they
        are available in it now, by id (one query)."""
        now = self.now()
        fields = Csr._meta.sorted_fields
        statuses = [str(getattr(s, "value", s)) for s in OPEN_STATUSES]
        rows = _scalar_rows(self.db, f"candidates {len(statuses)}", (
            "SELECT " + ", ".join(f'"t1"."{f.column_name}"' for f in fields)
            + ', "t2"."level", "t2"."away", "t2"."away_until", COUNT("t3"."id") '
            'FROM "csr" AS "t1" INNER JOIN "membership" AS "t2" ON ("t2"."csr_id" = "t1"."id") '
            'LEFT OUTER JOIN "support_case" AS "t3" ON (("t3"."assignee_id" = "t1"."id") AND '
            f'("t3"."status" IN ({", ".join(["?"] * len(statuses))}))) '
            'WHERE ("t2"."pool_id" = ?) '
            'GROUP BY "t1"."id", "t2"."level", "t2"."away", "t2"."away_until" ORDER BY "t1"."id"'),
            [*statuses, _id(pool)])
        out = []
        n = len(fields)
        for row in rows:
            csr = _instance(Csr, fields, row[:n])
            level, away = Membership.level.python_value(row[n]), Membership.away.python_value(row[n + 1])
            until = Membership.away_until.python_value(row[n + 2])
            out.append((csr, int(row[n + 3] or 0), int(level),
                        bool(csr.available) and not away_now(away, until, now)))
        return out

    def set_away(self, csr_address: str, pools: Sequence[str], *, away: bool,
                 until: dt.datetime | None = None, deputy: str = "") -> list[str]:
        """Mark a CSR away (or back) in these pools (all of theirs when empty);
        the pools changed, in the caller's transaction."""
        self.directory_generation += 1
        csr = Csr.get_or_none(Csr.address == csr_address)
        if csr is None:
            raise StoreError(f"{csr_address} is not a CSR (`casegate csr list`)")
        rows = list(Membership.select(Membership, Pool).join(Pool).where(Membership.csr == csr))
        if pools:
            unknown = sorted(set(pools) - {m.pool.name for m in rows})
            if unknown:
                raise StoreError(f"{csr_address} is not in pool(s) {', '.join(unknown)}")
            rows = [m for m in rows if m.pool.name in pools]
        ids = [m.id for m in rows]
        Membership.update(away=away, away_until=_naive(until) if (away and until) else None,
                          deputy=deputy if away else "").where(Membership.id.in_(ids)).execute()
        return [m.pool.name for m in rows]

    def waiting(self, csr_address: str, limit: int = 1) -> list[str]:
        """Numbers of the oldest open, unassigned cases in this CSR's first-level
        pools, pools in the CSR's priority order (what #next hands out)."""
        with self.guard():
            rows = (Case.select(Case.number)
                    .join(Mailbox).join(Pool).join(Membership, on=(Membership.pool == Pool.id))
                    .join(Csr, on=(Membership.csr == Csr.id))
                    .where((Csr.address == csr_address) & (Membership.level == 1)
                           & Case.assignee.is_null() & Case.status.in_(OPEN_STATUSES))
                    .order_by(Membership.priority, Case.id).limit(limit))
            return [r.number for r in rows]

    def open_load(self, pool: Pool) -> list[tuple[Csr, int]]:
        """Available CSRs of a pool with their number of open cases, by id."""
        open_cases = fn.COUNT(Case.id)
        query = (
            Csr.select(Csr, open_cases.alias("load"))
            .join(Membership)
            .switch(Csr)
            .join(
                Case,
                JOIN.LEFT_OUTER,
                on=((Case.assignee == Csr.id) & (Case.status.in_(OPEN_STATUSES))),
            )
            .where((Membership.pool == pool) & (Csr.available == True))  # noqa: E712
            .group_by(Csr.id)
            .order_by(Csr.id)
        )
        return [(csr, int(csr.load)) for csr in query]

    # -- cases -------------------------------------------------------------

    def new_case(
        self,
        *,
        mailbox: Mailbox,
        prefix: str,
        customer_address: str,
        customer_name: str,
        subject: str,
        status: Status = Status.RECEIVED,
        follow_up_of: Case | None = None,
        assignee: Csr | None = None,
    ) -> Case:
        now = self.now()
        values = {"mailbox": mailbox, "customer_address": customer_address,
                  "customer_name": customer_name, "subject": subject, "status": status.value,
                  "created": now, "updated": now, "follow_up_of": follow_up_of}
        if assignee is not None:
            values["assignee"] = assignee
        case = _create_numbered_case(self.db, prefix, values)
        if customer_address:
            _create_later(Participant, case=case, address=case.customer_address, role="customer")
        return case

    def case(self, number: str) -> Case | None:
        with self.guard():
            return self.load_case(Case.number == number)

    def load_case(self, where: Any, mailboxes: dict[str, Mailbox] | None = None) -> Case | None:
        """One case with its assignee in one query (and its mailbox row from
        ``mailboxes`` when the caller has them), so nothing loads lazily later."""
        if (isinstance(where, peewee.Expression) and where.op == peewee.OP.EQ
                and isinstance(where.lhs, peewee.Field) and where.lhs.model is Case
                and where.lhs.name in ("number", "id") and not isinstance(where.rhs, peewee.Node)):
            case = self._case_by(where.lhs.name, where.rhs)  # the mail path's shape: plain SQL
        else:
            case = (Case.select(Case, Csr).join(Csr, JOIN.LEFT_OUTER, on=(Case.assignee == Csr.id))
                    .where(where).first())
        return self._with_mailbox(case, mailboxes)

    @staticmethod
    def _with_mailbox(case: Case | None, mailboxes: dict[str, Mailbox] | None) -> Case | None:
        """The case with its mailbox row from ``mailboxes`` (no lazy load later)."""
        if case is not None and mailboxes:
            row = next((m for m in mailboxes.values() if m.id == case.mailbox_id), None)
            if row is not None:
                case.mailbox = row
        return case

    def _case_by(self, column: str, value: Any) -> Case | None:
        """``load_case(Case.<column> == value)``: the case and its assignee in
        one plain SELECT, built into the instances peewee's join would make."""
        case_fields, csr_fields = Case._meta.sorted_fields, Csr._meta.sorted_fields
        columns = ", ".join([f'"t1"."{f.column_name}"' for f in case_fields]
                            + [f'"t2"."{f.column_name}"' for f in csr_fields])
        rows = _scalar_rows(self.db, f"case by {column}", (
            f'SELECT {columns} FROM "support_case" AS "t1" LEFT OUTER JOIN "csr" AS "t2" '
            f'ON ("t1"."assignee_id" = "t2"."id") WHERE "t1"."{Case._meta.fields[column].column_name}" = ? '
            'LIMIT 1'), [value])
        if not rows:
            return None
        return self._case_row(rows[0], len(case_fields))

    @staticmethod
    def _case_row(row: Sequence[Any], n: int) -> Case:
        """A case from a row of its ``n`` columns and its assignee's (NULLs when none)."""
        case = _instance(Case, Case._meta.sorted_fields, row[:n])
        if row[n] is not None:  # the assignee's id: a CSR row was joined
            case.assignee = _instance(Csr, Csr._meta.sorted_fields, row[n:])
            case._dirty.clear()
        return case

    def cases(self, *, status: str | None = None) -> list[Case]:
        """Cases by number; ``status`` is a Status name, or ``open`` for every open one."""
        with self.guard():
            query = Case.select(Case, Csr).join(Csr, JOIN.LEFT_OUTER).order_by(Case.id)
            if status == "open":
                query = query.where(Case.status.in_(OPEN_STATUSES))
            elif status:
                query = query.where(Case.status == status)
            return list(query)

    def add_participant(self, case: Case, address: str, role: str, *,
                        known: set[str] | None = None) -> None:
        """Add ``address`` unless the case has it. ``known``: every participant
        the case has (a case opened in this transaction), kept up to date
        here: checked in memory instead of by a SELECT, and the row written
        with the transaction's next statement (PostgreSQL)."""
        row = bounded(Participant, {"case": case, "address": address, "role": role})
        if known is not None:
            if row["address"] not in known:
                known.add(row["address"])
                _create_later(Participant, **row)
            return
        if not Participant.select().where((Participant.case == case)
                                          & (Participant.address == row["address"])).exists():
            Participant.create(**row)

    def participants(self, case: Case) -> set[str]:
        return {p.address for p in Participant.select().where(Participant.case == case)}

    def participants_of(self, numbers: Sequence[str]) -> dict[str, set[str]]:
        """number -> participants, for those of these numbers that are cases (one query)."""
        return {number: people for number, (_, people) in self.cases_of(numbers).items()}

    def cases_of(self, numbers: Sequence[str], mailboxes: dict[str, Mailbox] | None = None
                 ) -> dict[str, tuple[Case, set[str]]]:
        """number -> (the case as :meth:`load_case` gives it, its
        participants), for those of these numbers that are cases: the facts a
        message's match needs and the case it joins, in one query."""
        if not numbers:
            return {}
        wanted = list(dict.fromkeys(numbers))[:200]
        case_fields, csr_fields = Case._meta.sorted_fields, Csr._meta.sorted_fields
        columns = ", ".join([f'"t1"."{f.column_name}"' for f in case_fields]
                            + [f'"t2"."{f.column_name}"' for f in csr_fields])
        rows = _scalar_rows(self.db, f"cases_of {len(wanted)}", (
            f'SELECT {columns}, "t3"."address" FROM "support_case" AS "t1" '
            'LEFT OUTER JOIN "csr" AS "t2" ON ("t1"."assignee_id" = "t2"."id") '
            'LEFT OUTER JOIN "participant" AS "t3" ON ("t3"."case_id" = "t1"."id") '
            f'WHERE ("t1"."number" IN ({", ".join(["?"] * len(wanted))}))'), wanted)
        by_id: dict[int, tuple[Case, set[str]]] = {}
        n, m = len(case_fields), len(case_fields) + len(csr_fields)
        for row in rows:
            case_id = row[0]  # (sorted_fields: the primary key first)
            if case_id not in by_id:
                by_id[case_id] = (self._with_mailbox(self._case_row(row[:m], n), mailboxes), set())
            if row[m]:
                by_id[case_id][1].add(row[m])
        return {case.number: (case, people) for case, people in by_id.values()}

    # -- facts for the rules -------------------------------------------------

    def directory(self) -> Directory:
        return self.load_directory()[0]

    def load_directory(self) -> tuple[Directory, dict[str, Mailbox]]:
        """CSRs (with their pools) and supervised addresses (with their pool),
        in two queries; the mailbox rows too, by address."""
        pools: dict[str, set[str]] = {}
        away: dict[str, list[tuple[str, str]]] = {}
        csrs: dict[str, Csr] = {}
        now = self.now()
        levels: dict[str, list[tuple[str, int]]] = {}
        # Not the footer picture (bytes; read when an answer needs it).
        csr_columns = [f for f in Csr._meta.sorted_fields if f.name != "footer_image"]
        rows = (Csr.select(*csr_columns, Pool.name.alias("pool_name"), Membership.level.alias("m_level"),
                           Membership.away.alias("m_away"),
                           Membership.away_until.alias("m_until"), Membership.deputy.alias("m_deputy"))
                .join(Membership, JOIN.LEFT_OUTER).join(Pool, JOIN.LEFT_OUTER)
                .order_by(Csr.id).objects())
        for row in rows:
            csrs.setdefault(row.address, row)
            if row.pool_name:
                pools.setdefault(row.address, set()).add(row.pool_name)
                levels.setdefault(row.address, []).append((row.pool_name, int(row.m_level or 1)))
                if away_now(row.m_away, row.m_until, now):
                    away.setdefault(row.address, []).append((row.pool_name, row.m_deputy or ""))
        rows_mb = {m.address: m for m in Mailbox.select(Mailbox, Pool).join(Pool)}
        asked: dict[int, list[Question]] = {}
        if rows_mb:
            for q in Question.select().order_by(Question.id):
                asked.setdefault(q.pool_id, []).append(q)
        mailboxes = {a: MailboxInfo(a, m.display_name, pool_info(m.pool, asked.get(m.pool_id, [])),
                                    subject_prefix=m.subject_prefix or "",
                                    unknown_policy=m.unknown_policy or "open",
                                    language=m.language or None, acknowledge=m.acknowledge,
                                    greeting=m.greeting)
                     for a, m in rows_mb.items()}
        return Directory(
            csrs={a: CsrInfo(a, c.name, c.signature or "", bool(c.available),
                             frozenset(pools.get(a, ())), tuple(sorted(away.get(a, ()))),
                             tuple(sorted(levels.get(a, ()))),
                             c.supervisor if c.needs_approval else "",
                             footer=bool((c.footer_html or "").strip()))
                  for a, c in csrs.items()},
            mailboxes=mailboxes,
            departments={d.name.lower(): DepartmentInfo(d.name, d.address, d.deadline)
                         for d in Department.select()} if rows_mb else {},
            products=self.product_infos() if rows_mb else (),
        ), rows_mb

    def case_state(self, case: Case, *, participants: set[str] | None = None) -> CaseState:
        if participants is None:
            participants = self.participants(case)
        surveys: frozenset[str] = frozenset()
        if case.status == Status.CLOSED:
            surveys = frozenset(m.message_id for m in Message.select(Message.message_id).where(
                (Message.case == case) & (Message.kind == MessageKind.SURVEY)))
        return CaseState(
            number=case.number, status=Status(case.status), mailbox="",
            customer_address=case.customer_address, customer_name=case.customer_name,
            subject=case.subject,
            assignee=None if case.assignee_id is None else case.assignee.address,
            created=aware(case.created) or self.clock(), closed=aware(case.closed),
            participants=frozenset(participants), survey_sent=bool(surveys), survey_ids=surveys,
        )


    def touch(self, case: Case, **changes: Any) -> None:
        """Change these columns only (another worker may have changed others).
        One plain UPDATE, its text made once per column set; on PostgreSQL
        sent with the transaction's next statement."""
        changes["updated"] = self.now()
        changes = bounded(Case, changes)
        for key, value in changes.items():
            setattr(case, key, value)
        names = tuple(changes)
        fields = Case._meta.fields
        sql = _text(self.db, f"touch {names}", 'UPDATE "support_case" SET '
                    + ", ".join(f'"{fields[name].column_name}" = ?' for name in names)
                    + ' WHERE "id" = ?')
        _later(self.db, sql, [*(fields[name].db_value(case.__data__.get(name)) for name in names),
                              case.id])
        case._dirty.difference_update(names)

    def event(
        self,
        kind: str,
        *,
        case: Case | None = None,
        message: Message | None = None,
        actor: str = "",
        detail: str = "",
    ) -> Event:
        return _create(Event, case=case, message=message, at=self.now(), kind=kind, actor=actor,
                       detail=detail)

    def record_event(self, kind: str, *, case: Case | None = None, message: Message | None = None,
                     actor: str = "", detail: str = "") -> None:
        """:meth:`event` for one nobody reads back as a row (no id): on
        PostgreSQL sent with the transaction's next statement."""
        _create_later(Event, case=case, message=message, at=self.now(), kind=kind, actor=actor,
                      detail=detail)

    def case_history(self, case: Case) -> dict[str, Any]:
        """The whole case as one value (``case show --json``): messages, notes
        and events in time order, files, timers, links."""
        row = case_dict(case)
        row["follow_ups"] = [c.number for c in Case.select(Case.number).where(
            Case.follow_up_of == case).order_by(Case.id)]
        messages = [{
            "type": "message", "id": m.id, "direction": m.direction, "kind": m.kind,
            "from": m.sender, "to": m.recipients, "subject": m.subject, "message_id": m.message_id,
            "date": _iso(m.created), "queue_id": m.queue_id, "authenticated": m.authenticated,
            "automatic": m.automatic, "text": m.text, "size": len(bytes(m.raw)),
        } for m in self.messages(case, raw=True)]
        events = [{"type": "event", "at": _iso(e.at), "kind": e.kind, "actor": e.actor,
                   "detail": e.detail, "message": e.message_id} for e in self.events(case)]
        row["messages"] = messages
        row["events"] = events
        row["notes"] = [{"at": e["at"], "by": e["actor"], "text": e["detail"]}
                        for e in events if e["kind"] == "note"]
        row["history"] = sorted(messages + events, key=lambda i: (
            i["date"] if i["type"] == "message" else i["at"], 0 if i["type"] == "message" else 1))
        row["files"] = [{"id": a.id, "message": a.message_id, "name": a.filename,
                         "type": a.content_type, "size": a.size, "inline": bool(a.inline),
                         "content_id": a.content_id or None, "sha256": a.sha256,
                         # the names of before issue 10, kept for scripts that read them
                         "filename": a.filename, "content_type": a.content_type}
                        for a in self.attachments(case)]
        row["timers"] = [{"kind": t.kind, "due": _iso(t.due), "status": t.status,
                          "fired": _iso(t.fired)} for t in self.timers(case)]
        row["consultations"] = [{"department": c.department.name, "question": c.question,
                                 "asked_by": c.asked_by, "status": c.status, "asked": _iso(c.asked),
                                 "due": _iso(c.due), "answered": _iso(c.answered)}
                                for c in self.consultations(case)]
        return row

    def notes(self, case: Case) -> list[Event]:
        # ``kind || ''``: not the (kind, at) index, whose walk over every
        # note of every case SQLite preferred for the ORDER BY (a reply's cost
        # grew with the store), but the case's own few events.
        return _select(Event, "notes", 'WHERE "t1"."case_id" = ? AND ("t1"."kind" || \'\') = ? '
                       'ORDER BY "t1"."at", "t1"."id"', [_id(case), "note"])

    def events(self, case: Case) -> list[Event]:
        return list(Event.select().where(Event.case == case).order_by(Event.at, Event.id))

    def messages(self, case: Case, *, raw: bool = False) -> list[Message]:
        """A case's messages in order; without their raw bytes unless asked."""
        fields = Message._meta.sorted_fields if raw else [
            f for f in Message._meta.sorted_fields if f is not Message.raw]
        return _select(Message, f"messages raw={raw}", 'WHERE "t1"."case_id" = ? ORDER BY "t1"."id"',
                       [_id(case)], fields)

    def messages_and_files(self, case: Case) -> tuple[list[Message], list[Attachment]]:
        """``messages(case)`` and ``attachments(case)`` for a CSR notification:
        the messages with a flag whether each has files, and the files read
        only if one has. The text of the messages we sent is left out (``""``):
        a notification shows what came in, and each notification before it
        stored some 6 KB of text that every later one would read again."""
        fields = [f for f in Message._meta.sorted_fields if f is not Message.raw]
        columns = ", ".join(
            'CASE WHEN "t1"."direction" = \'out\' THEN \'\' ELSE "t1"."text" END'
            if f is Message.text else f'"t1"."{f.column_name}"' for f in fields)
        rows = _scalar_rows(self.db, "messages and files", (
            f'SELECT {columns}, EXISTS (SELECT 1 FROM "attachment" AS "t2" '
            'WHERE "t2"."message_id" = "t1"."id") FROM "message" AS "t1" WHERE "t1"."case_id" = ? '
            'ORDER BY "t1"."id"'), [_id(case)])
        messages = [_instance(Message, fields, row[:-1]) for row in rows]
        return messages, (self.attachments(case) if any(row[-1] for row in rows) else [])

    def case_numbers_of_message_ids(self, message_ids: Sequence[str]) -> list[str]:
        """Cases of stored messages with these Message-IDs, in the order given."""
        if not message_ids:
            return []
        rows = (Message.select(Message.message_id, Case.number).join(Case)
                .where(Message.message_id.in_(list(message_ids)[:500])))
        by_id: dict[str, str] = {}
        for row in rows:
            by_id.setdefault(row.message_id, row.case.number)
        return list(dict.fromkeys(by_id[m] for m in message_ids if m in by_id))

    # -- messages, attachments, deliveries ----------------------------------

    def add_message(self, **fields: Any) -> Message:
        fields.setdefault("created", self.now())
        return _create(Message, **fields)

    def note_first_answer(self, case: Case, message: Message) -> None:
        """Our answer (a reply or proposed solution) was stored for the case:
        the first one's time goes on the case row (``first_answer_at``, for
        reports). One UPDATE for the first answer only; a later one finds it set."""
        if case.first_answer_at is not None:
            return
        Case.update(first_answer_at=message.created).where(
            (Case.id == case.id) & Case.first_answer_at.is_null()).execute()
        case.first_answer_at = message.created

    def add_attachment(
        self, message: Message, *, filename: str, content_type: str, data: bytes, sha256: str,
        inline: bool = False, content_id: str = "",
    ) -> Attachment:
        return _create(
            Attachment,
            message=message,
            filename=filename,
            content_type=content_type,
            size=len(data),
            sha256=sha256,
            data=data,
            inline=inline,
            content_id=content_id,
        )

    def attachments(self, case: Case) -> list[Attachment]:
        """A case's files, without their bytes (``attachment(id)`` has those)."""
        return _select(Attachment, "attachments",
                       'INNER JOIN "message" AS "t2" ON ("t1"."message_id" = "t2"."id") '
                       'WHERE "t2"."case_id" = ? ORDER BY "t1"."id"', [_id(case)],
                       [Attachment.id, Attachment.message, Attachment.filename,
                        Attachment.content_type, Attachment.size, Attachment.sha256,
                        Attachment.inline, Attachment.content_id])

    def attachment(self, attachment_id: int) -> Attachment | None:
        with self.guard():
            return Attachment.get_or_none(Attachment.id == attachment_id)

    def delivery_seen(self, key: str) -> Delivery | None:
        rows = _select(Delivery, "delivery_seen", 'WHERE "t1"."key" = ? LIMIT 1', [key])
        return rows[0] if rows else None

    def record_delivery(
        self, key: str, *, queue_id: str, outcome: str, message: Message | None
    ) -> None:
        """The delivery seen, in the transaction of what it caused (on
        PostgreSQL sent with the COMMIT). A second host storing the same
        delivery breaks the key's unique index at the latest at the commit:
        the transaction rolls back and the engine tries once more."""
        _create_later(Delivery, key=key, queue_id=queue_id, received=self.now(), outcome=outcome,
                      message=message)

    # -- blacklist and settings ------------------------------------------------

    def add_blacklist(self, pattern: str, subject: str | None, reason: str = "",
                      by: str = "") -> BlacklistEntry:
        # Cutting a pattern or a regex would change what it blocks: refuse instead.
        for name, value in (("pattern", pattern), ("subject", subject)):
            limit = getattr(BlacklistEntry, name).max_length
            if value is not None and len(value) > limit:
                raise StoreError(f"blacklist {name} longer than {limit} characters: {value[:40]!r}…")
        with self.atomic():
            existing = BlacklistEntry.get_or_none(
                (BlacklistEntry.pattern == pattern)
                & (BlacklistEntry.subject.is_null() if subject is None
                   else BlacklistEntry.subject == subject)
            )
            if existing is not None:
                return existing
            return _create(BlacklistEntry, pattern=pattern, subject=subject, reason=reason,
                           created=self.now(), created_by=by)

    def remove_blacklist(self, pattern: str, subject: str | None = None) -> int:
        """Remove the entry (with that subject, or every entry of the pattern)."""
        with self.atomic():
            query = BlacklistEntry.delete().where(BlacklistEntry.pattern == pattern)
            if subject is not None:
                query = query.where(BlacklistEntry.subject == subject)
            return int(query.execute())

    def blacklist(self) -> list[BlacklistEntry]:
        with self.guard():
            return list(BlacklistEntry.select().order_by(BlacklistEntry.pattern,
                                                          BlacklistEntry.id))

    def settings(self, defaults: dict[str, str]) -> dict[str, str]:
        """Several settings in one query, each with its default."""
        with self.guard():
            keys = list(defaults)
            rows = _scalar_rows(self.db, f"settings {len(keys)}",
                                'SELECT "key", "value" FROM "setting" WHERE "key" IN ('
                                + ", ".join(["?"] * len(keys)) + ")", keys) if keys else []
            return {**defaults, **{key: value for key, value in rows}}

    def limits(self) -> dict[str, int]:
        """The rate caps on automatic mail (``casegate limits``), each with its default."""
        stored = self.settings({k: str(v) for k, v in defaults.LIMIT_DEFAULTS.items()})
        return {k: int(v) if v.isdigit() else defaults.LIMIT_DEFAULTS[k] for k, v in stored.items()}

    def set_setting(self, key: str, value: str) -> None:
        row = bounded(Setting, {"key": key, "value": value})
        key, value = row["key"], row["value"]
        with self.atomic():
            Setting.insert(key=key, value=value).on_conflict(
                conflict_target=[Setting.key], update={Setting.value: value}).execute()

    def automatic_sent(self, *, since: dt.datetime, case: Case) -> int:
        """How many automatic messages to customers we wrote on a case since then."""
        kinds = [k.value for k in AUTOMATIC_OUT]
        rows = _scalar_rows(self.db, "automatic_sent", (
            'SELECT COUNT(*) FROM "message" WHERE "case_id" = ? AND "direction" = ? AND "created" >= ? '
            f'AND "kind" IN ({", ".join(["?"] * len(kinds))})'),
            [_id(case), "out", Message.created.db_value(_naive(since)), *kinds])
        return int(rows[0][0] or 0)

    def automatic_sent_to(self, *, since: dt.datetime, recipient: str) -> tuple[int, int]:
        """(to this canonical mailbox, to its domain) since then, in one query."""
        domain = recipient.rpartition("@")[2]
        kinds = [k.value for k in AUTOMATIC_OUT]
        rows = _scalar_rows(self.db, "automatic_sent_to", (
            'SELECT COUNT("id"), SUM(CASE WHEN "rcpt_key" = ? THEN 1 ELSE 0 END) FROM "message" '
            'WHERE "rcpt_domain" = ? AND "created" >= ? AND "direction" = ? '
            f'AND "kind" IN ({", ".join(["?"] * len(kinds))})'),
            [recipient, domain, Message.created.db_value(_naive(since)), "out", *kinds])
        row = rows[0] if rows else (0, 0)
        return int(row[1] or 0), int(row[0] or 0)

    def health(self) -> dict[str, Any]:
        """Figures for `casegate status`: the outbox, timers, unassigned cases."""
        now = self.now()
        with self.guard():
            pending = Outbox.select(fn.COUNT(Outbox.id).alias("n"),
                                    fn.MIN(Outbox.next_attempt).alias("oldest")).where(
                Outbox.status == "pending").dicts().first() or {}
            oldest = aware(pending.get("oldest")) if pending.get("oldest") else None
            return {
                "outbox_pending": int(pending.get("n") or 0),
                "outbox_oldest_pending_seconds": (now.replace(tzinfo=dt.UTC) - oldest).total_seconds()
                if oldest else 0,
                "outbox_failed": Outbox.select().where(Outbox.status == "failed").count(),
                "timers_due": Timer.select().where((Timer.status == "pending") & (Timer.due <= now)).count(),
                "timers_overdue": Timer.select().where(
                    (Timer.status == "pending") & (Timer.due <= now - dt.timedelta(minutes=10))).count(),
                "cases_open": Case.select().where(Case.status.in_(OPEN_STATUSES)).count(),
                "cases_unassigned": Case.select().where(
                    Case.status.in_(OPEN_STATUSES) & Case.assignee.is_null()).count(),
            }

    def attention(self, limit: int = 5, unassigned_after: float = 3600.0) -> dict[str, Any]:
        """More for `casegate status`: the latest errors (outbox and
        quarantine), newest first, and open cases left unassigned longer than
        ``unassigned_after`` seconds (no CSR available in their pool)."""
        from casestore.models import Quarantine

        now = self.now()
        with self.guard():
            errors: list[dict[str, Any]] = []
            for row in (Outbox.select(Outbox.id, Outbox.status, Outbox.next_attempt, Outbox.last_error)
                        .where((Outbox.last_error != "") & (Outbox.status != "sent"))
                        .order_by(Outbox.next_attempt.desc()).limit(limit)):
                errors.append({"what": f"outbox {row.id} ({row.status})", "error": row.last_error,
                               "when": aware(row.next_attempt).isoformat()})
            for q in (Quarantine.select(Quarantine.id, Quarantine.status, Quarantine.last_seen,
                                        Quarantine.error)
                      .where(Quarantine.status.in_(("failing", "held")))
                      .order_by(Quarantine.last_seen.desc()).limit(limit)):
                errors.append({"what": f"quarantine {q.id} ({q.status})", "error": q.error,
                               "when": aware(q.last_seen).isoformat()})
            errors.sort(key=lambda e: e["when"], reverse=True)
            waiting = Case.select().where(
                Case.status.in_(OPEN_STATUSES) & Case.assignee.is_null()
                & (Case.created <= now - dt.timedelta(seconds=unassigned_after))).count()
        return {"last_errors": errors[:limit], "cases_unassigned_long": waiting}

    # -- pools ---------------------------------------------------------------

    def pools(self) -> list[Pool]:
        with self.guard():
            return list(Pool.select().order_by(Pool.name))

    def set_pool(self, name: str, **changes: Any) -> Pool:
        self.directory_generation += 1
        with self.atomic():
            pool = self.pool(name, create=False)
            for key, value in changes.items():
                setattr(pool, key, value)
            pool.save(only=[getattr(Pool, key) for key in changes])
            return pool

    # -- departments and consultations -----------------------------------------

    def add_department(self, name: str, address: str, deadline: int) -> Department:
        self.directory_generation += 1
        with self.atomic():
            if Department.get_or_none((Department.name == name) | (Department.address == address)):
                raise StoreError(f"a department {name!r} or at {address} exists already")
            return Department.create(**bounded(Department, dict(
                name=name, address=address, deadline=deadline, created=self.now())))

    def departments(self) -> list[Department]:
        with self.guard():
            return list(Department.select().order_by(Department.name))

    def set_department(self, name: str, **changes: Any) -> Department:
        self.directory_generation += 1
        with self.atomic():
            dept = Department.get_or_none(Department.name == name)
            if dept is None:
                raise StoreError(f"no department named {name!r} (`casegate department list`)")
            for key, value in changes.items():
                setattr(dept, key, value)
            dept.save(only=[getattr(Department, key) for key in changes])
            return dept

    def remove_department(self, name: str) -> int:
        self.directory_generation += 1
        with self.atomic():
            dept = Department.get_or_none(Department.name == name)
            if dept is None:
                return 0
            if Consultation.select().where((Consultation.department == dept)
                                           & (Consultation.status != "answered")).exists():
                raise StoreError(f"{name} has unanswered consultations; answer or close them first")
            return int(dept.delete_instance(recursive=True))

    def consult(self, case: Case, department_name: str, question: str, by: str) -> Consultation:
        dept = Department.get(Department.name == department_name)
        now = self.now()
        return Consultation.create(**bounded(Consultation, dict(
            case=case, department=dept, question=question, asked_by=by, status="open", asked=now,
            due=now + dt.timedelta(seconds=dept.deadline))))

    def consultations(self, case: Case) -> list[Consultation]:
        return list(Consultation.select(Consultation, Department).join(Department)
                    .where(Consultation.case == case).order_by(Consultation.id))

    def open_consultations(self, case: Case) -> list[Consultation]:
        return [c for c in self.consultations(case) if c.status == "open"]

    def consultation_answered(self, case: Case, department_name: str) -> int:
        dept = Department.get(Department.name == department_name)
        return int(Consultation.update(status="answered", answered=self.now()).where(
            (Consultation.case == case) & (Consultation.department == dept)
            & Consultation.status.in_(["open", "overdue"])).execute())

    def overdue_cases(self) -> list[str]:
        with self.guard():
            return [c.number for c in Case.select(Case.number).join(Consultation).where(
                Consultation.status == "overdue").distinct()]

    # -- drafts held for approval -----------------------------------------------

    def hold_draft(self, case: Case, *, csr: str, supervisor: str, commands: str, text: str) -> Draft:
        return Draft.create(**bounded(Draft, dict(case=case, csr=csr, supervisor=supervisor,
                                                  commands=commands, text=text, status="pending",
                                                  created=self.now())))

    def drafts(self, case: Case | None = None, *, status: str | None = "pending") -> list[Draft]:
        with self.guard():
            query = Draft.select(Draft, Case).join(Case).order_by(Draft.id)
            if case is not None:
                query = query.where(Draft.case == case)
            if status is not None:
                query = query.where(Draft.status == status)
            return list(query)

    def draft_infos(self, case: Case) -> tuple[DraftInfo, ...]:
        return tuple(DraftInfo(d.id, d.csr, d.supervisor, d.commands, d.text)
                     for d in self.drafts(case))

    def draft(self, draft_id: int) -> Draft | None:
        with self.guard():
            return Draft.select(Draft, Case).join(Case).where(Draft.id == draft_id).first()

    def decide_draft(self, draft_id: int, status: str, by: str) -> None:
        Draft.update(status=status, decided=self.now(), decided_by=by[:320]).where(
            Draft.id == draft_id).execute()

    # -- closing questions ---------------------------------------------------

    def add_question(self, pool_name: str, name: str, *, choices: Sequence[str], required: bool,
                     free_text: bool) -> Question:
        self.directory_generation += 1
        with self.atomic():
            pool = self.pool(pool_name, create=False)
            if Question.get_or_none((Question.pool == pool) & (Question.name == name)) is not None:
                raise StoreError(f"pool {pool_name} already has a question {name!r}")
            return Question.create(**bounded(Question, dict(
                pool=pool, name=name, choices=",".join(choices), required=required,
                free_text=free_text, created=self.now())))

    def questions(self, pool_name: str | None = None) -> list[Question]:
        with self.guard():
            query = Question.select(Question, Pool).join(Pool).order_by(Pool.name, Question.id)
            if pool_name:
                query = query.where(Pool.name == pool_name)
            return list(query)

    def remove_question(self, pool_name: str, name: str) -> int:
        self.directory_generation += 1
        with self.atomic():
            pool = self.pool(pool_name, create=False)
            return int(Question.delete().where((Question.pool == pool) & (Question.name == name))
                       .execute())

    # -- timers --------------------------------------------------------------

    def schedule(self, case: Case, kind: str, due: dt.datetime) -> Timer:
        return _create(Timer, case=case, kind=kind, due=_naive(due), created=self.now())

    def cancel_timers(self, case: Case, kinds: Sequence[str]) -> int:
        kinds = [str(getattr(k, "value", k)) for k in kinds]
        if not kinds:
            return 0
        cursor = self.db.execute_sql(_text(self.db, f"cancel_timers {len(kinds)}", (
            'UPDATE "timer" SET "status" = ? WHERE "case_id" = ? AND "status" = ? '
            f'AND "kind" IN ({", ".join(["?"] * len(kinds))})')), ["cancelled", _id(case), "pending", *kinds])
        return int(cursor.rowcount)

    def cancel_timers_later(self, case: Case, kinds: Sequence[str]) -> None:
        """:meth:`cancel_timers` without the count: on PostgreSQL sent with
        the transaction's next statement."""
        kinds = [str(getattr(k, "value", k)) for k in kinds]
        if kinds:
            _later(self.db, _text(self.db, f"cancel_timers {len(kinds)}", (
                'UPDATE "timer" SET "status" = ? WHERE "case_id" = ? AND "status" = ? '
                f'AND "kind" IN ({", ".join(["?"] * len(kinds))})')),
                   ["cancelled", _id(case), "pending", *kinds])

    def hurry_assign_retries(self, pool: Pool) -> int:
        """Make the pool's waiting assignment retries due now (a CSR has room)."""
        waiting = Case.select(Case.id).join(Mailbox).where(Mailbox.pool == pool)
        return int(Timer.update(due=self.now()).where(
            (Timer.kind == "assign_retry") & (Timer.status == "pending") & Timer.case.in_(waiting)
        ).execute())

    def timers(self, case: Case) -> list[Timer]:
        return list(Timer.select().where(Timer.case == case).order_by(Timer.due, Timer.id))

    def claim_timers(self, limit: int, lease_seconds: int, owner: str = "") -> list[Timer]:
        """Due timers, leased to ``owner`` so that another host skips them."""
        now = self.now()
        with self.atomic():
            query = (Timer.select(Timer.id)
                     .where((Timer.status == "pending") & (Timer.due <= now)
                            & (Timer.lease_until.is_null() | (Timer.lease_until < now)))
                     .order_by(Timer.due, Timer.id).limit(limit))
            if not self.is_sqlite:
                query = query.for_update(skip_locked=True)
            ids = [row.id for row in query]
            if not ids:
                return []
            Timer.update(lease_until=now + dt.timedelta(seconds=lease_seconds),
                         lease_owner=owner).where(Timer.id.in_(ids)).execute()
        with self.guard():
            return list(Timer.select().where(Timer.id.in_(ids)).order_by(Timer.due, Timer.id))

    def timer_done(self, timer: Timer, owner: str) -> bool:
        """Mark it fired, inside the caller's transaction; False if another
        host took it over (our lease ran out) or it was cancelled meanwhile."""
        return bool(Timer.update(status="done", fired=self.now(), lease_until=None,
                                 attempts=Timer.attempts + 1).where(
            (Timer.id == timer.id) & (Timer.status == "pending") & (Timer.lease_owner == owner)
        ).execute())

    def timer_failed(self, timer: Timer, error: str, delay_seconds: float) -> None:
        with self.atomic():
            Timer.update(attempts=Timer.attempts + 1, lease_until=None, last_error=error[:1000],
                         due=self.now() + dt.timedelta(seconds=delay_seconds)).where(
                Timer.id == timer.id).execute()

    # -- outbox ------------------------------------------------------------

    def enqueue(self, message: Message, *, mail_from: str, rcpt_to: Sequence[str]) -> Outbox:
        """An outgoing message, due now. Inside :meth:`atomic` with a hand-off
        set, leased to the hand-off's owner and handed over after the commit."""
        now = self.now()
        tx = self._tx
        handing = getattr(tx, "depth", 0) > 0 and tx.handing
        row = _create(
            Outbox,
            message=message,
            mail_from=mail_from,
            rcpt_to="\n".join(rcpt_to),  # a quoted local part may hold a comma
            status="pending",
            next_attempt=now,
            **({"lease_until": now + dt.timedelta(seconds=self.handoff_lease_seconds),
                "lease_owner": self.handoff_owner} if handing else {}),
        )
        if handing:
            tx.handed.append(row)
        return row

    def claim_outbox(self, limit: int, lease_seconds: int, owner: str = "") -> list[Outbox]:
        """Due outbox rows, leased to ``owner`` (host:pid) so other processes skip them.
        A row still leased to ``owner`` itself is free again: its worker claims
        only between batches, so that lease is left by a batch stopped early
        (the store failed mid-batch); it must not wait for the lease to run out."""
        now = self.now()
        lease = now + dt.timedelta(seconds=lease_seconds)
        free = Outbox.lease_until.is_null() | (Outbox.lease_until < now)
        if owner:
            free = free | (Outbox.lease_owner == owner)
        with self.atomic():
            query = (
                Outbox.select(Outbox.id)
                .where((Outbox.status == "pending") & (Outbox.next_attempt <= now) & free)
                .order_by(Outbox.id)
                .limit(limit)
            )
            if not self.is_sqlite:
                query = query.for_update(skip_locked=True)
            ids = [row.id for row in query]
            if not ids:
                return []
            Outbox.update(lease_until=lease, lease_owner=owner).where(Outbox.id.in_(ids)).execute()
        with self.guard():
            return list(
                Outbox.select(Outbox, Message).join(Message).where(Outbox.id.in_(ids)).order_by(Outbox.id)
            )

    def release_dead_leases(self, host: str, alive: Callable[[int], bool]) -> int:
        """Free rows leased by processes of ``host`` that are gone (a crash),
        so they are sent now rather than when the lease runs out."""
        freed = 0
        with self.atomic():
            rows = Outbox.select(Outbox.id, Outbox.lease_owner).where(
                (Outbox.status == "pending") & Outbox.lease_until.is_null(False)
                & Outbox.lease_owner.startswith(f"{host}:")
            )
            for row in rows:
                # host:pid, or host:pid:handed (rows handed over at their commit)
                pid = row.lease_owner[len(host) + 1:].partition(":")[0]
                if pid.isdigit() and not alive(int(pid)):
                    freed += Outbox.update(lease_until=None, lease_owner="").where(
                        Outbox.id == row.id).execute()
        return freed

    def release_outbox(self, ids: Sequence[int], owner: str) -> int:
        """Free rows of ``ids`` still leased to ``owner``: they go by claim."""
        with self.atomic():
            return int(Outbox.update(lease_until=None, lease_owner="").where(
                Outbox.id.in_(list(ids)) & (Outbox.lease_owner == owner)
                & (Outbox.status == "pending")).execute())

    def outbox_sent(self, item: Outbox) -> None:
        """Once per message sent: one statement, plain SQL, text made once.
        Outside a transaction it is its own (autocommit): committed, fsync
        included, when it returns, without BEGIN and COMMIT round trips."""
        if isinstance(self.db, SqliteFile):
            self.db.check_identity()
        with self.guard():
            self.db.execute_sql(_text(self.db, "outbox_sent", (
                'UPDATE "outbox" SET "status" = ?, "sent" = ?, "lease_until" = NULL, "last_error" = ? '
                'WHERE "id" = ?')), ["sent", Outbox.sent.db_value(self.now()), "", item.id])

    def outbox_retry(self, item: Outbox, error: str, delay_seconds: float,
                     at: dt.datetime | None = None) -> None:
        """Try again after ``delay_seconds``, or at ``at`` when given."""
        if at is None:
            when = self.now() + dt.timedelta(seconds=delay_seconds)
        else:  # a time of now()'s kind (naive UTC), or an aware one
            when = at if at.tzinfo is None else _naive(at)
        with self.atomic():
            Outbox.update(
                attempts=Outbox.attempts + 1,
                next_attempt=when,
                lease_until=None,
                last_error=error[:1000],
            ).where(Outbox.id == item.id).execute()

    def outbox_failed(self, item: Outbox, error: str) -> None:
        with self.atomic():
            Outbox.update(
                status="failed",
                attempts=Outbox.attempts + 1,
                lease_until=None,
                last_error=error[:1000],
            ).where(Outbox.id == item.id).execute()
            self.event(
                "send_failed",
                case=item.message.case,
                message=item.message,
                detail=error[:1000],
            )

    def next_outbox_due(self) -> dt.datetime | None:
        with self.guard():
            row = (
                Outbox.select(fn.MIN(Outbox.next_attempt).alias("due"))
                .where(Outbox.status == "pending")
                .first()
            )
            return aware(row.due) if row is not None and row.due is not None else None

    # -- intake: products and a mailbox's intake policy (issue 10) ---------------

    def add_product(self, name: str, *, mailbox: str = "", keywords: Sequence[str] = ()) -> Product:
        self.directory_generation += 1
        with self.atomic():
            if Product.get_or_none(Product.name == name) is not None:
                raise StoreError(f"a product {name!r} exists already (`casegate product set`)")
            self._check_product_mailbox(name, mailbox)
            return Product.create(**bounded(Product, dict(
                name=name, mailbox=mailbox, keywords=",".join(keywords), created=self.now())))

    def _check_product_mailbox(self, name: str, mailbox: str) -> None:
        if not mailbox:
            return
        if Mailbox.get_or_none(Mailbox.address == mailbox) is None:
            raise StoreError(f"{mailbox} is not a supervised address (`casegate mailbox list`)")
        other = Product.get_or_none((Product.mailbox == mailbox) & (Product.name != name))
        if other is not None:
            raise StoreError(f"{mailbox} is the mailbox of product {other.name!r} already: "
                             "one product per mailbox")

    def products(self) -> list[Product]:
        with self.guard():
            return list(Product.select().order_by(Product.name))

    def product_infos(self) -> tuple[ProductInfo, ...]:
        return tuple(ProductInfo(p.name, p.mailbox or "",
                                 tuple(k for k in (p.keywords or "").split(",") if k))
                     for p in Product.select().order_by(Product.name))

    def set_product(self, name: str, *, mailbox: str | None = None,
                    keywords: Sequence[str] | None = None, rename: str | None = None) -> Product:
        self.directory_generation += 1
        with self.atomic():
            product = Product.get_or_none(Product.name == name)
            if product is None:
                raise StoreError(f"no product named {name!r} (`casegate product list`)")
            if mailbox is not None:
                self._check_product_mailbox(name, mailbox)
                product.mailbox = mailbox
            if keywords is not None:
                product.keywords = ",".join(keywords)
            if rename is not None and rename != name:
                if Product.get_or_none(Product.name == rename) is not None:
                    raise StoreError(f"a product {rename!r} exists already")
                product.name = rename
            product.save()
            return product

    def remove_product(self, name: str) -> int:
        """Remove a product; its cases keep the name they were filed under."""
        self.directory_generation += 1
        with self.atomic():
            return Product.delete().where(Product.name == name).execute()

    def set_mailbox_intake(self, address: str, **changes: Any) -> Mailbox:
        """``subject_prefix`` and ``unknown_policy`` of a supervised address."""
        self.directory_generation += 1
        with self.atomic():
            row = Mailbox.get_or_none(Mailbox.address == address)
            if row is None:
                raise StoreError(f"{address} is not a supervised address (`casegate mailbox list`)")
            for key, value in bounded(Mailbox, changes).items():
                setattr(row, key, value)
            row.save(only=[getattr(Mailbox, key) for key in changes])
            return row

    def known_customer(self, mailbox: Mailbox, address: str) -> bool:
        """Has ``address`` written to this mailbox before (a case of theirs, or
        a case they take part in)?"""
        if not address:
            return False
        with self.guard():
            own = Case.select(Case.id).where((Case.mailbox == mailbox)
                                             & (Case.customer_address == address)).exists()
            return own or (Participant.select(Participant.id).join(Case)
                           .where((Case.mailbox == mailbox) & (Participant.address == address))
                           .exists())


def pool_info(pool: Pool, questions: Sequence[Question] | None = None) -> PoolInfo:
    """A pool as the rules see it (its questions read unless given)."""
    if questions is None:
        questions = list(Question.select().where(Question.pool == pool).order_by(Question.id))
    try:
        policy = ClosedPolicy.parse(pool.closed_policy)
    except ValueError:
        log.warning("pool %s: unknown closed-case policy %r, using reopen", pool.name, pool.closed_policy)
        policy = ClosedPolicy()
    return PoolInfo(name=pool.name, rule=pool.rule, escalation_notice=bool(pool.escalation_notice),
                    closed_policy=policy,
                    close_on_reply=bool(pool.close_on_reply),
                    remind_after=pool.remind_after or None, autoclose_after=pool.autoclose_after or None,
                    cc_participants=bool(getattr(pool, "cc_participants", True)),
                    max_participants=int(getattr(pool, "max_participants", 10) or 0),
                    acknowledge=bool(pool.acknowledge),
                    questions=tuple(QuestionInfo(q.name, tuple(c.strip() for c in q.choices.split(",")
                                                               if c.strip()),
                                                 bool(q.required), bool(q.free_text))
                                    for q in questions))


def _iso(value: dt.datetime | None) -> str | None:
    when = aware(value)
    return when.isoformat() if when is not None else None


def case_dict(case: Case) -> dict[str, Any]:
    """A case as plain values: the one shape the CLI, JSON and templates start from."""
    follow_up_of = None
    if case.follow_up_of_id is not None:
        row = Case.select(Case.number).where(Case.id == case.follow_up_of_id).first()
        follow_up_of = row.number if row is not None else None
    return {
        "number": case.number,
        "status": case.status,
        "customer": case.customer_address,
        "customer_name": case.customer_name,
        "assignee": case.assignee.address if case.assignee_id else None,
        "subject": case.subject,
        "mailbox": case.mailbox.address,
        "created": _iso(case.created),
        "updated": _iso(case.updated),
        "closed": _iso(case.closed),
        "follow_up_of": follow_up_of,
        "rating": case.rating,
        "rating_comment": case.rating_comment,
        "answers": json.loads(case.answers) if case.answers else {},
        "product": case.product or None,
    }


def parse_membership(spec: str) -> tuple[str, int, int]:
    """``billing``, ``billing:2`` or ``billing:1:3`` → (pool, level, priority)."""
    name, _, rest = spec.strip().partition(":")
    level_text, _, priority_text = rest.partition(":")
    try:
        level = int(level_text) if level_text else 1
        priority = int(priority_text) if priority_text else 1
    except ValueError:
        raise StoreError(f"{spec!r}: a pool is NAME[:LEVEL[:PRIORITY]], e.g. billing:1:2") from None
    if not name or level < 1 or priority < 1:
        raise StoreError(f"{spec!r}: a pool is NAME[:LEVEL[:PRIORITY]] with LEVEL and PRIORITY from 1")
    return name, level, priority


def away_now(away: Any, until: Any, now: dt.datetime) -> bool:
    """Away, and the absence (if it has an end) not over yet: an absence
    ends by itself when its time comes, with no timer."""
    if not away:
        return False
    end = aware(until)
    return end is None or end > now.replace(tzinfo=dt.UTC)
