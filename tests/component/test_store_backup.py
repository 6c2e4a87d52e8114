"""`casegate backup`: SQLite's online backup API on a store in use. The copy
is a consistent snapshot taken while other connections write, opens as a
store, and holds every row and every byte; restore is copying it back."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from casestore.models import MODELS, Message
from casestore.store import Store, StoreError
from rules import replies
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.settings import Settings
from tests.support.mail import make
from tests.support.sqlitefile import max_rowid as _max_rowid
from tests.support.sqlitefile import rows as _rows

TABLES = [m._meta.table_name for m in MODELS]


def _engine(url: str) -> Engine:
    return Engine(Store(url, create=False), Settings(secret=b"s" * 32))


def _deliver(engine: Engine, n: int) -> None:
    data = hashlib.sha256(str(n).encode()).digest() * 1000  # 32 KB, different per message
    raw = make(from_=f"Customer {n} <c{n}@customer.test>", subject=f"test_backup {n}",
               files=[(f"scan{n}.bin", "application/octet-stream", data)])
    reply = engine.process(Delivery(mail_from=f"c{n}@customer.test", rcpt_tos=("support@example.com",),
                                    data=raw, client_addr="192.0.2.1", queue_id=f"B{n}"))
    stored = Message.get((Message.queue_id == f"B{n}") & (Message.direction == "in"))
    assert reply == replies.stored(stored.case.number), reply


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "casegate.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    store.add_mailbox("support@example.com", "default")
    store.add_csr("jane@example.com", "Jane Doe", ["default"])
    store.close()
    return path


def test_backup_under_load_is_a_consistent_snapshot_and_restores(store_path: Path,
                                                                 tmp_path: Path) -> None:
    url = f"sqlite:///{store_path}"
    writer_engine = _engine(url)
    for n in range(150):  # about 5 MB of messages and files before the backup
        _deliver(writer_engine, n)
    stop, errors, written = threading.Event(), [], [150]

    def writer() -> None:  # another connection taking mail all along
        try:
            while not stop.is_set():
                _deliver(writer_engine, written[0])
                written[0] += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            writer_engine.store.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        before = written[0]
        copy = tmp_path / "backups" / "casegate-1.db"
        copy.parent.mkdir()
        # One store per process (it binds the models): the server's own, as
        # `casegate backup` in another process would copy the same file.
        counts = writer_engine.store.backup(copy)
        after = written[0]
        for _ in range(5):  # and the writer goes on after it
            if written[0] > after:
                break
            thread.join(0.2)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert written[0] > after and counts["delivery"] >= before
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and not list(copy.parent.glob(".*part"))
    # A snapshot: every delivery whole (case, message, file, outgoing mail), none half.
    assert counts["delivery"] == counts["support_case"] == counts["attachment"] == counts["participant"]
    assert counts["message"] == counts["delivery"] + counts["outbox"]
    # Every row of the copy is the live store's row, byte for byte, with no gap.
    for table in TABLES:
        upto = _max_rowid(copy, table)
        assert len(_rows(copy, table)) == counts[table]
        assert _rows(copy, table) == _rows(store_path, table, upto), table

    # Restore: copy the file back into a fresh place and open it as the store.
    restored = tmp_path / "restored" / "casegate.db"
    restored.parent.mkdir(mode=0o700)
    shutil.copy2(copy, restored)
    store = Store(f"sqlite:///{restored}", create=False)
    store.check_schema()
    assert len(store.cases()) == counts["support_case"]
    case = store.cases()[-1]
    message = store.messages(case, raw=True)[0]
    live = Store(url, create=False)
    live_case = live.case(case.number)
    assert live_case is not None
    assert bytes(message.raw) == bytes(live.messages(live_case, raw=True)[0].raw)
    file_id = store.attachments(case)[0].id
    assert bytes(store.attachment(file_id).data) == bytes(live.attachment(file_id).data)
    store.close()
    live.close()


def test_backup_takes_no_uncommitted_write_and_blocks_no_writer(store_path: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{store_path}"
    engine = _engine(url)
    _deliver(engine, 1)
    writer = sqlite3.connect(store_path, isolation_level=None, timeout=1)
    writer.execute("BEGIN IMMEDIATE")  # a transaction in progress holds the write lock
    writer.execute("INSERT INTO setting (key, value) VALUES ('in_flight', '1')")
    counts = engine.store.backup(tmp_path / "copy.db")
    writer.execute("COMMIT")  # and commits after the backup: nothing waited on anything
    writer.close()
    assert counts["delivery"] == 1 and counts["setting"] == 0
    assert _rows(store_path, "setting") == [("in_flight", "1")]
    # A quiet store: the copy equals it exactly, table by table.
    counts = engine.store.backup(tmp_path / "copy.db")  # replaces the old copy
    for table in TABLES:
        assert _rows(tmp_path / "copy.db", table) == _rows(store_path, table), table
    assert counts["setting"] == 1
    engine.store.close()


def test_backup_refuses_the_store_itself_and_postgresql(store_path: Path, pg_url: str) -> None:
    with pytest.raises(StoreError, match="is the store itself"):
        Store(f"sqlite:///{store_path}").backup(store_path)
    with pytest.raises(StoreError, match="pg_dump --format=custom"):
        Store(pg_url).backup(store_path.with_name("x.db"))


def test_casegate_backup_command(tmp_path: Path, pg_url: str) -> None:
    base = ["--config", str(tmp_path / "casegate.toml"), "--store", f"sqlite:///{tmp_path / 'c.db'}"]
    runner = CliRunner()
    assert runner.invoke(cli.main, [*base, "init"]).exit_code == 0
    assert runner.invoke(cli.main, [*base, "mailbox", "add", "support@example.com"]).exit_code == 0
    out = runner.invoke(cli.main, [*base, "backup", str(tmp_path / "b.db")])
    assert out.exit_code == 0 and "0 cases, 0 messages" in out.output, out.output
    assert stat.S_IMODE((tmp_path / "b.db").stat().st_mode) == 0o600
    copy = ["--config", str(tmp_path / "casegate.toml"), "--store", f"sqlite:///{tmp_path / 'b.db'}"]
    listed = runner.invoke(cli.main, [*copy, "mailbox", "list"])
    assert listed.exit_code == 0 and "support@example.com" in listed.output
    missing = runner.invoke(cli.main, [*base, "backup", str(tmp_path / "no" / "b.db")])
    assert missing.exit_code == 1 and "no folder" in missing.output
    pg = runner.invoke(cli.main, [*base[:3], pg_url.replace("postgres@", "postgres:pw@"), "backup",
                                  str(tmp_path / "p.db")])
    assert pg.exit_code == 1 and "pg_dump" in pg.output and "pg_restore" in pg.output
    assert ":pw@" not in pg.output and not (tmp_path / "p.db").exists()
