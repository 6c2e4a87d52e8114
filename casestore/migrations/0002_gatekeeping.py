"""Gatekeeping: the blacklist, run-time settings, and DKIM results on messages."""
from peewee import *


def up(migrator, db):
    class BlacklistEntry(Model):
        pattern = CharField(max_length=320)
        subject = CharField(max_length=500, null=True)
        reason = CharField(max_length=500, default='')
        created = DateTimeField()
        created_by = CharField(max_length=320, default='')
        class Meta:
            database = db
            table_name = 'blacklist_entry'
            indexes = ((('pattern', 'subject'), True),)
    db.create_tables([BlacklistEntry])

    class Setting(Model):
        key = CharField(max_length=64, primary_key=True)
        value = CharField(max_length=500)
        class Meta:
            database = db
            table_name = 'setting'
    db.create_tables([Setting])

    migrator.migrate(
        migrator.add_column('message', 'dkim', CharField(max_length=500, default='')))
