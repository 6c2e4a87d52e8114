"""Report days (issue 11, §1: `casegate report` under a second on 100,000
cases, the whole store included), SQLite only: the cases opened and the
cases closed indexed by their day first, as the report groups them
(``substr(created, 1, 10)``, the ``YYYY-MM-DD`` of the stored text), then by
the grouping key (assignee, mailbox, product) and the columns the report
reads:

* ``support_case_report_opened_day``: ``(substr(created, 1, 10), assignee_id,
  mailbox_id, product, created, first_answer_at)``;
* ``support_case_report_closed_day``: ``(status, substr(closed, 1, 10),
  assignee_id, mailbox_id, product, closed, created, rating)``.

So each pass is one statement over the whole period, grouped in the index's
order: no sort (SQLite sorted each day's cases by key, a statement per day).
The models cannot declare an expression index (``DATABASE_ONLY_INDEXES``).
PostgreSQL hashes those groups (one statement per pass already): nothing
there. Built from the rows already there: nothing else to fill in.
"""
from peewee import SqliteDatabase

# As casestore.reports writes the day (literals, so the planner matches them).
OPENED_DAY = "substr(created, 1, 10)"
CLOSED_DAY = "substr(closed, 1, 10)"


def up(migrator, db):
    if not isinstance(db, SqliteDatabase):
        return
    db.execute_sql("CREATE INDEX IF NOT EXISTS support_case_report_opened_day ON support_case"
                   f" ({OPENED_DAY}, assignee_id, mailbox_id, product, created, first_answer_at)")
    db.execute_sql("CREATE INDEX IF NOT EXISTS support_case_report_closed_day ON support_case"
                   f" (status, {CLOSED_DAY}, assignee_id, mailbox_id, product, closed, created, rating)")
