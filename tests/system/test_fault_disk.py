"""Disk full under a SQLite store, end to end (issue 8, "Faults").

The store lives on a small tmpfs made by the test. While a private Postfix
hands new customer messages to the real ``casegate serve``, a filler file
takes the last free byte of that file system. From then on:

* deliveries get ``451 4.3.0`` and Postfix defers them (its log says so);
* nothing is half-written: every case in the store has its inbound message,
  its attachment, its delivery record and its outgoing rows, and
  ``PRAGMA integrity_check`` is ``ok``;
* once the filler is removed, Postfix's retry (``postqueue -f``) delivers
  everything: every message exactly one case and one acknowledgement.

And the outbox on a full disk, step by step: a message sent while the store
cannot record it is recorded when space returns, never sent a second time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import errno
import hashlib
import os
import re
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from casestore.models import Outbox
from casestore.store import Store, StoreUnavailable
from smtpd_hook.outbox import OutboxWorker, send_batch
from smtpd_hook.settings import Settings
from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove, postfix_available
from tests.support.mail import make
from tests.support.postfix import PostfixInstance, free_ports
from tests.support.sink import Sink

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available())),
]

N = 60  # messages sent in all
FILL_AFTER = 15  # stored deliveries before the filler takes the rest of the disk
DEFERRED_WANTED = 10  # distinct messages Postfix must have deferred before space returns
TMPFS_SIZE = "16m"  # the store and its 4 MB of WAL fit, with room to spare
DEFER_451 = re.compile(
    r" ([0-9A-F]{6,}): to=<support@example\.com>, relay=\S+.*status=deferred "
    r"\(host \S+ said: 451 4\.3\.0 ([^(]*)")


def _raw(i: int) -> bytes:
    data = hashlib.sha256(b"disk %d" % i).digest() * 640  # 20 KB, different per message
    return make(from_=f"Customer {i} <c{i}@customer.test>", subject=f"disk-{i:03d}",
                files=[(f"scan{i}.bin", "application/octet-stream", data)])


@contextlib.contextmanager
def small_fs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill(path: Path) -> int:
    """Write ``path`` until the file system says ENOSPC; the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                n = os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]  # the last partial page too
                continue
            written += n
    finally:
        os.close(fd)
    return written


def query(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def stored(db: Path) -> int:
    try:
        return int(query(db, "select count(*) from delivery")[0][0])
    except sqlite3.Error:
        return 0


def check_whole(db: Path) -> dict[str, int]:
    """Nothing half-written: every case has its message, file, delivery and
    outgoing rows. Returns counts for the figures."""
    assert query(db, "pragma integrity_check") == [("ok",)]
    assert query(db, "pragma foreign_key_check") == []
    cases = query(db, 'select id, subject from support_case')
    inbound = query(db, "select case_id, id from message where direction = 'in'")
    by_case = collections.Counter(c for c, _ in inbound)
    assert all(by_case[cid] == 1 for cid, _ in cases), "a case without its one message"
    assert len(inbound) == len(cases), "an inbound message without its case"
    files = dict(query(db, "select message_id, count(*) from attachment group by message_id"))
    assert all(files.get(mid) == 1 for _, mid in inbound), "a message without its file"
    deliveries = dict(query(db, "select message_id, count(*) from delivery group by message_id"))
    assert all(deliveries.get(mid) == 1 for _, mid in inbound), "a message without its delivery"
    assert sum(deliveries.values()) == len(inbound)
    out = query(db, "select m.case_id, m.kind, count(o.id) from message m "
                    "left join outbox o on o.message_id = m.id where m.direction = 'out' "
                    "group by m.id")
    assert all(n == 1 for _, _, n in out), "an outgoing message without its outbox row"
    kinds = collections.Counter((c, k) for c, k, _ in out)
    for cid, subject in cases:
        assert kinds[(cid, "ack")] == 1, f"case {subject!r}: no acknowledgement row"
        assert kinds[(cid, "notify")] == 1, f"case {subject!r}: no notification row"
    return {"cases": len(cases), "outgoing": len(out)}


def test_disk_full_defers_and_recovers_without_loss_or_duplicates() -> None:
    root = _new_root()
    sink = Sink().start()
    fport, rport = free_ports(2)
    pf = PostfixInstance(root=root / "pf", sink_port=sink.port, filter_port=fport,
                         reinject_port=rport, supervised=["support@example.com"])
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(_remove, root)  # after the unmount below
        mnt = cleanup.enter_context(small_fs(root / "store", TMPFS_SIZE))
        db = mnt / "casegate.db"
        filler = mnt / "filler"
        cg = Casegate(root / "cg", store_url=f"sqlite:///{db}")  # config and log off the tmpfs
        try:
            started = time.monotonic()
            cg.setup(csrs=[("jane@example.com", "Jane Doe", "")])
            pf.start()
            cg.start(listen_port=fport, reinject_port=rport)

            filled: list[tuple[int, int]] = []

            def filler_thread() -> None:
                deadline = time.monotonic() + 60
                while stored(db) < FILL_AFTER and time.monotonic() < deadline:
                    time.sleep(0.01)
                filled.append((stored(db), fill(filler)))

            qids: dict[str, int] = {}
            f = threading.Thread(target=filler_thread)
            f.start()
            for i in range(N):
                qids[pf.send(f"c{i}@customer.test", ["support@example.com"], _raw(i))] = i
                time.sleep(0.05)  # a steady stream, not one burst
            f.join(70)
            assert filled, "the filler never ran"
            stored_at_fill, filler_bytes = filled[0]
            assert os.statvfs(mnt).f_bavail == 0

            # Postfix defers what casegate cannot store, and retries (every
            # 2-4 s here); wait until enough messages were refused, and one
            # refused again on Postfix's retry.
            deadline = time.monotonic() + 45
            while True:
                refused = collections.Counter(
                    m.group(1) for m in DEFER_451.finditer(pf.maillog()) if m.group(1) in qids)
                if len(refused) >= DEFERRED_WANTED and max(refused.values()) >= 2:
                    break
                assert time.monotonic() < deadline, (
                    f"only {len(refused)} deliveries deferred with 451:\n{pf.maillog_tail()}")
                time.sleep(0.2)
            reasons = {m.group(2).strip() for m in DEFER_451.finditer(pf.maillog())}
            assert reasons == {"case store unavailable, try again later"}, reasons
            assert "database or disk is full" in cg.log()
            during = check_whole(db)  # while the disk is still full
            assert during["cases"] < N
            assert cg.proc is not None and cg.proc.poll() is None, "serve died"

            # Space returns: Postfix's retry delivers everything.
            filler.unlink()
            freed_at = time.monotonic()
            pf.flush()
            acks = sink.wait_for(lambda d: d.message["Auto-Submitted"] == "auto-replied",
                                 count=N, timeout=60)
            pf.wait_queue_empty(timeout=30)
            recovered = time.monotonic() - freed_at
            deadline = time.monotonic() + 20
            while query(db, "select count(*) from outbox where status != 'sent'")[0][0]:
                assert time.monotonic() < deadline, "outbox not drained"
                time.sleep(0.1)
            after = check_whole(db)
            time.sleep(1.0)  # let anything extra arrive before counting
            acks = [d for d in sink.messages() if d.message["Auto-Submitted"] == "auto-replied"]

            subjects = collections.Counter(
                re.sub(r"^\[Case #\w+\] ", "", s) for (s,) in query(db, 'select subject from support_case'))
            assert sorted(subjects) == [f"disk-{i:03d}" for i in range(N)]
            assert set(subjects.values()) == {1}, subjects.most_common(3)
            sent = collections.Counter(str(d.message["Message-ID"]) for d in sink.messages())
            resent = sum(n - 1 for n in sent.values())
            ack_ids = collections.Counter(str(d.message["Message-ID"]) for d in acks)
            ack_subjects = collections.Counter(
                re.sub(r"^\[Case #\w+\] ", "", str(d.message["Subject"])) for d in acks)
            print(f"\ndisk full: tmpfs {TMPFS_SIZE}, filler {filler_bytes} bytes after "
                  f"{stored_at_fill} stored deliveries; {len(refused)} messages deferred with 451 "
                  f"({sum(refused.values())} refusals in the maillog, up to "
                  f"{max(refused.values())} per message); {during['cases']} cases whole while "
                  f"full; after the filler went: all {N} delivered in {recovered:.1f}s, "
                  f"{after['cases']} cases, {len(acks)} acks ({len(ack_ids)} distinct), "
                  f"{sum(sent.values())} messages out, {resent} sent twice; "
                  f"test {time.monotonic() - started:.1f}s")
            assert len(ack_ids) == N and set(ack_subjects.values()) == {1}, ack_subjects.most_common(3)
            assert after["cases"] == N
            assert len(sent) == 2 * N and resent == 0, sent.most_common(3)  # ack + notification
            assert cg.stop() == 0
        finally:
            cg.close()
            pf.stop()
            sink.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_outbox_sent_on_a_full_disk_is_recorded_later_not_sent_again(tmp_path: Path) -> None:
    """The disk fills between the outbox's claim and its record of the sends:
    the messages went (Postfix has them), the store cannot say so. Once space
    returns they are recorded as sent and never sent again (before: sent again
    when the lease ran out, 120 s later), and the rest of the stopped batch
    goes at once (before: when its lease ran out)."""
    now = [dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)]
    with small_fs(tmp_path / "fs", "4m") as mnt:
        store = Store(f"sqlite:///{mnt / 'casegate.db'}", clock=lambda: now[0])
        store.migrate()
        with store.atomic():
            for i in range(3):
                raw = (f"From: support@example.com\r\nTo: c{i}@customer.test\r\n"
                       f"Subject: full {i}\r\nMessage-ID: <full{i}@example.com>\r\n\r\nHi\r\n")
                msg = store.add_message(direction="out", kind="ack", sender="support@example.com",
                                        recipients=f"c{i}@customer.test", raw=raw.encode(),
                                        message_id=f"<full{i}@example.com>")
                store.enqueue(msg, mail_from="support@example.com", rcpt_to=[f"c{i}@customer.test"])
        filler = mnt / "filler"

        def fill_then_send(*args: object) -> None:
            fill(filler)  # after the claim, before the records
            send_batch(*args)  # type: ignore[arg-type]

        with Sink() as sink:
            settings = Settings(secret=b"x" * 32, reinject_port=sink.port)
            worker = OutboxWorker(store, settings, None, send=fill_then_send)
            # The first send cannot be recorded: the batch stops there (the
            # rest would go out unrecorded too), the sent one is remembered.
            with pytest.raises(StoreUnavailable, match="database or disk is full"):
                asyncio.run(worker.run_once())  # the cause, not the failed ROLLBACK
            assert len(sink.messages()) == 1
            unsent = Outbox.select().where(Outbox.status != "sent").count()
            assert unsent == 3, "the disk was not full when the sends were recorded"

            worker.send = send_batch
            with pytest.raises(StoreUnavailable, match="database or disk is full"):
                asyncio.run(worker.run_once())  # still full
            filler.unlink()
            # At once, not when the leases run out (120 s): the remembered one
            # is recorded, the two the batch stopped before are sent.
            assert asyncio.run(worker.run_once()) == 2
            assert Outbox.select().where(Outbox.status != "sent").count() == 0
            assert asyncio.run(worker.run_once()) == 0
            ids = collections.Counter(str(d.message["Message-ID"]) for d in sink.messages())
            assert ids == {f"<full{i}@example.com>": 1 for i in range(3)}, ids
        store.close()
