"""Two indexes on ``message`` that no query reads any more (issue 12).

Every message stored, in or out, paid a B-tree update and a written page
for each at every commit (``bench/wal_frames.py --by-table``: 2.8 to 3.5 of
the 39 to 62 pages a lone reply or new case writes on SQLite, each).

==================================  ==========================================
dropped                             why nothing needs it
==================================  ==========================================
message_kind_recipients_created     the first rate caps counted by the exact
                                    recipient string; since 0005 they count
                                    ``rcpt_key`` and ``rcpt_domain``
message_rcpt_key_created            the count per mailbox is answered with
                                    the count per domain, in one query, from
                                    the covering index of 0018
                                    (rcpt_domain, created, direction, kind,
                                    rcpt_key)
==================================  ==========================================
"""

UNUSED = ("message_kind_recipients_created", "message_rcpt_key_created")


def up(migrator, db):
    for index in UNUSED:
        db.execute_sql(f'DROP INDEX IF EXISTS "{index}"')
