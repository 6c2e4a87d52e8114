"""Reports: a pool's resolution target, and the indexes the report's queries use."""
from peewee import *


def up(migrator, db):
    migrator.migrate(
        # Seconds a case of the pool may take from opening to closing; NULL: no target.
        migrator.add_column('pool', 'resolve_within', IntegerField(null=True)),
        migrator.add_index('support_case', ('closed',), False),
        migrator.add_index('message', ('kind', 'created', 'case_id'), False),
        migrator.add_index('event', ('kind', 'at'), False),
        migrator.add_index('consultation', ('asked',), False),
    )
