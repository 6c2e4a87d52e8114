"""Migrations on real databases: they build exactly the models' schema, are
idempotent, and an old store is refused with a message that says what to do."""

from __future__ import annotations

import pytest
from playhouse.migrations import Runner
from playhouse.schema_diff import diff_models

from casestore.models import MODELS
from casestore.store import HISTORY_TABLE, MIGRATIONS, Store, StoreError


def test_migrations_build_the_models_schema(store_url: str) -> None:
    store = Store(store_url)
    assert store.migrate() == ["0001_initial", "0002_gatekeeping", "0003_rate_cap_indexes"]
    assert store.migrate() == []
    assert not diff_models(store.db, list(MODELS)), diff_models(store.db, list(MODELS))
    store.check_schema()
    store.close()


def test_an_old_store_is_refused_with_what_to_do(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    Runner(store.db, str(MIGRATIONS), table_name=HISTORY_TABLE).up("0001_initial")
    with pytest.raises(StoreError, match=r"needs migrations \(0002_gatekeeping, 0003.*casegate init"):
        store.check_schema()
    assert store.migrate() == ["0002_gatekeeping", "0003_rate_cap_indexes"]
    store.check_schema()


def test_a_missing_store_is_refused(sqlite_url: str) -> None:
    with pytest.raises(StoreError, match="casegate init"):
        Store(sqlite_url).check_schema()


def test_bad_urls_say_what_to_use() -> None:
    for url, hint in (("mysql://x/y", "sqlite:///"), ("sqlite://", "sqlite:///"),
                      ("postgresql://host", "postgresql://host/dbname")):
        with pytest.raises(StoreError, match=hint):
            Store(url)
