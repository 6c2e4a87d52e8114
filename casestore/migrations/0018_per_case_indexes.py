"""Two per-case lookups that read the whole store on SQLite (issue 12: the
cost of a reply and of a new case stays flat at 1,000,000 cases):

* ``event (case_id, kind, at)``: ``Store.notes`` (``case_id = ? AND kind =
  'note' ORDER BY at, id``, every forwarded reply) and the executor's
  "unassigned notified" check. Without statistics SQLite chose
  ``event_kind_at`` (kind only, already in ``at`` order) and read every note
  of every case.
* ``support_case (assignee_id, status)``: ``Store.open_load`` (each new
  case's assignment counts the pool's CSRs' open cases) then reads only open
  cases; with ``assignee_id`` alone it read every case a CSR ever had,
  closed ones included.

Numbered 0018: 0017 is taken on main (0017_report_keys).
"""
from peewee import *


def up(migrator, db):
    migrator.migrate(
        migrator.add_index('event', ('case_id', 'kind', 'at'), False),
        migrator.add_index('support_case', ('assignee_id', 'status'), False),
    )
