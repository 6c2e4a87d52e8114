"""Finding cases: ``casegate case search``, ``case list``'s filters and
sorting, and ``case show``'s timeline.

Search goes through the database's full-text index (created by the
migration ``0011_search``), never a scan per query:

- SQLite: FTS5 tables ``case_fts`` (number, customer name and address,
  subject) and ``message_fts`` (messages' readable text; not the
  notifications to CSRs, which repeat the case's messages: 0021), tokenizer
  ``unicode61 remove_diacritics 2``, kept in step by triggers;
- PostgreSQL: stored generated ``search_tsv`` columns with GIN indexes
  (``simple`` configuration, accents folded with ``unaccent`` when the
  extension could be created).

The same words find the same cases on both. A query is split into words
(letters and digits; ``jones@firma.example.pl`` is the words ``jones``,
``firma``, ``example``, ``pl``); a case matches when every word starts a word
of its number, customer name, customer address or subject — or, with
``body``, of one of its messages. Case and accents do not matter
(``lucia`` finds Lucía). A case number (``CS0000123``, ``123``) finds that
case first. Results are newest first.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from peewee import JOIN, fn

from casestore.models import Case, Consultation, Csr, Mailbox, Pool
from casestore.store import Store, StoreError, _iso
from rules.vocab import OPEN_STATUSES

# Indexes that 0011_search creates outside the models (expression indexes on
# PostgreSQL), and the report's day indexes of 0019_report_days (expression
# indexes on SQLite): the schema check leaves them alone.
DATABASE_ONLY_INDEXES = frozenset({"support_case_search", "message_text_search",
                                   "support_case_report_opened_day", "support_case_report_closed_day"})
# ... and the stored tsvector columns on PostgreSQL, (table, column).
DATABASE_ONLY_COLUMNS = frozenset({("support_case", "search_tsv"), ("message", "search_tsv")})

SORTS = ("number", "created", "subject")
MAX_TERMS = 16
_WORD = re.compile(r"[^\W_]+")
_NUMBER = re.compile(r"^\s*([A-Za-z]{1,8})?0*(\d{1,12})\s*$")


class SearchError(StoreError):
    """A query or filter that cannot run (no words, an unknown CSR or pool): the message says why."""


# The letters the SQLite triggers fold before indexing (0011_search.FOLD).
FOLD = (("ł", "l"), ("Ł", "L"), ("đ", "d"), ("Đ", "D"), ("ø", "o"), ("Ø", "O"), ("ß", "ss"),
        ("æ", "ae"), ("Æ", "AE"), ("œ", "oe"), ("Œ", "OE"), ("ı", "i"))


def words(text: str) -> list[str]:
    """The query's words, as the index splits them (letters and digits),
    folded as the SQLite index is."""
    for a, b in FOLD:
        text = text.replace(a, b)
    return _WORD.findall(text)[:MAX_TERMS]


# -- rows ------------------------------------------------------------------------


_parent = Case.alias("parent")
_COLUMNS = (Case.id, Case.number, Case.status, Case.customer_address, Case.customer_name,
            Csr.address, Case.subject, Mailbox.address, Case.created, Case.updated, Case.closed,
            _parent.number, Case.rating, Case.rating_comment, Case.answers)
_PRODUCT = Case._meta.fields.get("product")  # a case's product, where this schema has one
if _PRODUCT is not None:
    _COLUMNS = (*_COLUMNS, _PRODUCT)


def _base_query() -> Any:
    return (Case.select(*_COLUMNS)
            .join(Mailbox, on=(Case.mailbox == Mailbox.id))
            .switch(Case).join(Csr, JOIN.LEFT_OUTER, on=(Case.assignee == Csr.id))
            .switch(Case).join(_parent, JOIN.LEFT_OUTER, on=(Case.follow_up_of == _parent.id)))


def _rows(query: Any, ids: list[int] | None = None) -> list[dict[str, Any]]:
    """The keys of ``casestore.store.case_dict``, from one joined query read
    as tuples (no query, and no model object, per case)."""
    out = []
    for row in query.tuples():
        (case_id, number, status, customer, name, assignee, subject, mailbox, created, updated,
         closed, parent, rating, comment, answers) = row[:15]
        out.append({
            "number": number, "status": status, "customer": customer, "customer_name": name,
            "assignee": assignee, "subject": subject, "mailbox": mailbox,
            "created": _iso(created), "updated": _iso(updated), "closed": _iso(closed),
            "follow_up_of": parent, "rating": rating, "rating_comment": comment,
            "answers": json.loads(answers) if answers else {},
        })
        if _PRODUCT is not None:
            out[-1]["product"] = row[15] or None
        if ids is not None:
            ids.append(case_id)
    return out


def rows_by_id(ids: Sequence[int]) -> list[dict[str, Any]]:
    """The cases with these ids, in the order given."""
    if not ids:
        return []
    ids_found: list[int] = []
    rows = _rows(_base_query().where(Case.id.in_(list(ids))), ids_found)
    found = dict(zip(ids_found, rows, strict=True))
    return [found[i] for i in ids if i in found]


# -- search ----------------------------------------------------------------------


def _number_hits(text: str) -> list[int]:
    m = _NUMBER.match(text)
    if not m:
        return []
    prefix, digits = m.group(1), int(m.group(2))
    q = Case.select(Case.id).where(Case.id == digits)
    if prefix:
        q = Case.select(Case.id).where((Case.id == digits) | (Case.number == text.strip().upper()))
    return [r.id for r in q]


def _sqlite_ids(store: Store, terms: Sequence[str], body: bool, limit: int) -> list[int]:
    query = " ".join(f'"{t}"*' for t in terms)
    db = store.db
    ids = [r[0] for r in db.execute_sql(
        "SELECT rowid FROM case_fts WHERE case_fts MATCH ? ORDER BY rowid DESC LIMIT ?",
        (query, limit))]
    if body:
        found: dict[int, None] = {}
        # Newest message first, streamed: stop at `limit` distinct cases.
        cursor = db.execute_sql(
            "SELECT m.case_id FROM message_fts f JOIN message m ON m.id = f.rowid "
            "WHERE message_fts MATCH ? AND m.case_id IS NOT NULL ORDER BY f.rowid DESC", (query,))
        for (case_id,) in cursor:
            found.setdefault(case_id)
            if len(found) >= limit:
                break
        cursor.close()
        ids = sorted(set(ids) | set(found), reverse=True)[:limit]
    return ids


def _pg_ids(store: Store, text: str, body: bool, limit: int) -> list[int]:
    db = store.db
    folded = db.execute_sql("SELECT public.casegate_fold(%s)", (text,)).fetchone()[0] or ""
    terms = folded.split()[:MAX_TERMS]
    if not terms:
        return []
    tsquery = " & ".join(f"{t}:*" for t in terms)  # letters and digits only: nothing to escape
    # The planner picks the GIN index for rare words and the newest rows
    # first (checking the stored vector) for common ones.
    ids = [r[0] for r in db.execute_sql(
        "SELECT id FROM support_case WHERE search_tsv @@ pg_catalog.to_tsquery('pg_catalog.simple', %s) "
        "ORDER BY id DESC LIMIT %s", (tsquery, limit))]
    if body:
        found: dict[int, None] = {}
        last = None
        while len(found) < limit:
            page = db.execute_sql(
                "SELECT id, case_id FROM message WHERE search_tsv @@ "
                "pg_catalog.to_tsquery('pg_catalog.simple', %s) AND case_id IS NOT NULL"
                + (" AND id < %s" if last is not None else "") + " ORDER BY id DESC LIMIT %s",
                (tsquery, *([last] if last is not None else []), limit * 4)).fetchall()
            for message_id, case_id in page:
                found.setdefault(case_id)
                last = message_id
            if len(page) < limit * 4:
                break
        ids = sorted(set(ids) | set(list(found)[:limit]), reverse=True)[:limit]
    return ids


def search(store: Store, text: str, *, body: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    """Cases whose number, customer or subject (and with ``body`` a message's
    text) hold every word of ``text``; a case number first, then newest first."""
    terms = words(text)
    if not terms:
        raise SearchError(f"nothing to search for in {text!r}: give a word, a name, an address "
                          "or a case number")
    limit = max(1, limit)
    gone = missing_triggers(store)
    if gone:
        raise SearchError(f"the search index of this store is incomplete ({', '.join(gone)} missing: a "
                          "migration rebuilt a table): run `casegate case reindex`")
    with store.guard():
        first = _number_hits(text)
        if store.is_sqlite:
            ids = _sqlite_ids(store, terms, body, limit)
        else:
            ids = _pg_ids(store, text, body, limit)
        ordered = list(dict.fromkeys([*first, *ids]))[:limit]
        return rows_by_id(ordered)


# -- case list -------------------------------------------------------------------


def product_field() -> Any:
    """Case's product field, when this schema has one (None before products exist)."""
    return Case._meta.fields.get("product")


def list_cases(store: Store, *, status: str | None = None, csr: str | None = None,
               pool: str | None = None, product: str | None = None, overdue: bool = False,
               since: dt.datetime | None = None, sort: str = "number", reverse: bool = False,
               limit: int | None = None) -> list[dict[str, Any]]:
    """Cases by the filters given, sorted; each filter runs in the database
    on an indexed column (status, assignee, mailbox, created)."""
    if sort not in SORTS:
        raise SearchError(f"unknown sort {sort!r}: use one of {', '.join(SORTS)}")
    with store.guard():
        q = _base_query()
        if status == "open":
            q = q.where(Case.status.in_(OPEN_STATUSES))
        elif status:
            q = q.where(Case.status == status)
        if csr is not None:
            if csr.lower() in ("none", "-"):
                q = q.where(Case.assignee.is_null())
            else:
                row = Csr.get_or_none(Csr.address == csr.lower())
                if row is None:
                    raise SearchError(f"no CSR {csr}; `casegate csr list` shows them")
                q = q.where(Case.assignee == row.id)
        if pool is not None:
            p = Pool.get_or_none(Pool.name == pool)
            if p is None:
                raise SearchError(f"no pool {pool}; `casegate pool list` shows them")
            q = q.where(Mailbox.pool == p.id)
        if product is not None:
            q = _product_filter(q, product)
        if overdue:
            q = q.where(Case.id.in_(Consultation.select(Consultation.case)
                                    .where(Consultation.status == "overdue")))
        if since is not None:
            q = q.where(Case.created >= since.replace(tzinfo=None))
        keys = {"number": [Case.id], "created": [Case.created, Case.id],
                "subject": [fn.LOWER(Case.subject), Case.id]}[sort]
        q = q.order_by(*[k.desc() if reverse else k.asc() for k in keys])
        if limit is not None:
            q = q.limit(max(0, limit))
        return _rows(q)


def _product_filter(q: Any, product: str) -> Any:
    """The hook for products (a ``product`` on Case, a plain column or a
    foreign key to a table with a ``name``); an error while there is none."""
    field = product_field()
    if field is None:
        raise SearchError("this store has no products yet: --product cannot filter")
    rel = getattr(field, "rel_model", None)
    if rel is None:
        return q.where(fn.LOWER(field) == product.lower())
    name = rel._meta.fields.get("name")
    target = rel.get_or_none(name == product) if name is not None else None
    if target is None:
        raise SearchError(f"no product {product}")
    return q.where(field == target.id)


# -- case show's timeline --------------------------------------------------------

_CONSULT = {"consulted", "consultation_answered", "consultation_overdue"}
_LINKS = {"follow_up_of", "follow_up_created"}


def timeline(store: Store, case: Case, history: dict[str, Any]) -> list[dict[str, Any]]:
    """Everything that happened to a case in time order, one kind of entry
    each: ``message`` (in or out), ``note``, ``status``, ``assignment``,
    ``consultation``, ``link`` (a follow-up case), ``event`` (the rest).
    Built from ``Store.case_history`` plus the follow-up cases' dates."""
    items: list[dict[str, Any]] = []
    for m in history["messages"]:
        items.append({"at": m["date"], "type": "message", "direction": m["direction"],
                      "kind": m["kind"], "actor": m["from"], "to": m["to"], "id": m["id"],
                      "subject": m["subject"], "text": m["text"], "order": 0})
    for e in history["events"]:
        kind = e["kind"]
        typ = ("note" if kind == "note" else "status" if kind == "status"
               else "assignment" if kind in ("assigned", "unassigned", "escalated")
               else "consultation" if kind in _CONSULT else "link" if kind in _LINKS else "event")
        items.append({"at": e["at"], "type": typ, "kind": kind, "actor": e["actor"],
                      "detail": e["detail"], "message": e["message"], "order": 1})
    with store.guard():
        follow = list(Case.select(Case.number, Case.created).where(Case.follow_up_of == case.id)
                      .order_by(Case.id))
    linked = {e.get("detail", "") for e in items if e["type"] == "link"}
    for f in follow:
        if not any(f.number in d for d in linked):
            items.append({"at": _iso(f.created), "type": "link", "kind": "follow_up",
                          "actor": "", "detail": f"follow-up case {f.number}", "number": f.number,
                          "order": 2})
    # One event's rows are written within the same second (the opened event
    # a moment before its message): to the second, messages come first.
    items.sort(key=lambda i: ((i["at"] or "")[:19], i["order"]))
    for i in items:
        del i["order"]
    return items


def timeline_lines(items: Iterable[dict[str, Any]]) -> list[str]:
    """The timeline for a terminal: one header line per entry, message and note text under it."""
    lines: list[str] = []
    for i in items:
        at = (i["at"] or "")[:19].replace("T", " ")
        if i["type"] == "message":
            arrow = "<<" if i["direction"] == "in" else ">>"
            lines.append(f"--- {at}  {arrow} message #{i['id']} {i['direction']} {i['kind']} "
                         f"from {i['actor'] or '-'} to {i['to'] or '-'}")
            if i["text"].strip():
                lines += ["    " + line for line in i["text"].rstrip().splitlines()]
        elif i["type"] == "note":
            lines.append(f"--- {at}  internal note by {i['actor'] or 'admin'}")
            lines += ["    " + line for line in i["detail"].rstrip().splitlines()]
        else:
            lines.append(f"  * {at}  {i['type']}: {i['kind']}"
                         + (f" ({i['actor']})" if i["actor"] else "")
                         + (f": {i['detail']}" if i["detail"] else ""))
    return lines



# -- keeping the SQLite index whole --------------------------------------------------

_TRIGGERS = ("case_fts_insert", "case_fts_delete", "case_fts_update",
             "message_fts_insert", "message_fts_delete", "message_fts_update")


def _migration(name: str = "0011_search") -> Any:
    import importlib

    return importlib.import_module(f"casestore.migrations.{name}")


def missing_triggers(store: Store) -> list[str]:
    """SQLite: the search triggers that are gone. peewee's SQLite migrator
    rebuilds a table for some changes (add_not_null, drop_column …) and the
    table's triggers go with it; the index would then silently fall behind."""
    if not store.is_sqlite:
        return []
    with store.guard():
        have = {r[0] for r in store.db.execute_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    return [t for t in _TRIGGERS if t not in have]


def repair_index(store: Store) -> bool:
    """After migrations: rebuild the index when a trigger went missing
    (True), else nothing (one query)."""
    if not missing_triggers(store):
        return False
    reindex(store)
    return True


def reindex(store: Store) -> dict[str, int]:
    """Rebuild the search index from the stored rows (SQLite: the triggers
    made again, the FTS tables emptied and filled; PostgreSQL: REINDEX of the
    GIN indexes, whose generated columns the database keeps itself)."""
    with store.atomic():
        if store.is_sqlite:
            m, now = _migration(), _migration("0021_lighter_writes")
            for sql in m.SQLITE[:-2]:  # tables and triggers (IF NOT EXISTS)
                store.db.execute_sql(sql)
            for sql in [*now.DROP_TRIGGERS, *now.TRIGGERS]:  # the message triggers as 0021 made them
                store.db.execute_sql(sql)
            store.db.execute_sql("INSERT INTO case_fts(case_fts) VALUES ('delete-all')")
            store.db.execute_sql("INSERT INTO message_fts(message_fts) VALUES ('delete-all')")
            store.db.execute_sql(m.SQLITE[-2])  # fill from the rows: the cases,
            store.db.execute_sql(now.FILL)  # the messages but notifications to CSRs
        else:
            store.db.execute_sql("REINDEX INDEX support_case_search")
            store.db.execute_sql("REINDEX INDEX message_text_search")
        cases = Case.select().count()
        messages = store.db.execute_sql("SELECT count(*) FROM message").fetchone()[0]
    return {"cases": cases, "messages": int(messages)}
