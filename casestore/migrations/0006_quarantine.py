"""The quarantine: deliveries that failed to process again and again, kept whole."""
from peewee import *


def up(migrator, db):
    class Quarantine(Model):
        key = CharField(max_length=64, unique=True)
        queue_id = CharField(max_length=32, default='')
        mail_from = CharField(max_length=320, default='')
        rcpt_to = TextField(default='')
        client_addr = CharField(max_length=64, default='')
        raw = BlobField()
        attempts = IntegerField(default=0)
        error = TextField(default='')
        status = CharField(max_length=12, default='failing')
        first_seen = DateTimeField()
        last_seen = DateTimeField()
        class Meta:
            database = db
            table_name = 'quarantine'
            indexes = ((('status', 'last_seen'), False),)
    db.create_tables([Quarantine])
