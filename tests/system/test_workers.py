"""``casegate serve --workers 2`` behind a private Postfix (issue 12, "use both cores").

One parent binds the filter's listener and supervises two worker processes
that share it, on SQLite and on PostgreSQL:

1. 20 customers open cases at once (4 SMTP clients).
2. A burst of 100 messages from 5 SMTP clients: 60 new cases and 40
   customer replies to the cases of step 1; one worker is killed -9 when a
   quarter of the burst is acknowledged. The parent restarts it, Postfix
   retries what it could not hand over.
3. 10 messages delivered twice each to the filter at once, over two
   connections (Postfix's re-delivery after a lost 250, possibly to the two
   workers): one case each.
4. SIGHUP to the parent reaches both workers.

Checks: one case per new message and one append per reply, unique case
numbers, every outgoing message at the sink exactly once by Message-ID (at
most the one in flight at the kill twice, with the same Message-ID), each
reminder timer fired at most once and each fired one mailed once, nothing
left in Postfix's queue or the outbox, log lines naming the worker's pid and
Postfix's queue ID.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import smtplib
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove, postfix_available
from tests.support.mail import make
from tests.support.postfix import PostfixInstance, free_ports
from tests.support.sink import Sink
from tests.support.wait import until

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available())),
]

SUPPORT, JANE = "support@example.com", "jane@example.com"
FIRST, NEW, REPLIES, DOUBLES = 20, 60, 40, 10


@dataclass
class Env:
    pf: PostfixInstance
    sink: Sink
    cg: Casegate
    url: str

    def sql(self, query: str) -> list[tuple]:
        if self.url.startswith("sqlite:"):
            with sqlite3.connect(f"file:{self.url[len('sqlite:///'):]}?mode=ro", uri=True,
                                 timeout=10) as conn:
                return conn.execute(query).fetchall()
        import psycopg2

        with psycopg2.connect(self.url, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall()

    def workers(self) -> list[int]:
        assert self.cg.proc is not None
        return children(self.cg.proc.pid)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def env(request) -> Iterator[Env]:
    root = _new_root()
    url = (request.getfixturevalue("pg_url") if request.param == "postgresql"
           else f"sqlite:///{root / 'cg' / 'casegate.db'}")
    sink = Sink().start()
    filter_port, reinject_port = free_ports(2, exclude=[sink.port])
    pf = PostfixInstance(root=root / "pf", sink_port=sink.port, filter_port=filter_port,
                         reinject_port=reinject_port, supervised=[SUPPORT])
    cg = Casegate(root / "cg", store_url=url)
    try:
        cg.setup(csrs=[(JANE, "Jane Doe", "Jane")])
        cg.run("pool", "set", "default", "--remind-after", "3s")
        pf.start()
        cg.start(listen_port=filter_port, reinject_port=reinject_port,
                 extra=["--workers", "2", "--tick", "1s"])
        yield Env(pf, sink, cg, url)
    finally:
        cg.close()
        pf.stop()
        sink.stop()
        _remove(root)


def children(pid: int) -> list[int]:
    """The pids of a process's children (its workers), from /proc."""
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie its new parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def customer(tag: str) -> str:
    return f"{tag}@customer.test"


def send_new(env: Env, tag: str) -> None:
    env.pf.send(customer(tag), [SUPPORT], make(from_=f"Kim <{customer(tag)}>", to=SUPPORT,
                                               subject=f"workers {tag}"), source="127.0.0.2")


def acks(env: Env, prefix: str) -> list:
    return [d for d in env.sink.messages() if d.rcpt_tos[0].startswith(prefix)
            and "auto-replied" == d.message["Auto-Submitted"]]


def test_two_workers_share_the_listener(env: Env) -> None:
    started = time.monotonic()
    first = [f"first-{i}" for i in range(FIRST)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda t: send_new(env, t), first))
    got = env.sink.wait_for(lambda d: d.rcpt_tos[0].startswith("first-"), count=FIRST, timeout=60)
    reply_to = {d.rcpt_tos[0].split("@")[0]: d.message for d in got}
    assert sorted(reply_to) == sorted(first)
    # Jane answers each: a reminder timer per case, due 3 s later (while the
    # burst runs) unless the customer writes again first.
    for tag in first:
        number = str(reply_to[tag]["Subject"]).split("#", 1)[1].split("]", 1)[0]
        plus = SUPPORT.replace("@", f"+{number}@")
        env.pf.send(JANE, [plus], make(from_=JANE, to=plus, subject=f"Re: workers {tag}",
                                       body=f"Answer for {tag}.\n"), source="127.0.0.1")
    until("every answer sent", lambda: all(any(
        b"Answer for " + t.encode() in d.raw for d in env.sink.messages(to=customer(t)))
        for t in first))

    # --- the burst, one worker killed -9 a quarter of the way ---------------------
    new = [f"burst-{i}" for i in range(NEW)]
    replies = [(first[i % (FIRST // 2)], i) for i in range(REPLIES)]  # half of them talk

    def send_reply(item: tuple[str, int]) -> None:
        tag, n = item
        ack = reply_to[tag]
        to = str(ack["Reply-To"])
        env.pf.send(customer(tag), [to], make(
            from_=customer(tag), to=to, subject=f"Re: {ack['Subject']}", body=f"More, {tag} {n}.\n",
            in_reply_to=ack["Message-ID"], references=[ack["Message-ID"]]), source="127.0.0.2")

    jobs = [(send_new, t) for t in new] + [(send_reply, r) for r in replies]
    jobs = [jobs[i] for i in sorted(range(len(jobs)), key=lambda i: (i * 7919) % len(jobs))]
    sender = threading.Thread(target=lambda: list(ThreadPoolExecutor(5).map(
        lambda job: job[0](env, job[1]) if job[0] is send_new else job[0](job[1]), jobs)))
    sender.start()
    until("a quarter of the burst acknowledged", lambda: len(acks(env, "burst-")) >= NEW // 4)
    before = env.workers()
    assert len(before) == 2
    victim = before[1]
    os.kill(victim, signal.SIGKILL)
    sender.join()
    until("the worker restarted", lambda: len(env.workers()) == 2 and victim not in env.workers(),
          timeout=10)

    # --- the same delivery twice at once, over two connections ---------------------
    def deliver(raw: bytes, sender_address: str, barrier: threading.Barrier) -> str:
        with smtplib.SMTP("127.0.0.1", env.pf.filter_port, timeout=30) as s:
            s.ehlo("postfix.test")
            barrier.wait()
            s.sendmail(sender_address, [SUPPORT], raw)
        return "ok"

    doubles = [f"double-{i}" for i in range(DOUBLES)]
    for tag in doubles:
        raw = make(from_=customer(tag), to=SUPPORT, subject=f"workers {tag}")
        barrier = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            done = [pool.submit(deliver, raw, customer(tag), barrier) for _ in range(2)]
            assert [f.result() for f in done] == ["ok"] * 2

    # --- SIGHUP reaches both workers --------------------------------------------------
    workers = env.workers()
    env.cg.proc.send_signal(signal.SIGHUP)
    until("both workers reloaded", lambda: all(
        re.search(rf"casegate\.serve\[{pid}\] \[-\] SIGHUP: reloaded", env.cg.log())
        for pid in workers), timeout=10)

    # --- everything through --------------------------------------------------------------
    expected_in = FIRST + FIRST + NEW + REPLIES + DOUBLES  # with Jane's answers
    env.pf.flush()
    until("every message stored", lambda: env.sql(
        "SELECT count(*) FROM message WHERE direction = 'in'")[0][0] >= expected_in, timeout=60)
    env.pf.wait_queue_empty(timeout=30)
    until("outbox drained", lambda: env.sql(
        "SELECT count(*) FROM outbox WHERE status = 'pending'")[0][0] == 0, timeout=30)
    # every reminder comes due (3 s after Jane's answer; on a fast machine the
    # burst is over sooner) and fires, or was cancelled by the customer's reply
    until("no reminder pending", lambda: env.sql(
        "SELECT count(*) FROM timer WHERE kind = 'remind' AND status = 'pending'")[0][0] == 0,
        timeout=30)
    until("outbox drained again", lambda: env.sql(
        "SELECT count(*) FROM outbox WHERE status = 'pending'")[0][0] == 0, timeout=30)
    until("every outgoing message at the sink", lambda: len(
        {str(d.message["Message-ID"]) for d in env.sink.messages()}) >= env.sql(
        "SELECT count(*) FROM outbox")[0][0], timeout=30)

    # --- checks --------------------------------------------------------------------------
    cases = env.sql("SELECT number, customer_address FROM support_case")
    numbers = [c[0] for c in cases]
    assert len(numbers) == len(set(numbers)), "case numbers unique"
    per_customer = collections.Counter(c[1] for c in cases)
    assert sorted(per_customer) == sorted(customer(t) for t in first + new + doubles)
    assert set(per_customer.values()) == {1}, [k for k, v in per_customer.items() if v > 1]
    appended = dict(env.sql("SELECT c.customer_address, count(*) FROM message m "
                            "JOIN support_case c ON m.case_id = c.id "
                            "WHERE m.direction = 'in' GROUP BY c.customer_address"))
    more = collections.Counter(tag for tag, _ in replies)
    for tag in first + new + doubles:
        assert appended[customer(tag)] == 1 + (tag in first) + more[tag], tag
    assert env.sql("SELECT count(*) FROM message WHERE direction = 'in'")[0][0] == expected_in

    out = env.sql("SELECT m.message_id, m.kind FROM outbox o JOIN message m ON o.message_id = m.id")
    assert env.sql("SELECT count(*) FROM outbox WHERE status <> 'sent'")[0][0] == 0
    sent_ids = collections.Counter(str(d.message["Message-ID"]) for d in env.sink.messages())
    stored = {mid for mid, _ in out}
    assert not stored - set(sent_ids), f"never delivered: {sorted(stored - set(sent_ids))[:5]}"
    assert set(sent_ids) == stored, "the sink holds only casegate's outgoing mail"
    twice = {mid: n for mid, n in sent_ids.items() if n > 1}
    assert len(twice) <= 1 and all(n == 2 for n in twice.values()), twice

    # Timers: each reminder fired at most once, and each fired one mailed once.
    fired = env.sql("SELECT case_id, count(*) FROM timer WHERE kind = 'remind' AND status = 'done' "
                    "GROUP BY case_id")
    assert fired and all(n == 1 for _, n in fired), fired
    kinds = collections.Counter(k for _, k in out)
    assert kinds["reminder"] == len(fired), (kinds, len(fired))

    # The log: the restart, and lines naming the worker and Postfix's queue ID.
    log = env.cg.log()
    assert re.search(rf"worker 2 \(pid {victim}\) was killed by SIGKILL; restarting it", log), log[-3000:]
    stored_by = collections.Counter(int(m.group(1)) for m in re.finditer(
        r"casegate\.filter\[(\d+)\] \[[0-9A-F]{6,}\] stored CS", log))
    assert len(stored_by) >= 2, stored_by  # both workers took mail
    duplicates = len(re.findall(r"duplicate delivery to", log))
    assert duplicates >= DOUBLES
    # SIGTERM to the parent (systemd's stop): every worker drains and the parent exits 0.
    workers = env.workers()
    assert env.cg.stop() == 0
    log = env.cg.log()
    for pid in workers:
        assert re.search(rf"casegate\.serve\[{pid}\] \[-\] stopped", log), pid
        assert not Path(f"/proc/{pid}").exists()
    print(f"\nworkers: {len(cases)} cases, {len(sent_ids)} outgoing ({sum(sent_ids.values()) - len(sent_ids)}"
          f" sent twice), stored per pid {dict(stored_by)}, {duplicates} duplicate deliveries, "
          f"{len(fired)} reminders; {time.monotonic() - started:.1f}s")


@contextlib.contextmanager
def two_workers(tmp_path: Path) -> Iterator[tuple[Casegate, int]]:
    """``casegate serve --workers 2`` on a fresh store, both workers up: it
    and the parent's pid; closed (killed if need be) afterwards."""
    cg = Casegate(tmp_path / "cg")
    cg.setup()
    filter_port, reinject_port = free_ports(2)
    try:
        cg.start(listen_port=filter_port, reinject_port=reinject_port, extra=["--workers", "2"])
        assert cg.proc is not None
        parent = cg.proc.pid
        until("two workers", lambda: len(children(parent)) == 2, timeout=10)
        yield cg, parent
    finally:
        cg.close()


def test_workers_that_keep_dying_stop_the_parent(tmp_path: Path) -> None:
    """A worker killed again and again is restarted each time with a log
    line; past 5 deaths within a minute the parent stops the other worker
    and exits 1 (systemd's Restart= takes over)."""
    with two_workers(tmp_path) as (cg, parent):
        for n in range(6):
            victim = children(parent)[0]
            os.kill(victim, signal.SIGKILL)
            if n < 5:
                until("a worker restarted",
                      lambda v=victim: v not in children(parent) and len(children(parent)) == 2, timeout=15)
        code = cg.proc.wait(30)
        log = cg.log()
        assert code == 1, log[-3000:]
        assert len(re.findall(r"worker \d \(pid \d+\) was killed by SIGKILL; restarting it", log)) == 5
        assert "6 worker exits within 60s, giving up" in log, log[-3000:]
        assert "stopped: the workers kept failing" in log, log[-3000:]
        assert re.search(r"worker \d \(pid \d+\) exited with status 0", log), log[-3000:]  # the other one


def test_workers_stop_when_the_parent_is_killed(tmp_path: Path) -> None:
    """kill -9 of the parent: the workers get SIGTERM (PR_SET_PDEATHSIG),
    drain and exit; none keeps serving unsupervised."""
    with two_workers(tmp_path) as (cg, parent):
        workers = children(parent)
        cg.kill9()
        until("the workers gone", lambda: all(gone(p) for p in workers), timeout=15)
        for pid in workers:
            assert re.search(rf"casegate\.serve\[{pid}\] \[-\] stopped", cg.log()), cg.log()[-2000:]
