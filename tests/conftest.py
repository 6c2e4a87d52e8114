"""Shared fixtures: real stores (a SQLite file, a PostgreSQL database).

``store_url``, ``sqlite_url`` and ``pg_url`` give a store already migrated to
the newest schema: a copy of a template migrated once per test session (a
file copy for SQLite, ``CREATE DATABASE … TEMPLATE`` for PostgreSQL), because
running the sixteen migrations for every test cost more than a second each.
``store.migrate()`` on them applies nothing. A test about migrating or about
``casegate init`` on a new store asks for ``empty_store_url``,
``empty_sqlite_url`` or ``empty_pg_url`` instead: nothing there yet.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Postfix harness fixtures (make_postfix, make_sink, …), registered for every test.
pytest_plugins = ["tests.support.fixtures"]

PG_DSN = os.environ.get("CASEGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_admin():
    import psycopg2

    conn = psycopg2.connect(PG_DSN, connect_timeout=3)
    conn.autocommit = True
    return conn


def pg_reason() -> str | None:
    """None when the PostgreSQL server answers, else why not."""
    try:
        _pg_admin().close()
    except Exception as exc:
        return f"no PostgreSQL at {PG_DSN}: {exc}".strip()
    return None


def _pg_url(name: str) -> str:
    return f"{PG_DSN.rsplit('/', 1)[0]}/{name}"


class _PgDatabases:
    """Test databases of this session: made on demand, dropped by a thread.

    DROP DATABASE waits for a checkpoint (0.1–3 s on this machine), so the
    test does not wait for it: the name goes on a queue that one thread
    drains, and the session's end waits until every database is gone."""

    def __init__(self) -> None:
        self.admin = _pg_admin()
        self.lock = threading.Lock()
        self.template: str | None = None
        self.doomed: queue.Queue[str | None] = queue.Queue()
        self.dropper = threading.Thread(target=self._drop_all, name="pg-drop", daemon=True)
        self.dropper.start()

    def _execute(self, sql: str) -> None:
        with self.lock, self.admin.cursor() as cur:
            cur.execute(sql)

    def _drop_all(self) -> None:
        conn = _pg_admin()
        try:
            while (name := self.doomed.get()) is not None:
                try:
                    with conn.cursor() as cur:
                        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except Exception as exc:  # pragma: no cover - shows in the output, never hides a test
                    print(f"conftest: could not drop test database {name}: {exc}")
        finally:
            conn.close()

    def new(self, *, migrated: bool) -> str:
        name = f"casegate_t_{uuid.uuid4().hex[:10]}"
        if migrated:
            self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template()}" STRATEGY WAL_LOG')
        else:
            self._execute(f'CREATE DATABASE "{name}"')
        return name

    def _template(self) -> str:
        if self.template is None:
            from casestore.store import Store

            name = f"casegate_tpl_{uuid.uuid4().hex[:10]}"
            self._execute(f'CREATE DATABASE "{name}"')
            store = Store(_pg_url(name))
            try:
                store.migrate()
            finally:
                store.close()  # a template must have no connection when it is copied
            self.template = name
        return self.template

    def drop(self, name: str) -> None:
        self.doomed.put(name)

    def close(self) -> None:
        if self.template is not None:
            self.doomed.put(self.template)
        self.doomed.put(None)
        self.dropper.join()
        self.admin.close()


@pytest.fixture(scope="session")
def _pg_databases() -> Iterator[_PgDatabases | str]:
    """The session's database maker, or why there is no PostgreSQL."""
    reason = pg_reason()
    if reason:
        yield reason
        return
    databases = _PgDatabases()
    try:
        yield databases
    finally:
        databases.close()


def _pg_database(databases: _PgDatabases | str, *, migrated: bool) -> Iterator[str]:
    if isinstance(databases, str):
        pytest.skip(databases)
    name = databases.new(migrated=migrated)
    try:
        yield _pg_url(name)
    finally:
        databases.drop(name)


@pytest.fixture
def pg_url(_pg_databases) -> Iterator[str]:
    """A PostgreSQL database of its own for one test, migrated, dropped afterwards."""
    yield from _pg_database(_pg_databases, migrated=True)


@pytest.fixture
def empty_pg_url(_pg_databases) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    yield from _pg_database(_pg_databases, migrated=False)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> Path:
    from casestore.store import Store

    path = tmp_path_factory.mktemp("template") / "casegate.db"
    store = Store(f"sqlite:///{path}")
    try:
        store.migrate()
    finally:
        store.close()  # the last connection checkpoints the WAL into the file
    assert not path.with_name(path.name + "-wal").exists() or not path.with_name(
        path.name + "-wal").stat().st_size, "the template's WAL was not checkpointed"
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    """A migrated SQLite file of its own (mode 0600, like ``casegate init`` makes)."""
    path = tmp_path / "casegate.db"
    shutil.copyfile(_sqlite_template, path)
    path.chmod(0o600)
    return f"sqlite:///{path}"


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    """Where a new SQLite store will be: no file yet."""
    return f"sqlite:///{tmp_path / 'casegate.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request) -> str:
    """Each test twice: on a migrated SQLite file and a migrated PostgreSQL database."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_store_url(request) -> str:
    """Each test twice: on a new SQLite file and a new PostgreSQL database, both empty."""
    return request.getfixturevalue("empty_sqlite_url" if request.param == "sqlite" else "empty_pg_url")

