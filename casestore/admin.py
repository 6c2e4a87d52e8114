"""Showing, changing and removing what an admin defines (mailboxes, pools,
CSRs, departments, questions, blacklist entries, limits), with safe
semantics: nothing removed takes cases or history with it.

- A mailbox with cases is not removed unless its cases move to another
  supervised address (``move_cases_to``); they keep their numbers and history.
- A pool is not removed while a mailbox uses it.
- A CSR with open cases hands them over first (``Engine``: to a named CSR, or
  by the pool's assignment rule); their closed cases keep their history
  (the events name them) but no longer an assignee.

Every function raises :class:`AdminError` (a StoreError: the CLI prints it
and exits 1) for an unknown name or a refused removal.
"""

from __future__ import annotations

from typing import Any

from peewee import fn

from casestore.models import (
    BlacklistEntry,
    Case,
    Csr,
    Event,
    Mailbox,
    Membership,
    Pool,
    Question,
    Setting,
)
from casestore.store import Store, StoreError, _iso
from rules import defaults
from rules.vocab import OPEN_STATUSES


class AdminError(StoreError):
    """An unknown name or a refused change; the message says what to do."""


def _changed(store: Store) -> None:
    store.directory_generation += 1


# -- mailboxes -----------------------------------------------------------------------


def get_mailbox(store: Store, address: str) -> Mailbox:
    row = (Mailbox.select(Mailbox, Pool).join(Pool).where(Mailbox.address == address).first())
    if row is None:
        raise AdminError(f"{address} is not a supervised address; `casegate mailbox list` shows them")
    return row


def mailbox_info(store: Store, address: str) -> dict[str, Any]:
    with store.guard():
        m = get_mailbox(store, address)
        counts = dict(Case.select(Case.status, fn.COUNT(Case.id)).where(Case.mailbox == m.id)
                      .group_by(Case.status).tuples())
    row = {"address": m.address, "pool": m.pool.name, "name": m.display_name,
           "created": _iso(m.created)}
    # intake's policies; the mailbox's own language, acknowledgement and
    # greeting (None: its pool's), where the schema has them
    for extra in ("subject_prefix", "unknown_policy", "language", "acknowledge", "greeting"):
        if extra in Mailbox._meta.fields:
            row[extra] = getattr(m, extra)
    row["cases"] = sum(counts.values())
    row["open_cases"] = sum(v for k, v in counts.items() if k in OPEN_STATUSES)
    return row


def set_mailbox(store: Store, address: str, *, pool: str | None = None,
                display_name: str | None = None) -> Mailbox:
    """Move a mailbox to another pool (made when new, as ``mailbox add``
    does) or rename its sender name. Open cases keep their CSR."""
    _changed(store)
    with store.atomic():
        m = get_mailbox(store, address)
        if pool is not None:
            m.pool = store.pool(pool)
        if display_name is not None:
            m.display_name = display_name
        m.save()
        return m


def remove_mailbox(store: Store, address: str, *, move_cases_to: str | None = None) -> int:
    """Stop supervising ``address``. Its cases stay: refused while it has any,
    unless they move to the supervised address ``move_cases_to`` (each gets an
    event saying so). Returns how many cases moved."""
    _changed(store)
    with store.atomic():
        m = get_mailbox(store, address)
        count = Case.select().where(Case.mailbox == m.id).count()
        moved = 0
        if count:
            if move_cases_to is None:
                raise AdminError(
                    f"{address} has {count} case(s): they are kept, so it stays supervised; give "
                    f"--move-cases-to ADDRESS (another supervised address) to move them there first")
            if move_cases_to == address:
                raise AdminError("--move-cases-to must name another supervised address")
            target = get_mailbox(store, move_cases_to)
            ids = [c.id for c in Case.select(Case.id).where(Case.mailbox == m.id)]
            moved = Case.update(mailbox=target.id).where(Case.mailbox == m.id).execute()
            now = store.now()
            for chunk in range(0, len(ids), 500):
                Event.insert_many([{"case": i, "at": now, "kind": "mailbox_moved", "actor": "admin",
                                    "detail": f"{address} -> {move_cases_to} ({address} removed)"}
                                   for i in ids[chunk:chunk + 500]]).execute()
        m.delete_instance()
        return int(moved)


# -- pools -----------------------------------------------------------------------------


def get_pool(name: str) -> Pool:
    row = Pool.get_or_none(Pool.name == name)
    if row is None:
        raise AdminError(f"no pool named {name!r}; `casegate pool list` shows them")
    return row


def pool_info(store: Store, name: str) -> dict[str, Any]:
    with store.guard():
        p = get_pool(name)
        members = (Membership.select(Membership, Csr).join(Csr).where(Membership.pool == p.id)
                   .order_by(Membership.priority, Csr.address))
        open_cases = (Case.select().join(Mailbox).where((Mailbox.pool == p.id)
                                                        & Case.status.in_(OPEN_STATUSES)).count())
        return {
            "mailboxes": [m.address for m in Mailbox.select(Mailbox.address)
                          .where(Mailbox.pool == p.id).order_by(Mailbox.address)],
            "members": [{"address": m.csr.address, "name": m.csr.name, "level": m.level,
                         "priority": m.priority, "away": bool(m.away)} for m in members],
            "questions": [q.name for q in Question.select(Question.name)
                          .where(Question.pool == p.id).order_by(Question.id)],
            "open_cases": open_cases,
        }


def remove_pool(store: Store, name: str) -> None:
    """Remove a pool no mailbox uses (its memberships and questions go with it)."""
    _changed(store)
    with store.atomic():
        p = get_pool(name)
        used = [m.address for m in Mailbox.select(Mailbox.address).where(Mailbox.pool == p.id)]
        if used:
            raise AdminError(f"pool {name} serves {', '.join(used)}: move them to another pool first "
                             f"(`casegate mailbox set ADDRESS --pool OTHER`)")
        p.delete_instance(recursive=True)


# -- CSRs ------------------------------------------------------------------------------


def get_csr(address: str) -> Csr:
    row = Csr.get_or_none(Csr.address == address)
    if row is None:
        raise AdminError(f"no CSR {address}; `casegate csr list` shows them")
    return row


def open_cases_of(store: Store, address: str) -> list[str]:
    with store.guard():
        csr = get_csr(address)
        return [c.number for c in Case.select(Case.number).where(
            (Case.assignee == csr.id) & Case.status.in_(OPEN_STATUSES)).order_by(Case.id)]


def csr_cases(store: Store, address: str) -> dict[str, int]:
    with store.guard():
        csr = get_csr(address)
        counts = dict(Case.select(Case.status, fn.COUNT(Case.id)).where(Case.assignee == csr.id)
                      .group_by(Case.status).tuples())
    return {"open_cases": sum(v for k, v in counts.items() if k in OPEN_STATUSES),
            "closed_cases": counts.get("closed", 0)}


def release_cases(store: Store, address: str) -> list[str]:
    """Hand a leaving CSR's open cases back to their pools: the CSR is taken
    out of every pool (so no rule picks them again), each case loses its
    assignee (event ``unassigned``) and gets an assignment retry due now, which
    the engine's scheduler fires by the pool's rule (``Engine.run_due_timers``),
    exactly as for a case that found nobody at first."""
    _changed(store)
    with store.atomic():
        csr = get_csr(address)
        Membership.delete().where(Membership.csr == csr.id).execute()
        cases = list(Case.select().where((Case.assignee == csr.id) & Case.status.in_(OPEN_STATUSES))
                     .order_by(Case.id))
        for case in cases:
            store.touch(case, assignee=None)
            store.event("unassigned", case=case, actor="admin",
                        detail=f"{address} removed: handed back to the pool's rule")
            store.cancel_timers(case, ["assign_retry"])
            store.schedule(case, "assign_retry", store.clock())
        return [c.number for c in cases]


def remove_csr(store: Store, address: str) -> None:
    """Delete a CSR with no open case (call after their cases moved)."""
    _changed(store)
    with store.atomic():
        csr = get_csr(address)
        left = Case.select().where((Case.assignee == csr.id) & Case.status.in_(OPEN_STATUSES)).count()
        if left:
            raise AdminError(f"{address} still has {left} open case(s)")
        Membership.delete().where(Membership.csr == csr.id).execute()
        # Closed cases keep their events (which name the CSR); their assignee becomes NULL.
        Case.update(assignee=None).where(Case.assignee == csr.id).execute()
        csr.delete_instance()


# -- questions, blacklist, limits ---------------------------------------------------------


def get_question(pool_name: str, name: str) -> Question:
    p = get_pool(pool_name)
    q = Question.get_or_none((Question.pool == p.id) & (Question.name == name))
    if q is None:
        raise AdminError(f"pool {pool_name} has no question {name!r}; "
                         "`casegate question list` shows them")
    q.pool = p
    return q


def question_row(q: Question) -> dict[str, Any]:
    return {"pool": q.pool.name, "name": q.name,
            "choices": [c for c in q.choices.split(",") if c], "required": bool(q.required),
            "free_text": bool(q.free_text), "created": _iso(q.created)}


def set_question(store: Store, pool_name: str, name: str, **changes: Any) -> Question:
    _changed(store)
    with store.atomic():
        q = get_question(pool_name, name)
        for key, value in changes.items():
            setattr(q, key, value)
        q.save(only=[getattr(Question, k) for k in changes])
        return q


def blacklist_entries(store: Store, pattern: str) -> list[BlacklistEntry]:
    with store.guard():
        return list(BlacklistEntry.select().where(BlacklistEntry.pattern == pattern)
                    .order_by(BlacklistEntry.id))


LIMIT_OPTIONS = {"per-recipient": "autoreply_per_recipient", "per-domain": "autoreply_per_domain",
                 "per-case": "autoreply_per_case", "window-hours": "autoreply_window_hours"}


def reset_limits(store: Store, keys: list[str]) -> dict[str, int]:
    """Back to the defaults (the stored values deleted); returns the defaults now in force."""
    with store.atomic():
        Setting.delete().where(Setting.key.in_(keys)).execute()
    return {k: defaults.LIMIT_DEFAULTS[k] for k in keys}
