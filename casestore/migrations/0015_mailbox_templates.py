"""Templates per mailbox (issue 10): a supervised address's language,
acknowledgement and greeting; NULL in each means its pool's."""
from peewee import BooleanField, CharField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column('mailbox', 'language', CharField(max_length=8, null=True)),
        migrator.add_column('mailbox', 'acknowledge', BooleanField(null=True)),
        migrator.add_column('mailbox', 'greeting', CharField(max_length=200, null=True)),
    )
