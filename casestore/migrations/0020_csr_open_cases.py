"""``support_case (assignee_id, status)`` for ``Store.open_load`` (issue 12:
the cost of a new case stays flat at 1,000,000 cases). Each new case's
assignment counts the pool's CSRs' open cases; through ``case_assignee_id``
SQLite (no planner statistics) read every case a CSR ever had, closed ones
included, so the count grew with the store. With the status in the index it
reads the CSR's open cases from the index alone.

(Branch million first also indexed ``event (case_id, kind, at)`` for
``Store.notes``; main's notes query (``kind || ''``, branch cpu) already reads
only the case's events, so that index was left out. Numbered 0020: main has
0017-0019.)
"""
from peewee import *  # noqa: F403


def up(migrator, db):
    migrator.migrate(
        migrator.add_index('support_case', ('assignee_id', 'status'), False),
    )
