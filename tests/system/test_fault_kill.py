"""kill -9 / stop of one part mid-burst (issue 8, "Faults: figures from tests").

Each scenario sends a burst of new cases to support@ through a private
Postfix built from contrib/postfix/ over 20 concurrent SMTP sessions, hits
one part while the burst is being processed, brings it back, waits until
Postfix's queue and casegate's outbox are empty, and counts:

* ``serve-pg``: kill -9 of ``casegate serve`` on a PostgreSQL store (a
  private cluster; tests/system/test_crash.py does the same on SQLite).
* ``milter``: kill -9 of ``casegate milter`` running as its own process,
  wired with contrib's milter and recipient-gate lines. While it is gone the
  gate answers 451 at RCPT TO for support@: the client (like any MTA) retries.
* ``postfix``: ``postfix stop`` / ``postfix start`` (SQLite store).

The client retries every 4xx and every connection error with the very same
bytes, as a sending MTA does from its queue. A connection that breaks after
the client sent the message but before Postfix's reply is *ambiguous*:
Postfix may have queued it, and the retry is then a second, different queue
file (SMTP's own duplicate, RFC 1047): Postfix's log tells how many copies
Postfix queued per message, and the check is one case per queued copy.

Checks: nothing lost, no duplicate case (beyond copies Postfix itself
queued twice), every message acknowledged, and at most the one documented
duplicate send (same Message-ID) of casegate's outgoing mail.
"""

from __future__ import annotations

import collections
import re
import shutil
import smtplib
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from tests.support.casegate import Casegate, casegate_cmd
from tests.support.fixtures import _new_root, _remove, postfix_available
from tests.support.mail import make
from tests.support.pgcluster import PgCluster, pgcluster_missing
from tests.support.postfix import PostfixInstance, _alive, free_ports
from tests.support.sink import Sink
from tests.system.test_fault_postgres import is_ack, strip_tag, tally, wait_until

SUPPORT = "support@example.com"
JANE = "jane@example.com"

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postfix_available() is not None, reason=str(postfix_available())),
]

Progress = Callable[[str], None]
#: The milter and Postfix stay away at least this long (and until clients were refused).
MIN_DOWN = 2.0


@dataclass
class KillFigures:
    what: str
    messages: int = 0
    hit_at: str = ""                # how far the burst was when the part was hit
    down_seconds: float = 0.0       # the part's absence
    client_4xx: int = 0             # temporary refusals the client saw and retried
    client_conn_errors: int = 0     # refused or broken connections the client retried
    ambiguous: int = 0              # broken after DATA was sent: Postfix may have queued it
    queued_twice: int = 0           # messages Postfix queued twice because of that
    recovery_seconds: float = 0.0   # part back -> queue and outbox empty, every ack in
    cases: int = 0
    duplicate_cases: int = 0
    duplicate_customers: int = 0
    lost: int = 0
    acks: int = 0
    distinct_acks: int = 0
    redelivered: int = 0            # deliveries casegate recognised as already stored
    resent: int = 0                 # casegate's mail delivered twice with one Message-ID
    resent_detail: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.what}: {self.messages} messages, hit at {self.hit_at}, down "
            f"{self.down_seconds:.1f}s; client retried {self.client_4xx} 4xx and "
            f"{self.client_conn_errors} connection errors ({self.ambiguous} ambiguous, "
            f"{self.queued_twice} queued twice by Postfix); recovered "
            f"{self.recovery_seconds:.1f}s after the restart; {self.cases} cases "
            f"({self.duplicate_cases} duplicate), {self.lost} lost, {self.acks} acks "
            f"({self.distinct_acks} distinct); {self.redelivered} redeliveries recognised, "
            f"{self.resent} re-sent copies of casegate's mail"
        )


def check_kill(fig: KillFigures) -> None:
    assert fig.lost == 0, fig.summary()
    # A second case only for a message Postfix itself queued twice.
    assert fig.duplicate_cases == fig.queued_twice, fig.summary()
    assert fig.cases == fig.messages + fig.queued_twice
    assert fig.distinct_acks == fig.cases, fig.summary()
    assert fig.resent <= 1, fig.resent_detail


# --- the client: an MTA that retries ------------------------------------------

class Client:
    """Sends message i from c{i}@customer.test (127.0.0.2) and retries each
    4xx and connection error with the same bytes until ``deadline``."""

    def __init__(self, port: int, prefix: str, deadline: float) -> None:
        self.port = port
        self.prefix = prefix
        self.deadline = deadline
        self.lock = threading.Lock()
        self.accepted = 0
        self.t4xx = 0
        self.conn = 0
        self.ambiguous = 0
        self.failures: list[str] = []

    def subject(self, i: int) -> str:
        return f"{self.prefix}{i:05d}"

    def _count(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def send(self, i: int) -> str | None:
        sender = f"c{i}@customer.test"
        raw = make(from_=f"Customer {i} <{sender}>", subject=self.subject(i))
        while time.monotonic() < self.deadline:
            in_data = False
            try:
                with smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test",
                                  source_address=("127.0.0.2", 0), timeout=30) as smtp:
                    smtp.ehlo()
                    code, resp = smtp.mail(sender)
                    if code == 250:
                        code, resp = smtp.rcpt(SUPPORT)
                    if code in (250, 251):
                        in_data = True
                        code, resp = smtp.data(raw)
                        in_data = False
                    if code == 250:
                        self._count("accepted")
                        m = re.search(rb"queued as (\w+)", resp)
                        return m.group(1).decode() if m else "?"
                    if code >= 500:
                        with self.lock:
                            self.failures.append(f"{self.subject(i)}: {code} {resp!r}")
                        return None
                    self._count("t4xx")
            except smtplib.SMTPDataError as exc:  # smtp.data raises it for 4xx/5xx
                if exc.smtp_code >= 500:
                    with self.lock:
                        self.failures.append(f"{self.subject(i)}: {exc}")
                    return None
                self._count("t4xx")
            except (OSError, smtplib.SMTPException):
                self._count("ambiguous" if in_data else "conn")
            time.sleep(0.2)  # the retry interval of this MTA
        with self.lock:
            self.failures.append(f"{self.subject(i)}: not accepted before the deadline")
        return None


def queued_copies(pf: PostfixInstance, prefix_ids: set[str]) -> collections.Counter[str]:
    """How many queue files Postfix committed per Message-ID in ``prefix_ids``:
    cleanup names the Message-ID, qmgr sees only committed files."""
    log = pf.maillog()
    mid = dict(re.findall(r"cleanup\[\d+\]: (\w+): message-id=(<[^>]*>)", log))
    committed = set(re.findall(r"qmgr\[\d+\]: (\w+): from=<", log))
    return collections.Counter(mid[q] for q in committed if mid.get(q) in prefix_ids)


# --- shared set-up --------------------------------------------------------------

class Rig:
    """Sink, Postfix, casegate (SQLite, or PostgreSQL on a private cluster),
    optionally ``casegate milter`` as its own process."""

    def __init__(self, *, postgres: bool = False, separate_milter: bool = False) -> None:
        self.root = _new_root()
        self.sink = Sink().start()
        self.pg: PgCluster | None = None
        self.milter_proc: subprocess.Popen[bytes] | None = None
        try:
            url = None
            if postgres:
                self.pg = PgCluster()
                self.pg.start()
                url = self.pg.create_database("casegate")
            self.fport, self.rport, self.mport = free_ports(3, exclude=[self.sink.port])
            self.pf = PostfixInstance(
                root=self.root / "pf", sink_port=self.sink.port, filter_port=self.fport,
                reinject_port=self.rport, supervised=[SUPPORT],
                milter=f"inet:127.0.0.1:{self.mport}" if separate_milter else None)
            self.cg = Casegate(self.root / "cg", store_url=url)
            self.cg.setup(csrs=[(JANE, "Jane Doe", "")])
            self.pf.start()
            if separate_milter:
                self.start_milter()
            self.start_serve()
        except BaseException:
            self.close()
            raise

    def start_serve(self) -> None:
        self.cg.start(listen_port=self.fport, reinject_port=self.rport)

    def start_milter(self) -> None:
        log = (self.root / "milter.log").open("ab")
        self.milter_proc = subprocess.Popen(
            [*casegate_cmd(), "--config", str(self.cg.config), "--store", self.cg.store_url,
             "milter", "--listen", f"127.0.0.1:{self.mport}"],
            env=self.cg.env, stdout=log, stderr=subprocess.STDOUT)
        proc = self.milter_proc

        def listening() -> bool:
            assert proc.poll() is None, self.milter_log()
            try:
                import socket
                socket.create_connection(("127.0.0.1", self.mport), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_until("casegate milter listening", listening, 15, 0.05)

    def milter_log(self) -> str:
        path = self.root / "milter.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stored(self) -> int:
        """Deliveries the store holds (read-only, any error counts as 0)."""
        try:
            if self.pg is not None:
                import psycopg2

                with psycopg2.connect(self.cg.store_url, connect_timeout=3) as c, c.cursor() as cur:
                    cur.execute("select count(*) from delivery")
                    return int(cur.fetchone()[0])
            db = self.root / "cg" / "casegate.db"
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                return int(conn.execute("select count(*) from delivery").fetchone()[0])
        except Exception:
            return 0

    def outbox_pending(self) -> int:
        if self.pg is not None:
            import psycopg2

            with psycopg2.connect(self.cg.store_url, connect_timeout=3) as c, c.cursor() as cur:
                cur.execute("select count(*) from outbox where status = 'pending'")
                return int(cur.fetchone()[0])
        db = self.root / "cg" / "casegate.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute(
                "select count(*) from outbox where status = 'pending'").fetchone()[0])

    def drain(self, timeout: float) -> None:
        """Postfix's queue and the outbox empty, then the queue again (the
        outbox's last messages): everything casegate sent is at the sink."""
        self.pf.flush()
        start = time.monotonic()
        wait_until("Postfix queue empty", lambda: not self.pf.queue(), timeout, 0.2)
        left = max(10.0, timeout - (time.monotonic() - start))
        wait_until("outbox empty", lambda: self.outbox_pending() == 0, left, 0.2)
        wait_until("Postfix queue empty (outgoing)", lambda: not self.pf.queue(), 60, 0.2)

    def dump(self) -> None:
        print(f"--- maillog tail ---\n{self.pf.maillog_tail(40)}")
        print(f"--- casegate.log tail ---\n{self.cg.log()[-4000:]}")
        if self.milter_proc is not None:
            print(f"--- milter.log tail ---\n{self.milter_log()[-2000:]}")

    def close(self) -> None:
        try:
            if self.milter_proc is not None and self.milter_proc.poll() is None:
                self.milter_proc.kill()
                self.milter_proc.wait(10)
            self.cg.close() if hasattr(self, "cg") else None
            self.pf.stop() if hasattr(self, "pf") else None
        finally:
            self.sink.stop()
            if self.pg is not None:
                self.pg.close()
            _remove(self.root)


def run_burst(rig: Rig, what: str, n: int, hit: Callable[[Client], tuple[str, float]],
              progress: Progress, timeout: float = 150.0) -> KillFigures:
    """Send ``n`` messages over 20 sessions; ``hit(client)`` runs beside the
    burst (it waits for its moment, hits, brings the part back) and returns
    (where the burst was, how long the part was down). Then drain and count."""
    fig = KillFigures(what=what)
    prefix = f"{what}-"
    client = Client(rig.pf.smtpd_port, prefix, time.monotonic() + timeout)
    result: list[tuple[str, float]] = []
    errors: list[BaseException] = []
    restored: list[float] = []

    def hitter() -> None:
        try:
            result.append(hit(client))
            restored.append(time.monotonic())
        except BaseException as exc:
            errors.append(exc)
            client.deadline = time.monotonic()  # stop the burst: the test has failed

    h = threading.Thread(target=hitter, name=f"hit-{what}")
    h.start()
    progress(f"{what}: sending {n} messages over 20 sessions")
    with ThreadPoolExecutor(20) as pool:
        qids = list(pool.map(client.send, range(n)))
    h.join(timeout)
    if errors:
        raise errors[0]
    assert result, "the part was never hit"
    fig.hit_at, fig.down_seconds = result[0]
    assert not client.failures, client.failures[:5]
    fig.messages = sum(1 for q in qids if q)
    progress(f"{what}: hit at {fig.hit_at}; draining")
    rig.drain(timeout)
    rig.sink.wait_for(is_ack, count=fig.messages, timeout=60)
    fig.recovery_seconds = time.monotonic() - restored[0]
    fig.client_4xx, fig.client_conn_errors, fig.ambiguous = client.t4xx, client.conn, client.ambiguous

    t = tally(rig.cg, rig.sink, prefix)
    subjects = [client.subject(i) for i in range(n)]
    fig.cases, fig.duplicate_cases = t.cases, t.duplicate_cases
    fig.duplicate_customers = sum(c - 1 for c in t.customers.values())
    fig.lost = len(t.lost(subjects))
    fig.acks, fig.distinct_acks = t.acks, len(t.ack_ids)
    # Postfix's copies per client Message-ID (ours end in @client.test).
    client_ids = set(re.findall(r"message-id=(<[^>]*@client\.test>)", rig.pf.maillog()))
    fig.queued_twice = sum(c - 1 for c in queued_copies(rig.pf, client_ids).values())
    outgoing = collections.Counter(
        str(d.message["Message-ID"]) for d in rig.sink.messages()
        if strip_tag(str(d.message["Subject"])).startswith(prefix)
        or prefix in str(d.message["Subject"]))
    fig.redelivered = rig.cg.log().count("duplicate delivery to ")
    fig.resent = sum(c - 1 for c in outgoing.values())
    fig.resent_detail = [f"{m} x{c}" for m, c in outgoing.items() if c > 1]
    progress(fig.summary())
    return fig


# --- the scenarios ----------------------------------------------------------------

def scenario_serve_pg(n: int = 200, progress: Progress = print) -> KillFigures:
    rig = Rig(postgres=True)
    try:
        def hit(client: Client) -> tuple[str, float]:
            wait_until("a third of the burst stored", lambda: rig.stored() >= n // 3, 90, 0.01)
            at = f"{rig.stored()} stored"
            rig.cg.kill9()
            t = time.monotonic()
            rig.start_serve()
            return at, time.monotonic() - t

        fig = run_burst(rig, "serve-pg", n, hit, progress)
        assert rig.cg.stop() == 0
        return fig
    except BaseException:
        rig.dump()
        raise
    finally:
        rig.close()


def scenario_milter(n: int = 200, progress: Progress = print) -> KillFigures:
    rig = Rig(separate_milter=True)
    try:
        def hit(client: Client) -> tuple[str, float]:
            wait_until("a third of the burst accepted", lambda: client.accepted >= n // 3, 90, 0.01)
            at = f"{client.accepted} accepted by Postfix"
            assert rig.milter_proc is not None
            rig.milter_proc.kill()
            rig.milter_proc.wait(10)
            t = time.monotonic()
            before = client.t4xx
            # Wait until clients were really held off (451 at RCPT TO), then restart.
            wait_until("clients deferred while the milter is down",
                       lambda: client.t4xx >= before + 10, 30, 0.02)
            time.sleep(max(0.0, t + MIN_DOWN - time.monotonic()))  # the fault's least length
            rig.start_milter()
            return at, time.monotonic() - t

        fig = run_burst(rig, "milter", n, hit, progress)
        log = rig.pf.maillog()
        assert "451 4.3.0 <support@example.com>: Recipient address rejected: casegate unavailable" in log
        assert rig.cg.stop() == 0
        return fig
    except BaseException:
        rig.dump()
        raise
    finally:
        rig.close()


def scenario_postfix(n: int = 200, progress: Progress = print) -> KillFigures:
    rig = Rig()
    try:
        def hit(client: Client) -> tuple[str, float]:
            # Postfix takes mail far faster than casegate stores it: at half the
            # burst accepted, clients are still sending and deliveries to the
            # filter are in flight.
            wait_until("half the burst accepted", lambda: client.accepted >= n // 2, 90, 0.005)
            at = f"{client.accepted} accepted by Postfix, {rig.stored()} stored"
            pid = rig.pf.master_pid()
            subprocess.run(["postfix", "-c", str(rig.pf.etc), "stop"], check=True,
                           capture_output=True)
            assert pid is not None
            wait_until("Postfix master gone", lambda: not _alive(pid), 30, 0.02)
            t = time.monotonic()
            before = client.conn + client.ambiguous
            wait_until("clients refused while Postfix is down",
                       lambda: client.conn + client.ambiguous >= before + 10, 30, 0.02)
            time.sleep(max(0.0, t + MIN_DOWN - time.monotonic()))  # the fault's least length
            # `postfix start` runs postsuper over the queue as user postfix. A
            # cleanup killed mid-write leaves a temporary file in incoming/
            # (postsuper: "bogus file name"), and with postlogd down postsuper
            # writes that warning to maillog_file itself: the test instance's
            # root-owned maillog made it fatal ("integrity check failed").
            shutil.chown(rig.pf.maillog_path, user="postfix")
            proc = subprocess.run(["postfix", "-c", str(rig.pf.etc), "start"],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, f"postfix start: {proc.stdout}{proc.stderr}"
            return at, time.monotonic() - t

        fig = run_burst(rig, "postfix", n, hit, progress)
        assert rig.cg.stop() == 0
        return fig
    except BaseException:
        rig.dump()
        raise
    finally:
        rig.close()


SCENARIOS: dict[str, Callable[..., KillFigures]] = {
    "serve-pg": scenario_serve_pg,
    "milter": scenario_milter,
    "postfix": scenario_postfix,
}


@pytest.mark.skipif(pgcluster_missing() is not None, reason=str(pgcluster_missing()))
def test_kill_9_of_serve_on_postgresql_mid_burst() -> None:
    fig = scenario_serve_pg(200)
    check_kill(fig)


def test_kill_9_of_the_milter_process_mid_burst() -> None:
    fig = scenario_milter(200)
    check_kill(fig)


def test_postfix_stop_and_start_mid_burst() -> None:
    fig = scenario_postfix(200)
    check_kill(fig)

