"""Counting what an event sends to the database (the statement budgets of
tests/component/test_case_life.py and bench/engine_cpu.py)."""

from __future__ import annotations

from typing import Any


class Statements:
    """``count``: the statements run (each ``execute_sql``, and each write
    PostgreSQL sends with a later statement, ``defer_sql``); ``trips``: what
    went to the database driver, BEGIN and COMMIT included (on PostgreSQL a
    round trip each)."""

    def __init__(self, db: Any) -> None:
        self.db, self.count, self.trips = db, 0, 0
        self.original = db.execute_sql
        self.original_defer = getattr(db, "defer_sql", None)
        self.original_cursor = db.cursor

    def __enter__(self) -> Statements:
        def counting(sql, params=None, *a, **kw):
            self.count += 1
            return self.original(sql, params, *a, **kw)

        def counting_defer(sql, params):
            self.count += 1
            return self.original_defer(sql, params)

        counter = self

        class Cursor:
            def __init__(self, cursor) -> None:
                self._cursor = cursor

            def execute(self, *args, **kw):
                counter.trips += 1
                return self._cursor.execute(*args, **kw)

            def __getattr__(self, name):
                return getattr(self._cursor, name)

        self.db.execute_sql = counting
        if self.original_defer is not None:
            self.db.defer_sql = counting_defer
        self.db.cursor = lambda *a, **kw: Cursor(self.original_cursor(*a, **kw))
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("execute_sql", "defer_sql", "cursor"):
            self.db.__dict__.pop(name, None)
