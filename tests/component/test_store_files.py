"""The SQLite store as files: only `migrate` (casegate init) creates them,
and a file deleted or replaced under a running server defers mail (451)
instead of taking it into a file nobody will ever read again."""

from __future__ import annotations

import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from casestore.models import Message
from casestore.store import Store, StoreError, StoreUnavailable
from rules import replies
from smtpd_hook.engine import Delivery, Engine
from smtpd_hook.settings import Settings
from tests.support.mail import make


def _engine(path: Path) -> Engine:
    store = Store(f"sqlite:///{path}", create=False)  # as the CLI opens it for `serve`
    store.migrate()
    store.add_mailbox("support@example.com", "default")
    return Engine(store, Settings(secret=b"s" * 32))


def _deliver(engine: Engine, n: int) -> replies.Reply:
    return engine.process(Delivery(mail_from=f"c{n}@customer.test", rcpt_tos=("support@example.com",),
                                   data=make(from_=f"c{n}@customer.test", subject=f"file test {n}"),
                                   client_addr="192.0.2.1", queue_id=f"Q{n}"))


def test_opening_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "c.db"
    store = Store(f"sqlite:///{path}", create=False)
    with pytest.raises(StoreError, match=f"no store at {path}: run `casegate init`"):
        store.cases()
    with pytest.raises(StoreError, match="no store at"):
        store.set_setting("k", "v")
    assert not (tmp_path / "missing").exists()
    assert store.migrate()  # casegate init
    assert path.exists() and store.cases() == []
    # The library default (tests, tools) creates a missing file, private, but never a folder.
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    other.db.connect()
    assert stat.S_IMODE((tmp_path / "other.db").stat().st_mode) == 0o600
    other.close()
    with pytest.raises(StoreUnavailable, match="no store at"):
        Store(f"sqlite:///{tmp_path / 'nofolder' / 'c.db'}").db.connect()
    assert not (tmp_path / "nofolder").exists()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_store_file_deleted_under_the_server_defers_mail(tmp_path: Path, how: str) -> None:
    path = tmp_path / "c.db"
    engine = _engine(path)
    first = _deliver(engine, 1)
    assert first == replies.stored(Message.get(Message.queue_id == "Q1").case.number)
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:  # a restore over the live file: the server must not keep writing the old one
        shutil.copy(path, tmp_path / "copy.db")
        os.replace(tmp_path / "copy.db", path)
    reply = _deliver(engine, 2)
    assert reply.code == 451 and reply.enhanced == "4.3.0"
    with pytest.raises(StoreUnavailable, match=f"store file {path} was {how}"):
        engine.store.set_setting("k", "v")
    # A worker thread opening its own connection is refused too, and creates no file.
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            engine.store.set_setting("k", "v")
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.store.close()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], StoreUnavailable), errors
    assert path.exists() == (how == "replaced")
    engine.store.close()
    if how == "replaced":  # the file at the path never got the 451'd message
        fresh = Store(f"sqlite:///{path}")
        assert [m.queue_id for m in Message.select().where(Message.direction == "in")] == ["Q1"]
        fresh.close()
