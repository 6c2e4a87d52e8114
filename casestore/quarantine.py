"""The quarantine's queries: record a failed attempt, hold, list, release, drop.

Kept apart from ``casestore.store`` so the filter's failure path stays small:
it runs when something already went wrong, in a transaction of its own.
"""

from __future__ import annotations

from peewee import fn

from casestore.models import Quarantine
from casestore.store import Store, bounded


def record_failure(store: Store, *, key: str, queue_id: str, mail_from: str, rcpt_to: list[str],
                   client_addr: str, raw: bytes, error: str, hold_after: int) -> Quarantine:
    """Count one failed attempt (its own transaction); hold it at ``hold_after``."""
    now = store.now()
    with store.atomic():
        row = Quarantine.get_or_none(Quarantine.key == key)
        if row is None:
            row = Quarantine.create(**bounded(Quarantine, dict(
                key=key, queue_id=queue_id, mail_from=mail_from, rcpt_to="\n".join(rcpt_to),
                client_addr=client_addr, raw=raw, attempts=0, error="", status="failing",
                first_seen=now, last_seen=now)))
        row.attempts += 1
        values = bounded(Quarantine, {"error": error[:4000], "queue_id": queue_id or row.queue_id})
        row.error, row.queue_id = values["error"], values["queue_id"]
        row.last_seen = now
        if row.status == "failing" and row.attempts >= hold_after:
            row.status = "held"
        row.save()
    return row


def is_held(store: Store, key: str) -> bool:
    return Quarantine.select(Quarantine.id).where(
        (Quarantine.key == key) & (Quarantine.status == "held")).exists()


def forget(store: Store, key: str) -> None:
    """A delivery that went through after failing: nothing to keep."""
    Quarantine.delete().where((Quarantine.key == key) & (Quarantine.status == "failing")).execute()


def held(store: Store, *, all_statuses: bool = False) -> list[Quarantine]:
    with store.guard():
        query = Quarantine.select(Quarantine.id, Quarantine.key, Quarantine.queue_id,
                                  Quarantine.mail_from, Quarantine.rcpt_to, Quarantine.client_addr,
                                  Quarantine.attempts, Quarantine.error, Quarantine.status,
                                  Quarantine.first_seen, Quarantine.last_seen)
        if not all_statuses:
            query = query.where(Quarantine.status == "held")
        return list(query.order_by(Quarantine.id))


def get(store: Store, item_id: int) -> Quarantine | None:
    with store.guard():
        return Quarantine.get_or_none(Quarantine.id == item_id)


def set_status(store: Store, item: Quarantine, status: str) -> None:
    with store.atomic():
        Quarantine.update(status=status, last_seen=store.now()).where(
            Quarantine.id == item.id).execute()


def counts(store: Store) -> dict[str, int]:
    with store.guard():
        rows = (Quarantine.select(Quarantine.status, fn.COUNT(Quarantine.id))
                .group_by(Quarantine.status).tuples())
        return {status: int(n) for status, n in rows}
