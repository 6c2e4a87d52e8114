"""Report facts (issue 11, §1: `casegate report` under a second on 100,000
cases): the time of our first answer kept on the case row, and covering
indexes for the report's passes over cases and reopenings.

* ``support_case.first_answer_at``: when the first message of kind ``reply``
  or ``solution`` (our answer to the customer) was stored for the case; NULL
  while none was. The executor sets it with that message (``Store.
  note_first_answer``); filled here from the existing messages.
* ``support_case(created, assignee_id, mailbox_id, product, first_answer_at)``:
  the cases opened in a period with everything the report groups them by and
  their first answer, from the index alone.
* ``support_case(status, closed, created, assignee_id, mailbox_id, product,
  rating, id)``: the cases closed in a period, and the open backlog, likewise
  (the id for their consultations; SQLite has it in every index anyway).
* ``event(kind, at, case_id)`` for reopenings only (``kind = 'status'``, detail
  ``closed -> …``): a partial index, so the report reads no other event.
"""
from peewee import *  # noqa: F403

# The reopening test exactly as casestore.reports writes it (literals, so the
# planner can match the partial index): peewee's startswith is LIKE on SQLite,
# ILIKE on PostgreSQL (where psycopg2 makes the %% one %).
REOPENED_SQLITE = "kind = 'status' AND detail LIKE 'closed -> %'"
REOPENED_PG = "kind = 'status' AND detail ILIKE 'closed -> %%'"


def up(migrator, db):
    migrator.migrate(
        migrator.add_column('support_case', 'first_answer_at', DateTimeField(null=True)),  # noqa: F405
    )
    db.execute_sql(
        "UPDATE support_case SET first_answer_at = (SELECT MIN(m.created) FROM message m"
        " WHERE m.case_id = support_case.id AND m.kind IN ('reply', 'solution'))"
        " WHERE EXISTS (SELECT 1 FROM message m WHERE m.case_id = support_case.id"
        " AND m.kind IN ('reply', 'solution'))")
    sqlite = isinstance(db, SqliteDatabase)  # noqa: F405
    db.execute_sql("CREATE INDEX IF NOT EXISTS support_case_report_opened ON support_case"
                   " (created, assignee_id, mailbox_id, product, first_answer_at)")
    db.execute_sql("CREATE INDEX IF NOT EXISTS support_case_report_status ON support_case"
                   " (status, closed, created, assignee_id, mailbox_id, product, rating, id)")
    db.execute_sql("CREATE INDEX IF NOT EXISTS event_reopened ON event (kind, at, case_id)"
                   f" WHERE {REOPENED_SQLITE if sqlite else REOPENED_PG}")
