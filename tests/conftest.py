"""Shared fixtures: real stores (a SQLite file, a PostgreSQL database)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

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


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    reason = pg_reason()
    if reason:
        pytest.skip(reason)
    name = f"casegate_t_{uuid.uuid4().hex[:10]}"
    admin = _pg_admin()
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = PG_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'casegate.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'casegate.db'}"
    return request.getfixturevalue("pg_url")
