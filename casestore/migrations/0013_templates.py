"""Templates: a pool's language, acknowledgement, greeting and text-only
choice; a CSR's footer (HTML and one inline image)."""
from peewee import BlobField, BooleanField, CharField, TextField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column('pool', 'language', CharField(max_length=8, default='en')),
        migrator.add_column('pool', 'acknowledge', BooleanField(default=True)),
        migrator.add_column('pool', 'greeting', CharField(max_length=200, default='')),
        migrator.add_column('pool', 'text_only', BooleanField(default=False)),
        migrator.add_column('csr', 'footer_html', TextField(default='')),
        migrator.add_column('csr', 'footer_image', BlobField(null=True)),
        migrator.add_column('csr', 'footer_image_type', CharField(max_length=100, default='')),
        migrator.add_column('csr', 'footer_image_name', CharField(max_length=200, default='')),
    )
