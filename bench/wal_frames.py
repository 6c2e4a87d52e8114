"""SQLite write volume per message: WAL frames (pages) a new case and a
customer reply write, one transaction per delivery against several
deliveries per transaction (group commit, smtpd_hook/group.py).

    .venv/bin/python bench/wal_frames.py [--messages 48] [--group 8]

Runs ``Engine.process`` in this process on a fresh SQLite file (automatic
checkpoints off during the count, so the WAL's size is what was written).
Every frame is a page write (4 KiB and its header) at commit, and later
again at the checkpoint: the figure that group commit lowers. Counts, not
seconds: the same on a busy machine.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import sqlite3
import struct
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from casestore.models import Case  # noqa: E402
from casestore.store import Store  # noqa: E402
from rules.classify import parse_networks  # noqa: E402
from smtpd_hook.engine import Delivery, Engine  # noqa: E402
from smtpd_hook.settings import Settings  # noqa: E402
from tests.support.mail import make  # noqa: E402

SUPPORT = "support@example.com"
BODY = "the printer stopped printing after the update, could you please help\n" * 20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=48, help="deliveries per measurement")
    parser.add_argument("--group", type=int, default=8, help="deliveries per transaction when grouped")
    parser.add_argument("--by-table", action="store_true",
                        help="also name the table or index each frame's page belongs to (dbstat)")
    args = parser.parse_args(argv)
    pages: dict[str, collections.Counter[int]] = {}

    with tempfile.TemporaryDirectory(prefix="casegate-wal-") as tmp:
        path = Path(tmp) / "casegate.db"
        store = Store(f"sqlite:///{path}")
        store.migrate()
        store.add_mailbox(SUPPORT, "default", "Example Support")
        store.add_csr("jane@example.com", "Jane Doe", ["default"])
        engine = Engine(store, Settings(secret=b"s" * 32,
                                        trusted_networks=parse_networks(["127.0.0.1/32"])))
        qid = itertools.count()
        wal = Path(f"{path}-wal")

        def deliver(raw: bytes, sender: str, rcpt: str = SUPPORT) -> None:
            engine.process(Delivery(mail_from=sender, rcpt_tos=(rcpt,), data=raw,
                                    client_addr="127.0.0.2", queue_id=f"W{next(qid)}"))

        def new_case(tag: str, i: int) -> None:
            deliver(make(from_=f"{tag}{i}@customer.test", subject=f"{tag} {i}", body=BODY),
                    f"{tag}{i}@customer.test")

        def reply(case: Case) -> None:
            deliver(make(from_=case.customer_address, to=f"support+{case.number}@example.com",
                         subject=f"Re: [Case #{case.number}] {case.subject}", body="Still broken.\n" * 5),
                    case.customer_address, f"support+{case.number}@example.com")

        def frames(name: str, run) -> tuple[str, float]:  # WAL frames per delivery
            store.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            run()
            if args.by_table:
                pages[name] = wal_pages(wal)
            return name, wal.stat().st_size / (4096 + 24) / args.messages

        def grouped(items, each) -> None:
            for k in range(0, len(items), args.group):
                with store.atomic():
                    for item in items[k:k + args.group]:
                        each(item)

        for i in range(50):  # a store that is not empty
            new_case("warm", i)
        store.db.execute_sql("PRAGMA wal_autocheckpoint=0")
        n = args.messages
        rows = [
            frames("new case, one per transaction", lambda: [new_case("a", i) for i in range(n)]),
            frames(f"new case, {args.group} per transaction",
                   lambda: grouped(list(range(n)), lambda i: new_case("b", i))),
        ]
        a = list(Case.select().where(Case.subject.startswith("a ")))
        b = list(Case.select().where(Case.subject.startswith("b ")))
        rows += [
            frames("reply, one per transaction", lambda: [reply(c) for c in a]),
            frames(f"reply, {args.group} per transaction", lambda: grouped(b, reply)),
        ]
        store.close()
        owners = page_owners(path) if args.by_table else {}
    print(f"WAL frames (4 KiB pages) written per delivery, {n} deliveries each, SQLite")
    for name, value in rows:
        print(f"  {name:<36} {value:6.1f}")
        if name in pages:
            by_owner: collections.Counter[str] = collections.Counter()
            for page, count in pages[name].items():
                by_owner[owners.get(page, "(freelist or new)")] += count
            for owner, count in by_owner.most_common(12):
                print(f"      {count / n:6.1f}  {owner}")


def wal_pages(wal: Path) -> collections.Counter[int]:
    """Frames per page number in a WAL file (its 32-byte header, then a
    24-byte header before each page; the page number opens a frame's header)."""
    data = wal.read_bytes()
    size = 4096
    counts: collections.Counter[int] = collections.Counter()
    for at in range(32, len(data) - 24, 24 + size):
        counts[struct.unpack(">I", data[at:at + 4])[0]] += 1
    return counts


def page_owners(path: Path) -> dict[int, str]:
    """Page number -> the table or index it belongs to (SQLite's dbstat)."""
    with sqlite3.connect(path) as db:
        return {pageno: name for name, pageno in db.execute("SELECT name, pageno FROM dbstat")}


if __name__ == "__main__":
    main()
