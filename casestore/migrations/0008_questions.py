"""Closing questionnaires: questions per pool, answers on the case."""
from peewee import *


def up(migrator, db):
    class Pool(Model):
        class Meta:
            database = db
            table_name = 'pool'

    class Question(Model):
        pool = ForeignKeyField(Pool, on_delete='CASCADE')
        name = CharField(max_length=64)
        choices = TextField(default='')
        required = BooleanField(default=False)
        free_text = BooleanField(default=False)
        created = DateTimeField()
        class Meta:
            database = db
            table_name = 'question'
            indexes = ((('pool', 'name'), True),)
    db.create_tables([Question])
    migrator.migrate(migrator.add_column('support_case', 'answers', TextField(default='')))
