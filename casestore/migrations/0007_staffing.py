"""Staffing: levels, priorities and absences of pool memberships, the pool's
fallback address for cases nobody could take, and the round robin's last pick."""
from peewee import *


def up(migrator, db):
    migrator.migrate(
        migrator.add_column('membership', 'level', IntegerField(default=1)),
        migrator.add_column('membership', 'priority', IntegerField(default=1)),
        migrator.add_column('membership', 'away', BooleanField(default=False)),
        migrator.add_column('membership', 'away_until', DateTimeField(null=True)),
        migrator.add_column('membership', 'deputy', CharField(max_length=320, default='')),
        migrator.add_column('pool', 'unassigned_notify', CharField(max_length=320, default='')),
        migrator.add_column('pool', 'last_assigned', IntegerField(null=True)),
        migrator.add_column('pool', 'escalation_notice', BooleanField(default=False)),
    )
