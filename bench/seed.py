"""Fill a case store with many realistic cases, fast: for benchmarks of
search, reports and the mail path on a large store.

    .venv/bin/python bench/seed.py --store sqlite:////tmp/big.db --cases 100000
    .venv/bin/python bench/seed.py --store postgresql://postgres@127.0.0.1:5432/big \\
        --cases 1000000 --messages-per-case 2

From Python (the public function; its signature stays as it is)::

    from seed import seed          # with bench/ on sys.path
    figures = seed(url, cases=100_000, messages_per_case=3, pools=3, csrs=12, days=90, seed=1)

The store is migrated first (``Store.migrate``, as ``casegate init``), then
gets ``pools`` pools with one supervised mailbox each
(``support1@example.com`` …), ``csrs`` CSRs spread over the pools
(``csr1@example.com`` …), and ``cases`` cases with what the engine writes
for them: the case row (number from the id, prefix ``CS``), the customer as
participant, ``messages_per_case`` messages (the customer's first mail, then
the CSR's replies and the customer's answers in turn, raw bytes included;
the first reply's time also on the case row as ``first_answer_at``),
and the events (opened, assigned, status changes, notes now and then,
closed). Statuses are mixed (about half closed, with ``closed`` set), dates
spread over the last ``days`` days, customer names and subjects drawn from
small word lists, bodies of 200-1,500 characters. The same ``seed`` gives
the same store. Seeding into a store that already holds cases appends after
them.

Rows go in by bulk: ``executemany`` in transactions of ``batch`` cases on
SQLite, ``COPY`` on PostgreSQL (a million cases in minutes). Columns the
seeder does not know (added by later migrations) get their model default, so
the script keeps working as the schema grows.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from casestore import models  # noqa: E402
from casestore.store import Store  # noqa: E402

FIRST = ("Anna", "Piotr", "Maria", "John", "Ewa", "Tomasz", "Zoë", "Łukasz", "Sarah", "Ahmed",
         "Chen", "Olga", "Marek", "Lucía", "Hans", "Fatima", "Kenji", "Ines", "Paul", "Agnieszka")
LAST = ("Kowalski", "Nowak", "Smith", "Müller", "García", "Wiśniewska", "Dubois", "Rossi",
        "Jones", "Kim", "Novák", "Andersson", "O'Brien", "Silva", "Lewandowski", "Brown", "Żak",
        "Tanaka", "Schmidt", "Jankowska")
DOMAINS = ("customer.test", "mail.example.net", "firma.example.pl", "shop.example.org",
           "gmail.example.com", "corp.example.de")
PRODUCTS = ("router", "modem", "invoice", "subscription", "password", "delivery", "refund",
            "account", "printer", "firmware", "licence", "warranty", "app", "dashboard")
PROBLEMS = ("not working", "question about", "cannot log in to", "broken", "slow",
            "error with", "refund for", "missing", "upgrade of", "cancel my", "help with",
            "wrong charge on")
WORDS = ("the", "my", "it", "since", "yesterday", "again", "please", "help", "error", "page",
         "shows", "after", "update", "connection", "drops", "every", "hour", "and", "I", "tried",
         "restart", "nothing", "changed", "order", "number", "was", "charged", "twice", "for",
         "same", "month", "could", "you", "check", "what", "happened", "screen", "light",
         "blinks", "red", "green", "cable", "replaced", "support", "told", "me", "wait", "still",
         "no", "answer", "thank", "regards", "firmware", "version", "settings", "reset", "login",
         "password", "email", "address", "changed", "account", "locked", "invoice", "attached")
STATUSES = (("closed", 55), ("in_progress", 18), ("received", 10), ("solution_proposed", 7),
            ("reopened", 5), ("under_consultation", 5))


_SYLLABLES = ("ka", "lo", "mi", "ter", "zon", "pra", "vel", "du", "rix", "no", "sta", "gor", "bel",
              "fi", "quo", "man", "tis", "ra", "ex", "ul")
# A long tail of rarer words (model names, places, jargon): real mail is not
# only common words, and a search for a rare one must find few messages.
RARE = tuple(sorted({"".join(random.Random(7 + i).choices(_SYLLABLES, k=3)) for i in range(6000)}))


def _sentence(rnd: random.Random) -> str:
    words = [rnd.choice(WORDS) for _ in range(rnd.randint(6, 16))]
    if rnd.random() < 0.5:
        words.insert(rnd.randrange(len(words)), rnd.choice(RARE))
    return " ".join(words).capitalize() + "."


_SENTENCES: list[str] = []


def _body(rnd: random.Random, low: int = 200, high: int = 1500) -> str:
    """Sentences drawn from a pool made once per run (drawing words one by one
    for every body costs more than the inserts)."""
    if not _SENTENCES:
        pool_rnd = random.Random(0)
        _SENTENCES.extend(_sentence(pool_rnd) for _ in range(5000))
    target = rnd.randint(low, high)
    out: list[str] = []
    size = 0
    while size < target:
        s = _SENTENCES[int(rnd.random() * 5000)]
        out.append(s)
        size += len(s) + 1
    return " ".join(out)


def _raw(sender: str, to: str, subject: str, message_id: str, date: dt.datetime, body: str) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
            f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            f"{body}\r\n").encode()


class _Writer:
    """Bulk inserts of whole rows of one model: its columns in model order, a
    column the caller leaves out gets the field's default."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pg = not store.is_sqlite

    @staticmethod
    def _columns(model: type[models.BaseModel]) -> list[Any]:
        return list(model._meta.sorted_fields)

    def _rows(self, model: type[models.BaseModel], rows: Sequence[dict[str, Any]]) -> Iterator[list[Any]]:
        fields = self._columns(model)
        for row in rows:
            values = []
            for f in fields:
                name = f.name
                if name in row:
                    v = row[name]
                elif f.column_name in row:
                    v = row[f.column_name]
                else:
                    v = f.default() if callable(f.default) else f.default
                values.append(v)
            yield values

    def insert(self, model: type[models.BaseModel], rows: Sequence[dict[str, Any]]) -> int:
        if not rows:
            return 0
        fields = self._columns(model)
        table = model._meta.table_name
        cols = ", ".join(f'"{f.column_name}"' for f in fields)
        conn = self.store.db.connection()
        if self.pg:
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            for values in self._rows(model, rows):
                w.writerow([_pg_text(v) for v in values])
            buf.seek(0)
            with conn.cursor() as cur:
                cur.copy_expert(f'COPY "{table}" ({cols}) FROM STDIN WITH (FORMAT csv, NULL \'\\N\')', buf)
        else:
            marks = ", ".join("?" for _ in fields)
            conn.executemany(f'INSERT INTO "{table}" ({cols}) VALUES ({marks})',
                             [[_sqlite_value(v) for v in values] for values in self._rows(model, rows)])
        return len(rows)


def _pg_text(v: Any) -> Any:
    if v is None:
        return "\\N"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, bytes | bytearray | memoryview):
        return "\\x" + bytes(v).hex()
    return v


def _sqlite_value(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return str(v)
    if isinstance(v, bool):
        return int(v)
    return v


def _setup(store: Store, pools: int, csrs: int) -> tuple[list[int], dict[int, list[int]], int]:
    """Pools, their mailboxes and CSRs (made once; a second run reuses them).
    Returns the mailbox ids, pool index -> CSR ids, and the next free Case id."""
    mailbox_ids: list[int] = []
    for p in range(1, pools + 1):
        name = f"pool{p}"
        address = f"support{p}@example.com"
        mb = store.mailbox(address)
        if mb is None:
            mb = store.add_mailbox(address, name, f"Support {p}")
        mailbox_ids.append(mb.id)
    by_pool: dict[int, list[int]] = {p: [] for p in range(pools)}
    for c in range(1, csrs + 1):
        address = f"csr{c}@example.com"
        pool_index = (c - 1) % pools
        row = store.csr(address)
        if row is None:
            row = store.add_csr(address, f"{FIRST[c % len(FIRST)]} Agent{c}", [f"pool{pool_index + 1}"],
                                signature=f"-- \n{FIRST[c % len(FIRST)]}, Support")
        by_pool[pool_index].append(row.id)
    with store.guard():
        top = models.Case.select(models.Case.id).order_by(models.Case.id.desc()).scalar() or 0
    return mailbox_ids, by_pool, top + 1


def _next_ids(store: Store) -> dict[str, int]:
    out = {}
    for model in (models.Message, models.Event, models.Participant):
        top = model.select(model.id).order_by(model.id.desc()).scalar() or 0
        out[model.__name__] = top + 1
    return out


def _fix_sequences(store: Store) -> None:
    if store.is_sqlite:
        return  # SQLite's rowid picks max(id)+1 by itself
    for model in (models.Case, models.Message, models.Event, models.Participant):
        t = model._meta.table_name
        store.db.execute_sql(
            f"SELECT setval(pg_get_serial_sequence('\"{t}\"', 'id'), "
            f"GREATEST((SELECT max(id) FROM \"{t}\"), 1))")


def seed(store_url: str, cases: int = 10_000, messages_per_case: int = 3, pools: int = 3,
         csrs: int = 12, days: int = 90, seed: int = 1, *, batch: int = 5_000,
         now: dt.datetime | None = None, progress: bool = False) -> dict[str, Any]:
    """Add ``cases`` cases to the store at ``store_url`` (migrated first).
    Returns the figures: rows per table, seconds, rows per second, the first
    and last case numbers."""
    rnd = random.Random(seed)
    now = (now or dt.datetime.now(dt.UTC)).replace(tzinfo=None, microsecond=0)
    store = Store(store_url)
    store.migrate()
    mailbox_ids, by_pool, next_case = _setup(store, max(1, pools), max(1, csrs))
    csr_address = {}
    with store.guard():
        for c in models.Csr.select(models.Csr.id, models.Csr.address):
            csr_address[c.id] = c.address
        mb_address = {m.id: m.address for m in models.Mailbox.select()}
        ids = _next_ids(store)
    writer = _Writer(store)
    counts = {"cases": 0, "messages": 0, "events": 0, "participants": 0}
    start = time.perf_counter()
    first_number = f"CS{next_case:07d}"
    status_names = [s for s, _ in STATUSES]
    status_weights = [w for _, w in STATUSES]
    mid, eid, pid = ids["Message"], ids["Event"], ids["Participant"]
    done = 0
    while done < cases:
        n = min(batch, cases - done)
        case_rows: list[dict[str, Any]] = []
        msg_rows: list[dict[str, Any]] = []
        ev_rows: list[dict[str, Any]] = []
        part_rows: list[dict[str, Any]] = []
        for i in range(n):
            cid = next_case + done + i
            number = f"CS{cid:07d}"
            pool_index = rnd.randrange(len(mailbox_ids))
            mailbox = mailbox_ids[pool_index]
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            name = f"{first} {last}"
            local = f"{first}.{last}".lower().replace("'", "")
            customer = f"{local}{rnd.randint(1, 999)}@{rnd.choice(DOMAINS)}"
            subject = f"{rnd.choice(PROBLEMS).capitalize()} {rnd.choice(PRODUCTS)}"
            if rnd.random() < 0.3:
                subject += f" (order {rnd.randint(10000, 99999)})"
            status = rnd.choices(status_names, status_weights)[0]
            created = now - dt.timedelta(seconds=rnd.randint(600, days * 86400))
            team = by_pool.get(pool_index) or [c for v in by_pool.values() for c in v]
            assignee = None if status == "received" else rnd.choice(team)
            closed = None
            span = max(60, int((now - created).total_seconds()))
            if status == "closed":
                closed = created + dt.timedelta(seconds=rnd.randint(300, min(span, 14 * 86400)))
            last_change = closed or (created + dt.timedelta(seconds=rnd.randint(30, span)))
            case_rows.append({
                "id": cid, "number": number, "mailbox": mailbox, "customer_address": customer,
                "customer_name": name, "subject": subject, "status": status,
                "assignee": assignee, "created": created, "updated": last_change, "closed": closed,
                "follow_up_of": None,
                "rating": rnd.randint(1, 5) if closed and rnd.random() < 0.3 else None,
            })
            part_rows.append({"id": pid, "case": cid, "address": customer, "role": "customer"})
            pid += 1
            # messages: the customer's first mail, then the CSR and the customer in turn
            support = mb_address[mailbox]
            msg_times = sorted(created + dt.timedelta(seconds=int((last_change - created).total_seconds()
                                                                 * k / max(1, messages_per_case)))
                               for k in range(messages_per_case))
            first_mid = None
            for k, at in enumerate(msg_times):
                inbound = k % 2 == 0 or assignee is None
                body = _body(rnd)
                message_id = f"<seed.{mid}@{'customer.test' if inbound else 'example.com'}>"
                if inbound:
                    sender, to, kind, direction = customer, support, "customer", "in"
                    subj = subject if k == 0 else f"Re: [{number}] {subject}"
                else:
                    sender, to, kind, direction = csr_address[assignee], customer, "reply", "out"
                    subj = f"Re: [{number}] {subject}"
                msg_rows.append({
                    "id": mid, "case": cid, "direction": direction, "kind": kind, "sender": sender,
                    "recipients": to, "message_id": message_id, "subject": subj, "text": body,
                    "raw": _raw(sender, to, subj, message_id, at, body), "created": at,
                    "queue_id": f"{mid:X}" if inbound else "",
                    "rcpt_key": "" if inbound else customer,
                    "rcpt_domain": "" if inbound else customer.rpartition("@")[2],
                    "authenticated": "" if inbound else "sasl:" + sender,
                })
                if first_mid is None:
                    first_mid = mid
                if not inbound and "first_answer_at" not in case_rows[-1]:
                    case_rows[-1]["first_answer_at"] = at  # as Store.note_first_answer (0016)
                mid += 1
            ev_rows.append({"id": eid, "case": cid, "message": first_mid, "at": created,
                            "kind": "opened", "actor": customer, "detail": "new message"})
            eid += 1
            if assignee is not None:
                at = created + dt.timedelta(seconds=1)
                ev_rows.append({"id": eid, "case": cid, "message": None, "at": at, "kind": "assigned",
                                "actor": csr_address[assignee], "detail": "round_robin"})
                eid += 1
                ev_rows.append({"id": eid, "case": cid, "message": None, "at": at, "kind": "status",
                                "actor": csr_address[assignee], "detail": "received -> in_progress"})
                eid += 1
                if rnd.random() < 0.15:
                    ev_rows.append({"id": eid, "case": cid, "message": None,
                                    "at": at + dt.timedelta(seconds=60), "kind": "note",
                                    "actor": csr_address[assignee], "detail": _body(rnd, 40, 200)})
                    eid += 1
            if status not in ("received", "in_progress"):
                ev_rows.append({"id": eid, "case": cid, "message": None, "at": last_change,
                                "kind": "status", "actor": csr_address.get(assignee, ""),
                                "detail": f"in_progress -> {status}"})
                eid += 1
        with store.atomic():
            counts["cases"] += writer.insert(models.Case, case_rows)
            counts["participants"] += writer.insert(models.Participant, part_rows)
            counts["messages"] += writer.insert(models.Message, msg_rows)
            counts["events"] += writer.insert(models.Event, ev_rows)
        done += n
        if progress:
            rate = done / max(1e-9, time.perf_counter() - start)
            print(f"\r{done}/{cases} cases, {rate:,.0f} cases/s", end="", file=sys.stderr, flush=True)
    if progress and cases:
        print(file=sys.stderr)
    with store.atomic():
        _fix_sequences(store)
    if not store.is_sqlite:
        store.db.execute_sql("ANALYZE")
    seconds = time.perf_counter() - start
    store.close()
    rows = sum(counts.values())
    return {"rows": counts, "seconds": round(seconds, 3), "rows_per_second": round(rows / max(seconds, 1e-9)),
            "cases_per_second": round(counts["cases"] / max(seconds, 1e-9)),
            "first": first_number if cases else None,
            "last": f"CS{next_case + cases - 1:07d}" if cases else None}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fill a casegate store with realistic cases, fast.")
    ap.add_argument("--store", required=True, help="sqlite:///path.db or postgresql://host/db")
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--messages-per-case", type=int, default=3)
    ap.add_argument("--pools", type=int, default=3)
    ap.add_argument("--csrs", type=int, default=12)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=5_000)
    args = ap.parse_args(argv)
    figures = seed(args.store, cases=args.cases, messages_per_case=args.messages_per_case,
                   pools=args.pools, csrs=args.csrs, days=args.days, seed=args.seed,
                   batch=args.batch, progress=sys.stderr.isatty())
    r = figures["rows"]
    print(f"seeded {r['cases']:,} cases ({figures['first']}..{figures['last']}), "
          f"{r['messages']:,} messages, {r['events']:,} events, {r['participants']:,} participants "
          f"in {figures['seconds']:.1f} s: {figures['rows_per_second']:,} rows/s, "
          f"{figures['cases_per_second']:,} cases/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
