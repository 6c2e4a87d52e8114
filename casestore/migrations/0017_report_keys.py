"""Report keys (issue 11, §1: `casegate report` under a second on 100,000
cases, the whole store included): ``support_case(assignee_id, mailbox_id,
product, id)``, so the report reads every case's grouping key (its CSR, its
mailbox, its product) as one row per key with the case ids, from the index
alone and in its order (no sort). The report counts the customers' e-mails
by those keys without joining each message to its case. Built from the rows
already there: nothing else to fill in.
"""


def up(migrator, db):
    db.execute_sql("CREATE INDEX IF NOT EXISTS support_case_report_keys ON support_case"
                   " (assignee_id, mailbox_id, product, id)")
