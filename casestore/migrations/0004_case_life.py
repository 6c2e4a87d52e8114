"""A case's life: statuses by name, pool policies, follow-ups, ratings, timers."""
from peewee import *


def up(migrator, db):
    class Case(Model):
        class Meta:
            database = db
            table_name = 'support_case'

    class Timer(Model):
        case = ForeignKeyField(Case, on_delete='CASCADE')
        kind = CharField(max_length=32)
        due = DateTimeField()
        status = CharField(max_length=12, default='pending')
        attempts = IntegerField(default=0)
        lease_until = DateTimeField(null=True)
        lease_owner = CharField(max_length=128, default='')
        created = DateTimeField()
        fired = DateTimeField(null=True)
        last_error = TextField(default='')
        class Meta:
            database = db
            table_name = 'timer'
            indexes = ((('status', 'due'), False), (('case', 'kind', 'status'), False))
    db.create_tables([Timer])
    if not isinstance(db, SqliteDatabase):
        # SQLite ignores lengths; PostgreSQL needs room for "solution_proposed".
        db.execute_sql('ALTER TABLE support_case ALTER COLUMN status TYPE VARCHAR(32)')
    migrator.migrate(
        migrator.add_column('pool', 'closed_policy', CharField(max_length=32, default='reopen')),
        migrator.add_column('pool', 'close_on_reply', BooleanField(default=False)),
        migrator.add_column('pool', 'remind_after', IntegerField(null=True, default=3 * 86400)),
        migrator.add_column('pool', 'autoclose_after', IntegerField(null=True, default=14 * 86400)),
        migrator.add_column('support_case', 'follow_up_of_id', IntegerField(null=True)),
        migrator.add_column('support_case', 'rating', IntegerField(null=True)),
        migrator.add_column('support_case', 'rating_comment', TextField(default='')),
        migrator.add_index('support_case', ('follow_up_of_id',), False),
    )
    # "open" split into its named statuses: answered by a CSR or not yet.
    db.execute_sql(
        "UPDATE support_case SET status = 'in_progress' WHERE status = 'open' AND id IN "
        "(SELECT case_id FROM message WHERE direction = 'in' AND kind = 'csr')")
    db.execute_sql("UPDATE support_case SET status = 'received' WHERE status = 'open'")
