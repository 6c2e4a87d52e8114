"""`casegate backup` against a store in use, end to end: a real Postfix hands
mail to the real `casegate serve` while `casegate backup` runs in another
process; the copy, restored as docs/operations.md says (stop, copy the file
back, remove -wal/-shm, start), holds every case, message, attachment and
outbox row, and the restored server goes on numbering cases after them."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from casestore.models import MODELS
from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove, postfix_available
from tests.support.mail import make
from tests.support.postfix import PostfixInstance, free_ports
from tests.support.sink import Sink
from tests.support.sqlitefile import max_rowid as _max_rowid
from tests.support.sqlitefile import rows as _rows

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available())),
]

SUPPORT = "support@example.com"
JANE = "jane@example.com"
TABLES = [m._meta.table_name for m in MODELS]
N = 100


def _raw(n: int) -> bytes:
    data = hashlib.sha256(b"scan %d" % n).digest() * 2000  # 64 KB, different per message
    return make(from_=f"Customer {n} <c{n}@customer.test>", subject=f"test_backup load {n}",
                files=[(f"scan{n}.bin", "application/octet-stream", data)])


def _unsent(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE status != 'sent'").fetchone()[0])
    finally:
        conn.close()


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_backup_under_load_and_restore_through_postfix() -> None:
    root = _new_root()
    sink = Sink().start()
    filter_port, reinject_port = free_ports(2)
    pf = PostfixInstance(root=root / "pf", sink_port=sink.port, filter_port=filter_port,
                         reinject_port=reinject_port, supervised=[SUPPORT])
    cg = Casegate(root / "cg")
    live = root / "cg" / "casegate.db"
    try:
        cg.setup(csrs=[(JANE, "Jane Doe", "Jane Doe")])
        pf.start()
        cg.start(listen_port=filter_port, reinject_port=reinject_port)
        sent: list[str] = []

        def customers() -> None:
            for n in range(N):
                sent.append(pf.send(f"c{n}@customer.test", [SUPPORT], _raw(n)))

        thread = threading.Thread(target=customers)
        thread.start()
        _wait(lambda: len(sent) >= N // 4, 60, "the first messages")
        copies = []
        while thread.is_alive() and len(copies) < 5:  # backups while mail flows in
            copy = root / f"under-load-{len(copies)}.db"
            out = cg.run("backup", str(copy)).stdout
            assert f"to {copy}" in out
            copies.append(copy)
        thread.join(120)
        assert len(sent) == N and copies
        assert len(_rows(copies[0], "delivery")) < N  # taken while mail was still coming in
        # Every message stored and every acknowledgement and notification sent.
        sink.wait_for(lambda d: "test_backup load" in str(d.message["Subject"]), timeout=120,
                      count=2 * N)
        _wait(lambda: _unsent(live) == 0, 60, "the outbox to drain")

        # Each copy taken under load is a snapshot: whole deliveries, rows equal to the live ones.
        for copy in copies:
            counts = {t: len(_rows(copy, t)) for t in TABLES}
            assert counts["delivery"] == counts["support_case"] == counts["attachment"]
            # (append-only tables; a case row or an outbox row changes later: sent, assigned …)
            for table in ("message", "attachment", "delivery", "participant", "event"):
                assert _rows(copy, table) == _rows(live, table, _max_rowid(copy, table)), (copy, table)

        # A backup of the quiet store, restored as the docs say, equals the live store.
        final = root / "final.db"
        cg.run("backup", str(final))
        for table in TABLES:
            assert _rows(final, table) == _rows(live, table), table
        assert cg.stop() == 0
        live.rename(live.with_name("casegate.db.broken"))
        for suffix in ("-wal", "-shm"):
            Path(f"{live}{suffix}").unlink(missing_ok=True)
        shutil.copy(final, live)
        assert "up to date" in cg.run("init").stdout
        cg.start(listen_port=filter_port, reinject_port=reinject_port)
        cases = cg.json("case", "list")
        assert len(cases) == N and len({c["number"] for c in cases}) == N
        shown = cg.json("case", "show", cases[0]["number"])
        assert [f["filename"] for f in shown["files"]] == ["scan0.bin"]
        conn = sqlite3.connect(f"file:{live}?mode=ro", uri=True)
        try:
            (data,) = conn.execute("SELECT data FROM attachment ORDER BY rowid LIMIT 1").fetchone()
        finally:
            conn.close()
        assert bytes(data) == hashlib.sha256(b"scan 0").digest() * 2000
        # The restored server takes mail and numbers on after the restored cases.
        pf.send("late@customer.test", [SUPPORT], make(from_="late@customer.test",
                                                       subject="test_backup after restore"))
        sink.wait_for(lambda d: "test_backup after restore" in str(d.message["Subject"]), timeout=60,
                      count=2)
        numbers = sorted(c["number"] for c in cg.json("case", "list"))
        assert len(numbers) == N + 1 and numbers[-1] > max(c["number"] for c in cases)
    finally:
        cg.close()
        pf.stop()
        sink.stop()
        _remove(root)
