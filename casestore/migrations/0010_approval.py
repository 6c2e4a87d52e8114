"""Approval for new CSRs: who needs it, their supervisor, the held drafts."""
from peewee import *


def up(migrator, db):
    class Case(Model):
        class Meta:
            database = db
            table_name = 'support_case'

    class Draft(Model):
        case = ForeignKeyField(Case, on_delete='CASCADE')
        csr = CharField(max_length=320)
        supervisor = CharField(max_length=320, default='')
        commands = TextField(default='')
        text = TextField(default='')
        status = CharField(max_length=12, default='pending')
        created = DateTimeField()
        decided = DateTimeField(null=True)
        decided_by = CharField(max_length=320, default='')
        class Meta:
            database = db
            table_name = 'draft'
            indexes = ((('status',), False),)
    db.create_tables([Draft])
    migrator.migrate(
        migrator.add_column('csr', 'needs_approval', BooleanField(default=False)),
        migrator.add_column('csr', 'supervisor', CharField(max_length=320, default='')),
    )
