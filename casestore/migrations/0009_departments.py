"""Departments a CSR consults, and the consultations on cases."""
from peewee import *


def up(migrator, db):
    class Case(Model):
        class Meta:
            database = db
            table_name = 'support_case'

    class Department(Model):
        name = CharField(max_length=64, unique=True)
        address = CharField(max_length=320, unique=True)
        deadline = IntegerField(default=2 * 86400)
        created = DateTimeField()
        class Meta:
            database = db
            table_name = 'department'
    db.create_tables([Department])

    class Consultation(Model):
        case = ForeignKeyField(Case, on_delete='CASCADE')
        department = ForeignKeyField(Department, on_delete='CASCADE')
        question = TextField(default='')
        asked_by = CharField(max_length=320, default='')
        status = CharField(max_length=12, default='open')
        asked = DateTimeField()
        due = DateTimeField()
        answered = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'consultation'
            indexes = ((('status', 'due'), False),)
    db.create_tables([Consultation])
