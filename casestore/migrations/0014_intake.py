"""Intake (issue 10, sections 4-6): inline files and their Content-ID, the
case's product, products, a mailbox's subject prefix and unknown-customer
policy, a pool's Cc of participants and their cap."""
from peewee import *


def up(migrator, db):
    class Product(Model):
        name = CharField(max_length=64, unique=True)
        mailbox = CharField(max_length=320, default='')
        keywords = TextField(default='')
        created = DateTimeField()
        class Meta:
            database = db
            table_name = 'product'
    db.create_tables([Product])
    migrator.migrate(
        migrator.add_column('attachment', 'inline', BooleanField(default=False)),
        migrator.add_column('attachment', 'content_id', CharField(max_length=255, default='')),
        migrator.add_column('support_case', 'product', CharField(max_length=64, default='')),
        migrator.add_column('mailbox', 'subject_prefix', CharField(max_length=200, default='')),
        migrator.add_column('mailbox', 'unknown_policy', CharField(max_length=8, default='open')),
        migrator.add_column('pool', 'cc_participants', BooleanField(default=True)),
        migrator.add_column('pool', 'max_participants', IntegerField(default=10)),
    )
