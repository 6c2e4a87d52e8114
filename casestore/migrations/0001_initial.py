"""Initial schema: pools, mailboxes, CSRs, cases, messages, attachments, events, deliveries, outbox."""
from peewee import *

def up(migrator, db):
    class Pool(Model):
        name = CharField(unique=True, max_length=64)
        rule = CharField(max_length=32, default='least_load')
        created = DateTimeField()
        class Meta:
            database = db
            table_name = 'pool'
    db.create_tables([Pool])

    class Mailbox(Model):
        address = CharField(unique=True, max_length=320)
        pool = ForeignKeyField(Pool, on_delete='RESTRICT')
        display_name = CharField(max_length=200, default='')
        created = DateTimeField()
        class Meta:
            database = db
            table_name = 'mailbox'
    db.create_tables([Mailbox])

    class Csr(Model):
        address = CharField(unique=True, max_length=320)
        name = CharField(max_length=200)
        signature = TextField(default='')
        available = BooleanField(default=True)
        created = DateTimeField()
        class Meta:
            database = db
            table_name = 'csr'
    db.create_tables([Csr])

    class Case(Model):
        number = CharField(unique=True, null=True, max_length=32)
        mailbox = ForeignKeyField(Mailbox, on_delete='RESTRICT')
        customer_address = CharField(index=True, max_length=320)
        customer_name = CharField(max_length=200, default='')
        subject = TextField(default='')
        status = CharField(index=True, max_length=16, default='open')
        assignee = ForeignKeyField(Csr, null=True, on_delete='SET NULL')
        created = DateTimeField()
        updated = DateTimeField()
        closed = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'support_case'
    db.create_tables([Case])

    class Message(Model):
        case = ForeignKeyField(Case, null=True, on_delete='CASCADE')
        direction = CharField(max_length=3)
        kind = CharField(max_length=16)
        sender = CharField(max_length=320, default='')
        recipients = TextField(default='')
        message_id = CharField(index=True, max_length=998, default='')
        in_reply_to = TextField(default='')
        subject = TextField(default='')
        text = TextField(default='')
        raw = BlobField()
        queue_id = CharField(max_length=32, default='')
        client_addr = CharField(max_length=64, default='')
        authenticated = CharField(max_length=200, default='')
        automatic = CharField(max_length=200, default='')
        created = DateTimeField()
        class Meta:
            database = db
            table_name = 'message'
    db.create_tables([Message])

    class Attachment(Model):
        message = ForeignKeyField(Message, on_delete='CASCADE')
        filename = CharField(default='')
        content_type = CharField(default='application/octet-stream')
        size = IntegerField()
        sha256 = CharField(max_length=64)
        data = BlobField()
        class Meta:
            database = db
            table_name = 'attachment'
    db.create_tables([Attachment])

    class Delivery(Model):
        key = CharField(unique=True, max_length=64)
        queue_id = CharField(max_length=32, default='')
        received = DateTimeField()
        outcome = CharField(max_length=32)
        message = ForeignKeyField(Message, null=True, on_delete='SET NULL')
        class Meta:
            database = db
            table_name = 'delivery'
    db.create_tables([Delivery])

    class Event(Model):
        case = ForeignKeyField(Case, null=True, on_delete='CASCADE')
        message = ForeignKeyField(Message, null=True, on_delete='SET NULL')
        at = DateTimeField(index=True)
        kind = CharField(max_length=32)
        actor = CharField(max_length=320, default='')
        detail = TextField(default='')
        class Meta:
            database = db
            table_name = 'event'
    db.create_tables([Event])

    class Membership(Model):
        csr = ForeignKeyField(Csr, on_delete='CASCADE')
        pool = ForeignKeyField(Pool, on_delete='CASCADE')
        class Meta:
            database = db
            table_name = 'membership'
            indexes = ((('csr', 'pool'), True),)
    db.create_tables([Membership])

    class Outbox(Model):
        message = ForeignKeyField(Message, on_delete='CASCADE')
        mail_from = CharField(max_length=320)
        rcpt_to = TextField()
        status = CharField(index=True, max_length=8, default='pending')
        attempts = IntegerField(default=0)
        next_attempt = DateTimeField(index=True)
        lease_until = DateTimeField(null=True)
        lease_owner = CharField(max_length=128, default='')
        last_error = TextField(default='')
        sent = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'outbox'
    db.create_tables([Outbox])

    class Participant(Model):
        case = ForeignKeyField(Case, on_delete='CASCADE')
        address = CharField(max_length=320)
        role = CharField(max_length=16, default='customer')
        class Meta:
            database = db
            table_name = 'participant'
            indexes = ((('case', 'address'), True),)
    db.create_tables([Participant])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('participant'))
    migrator.migrate(migrator.drop_table('outbox'))
    migrator.migrate(migrator.drop_table('membership'))
    migrator.migrate(migrator.drop_table('event'))
    migrator.migrate(migrator.drop_table('delivery'))
    migrator.migrate(migrator.drop_table('attachment'))
    migrator.migrate(migrator.drop_table('message'))
    migrator.migrate(migrator.drop_table('support_case'))
    migrator.migrate(migrator.drop_table('csr'))
    migrator.migrate(migrator.drop_table('mailbox'))
    migrator.migrate(migrator.drop_table('pool'))
