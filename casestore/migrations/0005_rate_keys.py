"""Rate caps per canonical mailbox and per domain: victim+1@, victim+2@ … are one recipient."""
from peewee import *


def up(migrator, db):
    migrator.migrate(
        migrator.add_column('message', 'rcpt_key', CharField(max_length=320, default='')),
        migrator.add_column('message', 'rcpt_domain', CharField(max_length=255, default='')),
        migrator.add_index('message', ('rcpt_key', 'created'), False),
        migrator.add_index('message', ('rcpt_domain', 'created'), False),
    )
