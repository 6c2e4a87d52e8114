"""PostgreSQL stopped under load (issue 8, "Faults: figures from tests").

A private PostgreSQL cluster (initdb/pg_ctl in a temporary folder, never the
shared server), a private Postfix built from contrib/postfix/ and ``casegate
serve --store postgresql://…`` on it. Customers write new cases at a steady
rate; in the middle PostgreSQL is stopped (``pg_ctl stop -m fast``) for a
while and started again. Every delivery to the filter in that window must be
answered 451 (Postfix's log: ``status=deferred … said: 451``), Postfix keeps
and retries them, and once the queue has drained every message has exactly
one case and exactly one acknowledgement: 0 lost, 0 duplicated.

The suite runs a 15 s outage; ``bench/faults.py pg-outage`` runs the full
60 s one with the same code (:func:`run_pg_outage`).
"""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pytest

from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove, postfix_available
from tests.support.mail import make
from tests.support.pgcluster import PgCluster, pgcluster_missing
from tests.support.postfix import PostfixInstance, free_ports
from tests.support.sink import Delivery, Sink

SUPPORT = "support@example.com"
JANE = "jane@example.com"

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available())),
    pytest.mark.skipif(pgcluster_missing() is not None, reason=str(pgcluster_missing())),
]


# --- shared with test_fault_kill.py and bench/faults.py ----------------------

def wait_until(what: str, predicate: Callable[[], bool], timeout: float,
               interval: float = 0.1) -> float:
    """Poll ``predicate`` until true; the seconds it took. TimeoutError names ``what``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not reached after {timeout}s")
        time.sleep(interval)
    return time.monotonic() - start


def strip_tag(subject: str) -> str:
    return re.sub(r"^\[Case #\w+\] ", "", subject)


def is_ack(d: Delivery) -> bool:
    return d.message["Auto-Submitted"] == "auto-replied"


@dataclass
class Tally:
    """What came out: cases per subject, acknowledgements per Message-ID."""

    cases: int
    case_subjects: collections.Counter[str]
    customers: collections.Counter[str]
    acks: int
    ack_ids: collections.Counter[str]
    ack_subjects: collections.Counter[str]

    @property
    def duplicate_cases(self) -> int:
        return sum(n - 1 for n in self.case_subjects.values())

    @property
    def resent_acks(self) -> int:
        """Copies of one acknowledgement sent again with the same Message-ID."""
        return sum(n - 1 for n in self.ack_ids.values())

    def lost(self, subjects: list[str]) -> list[str]:
        return [s for s in subjects if s not in self.case_subjects]


def tally(cg: Casegate, sink: Sink, prefix: str) -> Tally:
    cases = [c for c in cg.json("case", "list") if strip_tag(c["subject"]).startswith(prefix)]
    acks = [d for d in sink.messages() if is_ack(d)
            and strip_tag(str(d.message["Subject"])).startswith(prefix)]
    return Tally(
        cases=len(cases),
        case_subjects=collections.Counter(strip_tag(c["subject"]) for c in cases),
        customers=collections.Counter(c["customer"] for c in cases),
        acks=len(acks),
        ack_ids=collections.Counter(str(d.message["Message-ID"]) for d in acks),
        ack_subjects=collections.Counter(strip_tag(str(d.message["Subject"])) for d in acks),
    )


def filter_statuses(log: str, fport: int) -> list[tuple[str, str, str]]:
    """(queue ID, status, detail) of each delivery attempt to the filter."""
    out = []
    pattern = re.compile(
        r": ([0-9A-Za-z]+): to=<" + re.escape(SUPPORT) + r">, relay=([^,]+), .*?"
        r"status=(\w+) \((.*)\)$", re.MULTILINE)
    for m in pattern.finditer(log):
        relay = m.group(2)
        if relay == "none" or relay.endswith(f":{fport}"):
            out.append((m.group(1), m.group(3), m.group(4)))
    return out


def outbox_pending(url: str) -> int:
    import psycopg2

    with psycopg2.connect(url, connect_timeout=3) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from outbox where status = 'pending'")
        return int(cur.fetchone()[0])


# --- the scenario -------------------------------------------------------------

@dataclass
class OutageFigures:
    rate: float
    before: float
    outage: float
    after: float
    messages: int = 0
    attempts_in_window: int = 0         # deliveries to the filter while PostgreSQL was down
    answered_451_in_window: int = 0
    other_in_window: list[str] = field(default_factory=list)
    deferred_total: int = 0             # status=deferred lines for the filter, whole run
    deferred_messages: int = 0          # distinct queue IDs deferred at least once
    pg_stop_seconds: float = 0.0
    pg_start_seconds: float = 0.0
    backlog: int = 0                    # messages in Postfix's queue when PostgreSQL came back
    backlog_seconds: float = 0.0        # PostgreSQL up (and postqueue -f) -> all of those delivered
    drain_seconds: float = 0.0          # PostgreSQL up -> load over, queue and outbox empty, acks in
    cases: int = 0
    duplicate_cases: int = 0
    duplicate_customers: int = 0
    lost: int = 0
    acks: int = 0
    distinct_acks: int = 0
    resent_acks: int = 0
    casegate_451_lines: int = 0

    def summary(self) -> str:
        return (
            f"PostgreSQL down {self.outage:.0f}s under {self.rate:g} msg/s: "
            f"{self.messages} messages, {self.attempts_in_window} deliveries in the window "
            f"({self.answered_451_in_window} answered 451), {self.deferred_total} deferrals of "
            f"{self.deferred_messages} messages in all; after the restart the backlog of "
            f"{self.backlog} was delivered in {self.backlog_seconds:.1f}s, all drained in {self.drain_seconds:.1f}s; {self.cases} cases ({self.duplicate_cases} duplicate, "
            f"{self.duplicate_customers} duplicate customers), {self.lost} lost, "
            f"{self.acks} acks ({self.distinct_acks} distinct, {self.resent_acks} re-sent copies)"
        )


def run_pg_outage(*, rate: float = 10.0, before: float = 5.0, outage: float = 15.0,
                  after: float = 5.0, drain_timeout: float = 240.0, grace: float = 0.5,
                  progress: Callable[[str], None] = lambda s: None) -> OutageFigures:
    """Send ``rate`` new cases a second for before+outage+after seconds,
    PostgreSQL stopped from ``before`` for ``outage`` seconds; wait for the
    drain and count. ``grace``: a delivery committed just before the stop may
    be logged as sent a moment after pg_ctl returns; the window starts later
    by that much."""
    fig = OutageFigures(rate=rate, before=before, outage=outage, after=after)
    prefix = "pgout-"
    root = _new_root()
    sink = Sink().start()
    pg = PgCluster()
    cg: Casegate | None = None
    pf: PostfixInstance | None = None
    try:
        pg.start()
        url = pg.create_database("casegate")
        fport, rport = free_ports(2, exclude=[sink.port])
        pf = PostfixInstance(root=root / "pf", sink_port=sink.port, filter_port=fport,
                             reinject_port=rport, supervised=[SUPPORT])
        cg = Casegate(root / "cg", store_url=url)
        cg.setup(csrs=[(JANE, "Jane Doe", "")])
        pf.start()
        cg.start(listen_port=fport, reinject_port=rport)

        total = int(rate * (before + outage + after))
        subjects = [f"{prefix}{i:05d}" for i in range(total)]
        qids: list[str] = []
        errors: list[str] = []
        t0 = time.monotonic()

        def sender() -> None:
            assert pf is not None
            for i, subject in enumerate(subjects):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the load, not waiting for an outcome
                raw = make(from_=f"Customer {i} <c{i}@customer.test>", subject=subject)
                try:
                    qids.append(pf.send(f"c{i}@customer.test", [SUPPORT], raw))
                except Exception as exc:  # Postfix itself never refuses here
                    errors.append(f"{subject}: {exc!r}")

        thread = threading.Thread(target=sender, name="load")
        thread.start()
        progress(f"sending {total} messages at {rate:g}/s")

        time.sleep(max(0.0, t0 + before - time.monotonic()))  # the load runs before the fault
        t = time.monotonic()
        pg.stop(mode="fast")
        fig.pg_stop_seconds = time.monotonic() - t
        down_at = time.monotonic()
        progress(f"PostgreSQL stopped ({fig.pg_stop_seconds:.2f}s)")
        time.sleep(grace)
        window_from = pf.log_position()
        time.sleep(max(0.0, down_at + outage - time.monotonic()))  # the fault's length
        window_to = pf.log_position()
        t = time.monotonic()
        pg.start()
        up_at = time.monotonic()
        fig.pg_start_seconds = up_at - t
        progress(f"PostgreSQL up again after {up_at - down_at:.1f}s")
        backlog = {str(m["queue_id"]) for m in pf.queue()}
        pf.flush()  # what an admin does after an outage (else Postfix's back-off)
        fig.backlog = len(backlog)
        fig.backlog_seconds = wait_until("the backlog delivered", lambda: not backlog & {
            str(m["queue_id"]) for m in pf.queue()}, drain_timeout, 0.1)
        progress(f"backlog of {fig.backlog} delivered {fig.backlog_seconds:.1f}s after the restart")

        thread.join(before + outage + after + 60)
        assert not thread.is_alive(), "the load generator hung"
        assert not errors, errors[:5]
        fig.messages = len(qids)
        pf.flush()

        wait_until("Postfix queue empty", lambda: not pf.queue(), drain_timeout, 0.2)
        wait_until("outbox empty", lambda: outbox_pending(url) == 0,
                   max(10.0, drain_timeout - (time.monotonic() - up_at)), 0.2)
        # The outbox is empty, so every acknowledgement is in Postfix's queue or
        # delivered; once the queue is empty again they are all at the sink.
        wait_until("Postfix queue empty (acks)", lambda: not pf.queue(), 60, 0.2)
        sink.wait_for(lambda d: is_ack(d), count=fig.messages, timeout=30)
        fig.drain_seconds = time.monotonic() - up_at

        window = filter_statuses(pf.maillog(window_from)[: window_to - window_from], fport)
        fig.attempts_in_window = len(window)
        fig.answered_451_in_window = sum(
            1 for _, status, detail in window if status == "deferred" and " said: 451 " in detail)
        fig.other_in_window = [f"{q} {s} ({d})" for q, s, d in window
                               if not (s == "deferred" and " said: 451 " in d)]
        every = filter_statuses(pf.maillog(), fport)
        deferred = [q for q, s, _ in every if s == "deferred"]
        fig.deferred_total = len(deferred)
        fig.deferred_messages = len(set(deferred))
        fig.casegate_451_lines = cg.log().count("store unavailable, deferring")

        t_ = tally(cg, sink, prefix)
        fig.cases = t_.cases
        fig.duplicate_cases = t_.duplicate_cases
        fig.duplicate_customers = sum(n - 1 for n in t_.customers.values())
        fig.lost = len(t_.lost(subjects))
        fig.acks = t_.acks
        fig.distinct_acks = len(t_.ack_ids)
        fig.resent_acks = t_.resent_acks
        progress(fig.summary())
        assert cg.stop() == 0
        return fig
    except BaseException:
        if pf is not None:
            print(f"--- maillog tail ---\n{pf.maillog_tail(40)}")
        if cg is not None:
            print(f"--- casegate.log tail ---\n{cg.log()[-4000:]}")
        print(f"--- postgres.log tail ---\n{pg.log_tail()}")
        raise
    finally:
        if cg is not None:
            cg.close()
        if pf is not None:
            pf.stop()
        sink.stop()
        pg.close()
        _remove(root)


def check_outage(fig: OutageFigures) -> None:
    assert fig.messages == int(fig.rate * (fig.before + fig.outage + fig.after))
    # Every delivery while PostgreSQL was down got 451, and there were many.
    assert fig.attempts_in_window >= fig.rate * fig.outage / 2, asdict(fig)
    assert fig.other_in_window == [], fig.other_in_window[:5]
    assert fig.answered_451_in_window == fig.attempts_in_window
    # After the restart: one case per message, one customer per case, one ack each.
    assert fig.lost == 0
    assert fig.cases == fig.messages and fig.duplicate_cases == 0
    assert fig.duplicate_customers == 0
    assert fig.distinct_acks == fig.messages
    assert fig.resent_acks == 0, "an acknowledgement was sent twice"


def test_postgresql_stopped_under_load_defers_then_loses_and_doubles_nothing() -> None:
    fig = run_pg_outage(rate=10, before=5, outage=15, after=5, drain_timeout=150,
                        progress=lambda s: print(s, flush=True))
    check_outage(fig)



def test_outbox_stops_its_batch_when_postgresql_goes_away_mid_batch() -> None:
    """PostgreSQL stops while the outbox sends a batch: the message whose
    "sent" could not be recorded is sent again after its lease (the one
    documented duplicate); the rest of the batch must wait, not go out
    unrecorded (each would be sent a second time too)."""
    import asyncio
    import datetime as dt

    from casestore.store import Store, StoreUnavailable
    from smtpd_hook.outbox import OutboxWorker, send_batch
    from smtpd_hook.settings import Settings

    now = [dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)]
    with PgCluster() as pg, Sink() as sink:
        store = Store(pg.create_database("outbox"), clock=lambda: now[0])
        store.migrate()
        with store.atomic():
            for i in range(5):
                mid = f"<cs{i}.fault@example.com>"
                raw = (f"From: support@example.com\r\nTo: c{i}@customer.test\r\n"
                       f"Subject: batch-{i}\r\nMessage-ID: {mid}\r\n\r\nHello\r\n").encode()
                msg = store.add_message(direction="out", kind="ack", sender="support@example.com",
                                        recipients=f"c{i}@customer.test", raw=raw, message_id=mid)
                store.enqueue(msg, mail_from="support@example.com", rcpt_to=[f"c{i}@customer.test"])
        recorded = [0]

        def send(*args, **kw):  # the real send_batch; PostgreSQL stops after the first record
            on_result = args[-1]

            def record(item, error):
                on_result(item, error)
                recorded[0] += 1
                if recorded[0] == 1:
                    pg.stop(mode="fast")

            return send_batch(*args[:-1], record, **kw)

        settings = Settings(secret=b"x" * 32, reinject_port=sink.port)
        worker = OutboxWorker(store, settings, None, send=send)
        def run_once() -> int:  # as OutboxWorker.run() does: store trouble is a round of 0
            try:
                return asyncio.run(worker.run_once())
            except StoreUnavailable:
                return 0

        run_once()
        first_round = len(sink.messages())
        pg.start()
        now[0] += dt.timedelta(seconds=settings.outbox_lease_seconds + 1)  # the lease runs out
        run_once()  # the first query after the restart finds the old connection broken
        while run_once():
            pass
        ids = collections.Counter(str(d.message["Message-ID"]) for d in sink.messages())
        store.close()
    print(f"\nfirst round sent {first_round} of 5 with PostgreSQL gone after the first; "
          f"copies per Message-ID: {sorted(ids.values())}")
    assert len(ids) == 5
    assert sum(n - 1 for n in ids.values()) <= 1, ids
