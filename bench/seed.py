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

Rows go in by bulk on a loader connection of its own (class ``_Loader``):
the four tables' secondary indexes are dropped for the load and rebuilt
after, the FTS triggers (SQLite) and generated tsvector columns
(PostgreSQL) stay, so search sees every row; ``executemany`` with
``synchronous=OFF`` and ``journal_mode=OFF`` on SQLite (WAL again after),
``COPY`` on PostgreSQL; the writes run on their own thread while the next
batch is built. Ids continue after the store's (sequences set after), so the
app's next case gets the next number. Columns the seeder does not know
(added by later migrations) get their model default, so the script keeps
working as the schema grows. The command line prints the rate while seeding.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import queue
import random
import sys
import threading
import time
from collections.abc import Sequence
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


class _Table:
    """One model's bulk-insert plan: the columns the seeder gives, in its
    order, then every other column with its model default (columns added by
    later migrations), so a row is the seeder's tuple plus a constant tail."""

    def __init__(self, model: type[models.BaseModel], names: Sequence[str]) -> None:
        by_name = {f.name: f for f in model._meta.sorted_fields}
        given = [by_name[n] for n in names]
        rest = [f for f in model._meta.sorted_fields if f.name not in names]
        self.name = model._meta.table_name
        self.columns = [f.column_name for f in given + rest]
        self.tail = tuple(f.default() if callable(f.default) else f.default for f in rest)


class _Loader:
    """Rows into the store in bulk, on a connection of its own, with the
    store's secondary indexes dropped during the load and rebuilt after (a
    sorted build beats a million random B-tree inserts), and its FTS triggers
    / generated tsvector columns left in place, so search sees every row.

    SQLite: ``executemany``, ``synchronous=OFF``, ``journal_mode=OFF`` during
    the load (WAL again after), one transaction per batch. PostgreSQL:
    ``COPY … FROM STDIN`` on two connections at once (the server builds the
    tsvectors), ``session_replication_role=replica`` (no
    per-row foreign-key triggers; the seeder writes consistent ids),
    ``synchronous_commit=off``. The writes run on a thread of their own while
    the main thread builds the next batch (SQLite's engine and the
    PostgreSQL server release the GIL)."""

    TABLES = ("support_case", "participant", "message", "event")

    def __init__(self, store: Store, writers: int = 2) -> None:
        self.pg = not store.is_sqlite
        self.indexes: list[str] = []
        if self.pg:
            import psycopg2
            self.conns = [psycopg2.connect(dbname=store.db.database, **store.db.connect_params)
                          for _ in range(max(1, writers))]
            for conn in self.conns:
                with conn.cursor() as cur:
                    try:
                        cur.execute("SET session_replication_role = replica")
                    except Exception:  # not a superuser: keep the foreign-key checks
                        conn.rollback()
                    cur.execute("SET synchronous_commit = off")
                    cur.execute("SET maintenance_work_mem = '256MB'")
                    try:  # cheaper than pglz for the raw messages, read back alike
                        cur.execute("SET default_toast_compression = lz4")
                    except Exception:
                        conn.rollback()
                conn.commit()
        else:
            import sqlite3
            conn = sqlite3.connect(store.db.database, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute("PRAGMA cache_size = -262144")
            # OFF only if no other connection holds the file (else WAL stays)
            conn.execute("PRAGMA journal_mode = OFF")
            self.conns = [conn]  # one writer: SQLite has one
        self.conn = self.conns[0]
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=len(self.conns) + 1)
        self.error: BaseException | None = None
        self.written = 0  # cases committed
        self.threads = [threading.Thread(target=self._run, args=(c,), name=f"seed-writer-{i}", daemon=True)
                        for i, c in enumerate(self.conns)]

    # indexes ---------------------------------------------------------------
    def drop_indexes(self) -> None:
        tables = ", ".join(f"'{t}'" for t in self.TABLES)
        if self.pg:
            with self.conn.cursor() as cur:
                cur.execute(
                    "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema()"
                    f" AND i.tablename IN ({tables}) AND NOT EXISTS (SELECT 1 FROM pg_constraint c"
                    " WHERE c.conname = i.indexname) ORDER BY i.indexname")
                found = cur.fetchall()
                for name, _ in found:
                    cur.execute(f'DROP INDEX "{name}"')
            self.conn.commit()
        else:
            found = self.conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                f" AND tbl_name IN ({tables}) ORDER BY name").fetchall()
            for name, _ in found:
                self.conn.execute(f'DROP INDEX "{name}"')
        self.indexes = [sql for _, sql in found]

    def rebuild_indexes(self) -> None:
        if self.pg:  # shared out between the connections, biggest tables first
            for conn in self.conns:
                conn.rollback()  # after a failed load: a clean transaction for the builds
            order = sorted(self.indexes, key=lambda sql: (" message " not in sql, " event " not in sql))
            shares = [order[i::len(self.conns)] for i in range(len(self.conns))]

            def build(conn: Any, sqls: list[str]) -> None:
                with conn.cursor() as cur:
                    for sql in sqls:
                        cur.execute(sql)
                conn.commit()

            threads = [threading.Thread(target=build, args=(c, sh))
                       for c, sh in zip(self.conns, shares, strict=True)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            missing = self._missing()
            if missing:
                raise RuntimeError(f"indexes not rebuilt: {missing}")
        else:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.conn.execute("BEGIN")
            for sql in self.indexes:
                self.conn.execute(sql)
            self.conn.execute("COMMIT")
        self.indexes = []

    def _missing(self) -> list[str]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()")
            have = {row[0] for row in cur.fetchall()}
        self.conn.commit()
        return [sql for sql in self.indexes if sql not in have]

    # rows ------------------------------------------------------------------
    def start(self) -> None:
        for t in self.threads:
            t.start()

    def put(self, batch: list[tuple[_Table, list[tuple[Any, ...]]]]) -> None:
        if self.error:
            raise self.error
        self.queue.put(batch)

    def finish(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join()
        if self.error:
            raise self.error

    def _run(self, conn: Any) -> None:
        try:
            while (batch := self.queue.get()) is not None:
                self._write(conn, batch)
                self.written += len(batch[0][1])
        except BaseException as exc:  # reported by put/finish
            self.error = exc
            while self.queue.get() is not None:
                pass

    def _write(self, conn: Any, batch: list[tuple[_Table, list[tuple[Any, ...]]]]) -> None:
        if self.pg:
            # COPY's text format: the seeder's values never hold a tab, a
            # newline or a backslash (raw is hex, NULL is \N), so a row is
            # its values joined by tabs.
            with conn.cursor() as cur:
                for table, rows in batch:
                    tail = tuple(str(_pg_text(v)) for v in table.tail)
                    text = "".join("\t".join(map(str, row + tail)) + "\n" for row in rows)
                    cols = ", ".join(f'"{c}"' for c in table.columns)
                    cur.copy_expert(f'COPY "{table.name}" ({cols}) FROM STDIN', io.StringIO(text))
            conn.commit()
        else:
            conn.execute("BEGIN")
            for table, rows in batch:
                cols = ", ".join(f'"{c}"' for c in table.columns)
                marks = ", ".join("?" for _ in table.columns)
                tail = tuple(_sqlite_value(v) for v in table.tail)
                conn.executemany(f'INSERT INTO "{table.name}" ({cols}) VALUES ({marks})',
                                 [r + tail for r in rows] if tail else rows)
            conn.execute("COMMIT")

    def finalize(self) -> None:
        """Sequences past the new ids (PostgreSQL; SQLite's rowid takes
        max(id)+1 by itself), fresh planner statistics (PostgreSQL; SQLite
        stores get none, as in production), the session back to normal."""
        if self.pg:
            with self.conn.cursor() as cur:
                for t in self.TABLES:
                    cur.execute(f"SELECT setval(pg_get_serial_sequence('\"{t}\"', 'id'), "
                                f"GREATEST((SELECT max(id) FROM \"{t}\"), 1))")
                cur.execute("SET session_replication_role = DEFAULT")
            self.conn.commit()
            self.conn.autocommit = True
            with self.conn.cursor() as cur:
                cur.execute("ANALYZE")
        else:
            self.conn.execute("PRAGMA journal_mode = WAL")
        for conn in self.conns:
            conn.close()


def _pg_text(v: Any) -> Any:
    if v is None:
        return "\\N"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, bytes | bytearray | memoryview):
        return "\\\\x" + bytes(v).hex()  # COPY text format: \\x...
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


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_CHUNKS: list[str] = []


def _chunks() -> list[str]:
    """4,096 runs of sentences of 100-750 characters, made once per process: a
    message body is two of them (16 million bodies of 200-1,500 characters,
    the same sentence pool as ``_body``), drawn with two random numbers."""
    if not _CHUNKS:
        _body(random.Random(0))  # fills the sentence pool
        pool_rnd = random.Random(1)
        for _ in range(4096):
            target = pool_rnd.randint(100, 750)
            out: list[str] = []
            size = 0
            while size < target:
                s = _SENTENCES[pool_rnd.randrange(len(_SENTENCES))]
                out.append(s)
                size += len(s) + 1
            _CHUNKS.append(" ".join(out))
    return _CHUNKS


def _next_ids(store: Store) -> dict[str, int]:
    out = {}
    for model in (models.Message, models.Event, models.Participant):
        top = model.select(model.id).order_by(model.id.desc()).scalar() or 0
        out[model.__name__] = top + 1
    return out


CASE_COLUMNS = ("id", "number", "mailbox", "customer_address", "customer_name", "subject", "status",
                "assignee", "created", "updated", "closed", "follow_up_of", "rating", "first_answer_at")
PARTICIPANT_COLUMNS = ("id", "case", "address", "role")
MESSAGE_COLUMNS = ("id", "case", "direction", "kind", "sender", "recipients", "message_id", "subject",
                   "text", "raw", "created", "queue_id", "rcpt_key", "rcpt_domain", "authenticated")
EVENT_COLUMNS = ("id", "case", "message", "at", "kind", "actor", "detail")


def seed(store_url: str, cases: int = 10_000, messages_per_case: int = 3, pools: int = 3,
         csrs: int = 12, days: int = 90, seed: int = 1, *, batch: int = 5_000,
         now: dt.datetime | None = None, progress: bool = False) -> dict[str, Any]:
    """Add ``cases`` cases to the store at ``store_url`` (migrated first).
    Returns the figures: rows per table, seconds (and the part spent
    rebuilding indexes), rows per second, the first and last case numbers.
    ``progress``: the rate on stderr while seeding (a line every ~10 s, or
    one updated line on a terminal)."""
    rnd = random.Random(seed)
    r = rnd.random
    now = (now or dt.datetime.now(dt.UTC)).replace(tzinfo=None, microsecond=0)
    store = Store(store_url)
    store.migrate()
    mailbox_ids, by_pool, next_case = _setup(store, max(1, pools), max(1, csrs))
    with store.guard():
        csr_address = {c.id: c.address for c in models.Csr.select(models.Csr.id, models.Csr.address)}
        mb_address = {m.id: m.address for m in models.Mailbox.select()}
        ids = _next_ids(store)
    store.close()  # the loader writes on a connection of its own
    loader = _Loader(store)
    pg = loader.pg
    nul: Any = "\\N" if pg else None
    t_case, t_part = _Table(models.Case, CASE_COLUMNS), _Table(models.Participant, PARTICIPANT_COLUMNS)
    t_msg, t_ev = _Table(models.Message, MESSAGE_COLUMNS), _Table(models.Event, EVENT_COLUMNS)
    chunks = _chunks()
    n_chunks = len(chunks)
    status_table = [s for s, w in STATUSES for _ in range(w)]
    n_status = len(status_table)
    teams = {p: (v or [c for vv in by_pool.values() for c in vv]) for p, v in by_pool.items()}
    counts = {"cases": 0, "messages": 0, "events": 0, "participants": 0}
    start = time.perf_counter()
    tty = sys.stderr.isatty()
    shown = start
    first_number = f"CS{next_case:07d}"
    mid, eid, pid = ids["Message"], ids["Event"], ids["Participant"]
    span_days = days * 86400 - 600
    second = dt.timedelta(seconds=1)
    loader.drop_indexes()
    loader.start()
    done = 0
    try:
        while done < cases:
            n = min(batch, cases - done)
            case_rows: list[tuple[Any, ...]] = []
            msg_rows: list[tuple[Any, ...]] = []
            ev_rows: list[tuple[Any, ...]] = []
            part_rows: list[tuple[Any, ...]] = []
            for i in range(n):
                cid = next_case + done + i
                number = f"CS{cid:07d}"
                pool_index = int(r() * len(mailbox_ids))
                mailbox = mailbox_ids[pool_index]
                first, last = FIRST[int(r() * 20)], LAST[int(r() * 20)]
                local = f"{first}.{last}".lower().replace("'", "")
                customer = f"{local}{1 + int(r() * 999)}@{DOMAINS[int(r() * len(DOMAINS))]}"
                subject = (f"{PROBLEMS[int(r() * len(PROBLEMS))].capitalize()} "
                           f"{PRODUCTS[int(r() * len(PRODUCTS))]}")
                if r() < 0.3:
                    subject += f" (order {10000 + int(r() * 90000)})"
                status = status_table[int(r() * n_status)]
                created = now - dt.timedelta(seconds=600 + int(r() * span_days))
                assignee = None if status == "received" else (team := teams[pool_index])[int(r() * len(team))]
                span = max(60, int((now - created).total_seconds()))
                closed = None
                if status == "closed":
                    upto = max(1, min(span, 14 * 86400) - 300)
                    closed = created + dt.timedelta(seconds=300 + int(r() * upto))
                last_change = closed or (created + dt.timedelta(seconds=30 + int(r() * max(1, span - 30))))
                created_s = str(created)
                part_rows.append((pid, cid, customer, "customer"))
                pid += 1
                support = mb_address[mailbox]
                window = (last_change - created).total_seconds()
                first_mid = mid
                first_answer = nul
                for k in range(messages_per_case):
                    at = created + dt.timedelta(seconds=int(window * k / messages_per_case))
                    at_s = str(at)
                    inbound = k % 2 == 0 or assignee is None
                    body = chunks[int(r() * n_chunks)] + " " + chunks[int(r() * n_chunks)]
                    if inbound:
                        message_id = f"<seed.{mid}@customer.test>"
                        sender, to = customer, support
                        subj = subject if k == 0 else f"Re: [{number}] {subject}"
                    else:
                        message_id = f"<seed.{mid}@example.com>"
                        sender, to = csr_address[assignee], customer
                        subj = f"Re: [{number}] {subject}"
                        if first_answer is nul:
                            first_answer = at_s  # as Store.note_first_answer (0016)
                    date = (f"{_DAYS[at.weekday()]}, {at.day:02d} {_MONTHS[at.month - 1]} {at.year} "
                            f"{at.hour:02d}:{at.minute:02d}:{at.second:02d} +0000")
                    raw = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subj}\r\nMessage-ID: {message_id}\r\n"
                           f"Date: {date}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                           f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n").encode()
                    if inbound:
                        msg_rows.append((mid, cid, "in", "customer", sender, to, message_id, subj, body,
                                         "\\\\x" + raw.hex() if pg else raw, at_s, f"{mid:X}", "", "", ""))
                    else:
                        msg_rows.append((mid, cid, "out", "reply", sender, to, message_id, subj, body,
                                         "\\\\x" + raw.hex() if pg else raw, at_s, "", customer,
                                         customer.rpartition("@")[2], "sasl:" + sender))
                    mid += 1
                rating = 1 + int(r() * 5) if closed and r() < 0.3 else nul
                case_rows.append((cid, number, mailbox, customer, f"{first} {last}", subject, status,
                                  nul if assignee is None else assignee, created_s, str(last_change),
                                  nul if closed is None else str(closed), nul, rating, first_answer))
                ev_rows.append((eid, cid, first_mid if messages_per_case else nul, created_s, "opened",
                                customer, "new message"))
                eid += 1
                if assignee is not None:
                    actor = csr_address[assignee]
                    at_s = str(created + second)
                    ev_rows.append((eid, cid, nul, at_s, "assigned", actor, "round_robin"))
                    ev_rows.append((eid + 1, cid, nul, at_s, "status", actor, "received -> in_progress"))
                    eid += 2
                    if r() < 0.15:
                        ev_rows.append((eid, cid, nul, str(created + 61 * second), "note", actor,
                                        _body(rnd, 40, 200)))
                        eid += 1
                if status not in ("received", "in_progress"):
                    ev_rows.append((eid, cid, nul, str(last_change), "status",
                                    csr_address.get(assignee, ""), f"in_progress -> {status}"))
                    eid += 1
            loader.put([(t_case, case_rows), (t_part, part_rows), (t_msg, msg_rows), (t_ev, ev_rows)])
            counts["cases"] += len(case_rows)
            counts["participants"] += len(part_rows)
            counts["messages"] += len(msg_rows)
            counts["events"] += len(ev_rows)
            done += n
            at = time.perf_counter()
            if progress and (tty or at - shown >= 10):
                shown = at
                written = loader.written
                line = f"{written:,}/{cases:,} cases written, {written / max(1e-9, at - start):,.0f} cases/s"
                print("\r" + line if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
        loader.finish()
    finally:
        if progress and tty and cases:
            print(file=sys.stderr)
        loaded = time.perf_counter()
        if progress:
            print(f"{loader.written:,} cases written in {loaded - start:.0f} s "
                  f"({loader.written / max(1e-9, loaded - start):,.0f} cases/s); "
                  f"rebuilding {len(loader.indexes)} indexes ...", file=sys.stderr, flush=True)
        loader.rebuild_indexes()
    indexed = time.perf_counter()
    loader.finalize()
    seconds = time.perf_counter() - start
    rows = sum(counts.values())
    return {"rows": counts, "seconds": round(seconds, 3), "load_seconds": round(loaded - start, 3),
            "index_seconds": round(indexed - loaded, 3), "rows_per_second": round(rows / max(seconds, 1e-9)),
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
                   batch=args.batch, progress=True)
    r = figures["rows"]
    print(f"seeded {r['cases']:,} cases ({figures['first']}..{figures['last']}), "
          f"{r['messages']:,} messages, {r['events']:,} events, {r['participants']:,} participants "
          f"in {figures['seconds']:.1f} s (indexes rebuilt in {figures['index_seconds']:.1f} s): "
          f"{figures['rows_per_second']:,} rows/s, "
          f"{figures['cases_per_second']:,} cases/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
