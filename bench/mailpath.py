"""The mail path through a private Postfix: casegate against a null filter.

    .venv/bin/python bench/mailpath.py [--messages N] [--sessions S] [--size BYTES]
                                       [--store URL [--store URL]] [--seed-cases N,M]
                                       [--rate MSG_PER_S] [--latency-rate R] [--burst-sessions B]
                                       [--workers N] [--py-spy FILE] [--json]

One run starts a capture sink, a private Postfix built from contrib/postfix/
(support@example.com supervised) and ``casegate serve`` on a fresh store
with one CSR, then measures three phases with the same N, S and body size:

(c) new cases: N customers (c0@customer.test ...) write to support@ from
    127.0.0.2 over S concurrent SMTP sessions. Done when the sink holds every
    acknowledgement and every CSR notification (2N messages). Latency: a
    message's MAIL FROM to the arrival of its acknowledgement at the sink.
(a) replies on existing cases: each of those customers answers their
    acknowledgement (In-Reply-To/References = its Message-ID, to its
    Reply-To); casegate appends it and forwards it to the CSR. Done when the
    sink holds the N forwards; latency: MAIL FROM to the forward's arrival.
(b) the same load as (a) through the null filter of tests/support (casegate
    stopped, the null filter on the same port): each message passes the
    filter once, is re-injected to support@example.com.reinjected.test and
    reaches the sink. Latency: MAIL FROM to the arrival at the sink.
(r), (q) the first --latency-messages replies again at a moderate
    --latency-rate (50 msg/s), through casegate (r) and the null filter (q):
    p99(r) - p99(q) is the latency casegate adds.
(s) a burst of new cases over --burst-sessions (100) sessions, with Postfix
    allowed as many connections to casegate: the most sessions casegate held
    at once (/proc/net/tcp) and its peak RSS after it.

At the end a table holds every target of issue 12 with its ratio and a
PASS/short mark. ``--store`` given twice (``sqlite`` and a PostgreSQL URL)
gives the PostgreSQL/SQLite target; ``--seed-cases 1000,1000000`` one run per
count on a store seeded by bench/seed.py, for the flat-cost target.

Throughput is N / (last awaited arrival - first MAIL FROM). It prints a/b,
casegate's peak memory (VmHWM of the ``serve`` process at the end of (c)+(a))
and the store's size. ``--workers N`` passes ``--workers N`` to ``serve``:
CPU time and memory are then those of the parent and its workers together
(the sum of their VmHWM / VmRSS, and of their PSS, which counts the pages a
forked worker still shares with the parent once). ``--store postgresql://USER@HOST:PORT/DB`` runs on a
fresh database made on that server (DB is only used to connect) and dropped
afterwards; the default is a new SQLite file. Everything is removed at the
end, also on errors and Ctrl-C (``CASEGATE_KEEP_POSTFIX=1`` keeps the
folder with maillog and casegate.log). bench/README.md explains each figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import benchlib  # noqa: F401 - puts the repository root on sys.path
from benchlib import (
    HostCpu,
    PeakSessions,
    Submission,
    children_of,
    cpu_seconds,
    machine,
    machine_line,
    ms,
    percentile,
    postfix_cpu,
    send_all,
    table,
    terminate_on_sigterm,
    vm_status,
    wait_progress,
)

from tests.support.casegate import Casegate
from tests.support.fixtures import _new_root, _remove
from tests.support.mail import make
from tests.support.nullfilter import REINJECT_SUFFIX, NullFilter
from tests.support.postfix import PostfixInstance, free_ports, postfix_missing
from tests.support.sink import Delivery, Sink

SUPPORT = "support@example.com"
CSR = "jane@example.com"
KEY = re.compile(r"bench-(\d{6})")
WORDS = (
    "the printer on the third floor stopped printing after the update and now shows "
    "an error about the paper tray although the tray is full could you please tell us "
    "what to do next we have tried switching it off and on again twice"
).split()

Key = tuple[str, int]  # ("ack" | "notify" | "forward" | "passed", customer number)
Classify = Callable[[Delivery], Key | None]


# -- messages ------------------------------------------------------------------


def customer(i: int) -> str:
    return f"c{i}@customer.test"


def body(size: int, first_line: str) -> str:
    """About ``size`` bytes of plain text in lines of at most 72 characters."""
    lines = [first_line]
    total = len(first_line) + 1
    n = 0
    while total < size:
        line: list[str] = []
        while sum(len(w) + 1 for w in line) < 66:
            line.append(WORDS[n % len(WORDS)])
            n += 1
        text = " ".join(line)
        lines.append(text)
        total += len(text) + 1
    return "\n".join(lines) + "\n"


def new_case_messages(n: int, size: int, first: int = 0) -> list[Submission]:
    return [
        Submission(
            key=i,
            mail_from=customer(i),
            rcpt_tos=(SUPPORT,),
            data=make(
                from_=f"Customer {i} <{customer(i)}>",
                subject=f"bench-{i:06d} printer trouble",
                body=body(size, "Hello, our printer is broken."),
            ),
        )
        for i in range(first, first + n)
    ]


@dataclass(frozen=True)
class Ack:
    message_id: str
    reply_to: str
    subject: str


def reply_messages(acks: dict[int, Ack], size: int, limit: int | None = None,
                   first_line: str = "Thank you, here is more about it.") -> list[Submission]:
    """Each customer answers their acknowledgement, as a mail client would."""
    out = []
    for i, ack in sorted(acks.items())[:limit]:
        data = make(
            from_=f"Customer {i} <{customer(i)}>",
            to=ack.reply_to,
            subject="Re: " + ack.subject,
            body=body(size, first_line),
            in_reply_to=ack.message_id,
            references=[ack.message_id],
        )
        out.append(Submission(i, customer(i), (ack.reply_to,), data))
    return out


# -- recognising what arrives at the sink -------------------------------------


def _key(d: Delivery) -> int | None:
    m = KEY.search(str(d.headers["Subject"] or ""))
    return int(m.group(1)) if m else None


def classify_new_case(d: Delivery) -> Key | None:
    i = _key(d)
    if i is None or not d.mail_from:  # no bounces
        return None
    if CSR in d.rcpt_tos:
        return ("notify", i)
    if customer(i) in d.rcpt_tos:
        return ("ack", i)
    return None


def classify_forward(d: Delivery) -> Key | None:
    i = _key(d)
    if i is None or not d.mail_from or CSR not in d.rcpt_tos:
        return None
    return ("forward", i)


def classify_passed(d: Delivery) -> Key | None:
    i = _key(d)
    if i is None or not any(r.endswith(REINJECT_SUFFIX) for r in d.rcpt_tos):
        return None
    return ("passed", i)


class Arrivals:
    """The deliveries of one phase, found as they arrive (the sink keeps them all)."""

    def __init__(self, sink: Sink, classify: Classify, expected: set[Key]) -> None:
        self.sink = sink
        self.classify = classify
        self.expected = expected
        self.found: dict[Key, Delivery] = {}
        self.other: list[Delivery] = []
        self._seen = 0

    def poll(self) -> int:
        new = self.sink.messages()[self._seen :]
        self._seen += len(new)
        for d in new:
            key = self.classify(d)
            if key in self.expected and key not in self.found:
                self.found[key] = d
            else:
                self.other.append(d)
        return len(self.found)

    def at(self, key: Key) -> float:
        return self.found[key].received.timestamp()


# -- phases --------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    label: str
    messages: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    submit_seconds: float  # first MAIL FROM to the last 250 after DATA
    smtp_p50_ms: float  # MAIL FROM .. end-of-DATA reply at the public smtpd
    unexpected: int  # deliveries that were none of those awaited (bounces, doubles)
    host_cpu_pct: float  # all CPUs of the machine, busy during the phase
    casegate_cpu_ms: float | None = None  # CPU time of `casegate serve` per message
    host_cpu_ms: float | None = None  # all CPUs busy, per message
    postfix_cpu_ms: float | None = None  # the private Postfix's processes, per message
    bench_cpu_ms: float | None = None  # this process (load, sink; in (b) the null filter too)


def run_phase(
    name: str,
    label: str,
    *,
    port: int,
    items: Sequence[Submission],
    sessions: int,
    sink: Sink,
    classify: Classify,
    expected: set[Key],
    latency_kind: str,
    stall: float,
    rate: float | None = None,
    cpu_pid: int | None = None,
    postfix_pid: int | None = None,
) -> tuple[Phase, Arrivals]:
    arrivals = Arrivals(sink, classify, expected)
    host = HostCpu()
    cpu0 = serve_cpu(cpu_pid) if cpu_pid else None
    pf0 = postfix_cpu(postfix_pid) if postfix_pid else None
    own0 = time.process_time()
    timings = send_all(port, items, sessions, source="127.0.0.2", rate=rate)
    wait_progress(arrivals.poll, len(expected), stall=stall, what=f"phase {name}")
    arrivals.poll()  # anything unexpected that came with the last ones
    cpu1 = serve_cpu(cpu_pid) if cpu_pid else None
    pf1 = postfix_cpu(postfix_pid) if postfix_pid else None
    own1 = time.process_time()
    host_seconds = host.busy_seconds()
    first = min(t.start for t in timings)
    last = max(arrivals.at(k) for k in expected)
    elapsed = last - first
    latencies = [arrivals.at((latency_kind, t.key)) - t.start for t in timings]
    phase = Phase(
        name=name,
        label=label,
        messages=len(items),
        seconds=round(elapsed, 3),
        per_second=round(len(items) / elapsed, 1),
        p50_ms=ms(percentile(latencies, 50)),
        p99_ms=ms(percentile(latencies, 99)),
        submit_seconds=round(max(t.start + t.seconds for t in timings) - first, 3),
        smtp_p50_ms=ms(percentile([t.seconds for t in timings], 50)),
        unexpected=len(arrivals.other),
        host_cpu_pct=host.busy(),
        casegate_cpu_ms=(ms((cpu1 - cpu0) / len(items)) if cpu0 is not None and cpu1 is not None else None),
        host_cpu_ms=ms(host_seconds / len(items)),
        postfix_cpu_ms=(ms((pf1 - pf0) / len(items)) if pf0 is not None and pf1 is not None else None),
        bench_cpu_ms=ms((own1 - own0) / len(items)),
    )
    return phase, arrivals


def serve_pids(pid: int) -> list[int]:
    """``casegate serve`` and, with --workers, its worker processes."""
    return [pid, *children_of(pid)]


def serve_cpu(pid: int) -> float | None:
    """CPU seconds of ``serve`` and its workers (None when it is gone)."""
    times = [cpu_seconds(p) for p in serve_pids(pid)]
    return None if times[0] is None else sum(t for t in times if t is not None)


def serve_memory(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS and Pss (kB) summed over ``serve`` and its workers."""
    out = {"VmHWM": 0, "VmRSS": 0, "Pss": 0}
    for p in serve_pids(pid):
        vm = vm_status(p)
        out["VmHWM"] += vm.get("VmHWM", 0)
        out["VmRSS"] += vm.get("VmRSS", 0)
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    out["Pss"] += int(line.split()[1])
        except OSError:
            pass
    return out


# -- the store -----------------------------------------------------------------


@dataclass
class StoreUnderTest:
    url: str
    kind: str
    admin_url: str | None = None  # PostgreSQL: where the database was made
    name: str | None = None

    def size_bytes(self) -> int:
        if self.kind == "sqlite":
            path = Path(self.url[len("sqlite:///") :])
            files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
            return sum(f.stat().st_size for f in files if f.exists())
        import psycopg2

        with psycopg2.connect(self.admin_url, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_database_size(%s)", (self.name,))
            return int(cur.fetchone()[0])

    def drop(self) -> None:
        if self.kind != "postgresql":
            return
        import psycopg2

        conn = psycopg2.connect(self.admin_url, connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            conn.close()


def prepare_store(url: str | None, root: Path) -> StoreUnderTest:
    """A fresh store: a new SQLite file in ``root``, the SQLite file named
    (which must not exist yet), or a new database on a PostgreSQL server."""
    if url is None:
        return StoreUnderTest(f"sqlite:///{root / 'casegate.db'}", "sqlite")
    scheme = urlparse(url).scheme.lower()
    if scheme == "sqlite":
        path = Path(url[len("sqlite:///") :])
        if path.exists():
            raise SystemExit(f"{path} exists: the benchmark needs a fresh store")
        return StoreUnderTest(url, "sqlite")
    if scheme not in ("postgresql", "postgres"):
        raise SystemExit(f"--store: sqlite:///PATH or postgresql://USER@HOST:PORT/DB, not {url!r}")
    import psycopg2

    name = f"casegate_bench_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(url, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    run_url = urlparse(url)._replace(path=f"/{name}").geturl()
    return StoreUnderTest(run_url, "postgresql", admin_url=url, name=name)


# -- the run -------------------------------------------------------------------


@dataclass
class Result:
    messages: int
    sessions: int
    size: int
    store: str
    rate: float | None = None
    seeded_cases: int = 0
    phases: list[Phase] = field(default_factory=list)
    ratio_a_b: float | None = None
    ratio_c_b: float | None = None
    casegate_peak_rss_mb: float | None = None  # VmHWM at the end of (c)+(a)
    casegate_rss_mb: float | None = None
    casegate_pss_mb: float | None = None  # PSS at the end of (c)+(a), summed over the processes
    workers: int = 1  # serve --workers
    burst_sessions_peak: int | None = None  # most SMTP sessions casegate held at once in (s)
    burst_peak_rss_mb: float | None = None  # VmHWM after (s)
    added_p99_ms: float | None = None  # (r) p99 - (q) p99: casegate's added latency at --latency-rate
    store_mb: float | None = None
    casegate_log_warnings: int = 0
    deferred_in_maillog: int = 0
    machine: dict[str, Any] = field(default_factory=dict)

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)


BURST_FIRST = 500_000  # customer numbers of the (s) burst: c500000@customer.test ...


def run(args: argparse.Namespace, store_url: str | None = None, seed_cases: int = 0) -> Result:
    root = _new_root()
    sink = Sink()
    pf: PostfixInstance | None = None
    cg: Casegate | None = None
    nf: NullFilter | None = None
    store: StoreUnderTest | None = None
    spy: subprocess.Popen[bytes] | None = None
    result = Result(args.messages, args.sessions, args.size, "?", args.rate, seed_cases, machine=machine(),
                    workers=args.workers)
    try:
        sink.start()
        smtpd_port, filter_port, reinject_port = free_ports(3, exclude=[sink.port])
        pf = PostfixInstance(
            root=root / "pf",
            sink_port=sink.port,
            smtpd_port=smtpd_port,
            filter_port=filter_port,
            reinject_port=reinject_port,
            supervised=[SUPPORT],
        )
        store = prepare_store(store_url, root)
        result.store = store.kind
        cg = Casegate(root / "cg", store_url=store.url)
        cg.setup(csrs=[(CSR, "Jane Doe", "Jane Doe\\nExample Support Team")])
        if seed_cases:
            seed_store(store.url, seed_cases, args)
        pf.start()
        cg.start(listen_port=filter_port, reinject_port=reinject_port,
                 extra=["--workers", str(args.workers)] if args.workers != 1 else [])
        progress(args, f"Postfix and casegate up in {root}")
        assert cg.proc is not None
        spy = start_py_spy(cg.proc.pid, args.py_spy) if args.py_spy else None

        n, s = args.messages, args.sessions
        common = {"port": smtpd_port, "sink": sink, "stall": args.stall, "postfix_pid": pf.master_pid()}
        full = {**common, "sessions": s, "rate": args.rate}

        # (c) new cases
        phase_c, arrived = run_phase(
            "c",
            "(c) new cases, casegate",
            items=new_case_messages(n, args.size),
            classify=classify_new_case,
            latency_kind="ack",
            cpu_pid=cg.proc.pid,
            expected={(k, i) for i in range(n) for k in ("ack", "notify")},
            **full,
        )
        progress(args, f"(c) {phase_c.per_second} msg/s")
        acks = {
            i: Ack(str(d.headers["Message-ID"]), str(d.headers["Reply-To"]), str(d.headers["Subject"]))
            for (kind, i), d in arrived.found.items()
            if kind == "ack"
        }
        settle(pf, sink)

        # (a) customer replies on those cases
        phase_a, _ = run_phase(
            "a",
            "(a) replies, casegate",
            items=reply_messages(acks, args.size),
            classify=classify_forward,
            latency_kind="forward",
            cpu_pid=cg.proc.pid,
            expected={("forward", i) for i in range(n)},
            **full,
        )
        progress(args, f"(a) {phase_a.per_second} msg/s")
        settle(pf, sink)
        if spy is not None:
            stop_py_spy(spy)
            progress(args, f"py-spy profile of casegate serve during (c)+(a): {args.py_spy}")
        vm = serve_memory(cg.proc.pid)
        result.casegate_peak_rss_mb = round(vm["VmHWM"] / 1024, 1)
        result.casegate_rss_mb = round(vm["VmRSS"] / 1024, 1)
        result.casegate_pss_mb = round(vm["Pss"] / 1024, 1)
        phases = [phase_a]

        # (r) replies at a moderate rate: the latency one message sees
        lat_n = min(args.latency_messages, n)
        if lat_n:
            phase_r, _ = run_phase(
                "r",
                f"(r) replies at {args.latency_rate:g}/s, casegate",
                items=reply_messages(acks, args.size, lat_n, "One more thing about it."),
                classify=classify_forward,
                latency_kind="forward",
                cpu_pid=cg.proc.pid,
                expected={("forward", i) for i in sorted(acks)[:lat_n]},
                sessions=s,
                rate=args.latency_rate,
                **common,
            )
            progress(args, f"(r) p99 {phase_r.p99_ms} ms")
            settle(pf, sink)
            phases.append(phase_r)

        # (s) a burst of new cases over --burst-sessions sessions, Postfix
        # allowed as many connections to casegate: its memory then
        if args.burst_sessions:
            bn = args.burst_messages or 3 * args.burst_sessions
            widen_casegate_transport(pf, args.burst_sessions)
            with PeakSessions(filter_port) as peak:
                phase_s, _ = run_phase(
                    "s",
                    f"(s) new cases, {args.burst_sessions} sessions",
                    items=new_case_messages(bn, args.size, BURST_FIRST),
                    classify=classify_new_case,
                    latency_kind="ack",
                    cpu_pid=cg.proc.pid,
                    expected={(k, i) for i in range(BURST_FIRST, BURST_FIRST + bn)
                              for k in ("ack", "notify")},
                    sessions=args.burst_sessions,
                    rate=None,
                    **common,
                )
            settle(pf, sink)
            result.burst_sessions_peak = peak.peak
            result.burst_peak_rss_mb = round(serve_memory(cg.proc.pid)["VmHWM"] / 1024, 1)
            progress(args, f"(s) {peak.peak} sessions at once, peak RSS {result.burst_peak_rss_mb} MB")
            phases.append(phase_s)

        result.store_mb = round(store.size_bytes() / 2**20, 1)
        want = n + (bn if args.burst_sessions else 0)
        cases = [] if seed_cases else cg.json("case", "list")
        if len(cases) != want and not seed_cases:
            raise RuntimeError(f"expected {want} cases after the casegate phases, the store has {len(cases)}")
        result.casegate_log_warnings = sum(
            1 for line in cg.log().splitlines() if " WARNING " in line or " ERROR " in line
        )
        cg.stop()

        # (b) the same load as (a) through the null filter
        nf = NullFilter(reinject_port, port=filter_port, forward_xforward=True).start()
        phase_b, _ = run_phase(
            "b",
            "(b) replies, null filter",
            items=reply_messages(acks, args.size),
            classify=classify_passed,
            latency_kind="passed",
            expected={("passed", i) for i in range(n)},
            **full,
        )
        progress(args, f"(b) {phase_b.per_second} msg/s")
        settle(pf, sink)
        phases.append(phase_b)
        if lat_n:
            phase_q, _ = run_phase(
                "q",
                f"(q) replies at {args.latency_rate:g}/s, null filter",
                items=reply_messages(acks, args.size, lat_n, "One more thing about it."),
                classify=classify_passed,
                latency_kind="passed",
                expected={("passed", i) for i in sorted(acks)[:lat_n]},
                sessions=s,
                rate=args.latency_rate,
                **common,
            )
            settle(pf, sink)
            phases.append(phase_q)
            result.added_p99_ms = round(phase_r.p99_ms - phase_q.p99_ms, 1)

        phases.append(phase_c)
        result.phases = phases
        result.ratio_a_b = round(phase_a.per_second / phase_b.per_second, 2)
        result.ratio_c_b = round(phase_c.per_second / phase_b.per_second, 2)
        result.deferred_in_maillog = pf.maillog().count("status=deferred")
        return result
    except Exception:
        if pf is not None:
            print(f"--- maillog (tail) ---\n{pf.maillog_tail(20)}", file=sys.stderr)
        if cg is not None:
            print(f"--- casegate.log (tail) ---\n{cg.log()[-3000:]}", file=sys.stderr)
        raise
    finally:
        for step in (
            (lambda: stop_py_spy(spy)) if spy and spy.poll() is None else None,
            (lambda: nf.stop()) if nf else None,
            (lambda: cg.close()) if cg else None,
            (lambda: pf.stop()) if pf else None,
            sink.stop,
            (lambda: store.drop()) if store else None,
        ):
            if step is not None:
                try:
                    step()
                except Exception as exc:
                    print(f"clean-up: {exc!r}", file=sys.stderr)
        _remove(root)
        # The sink and the null filter stop their loops with Postfix's cached
        # connections still open; their tasks would be reported at exit.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def widen_casegate_transport(pf: PostfixInstance, sessions: int) -> None:
    """Let Postfix open up to ``sessions`` connections to casegate at once
    (contrib's master.cf caps the casegate transport at 10 processes)."""
    subprocess.run(["postconf", "-c", str(pf.etc), "-F", f"casegate/unix/process_limit={sessions}"],
                   check=True, capture_output=True)
    subprocess.run(["postconf", "-c", str(pf.etc), "-e",
                    f"casegate_destination_concurrency_limit={sessions}",
                    f"casegate_initial_destination_concurrency={sessions}"],
                   check=True, capture_output=True)
    pf.reload()


def seed_store(url: str, cases: int, args: argparse.Namespace) -> None:
    """``cases`` cases with their messages, written straight into the store by
    bench/seed.py (the search engineer's bulk seeder)."""
    script = Path(__file__).with_name("seed.py")
    if not script.exists():
        raise SystemExit("--seed-cases needs bench/seed.py")
    progress(args, f"seeding {cases} cases ...")
    started = time.monotonic()
    subprocess.run([sys.executable, str(script), "--store", url, "--cases", str(cases),
                    "--messages-per-case", str(args.seed_messages_per_case)], check=True)
    progress(args, f"seeded {cases} cases in {time.monotonic() - started:.0f} s")


def start_py_spy(pid: int, out: str) -> subprocess.Popen[bytes]:
    """Sample ``pid`` with py-spy (pip install py-spy) into ``out``: collapsed
    stacks with thread names, idle time left out (flamegraph.pl, speedscope)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--format", "raw", "--threads", "--rate", "200", "--output", out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    spy.wait(30)


def settle(pf: PostfixInstance, sink: Sink) -> None:
    """Between phases: Postfix's queue empty, the sink emptied."""
    pf.wait_queue_empty(timeout=120)
    sink.clear()


def progress(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr, flush=True)


# -- output --------------------------------------------------------------------


def report(result: Result) -> str:
    rows = [
        (
            p.label,
            p.messages,
            p.seconds,
            p.per_second,
            p.p50_ms,
            p.p99_ms,
            "-" if p.casegate_cpu_ms is None else p.casegate_cpu_ms,
            "-" if p.postfix_cpu_ms is None else p.postfix_cpu_ms,
            "-" if p.bench_cpu_ms is None else p.bench_cpu_ms,
            "-" if p.host_cpu_ms is None else p.host_cpu_ms,
            p.host_cpu_pct,
        )
        for p in result.phases
    ]
    seeded = f", {result.seeded_cases} cases seeded first" if result.seeded_cases else ""
    lines = [
        f"mail path: {result.messages} messages, {result.sessions} sessions, "
        f"{result.size}-byte bodies, {result.store} store{seeded}, "
        + (f"serve --workers {result.workers}, " if result.workers != 1 else "")
        + (f"submitted at {result.rate:g} msg/s" if result.rate else "submitted as fast as taken"),
        "",
        table(
            ("phase", "messages", "seconds", "msg/s", "p50 ms", "p99 ms", "cg CPU ms/msg",
             "Postfix CPU ms/msg", "bench CPU ms/msg", "all CPU ms/msg", "host CPU %"), rows
        ),
        "",
        f"a/b (casegate replies / null filter): {result.ratio_a_b}; c/b (new cases): {result.ratio_c_b}",
        f"casegate serve peak RSS (VmHWM): {result.casegate_peak_rss_mb} MB "
        f"(RSS at the end {result.casegate_rss_mb} MB, PSS {result.casegate_pss_mb} MB"
        + (f"; all {result.workers + 1} processes" if result.workers != 1 else "")
        + f"); store on disk: {result.store_mb} MB",
    ]
    if result.burst_sessions_peak is not None:
        lines.append(f"(s): {result.burst_sessions_peak} SMTP sessions at casegate at once, "
                     f"peak RSS after it {result.burst_peak_rss_mb} MB")
    notes = []
    if result.casegate_log_warnings:
        notes.append(f"{result.casegate_log_warnings} WARNING/ERROR lines in casegate.log")
    if result.deferred_in_maillog:
        notes.append(f"{result.deferred_in_maillog} deferrals in Postfix's log")
    unexpected = sum(p.unexpected for p in result.phases)
    if unexpected:
        notes.append(f"{unexpected} unexpected deliveries at the sink")
    if notes:
        lines.append("note: " + "; ".join(notes))
    lines.append(machine_line(result.machine))
    return "\n".join(lines)


# -- the targets of issue 12 ---------------------------------------------------


@dataclass
class Target:
    what: str
    measured: float | None
    limit: float
    unit: str
    higher_is_better: bool
    run: str = ""

    @property
    def ratio(self) -> float | None:
        """measured / limit: at least 1 passes for a floor, at most 1 for a ceiling."""
        if self.measured is None:
            return None
        return round(self.measured / self.limit, 2) if self.limit else None

    @property
    def mark(self) -> str:
        if self.measured is None:
            return "not measured"
        ok = self.measured >= self.limit if self.higher_is_better else self.measured <= self.limit
        return "PASS" if ok else "short"


def targets(results: Sequence[Result]) -> list[Target]:
    """Every target of issue 12 that the runs measured (and the ones they did
    not, marked so). Store and seed comparisons use the first SQLite / the
    smallest seed run against the PostgreSQL / the largest seed run."""
    out: list[Target] = []
    for r in results:
        tag = r.store + (f", {r.seeded_cases} seeded" if r.seeded_cases else "")
        a, c = r.phase("a"), r.phase("c")
        burst = r.burst_sessions_peak
        out += [
            Target("replies / null filter (a/b)", r.ratio_a_b, 0.7, "x", True, tag),
            Target("new cases / null filter (c/b)", r.ratio_c_b, 0.5, "x", True, tag),
            Target("CPU per reply", a.casegate_cpu_ms if a else None, 5.0, "ms", False, tag),
            Target("CPU per new case", c.casegate_cpu_ms if c else None, 7.0, "ms", False, tag),
            Target("p99 added latency at the moderate rate (r - q)", r.added_p99_ms, 50.0, "ms", False, tag),
            Target(f"peak RSS with {'--burst-sessions' if burst is None else burst} concurrent sessions (s)",
                   r.burst_peak_rss_mb, 150.0, "MB", False, tag),
        ]
    plain = [r for r in results if not r.seeded_cases]
    lite = next((r for r in plain if r.store == "sqlite"), None)
    pg = next((r for r in plain if r.store == "postgresql"), None)
    for name, label in (("a", "replies"), ("c", "new cases")):
        measured = None
        if lite and pg:
            measured = round(pg.phase(name).per_second / lite.phase(name).per_second, 2)
        out.append(Target(f"PostgreSQL / SQLite, {label} msg/s", measured, 0.8, "x", True,
                          "both stores" if measured is not None else "needs --store twice"))
    seeded = sorted((r for r in results if r.seeded_cases), key=lambda r: r.seeded_cases)
    for name, label in (("a", "reply"), ("c", "new case")):
        measured, run = None, "needs --seed-cases SMALL,LARGE"
        if len(seeded) >= 2:
            small, large = seeded[0], seeded[-1]
            measured = round(large.phase(name).casegate_cpu_ms / small.phase(name).casegate_cpu_ms, 2)
            run = f"{large.seeded_cases} / {small.seeded_cases} cases, {large.store}"
        out.append(Target(f"CPU per {label} at many cases / at few", measured, 1.2, "x", False, run))
    return out


def targets_report(items: Sequence[Target]) -> str:
    rows = [
        (t.what, t.run, "-" if t.measured is None else f"{t.measured:g} {t.unit}",
         ("≥ " if t.higher_is_better else "≤ ") + f"{t.limit:g} {t.unit}",
         "-" if t.ratio is None else t.ratio, t.mark)
        for t in items
    ]
    return "targets (issue 12)\n\n" + table(("target", "run", "measured", "target", "ratio", "mark"), rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", "-n", type=int, default=1000, help="per phase (default 1000)")
    p.add_argument("--sessions", "-s", type=int, default=20, help="concurrent SMTP sessions (default 20)")
    p.add_argument("--size", type=int, default=2048, help="body bytes (default 2048)")
    p.add_argument(
        "--store",
        action="append",
        default=None,
        help="postgresql://USER@HOST:PORT/DB (a fresh database is made on that "
        "server) or sqlite:///NEW.db or 'sqlite' (a new SQLite file, the default); "
        "give it twice (sqlite and postgresql://...) for the PostgreSQL/SQLite target",
    )
    p.add_argument(
        "--seed-cases",
        default="",
        metavar="N[,M...]",
        help="one run per count, each on a store seeded with that many cases by "
        "bench/seed.py first (e.g. 1000,1000000 for the flat-cost target)",
    )
    p.add_argument("--seed-messages-per-case", type=int, default=3,
                   help="messages per seeded case (bench/seed.py's default 3)")
    p.add_argument("--latency-rate", type=float, default=50.0,
                   help="the moderate rate of phases (r) and (q), msg/s (default 50)")
    p.add_argument("--latency-messages", type=int, default=500,
                   help="messages in (r) and (q), at most --messages; 0 skips them (default 500)")
    p.add_argument("--burst-sessions", type=int, default=100,
                   help="concurrent sessions of phase (s), Postfix allowed as many "
                   "connections to casegate; 0 skips it (default 100)")
    p.add_argument("--burst-messages", type=int, default=0,
                   help="new cases in (s) (default 3 x --burst-sessions)")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="submit at most this many messages per second (default: as fast as "
        "Postfix takes them; then latency includes the wait in Postfix's queue)",
    )
    p.add_argument(
        "--stall",
        type=float,
        default=60.0,
        help="give up when nothing arrives for this many seconds (default 60)",
    )
    p.add_argument("--workers", type=int, default=1,
                   help="casegate serve --workers N (default 1: a single process)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument(
        "--py-spy",
        metavar="FILE",
        default=None,
        help="sample casegate serve with py-spy during (c) and (a) into FILE "
        "(collapsed stacks; needs py-spy in the venv or on PATH)",
    )
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    if args.messages < 1 or args.sessions < 1 or args.messages >= BURST_FIRST:
        p.error(f"--messages must be 1..{BURST_FIRST - 1} and --sessions at least 1")
    if args.burst_messages + BURST_FIRST > 999_999:
        p.error("--burst-messages too large")
    try:
        args.seed_counts = [int(x) for x in args.seed_cases.split(",") if x.strip()]
    except ValueError:
        p.error(f"--seed-cases: comma-separated counts, not {args.seed_cases!r}")
    args.stores = [None if x == "sqlite" else x for x in (args.store or ["sqlite"])]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reason = postfix_missing()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    terminate_on_sigterm()
    results = []
    try:
        for store in args.stores:
            for seed in args.seed_counts or [0]:
                result = run(args, store, seed)
                results.append(result)
                if not args.json:
                    print(report(result) + "\n", flush=True)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    items = targets(results)
    if args.json:
        print(json.dumps({"runs": [asdict(r) for r in results],
                          "targets": [{**asdict(t), "ratio": t.ratio, "mark": t.mark} for t in items]},
                         indent=2))
    else:
        print(targets_report(items))
    return 0


if __name__ == "__main__":
    sys.exit(main())
