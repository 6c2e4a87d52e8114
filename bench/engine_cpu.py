"""casegate's own CPU per message, without Postfix: ``Engine.process`` in one
process on a real store (a SQLite file, or a fresh PostgreSQL database).

    .venv/bin/python bench/engine_cpu.py [--messages 400] [--rounds 3] [--store postgresql://...]

Each round opens ``--messages`` new cases (one in, an acknowledgement and a
CSR notification out) and then a customer reply on each (one in, a forward
out), as ``casegate serve`` does for each delivery, and prints the process
CPU time (user + system) per new case and per reply, and SQL statements per
event. The median of the rounds is the figure; the mail-path bench
(bench/mailpath.py) is the end-to-end truth, this one is the quiet, quick
figure to compare commits by on a busy machine (CPU time, not wall time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from peewee import SqliteDatabase  # noqa: E402

from casestore.store import Store  # noqa: E402
from rules.classify import parse_networks  # noqa: E402
from smtpd_hook.engine import Delivery, Engine  # noqa: E402
from smtpd_hook.settings import Settings  # noqa: E402
from tests.support.mail import make  # noqa: E402
from tests.support.statements import Statements as StatementCounter  # noqa: E402

SUPPORT, JANE = "support@example.com", "jane@example.com"
BODY = ("the printer on the third floor stopped printing after the update and now shows\n"
        "an error about the paper tray although the tray is full could you please tell\n") * 14


class Statements(StatementCounter):
    """tests.support.statements' ``count`` and ``trips``, and ``server_ms``:
    CPU time of the PostgreSQL backend serving this thread's connection, when
    the server runs on this machine (/proc), else None; ``wall``: seconds."""

    def __init__(self, db) -> None:
        super().__init__(db)
        self.server_ms: float | None = None
        self.wall = 0.0

    def __enter__(self) -> Statements:
        self.backend = _backend_pid(self.db)
        self.server_start = _cpu_ms(self.backend)
        super().__enter__()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.started
        super().__exit__(*exc)
        end = _cpu_ms(self.backend)
        if end is not None and self.server_start is not None:
            self.server_ms = end - self.server_start


def _backend_pid(db) -> int | None:
    """The PostgreSQL backend of this thread's connection (None on SQLite)."""
    if isinstance(db, SqliteDatabase):
        return None
    return int(db.execute_sql("SELECT pg_backend_pid()").fetchone()[0])


def _cpu_ms(pid: int | None) -> float | None:
    """user + system CPU of a local process, ms (None: not here)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def one_round(url: str, n: int, tag: str) -> dict[str, float]:
    store = Store(url)
    store.migrate()
    store.add_mailbox(SUPPORT, "default", "Example Support")
    store.add_csr(JANE, "Jane Doe", ["default"], "Jane Doe\nSupport Team")
    engine = Engine(store, Settings(secret=b"s" * 32, trusted_networks=parse_networks(["127.0.0.1/32"])))
    qid = iter(range(1, 10**7))

    def deliver(raw: bytes, rcpt: str = SUPPORT) -> None:
        reply = engine.process(Delivery(mail_from="x@customer.test", rcpt_tos=(rcpt,), data=raw,
                                        client_addr="127.0.0.2", queue_id=f"Q{next(qid)}"))
        if reply.code != 250:
            raise RuntimeError(f"{reply}")

    deliver(make(from_="Warm <warm@customer.test>", subject="warm up"))  # caches, first-use imports
    news = [make(from_=f"C {i} <c{i}@customer.test>", subject=f"{tag}-{i} printer", body=BODY)
            for i in range(n)]
    with Statements(store.db) as s_new:
        t0 = time.process_time()
        for raw in news:
            deliver(raw)
        new_cpu = time.process_time() - t0
    from casestore.models import Case, Message

    acks = {m.recipients: m for m in Message.select().where(
        (Message.direction == "out") & (Message.kind == "ack"))}
    numbers = {c.customer_address: c.number for c in Case.select()}
    replies = []
    for i in range(n):
        ack = acks[f"c{i}@customer.test"]
        plus = SUPPORT.replace("@", f"+{numbers[f'c{i}@customer.test']}@")
        replies.append((make(from_=f"C {i} <c{i}@customer.test>", to=plus, subject=f"Re: {ack.subject}",
                             body="Thank you, here is more.\n" + BODY, in_reply_to=ack.message_id,
                             references=[ack.message_id]), plus))
    with Statements(store.db) as s_reply:
        t0 = time.process_time()
        for raw, plus in replies:
            deliver(raw, plus)
        reply_cpu = time.process_time() - t0
    store.close()
    return {"new_ms": 1000 * new_cpu / n, "reply_ms": 1000 * reply_cpu / n,
            "new_sql": s_new.count / n, "reply_sql": s_reply.count / n,
            "new_trips": s_new.trips / n, "reply_trips": s_reply.trips / n,
            "new_wall_ms": 1000 * s_new.wall / n, "reply_wall_ms": 1000 * s_reply.wall / n,
            "new_server_ms": s_new.server_ms / n if s_new.server_ms is not None else -1.0,
            "reply_server_ms": s_reply.server_ms / n if s_reply.server_ms is not None else -1.0}


def fresh_store(url: str | None, folder: Path) -> tuple[str, object]:
    if url is None:
        return f"sqlite:///{folder / f'{uuid.uuid4().hex[:8]}.db'}", None
    import psycopg2

    name = f"casegate_cpu_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(url, connect_timeout=5)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    return urlparse(url)._replace(path=f"/{name}").geturl(), (admin, name)


def drop(handle: object) -> None:
    if handle is None:
        return
    admin, name = handle  # type: ignore[misc]
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=400)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--store", default=None, help="postgresql://USER@HOST:PORT/DB (a fresh database "
                   "per round is made there); default: a new SQLite file per round")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            url, handle = fresh_store(args.store, Path(tmp))
            try:
                rows.append(one_round(url, args.messages, f"r{r}"))
            finally:
                drop(handle)
            print(f"round {r + 1}: new case {rows[-1]['new_ms']:.2f} ms CPU, "
                  f"reply {rows[-1]['reply_ms']:.2f} ms CPU", file=sys.stderr)
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    kind = "PostgreSQL" if args.store else "SQLite"
    print(f"Engine.process on {kind}, {args.messages} messages x {args.rounds} rounds (median): "
          f"new case {med['new_ms']:.2f} ms CPU, {med['new_sql']:.1f} statements; "
          f"reply {med['reply_ms']:.2f} ms CPU, {med['reply_sql']:.1f} statements")
    for event in ("new", "reply"):
        server = (f", database server {med[f'{event}_server_ms']:.2f} ms CPU"
                  if med[f"{event}_server_ms"] >= 0 else "")
        print(f"  {'new case' if event == 'new' else 'reply'}: {med[f'{event}_trips']:.1f} calls to "
              f"the driver (BEGIN and COMMIT included), {med[f'{event}_wall_ms']:.2f} ms wall{server}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
