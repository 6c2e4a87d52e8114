"""The mail path through a private Postfix: casegate against a null filter.

    .venv/bin/python bench/mailpath.py [--messages N] [--sessions S] [--size BYTES]
                                       [--store URL] [--rate MSG_PER_S] [--py-spy FILE] [--json]

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

Throughput is N / (last awaited arrival - first MAIL FROM). It prints a/b,
casegate's peak memory (VmHWM of the ``serve`` process at the end of (c)+(a))
and the store's size. ``--store postgresql://USER@HOST:PORT/DB`` runs on a
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
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import benchlib  # noqa: F401 - puts the repository root on sys.path
from benchlib import (
    HostCpu,
    Submission,
    cpu_seconds,
    machine,
    machine_line,
    ms,
    percentile,
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


def new_case_messages(n: int, size: int) -> list[Submission]:
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
        for i in range(n)
    ]


@dataclass(frozen=True)
class Ack:
    message_id: str
    reply_to: str
    subject: str


def reply_messages(acks: dict[int, Ack], size: int) -> list[Submission]:
    """Each customer answers their acknowledgement, as a mail client would."""
    out = []
    for i, ack in sorted(acks.items()):
        data = make(
            from_=f"Customer {i} <{customer(i)}>",
            to=ack.reply_to,
            subject="Re: " + ack.subject,
            body=body(size, "Thank you, here is more about it."),
            in_reply_to=ack.message_id,
            references=[ack.message_id],
        )
        out.append(Submission(i, customer(i), (ack.reply_to,), data))
    return out


# -- recognising what arrives at the sink -------------------------------------


def _key(d: Delivery) -> int | None:
    m = KEY.search(str(d.message["Subject"] or ""))
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
) -> tuple[Phase, Arrivals]:
    arrivals = Arrivals(sink, classify, expected)
    host = HostCpu()
    cpu0 = cpu_seconds(cpu_pid) if cpu_pid else None
    timings = send_all(port, items, sessions, source="127.0.0.2", rate=rate)
    wait_progress(arrivals.poll, len(expected), stall=stall, what=f"phase {name}")
    arrivals.poll()  # anything unexpected that came with the last ones
    cpu1 = cpu_seconds(cpu_pid) if cpu_pid else None
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
    )
    return phase, arrivals


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
    phases: list[Phase] = field(default_factory=list)
    ratio_a_b: float | None = None
    casegate_peak_rss_mb: float | None = None
    casegate_rss_mb: float | None = None
    store_mb: float | None = None
    casegate_log_warnings: int = 0
    deferred_in_maillog: int = 0
    machine: dict[str, Any] = field(default_factory=dict)


def run(args: argparse.Namespace) -> Result:
    root = _new_root()
    sink = Sink()
    pf: PostfixInstance | None = None
    cg: Casegate | None = None
    nf: NullFilter | None = None
    store: StoreUnderTest | None = None
    spy: subprocess.Popen[bytes] | None = None
    result = Result(args.messages, args.sessions, args.size, "?", args.rate, machine=machine())
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
        store = prepare_store(args.store, root)
        result.store = store.kind
        cg = Casegate(root / "cg", store_url=store.url)
        cg.setup(csrs=[(CSR, "Jane Doe", "Jane Doe\\nExample Support Team")])
        pf.start()
        cg.start(listen_port=filter_port, reinject_port=reinject_port)
        progress(args, f"Postfix and casegate up in {root}")
        assert cg.proc is not None
        spy = start_py_spy(cg.proc.pid, args.py_spy) if args.py_spy else None

        n, s = args.messages, args.sessions
        common = {"port": smtpd_port, "sessions": s, "sink": sink, "stall": args.stall, "rate": args.rate}

        # (c) new cases
        phase_c, arrived = run_phase(
            "c",
            "(c) new cases, casegate",
            items=new_case_messages(n, args.size),
            classify=classify_new_case,
            latency_kind="ack",
            cpu_pid=cg.proc.pid,
            expected={(k, i) for i in range(n) for k in ("ack", "notify")},
            **common,
        )
        progress(args, f"(c) {phase_c.per_second} msg/s")
        acks = {
            i: Ack(str(d.message["Message-ID"]), str(d.message["Reply-To"]), str(d.message["Subject"]))
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
            **common,
        )
        progress(args, f"(a) {phase_a.per_second} msg/s")
        settle(pf, sink)
        if spy is not None:
            stop_py_spy(spy)
            progress(args, f"py-spy profile of casegate serve during (c)+(a): {args.py_spy}")
        vm = vm_status(cg.proc.pid)
        result.casegate_peak_rss_mb = round(vm.get("VmHWM", 0) / 1024, 1)
        result.casegate_rss_mb = round(vm.get("VmRSS", 0) / 1024, 1)
        result.store_mb = round(store.size_bytes() / 2**20, 1)
        cases = cg.json("case", "list")
        if len(cases) != n:
            raise RuntimeError(f"expected {n} cases after (c) and (a), the store has {len(cases)}")
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
            **common,
        )
        progress(args, f"(b) {phase_b.per_second} msg/s")
        settle(pf, sink)

        result.phases = [phase_a, phase_b, phase_c]
        result.ratio_a_b = round(phase_a.per_second / phase_b.per_second, 2)
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
            p.host_cpu_pct,
        )
        for p in result.phases
    ]
    lines = [
        f"mail path: {result.messages} messages, {result.sessions} sessions, "
        f"{result.size}-byte bodies, {result.store} store, "
        + (f"submitted at {result.rate:g} msg/s" if result.rate else "submitted as fast as taken"),
        "",
        table(
            ("phase", "messages", "seconds", "msg/s", "p50 ms", "p99 ms", "cg CPU ms/msg", "host CPU %"), rows
        ),
        "",
        f"a/b (casegate replies / null filter): {result.ratio_a_b}",
        f"casegate serve peak RSS (VmHWM): {result.casegate_peak_rss_mb} MB "
        f"(RSS at the end {result.casegate_rss_mb} MB); store on disk: {result.store_mb} MB",
    ]
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", "-n", type=int, default=1000, help="per phase (default 1000)")
    p.add_argument("--sessions", "-s", type=int, default=20, help="concurrent SMTP sessions (default 20)")
    p.add_argument("--size", type=int, default=2048, help="body bytes (default 2048)")
    p.add_argument(
        "--store",
        default=None,
        help="postgresql://USER@HOST:PORT/DB (a fresh database is made on that "
        "server) or sqlite:///NEW.db; default: a new SQLite file",
    )
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
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument(
        "--py-spy",
        metavar="FILE",
        default=None,
        help="sample casegate serve with py-spy during (c) and (a) into FILE "
        "(collapsed stacks; needs py-spy in the venv or on PATH)",
    )
    args = p.parse_args(argv)
    if args.messages < 1 or args.sessions < 1 or args.messages > 999_999:
        p.error("--messages must be 1..999999 and --sessions at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reason = postfix_missing()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    terminate_on_sigterm()
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
