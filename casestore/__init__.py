"""casegate's case store: peewee models, transactions and the outbox."""
