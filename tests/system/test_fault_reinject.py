"""Postfix's re-injection listener down while mail comes in (issue 8, "Faults").

A private Postfix hands mail to the real ``casegate serve``; its filter-free
listener (contrib's ``127.0.0.1:10026 inet … smtpd``) is taken out of
master.cf and Postfix reloaded, so nothing listens there. Meanwhile customers
open cases and write follow-ups and the CSR answers. Then:

* intake goes on: every message gets casegate's ``250`` (stored, with its
  outgoing mail in the outbox), none a ``451``;
* the outbox backs off (casegate's log: ``retry in Ns``, at most
  ``retry_max_seconds``), and when the listener is back it drains
  completely: every stored outgoing message reaches the sink once, with its
  stored Message-ID, and in order per case and recipient.

The suite runs a short outage; ``bench/faults_outbox.py`` runs the same
scenario (:class:`Outage`) for 10 minutes and prints the figures.
"""

from __future__ import annotations

import collections
import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove, postfix_available
from tests.support.mail import make
from tests.support.postfix import PostfixInstance, free_ports
from tests.support.sink import Sink

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available())),
]

SUPPORT = "support@example.com"
JANE = "jane@example.com"
RETRY_IN = re.compile(r"re-injection failed \((.*)\); retry in (\d+)s")


@dataclass
class Figures:
    outage_seconds: float = 0.0
    taken_during_outage: int = 0  # messages casegate answered 250 while the listener was down
    deferred_by_casegate: int = 0  # 451s from casegate during the outage (must be 0)
    outgoing: int = 0  # outgoing messages stored in all
    pending_at_return: int = 0  # outgoing messages waiting when the listener came back
    drain_seconds: float = 0.0  # from the listener's return to the last delivery at the sink
    max_backoff_seconds: int = 0  # the longest "retry in Ns" in casegate's log
    max_attempts: int = 0  # the most failed attempts of one outgoing message
    failed_rounds: int = 0  # "re-injection failed … retry in" lines in casegate's log
    out_of_order: list[str] = field(default_factory=list)  # per case and recipient
    duplicate_message_ids: int = 0  # copies beyond the first at the sink (must be 0)
    missing: int = 0  # stored outgoing messages that never reached the sink (must be 0)
    changed_message_ids: int = 0  # sink Message-IDs that no stored message has (must be 0)

    def line(self) -> str:
        return (f"listener down {self.outage_seconds:.0f}s: {self.taken_during_outage} messages "
                f"taken (250) meanwhile, {self.deferred_by_casegate} deferred by casegate; "
                f"{self.pending_at_return} outgoing waiting at the return, all {self.outgoing} "
                f"delivered {self.drain_seconds:.1f}s after it; back-off up to "
                f"{self.max_backoff_seconds}s ({self.failed_rounds} failed rounds, at most "
                f"{self.max_attempts} for one message); out of order per case: "
                f"{len(self.out_of_order)}; duplicate Message-IDs: {self.duplicate_message_ids}; "
                f"missing: {self.missing}; Message-IDs changed: {self.changed_message_ids}")


class Outage:
    """Sink + private Postfix + ``casegate serve`` on a fresh SQLite store,
    with the re-injection listener switched off and on by master.cf."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sink = Sink().start()
        self.fport, self.rport = free_ports(2)
        self.pf = PostfixInstance(root=root / "pf", sink_port=self.sink.port,
                                  filter_port=self.fport, reinject_port=self.rport,
                                  supervised=[SUPPORT])
        self.cg = Casegate(root / "cg")
        self.db = root / "cg" / "casegate.db"
        self.cases: list[tuple[str, str]] = []  # (number, customer)
        self.sent: dict[str, str] = {}  # queue ID -> what
        self.n = 0
        self.master_cf = ""

    def start(self) -> None:
        self.cg.setup(csrs=[(JANE, "Jane Doe", "Jane Doe")])
        self.pf.start()
        self.master_cf = (self.pf.etc / "master.cf").read_text()
        assert self.listener_block() in self.master_cf
        self.cg.start(listen_port=self.fport, reinject_port=self.rport)

    def close(self) -> None:
        self.cg.close()
        self.pf.stop()
        self.sink.stop()

    # --- the listener ---------------------------------------------------------
    def listener_block(self) -> str:
        lines = self.master_cf.splitlines(keepends=True)
        start = next(i for i, line in enumerate(lines)
                     if line.startswith(f"127.0.0.1:{self.rport} inet"))
        end = start + 1
        while end < len(lines) and lines[end][:1].isspace():
            end += 1
        return "".join(lines[start:end])

    def listener(self, up: bool) -> None:
        """Take the re-injection listener out of master.cf (or put it back)
        and reload Postfix: its master closes (or opens) the port."""
        text = self.master_cf
        if not up:
            block = self.listener_block()
            text = text.replace(block, "".join("#" + line for line in block.splitlines(True)))
        (self.pf.etc / "master.cf").write_text(text)
        self.pf._age_config()
        self.pf.reload()
        deadline = time.monotonic() + 10
        while self.listening() != up:
            assert time.monotonic() < deadline, f"listener still {'down' if up else 'up'}"
            time.sleep(0.05)

    def listening(self) -> bool:
        import socket

        try:
            socket.create_connection(("127.0.0.1", self.rport), timeout=1).close()
            return True
        except OSError:
            return False

    # --- mail -------------------------------------------------------------------
    def new_case(self) -> str:
        self.n += 1
        customer = f"c{self.n}@customer.test"
        raw = make(from_=f"Customer {self.n} <{customer}>", subject=f"outage-{self.n:04d}")
        qid = self.pf.send(customer, [SUPPORT], raw)
        self.sent[qid] = f"new case {self.n}"
        return qid

    def follow_up(self, k: int) -> str:
        number, customer = self.cases[k % len(self.cases)]
        self.n += 1
        plus = SUPPORT.replace("@", f"+{number}@")
        raw = make(from_=customer, to=plus, subject=f"Re: [Case #{number}] more {self.n}",
                   body=f"More about it ({self.n}).\n")
        qid = self.pf.send(customer, [plus], raw)
        self.sent[qid] = f"follow-up {number}"
        return qid

    def csr_reply(self, k: int) -> str:
        number, _ = self.cases[k % len(self.cases)]
        self.n += 1
        plus = SUPPORT.replace("@", f"+{number}@")
        raw = make(from_=JANE, to=plus, subject=f"Re: [Case #{number}] answer {self.n}",
                   body=f"Answer {self.n}: try turning it off and on.\n")
        qid = self.pf.send(JANE, [plus], raw, source="127.0.0.1")  # a trusted network: a CSR
        self.sent[qid] = f"answer {number}"
        return qid

    def open_cases(self, count: int, timeout: float = 30) -> None:
        before = len(self.sink.messages())
        for _ in range(count):
            self.new_case()
        self.sink.wait_for(count=before + 2 * count, timeout=timeout)  # ack + notification each
        for d in self.sink.messages():
            m = re.match(r"\[Case #(\w+)\] outage-", str(d.message["Subject"]))
            if m and "auto-replied" == d.message["Auto-Submitted"]:
                self.cases.append((m.group(1), d.rcpt_tos[0]))
        assert len(self.cases) == count

    def send_mix(self, i: int) -> str:
        """Message ``i`` of the outage: a new case, a customer's follow-up or
        a CSR's answer, in turn, spread over the open cases."""
        kind = i % 3
        if kind == 0:
            return self.new_case()
        if kind == 1:
            return self.follow_up(i)
        return self.csr_reply(i)

    # --- what happened ---------------------------------------------------------
    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def pending(self) -> int:
        return int(self.query("select count(*) from outbox where status != 'sent'")[0][0])

    def answers(self, qids: list[str], timeout: float) -> dict[str, str]:
        """casegate's answer (``250 …``/``451 …``) to each queue ID, from the maillog."""
        want = set(qids)
        pattern = re.compile(rf" ([0-9A-F]+): to=<[^>]*>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
                             rf"{self.fport},.* status=\w+ \((?:host \S+ said: )?(\d{{3}}[^)]*)")
        deadline = time.monotonic() + timeout
        while True:
            found: dict[str, str] = {}
            for m in pattern.finditer(self.pf.maillog()):
                if m.group(1) in want:
                    found.setdefault(m.group(1), m.group(2))
                    if not m.group(2).startswith("2"):
                        found[m.group(1)] = m.group(2)  # a deferral counts, whatever came later
            if len(found) == len(want) or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def drain(self, timeout: float) -> float:
        """Wait until the outbox is empty and the sink holds every stored
        outgoing message; the time of the last arrival (monotonic)."""
        deadline = time.monotonic() + timeout
        while self.pending() or len(self.sink.messages()) < self.outgoing():
            assert time.monotonic() < deadline, (
                f"not drained after {timeout}s: {self.pending()} pending, "
                f"{len(self.sink.messages())} of {self.outgoing()} at the sink")
            time.sleep(0.2)
        return time.monotonic()

    def outgoing(self) -> int:
        return int(self.query("select count(*) from message where direction = 'out'")[0][0])

    def figures(self, fig: Figures) -> Figures:
        stored = {mid: (case_id, row_id) for row_id, case_id, mid in self.query(
            "select id, case_id, message_id from message where direction = 'out'")}
        fig.outgoing = len(stored)
        arrived = self.sink.messages()
        ids = collections.Counter(str(d.message["Message-ID"]) for d in arrived)
        fig.duplicate_message_ids = sum(n - 1 for n in ids.values())
        fig.missing = len(set(stored) - set(ids))
        fig.changed_message_ids = len(set(ids) - set(stored))
        streams: dict[tuple[int, str], list[int]] = collections.defaultdict(list)
        for d in arrived:
            case_id, row_id = stored.get(str(d.message["Message-ID"]), (0, 0))
            streams[(case_id, ",".join(d.rcpt_tos))].append(row_id)
        fig.out_of_order = [f"case {c} to {r}: {rows}" for (c, r), rows in streams.items()
                            if rows != sorted(rows)]
        log = self.cg.log()
        waits = [int(m.group(2)) for m in RETRY_IN.finditer(log)]
        fig.failed_rounds = len(waits)
        fig.max_backoff_seconds = max(waits, default=0)
        fig.max_attempts = int(self.query("select coalesce(max(attempts), 0) from outbox")[0][0])
        return fig

    def run(self, *, outage: float, gap: float, cases: int = 10,
            drain_timeout: float = 400, progress: Any = None) -> Figures:
        """Open ``cases`` cases, take the listener down for ``outage`` seconds
        while sending one message every ``gap`` seconds, bring it back, wait
        for the drain; the figures."""
        fig = Figures()
        self.open_cases(cases)
        self.listener(up=False)
        down_at = time.monotonic()
        qids: list[str] = []
        i = 0
        while time.monotonic() - down_at < outage:
            qids.append(self.send_mix(i))
            i += 1
            if progress and i % 50 == 0:
                progress(f"{time.monotonic() - down_at:.0f}s down: {i} messages sent, "
                         f"{self.pending()} outgoing waiting")
            # a steady stream: pace by the clock, not by outcomes
            time.sleep(max(0.0, down_at + i * gap - time.monotonic()))
        answers = self.answers(qids, timeout=30)
        fig.taken_during_outage = sum(a.startswith("250") for a in answers.values())
        fig.deferred_by_casegate = sum(not a.startswith("250") for a in answers.values())
        assert len(answers) == len(qids), f"{len(qids) - len(answers)} messages not answered"
        fig.pending_at_return = self.pending()
        assert self.sink.messages() and not self.listening()
        self.listener(up=True)
        up_at = time.monotonic()
        fig.outage_seconds = up_at - down_at
        self.drain(drain_timeout)
        arrivals = [d.received.timestamp() for d in self.sink.messages()]
        wall_up = time.time() - (time.monotonic() - up_at)
        fig.drain_seconds = max(arrivals) - wall_up
        time.sleep(1.0)  # anything extra (a second copy) arrives before counting
        return self.figures(fig)


@contextlib.contextmanager
def outage_env() -> Iterator[Outage]:
    root = _new_root()
    env = Outage(root)
    try:
        env.start()
        yield env
    finally:
        env.close()
        _remove(root)


def test_reinjection_listener_down_intake_goes_on_and_the_outbox_drains_in_order() -> None:
    started = time.monotonic()
    with outage_env() as env:
        fig = env.run(outage=20, gap=0.4, cases=8, drain_timeout=60)
        print(f"\n{fig.line()}; test {time.monotonic() - started:.1f}s")
        assert fig.taken_during_outage >= 40 and fig.deferred_by_casegate == 0
        assert fig.pending_at_return >= fig.taken_during_outage  # nothing went out meanwhile
        assert fig.failed_rounds > 0 and 0 < fig.max_backoff_seconds <= 300
        assert fig.missing == 0 and fig.duplicate_message_ids == 0
        assert fig.changed_message_ids == 0
        assert fig.out_of_order == []
        assert env.cg.stop() == 0
