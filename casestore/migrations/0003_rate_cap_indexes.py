"""Indexes for the rate caps' counts of acknowledgements (per recipient, per case)."""
from peewee import *


def up(migrator, db):
    migrator.migrate(
        migrator.add_index('message', ('kind', 'recipients', 'created'), False),
        migrator.add_index('message', ('case_id', 'kind', 'created'), False),
    )
