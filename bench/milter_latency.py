"""What the casegate milter adds to each SMTP transaction in Postfix's smtpd.

    .venv/bin/python bench/milter_latency.py [--messages M] [--sessions S]
                                             [--blacklist N] [--json]

One run starts ``casegate milter`` (the real CLI, on a fresh SQLite store
with support@example.com supervised, N blacklist entries none of which
match, and the default flood limit), and two private Postfix instances
built from contrib/postfix/ that differ only in contrib's ``smtpd_milters``
line: one consults the milter, the other has none. Mail for
support@example.com goes to a capture sink standing in for the filter (no
re-injection), so the figures are smtpd's alone. Then:

* transactions: M messages to each instance from 127.0.0.2, over S SMTP
  sessions per instance (one connection each, many messages per
  connection), alternating between the instances message by message so
  that drift and other load on the machine hit both alike. Each is timed
  from MAIL FROM to the reply to the end of DATA. The difference of the
  percentiles is the milter's added latency.
* session set-up: connect to the EHLO reply, fresh connections, alternating
  (smtpd opens its milter connection and negotiates when a client connects).
* the milter alone: tests/support/milterclient.py (plays Postfix 3.7's side
  of the milter protocol) sends the same messages straight to the milter:
  MAIL FROM to the end-of-message reply, no Postfix in the way.

The first ``--warmup`` messages of each kind are not counted (process
start-up, first connections).
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path
from typing import Any

import benchlib  # noqa: F401 - puts the repository root on sys.path
from benchlib import (
    Submission,
    machine,
    machine_line,
    ms,
    open_session,
    percentile,
    table,
    terminate_on_sigterm,
    transaction,
    vm_status,
)

from casestore.store import Store
from tests.support.casegate import Casegate, casegate_cmd
from tests.support.fixtures import _new_root, _remove
from tests.support.mail import make
from tests.support.milterclient import PostfixLikeClient
from tests.support.postfix import PostfixInstance, free_ports, postfix_missing
from tests.support.sink import Sink

SUPPORT = "support@example.com"
BODY = "Hello, our printer is broken.\n" + (
    "the printer on the third floor stopped printing after the update and now\n" * 28
)


# -- the milter process ---------------------------------------------------------


class MilterProcess:
    """``casegate milter`` on its own store, as a sysadmin would run it."""

    def __init__(self, root: Path, blacklist: int) -> None:
        self.cg = Casegate(root)
        self.cg.setup()  # config with a secret, store, support@example.com supervised
        add_blacklist(self.cg.store_url, blacklist)
        self.port = free_ports(1)[0]
        self.log_path = root / "milter.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        args = [
            *casegate_cmd(),
            "--config",
            str(self.cg.config),
            "--store",
            self.cg.store_url,
            "milter",
            "--listen",
            self.address,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, env=self.cg.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"casegate milter exited {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"casegate milter not listening after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def add_blacklist(store_url: str, count: int) -> None:
    """``count`` entries that match none of the benchmark's senders: addresses,
    domains and a few subject patterns (which make the milter read every Subject)."""
    store = Store(store_url)
    try:
        with store.db.atomic():
            for i in range(count):
                if i % 10 == 0:
                    store.add_blacklist(f"@spam{i}.example.net", None, "bench")
                elif i % 50 == 1:
                    store.add_blacklist(f"@bulk{i}.example.org", rf"\bwin(ner)? {i}\b", "bench")
                else:
                    store.add_blacklist(f"spammer{i}@junk{i % 37}.example.org", None, "bench")
    finally:
        store.close()


# -- messages ----------------------------------------------------------------------


def sender(i: int) -> str:
    return f"m{i}@customer.test"


def message(i: int) -> bytes:
    return make(from_=f"Customer {i} <{sender(i)}>", subject=f"milter bench {i} printer", body=BODY)


# -- measurements --------------------------------------------------------------------


@dataclass
class Figure:
    label: str
    count: int
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @classmethod
    def of(cls, label: str, seconds: Sequence[float]) -> Figure:
        mean = sum(seconds) / len(seconds) if seconds else float("nan")
        return cls(label, len(seconds), ms(percentile(seconds, 50)), ms(percentile(seconds, 99)), ms(mean))


def transactions(ports: dict[str, int], count: int, warmup: int, sessions: int) -> dict[str, list[float]]:
    """``count + warmup`` messages to each instance, alternating; the times of
    the counted ones by instance name."""
    names = list(ports)
    lock = threading.Lock()
    pending = iter(range(count + warmup))
    times: dict[str, list[float]] = {name: [] for name in names}
    errors: list[BaseException] = []

    def session() -> None:
        conns = {name: open_session(port, "127.0.0.2") for name, port in ports.items()}
        try:
            while True:
                with lock:
                    i = None if errors else next(pending, None)
                if i is None:
                    return
                data = message(i)
                order = names if i % 2 == 0 else list(reversed(names))
                for name in order:
                    t = transaction(conns[name], Submission(i, sender(i), (SUPPORT,), data))
                    if i >= warmup:
                        with lock:
                            times[name].append(t.seconds)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        finally:
            for smtp in conns.values():
                try:
                    smtp.quit()
                except Exception:
                    smtp.close()

    threads = [threading.Thread(target=session, daemon=True) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"sending failed: {errors[0]!r}") from errors[0]
    return times


def session_setups(ports: dict[str, int], count: int, warmup: int) -> dict[str, list[float]]:
    """Fresh connections, alternating: connect to the EHLO reply, in seconds."""
    names = list(ports)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(count + warmup):
        for name in names if i % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            smtp = open_session(ports[name], "127.0.0.2")
            elapsed = time.perf_counter() - t0
            smtp.quit()
            if i >= warmup:
                times[name].append(elapsed)
    return times


def milter_alone(address: str, count: int, warmup: int, sessions: int) -> list[float]:
    """Messages straight to the milter, one connection per session, as Postfix
    would send them (macros, headers, end of message)."""
    lock = threading.Lock()
    pending = iter(range(count + warmup))
    times: list[float] = []
    errors: list[BaseException] = []

    def session() -> None:
        try:
            with PostfixLikeClient.open(address) as client:
                client.negotiate()
                client.connect_event(hostname="unknown", address="127.0.0.2")
                client.helo("client.test")
                while True:
                    with lock:
                        i = None if errors else next(pending, None)
                    if i is None:
                        return
                    msg = message_from_bytes(message(i), policy=compat32)
                    headers = [(k, str(v)) for k, v in msg.items()]
                    t0 = time.perf_counter()
                    outcome = client.message(
                        f"<{sender(i)}>",
                        [f"<{SUPPORT}>"],
                        headers,
                        BODY,
                        macros={"i": f"BENCH{i:X}"},
                    )
                    elapsed = time.perf_counter() - t0
                    if outcome.reply not in ("continue", "accept"):
                        raise RuntimeError(f"milter answered {outcome.reply} at {outcome.stage}")
                    if i >= warmup:
                        with lock:
                            times.append(elapsed)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=session, daemon=True) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"milter client failed: {errors[0]!r}") from errors[0]
    return times


# -- the run ---------------------------------------------------------------------------


@dataclass
class Result:
    messages: int
    sessions: int
    blacklist: int
    main_cf: dict[str, str] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    added_setup_p50_ms: float | None = None
    milter_peak_rss_mb: float | None = None
    machine: dict[str, Any] = field(default_factory=dict)


def run(args: argparse.Namespace) -> Result:
    root = _new_root()
    result = Result(args.messages, args.sessions, args.blacklist, args.main, machine=machine())
    sink, filter_sink = Sink(), None
    milter: MilterProcess | None = None
    instances: list[PostfixInstance] = []
    try:
        sink.start()
        milter = MilterProcess(root / "cg", args.blacklist)
        milter.start()
        # Stands in for casegate serve: swallows support@ without re-injecting.
        filter_sink = Sink(port=free_ports(1, exclude=[sink.port, milter.port])[0]).start()
        ports: dict[str, int] = {}
        for name, milter_spec in (("without", None), ("with", f"inet:{milter.address}")):
            # One after the other: each picks its free ports while the other listens.
            pf = PostfixInstance(
                root=root / name,
                sink_port=sink.port,
                filter_port=filter_sink.port,
                supervised=[SUPPORT],
                milter=milter_spec,
                extra_main=args.main,
            )
            instances.append(pf)
            pf.start()
            ports[name] = pf.smtpd_port
        progress(args, f"Postfix x2 and casegate milter up in {root}")

        times = transactions(ports, args.messages, args.warmup, args.sessions)
        setups = session_setups(ports, args.connections, min(args.warmup, 10))
        alone = milter_alone(milter.address, args.messages, args.warmup, args.sessions)
        assert milter.proc is not None
        vm = vm_status(milter.proc.pid)
        result.milter_peak_rss_mb = round(vm.get("VmHWM", 0) / 1024, 1)
        bad = [line for line in milter.log().splitlines() if " WARNING " in line or " ERROR " in line]
        if bad:
            progress(args, f"{len(bad)} WARNING/ERROR lines in milter.log, e.g. {bad[0]}")

        f = [
            Figure.of("Postfix smtpd, no milter: MAIL..end of DATA", times["without"]),
            Figure.of("Postfix smtpd, with milter: MAIL..end of DATA", times["with"]),
            Figure.of("session set-up, no milter: connect..EHLO", setups["without"]),
            Figure.of("session set-up, with milter: connect..EHLO", setups["with"]),
            Figure.of("milter alone (milterclient): MAIL..EOM", alone),
        ]
        result.figures = f
        result.added_p50_ms = round(f[1].p50_ms - f[0].p50_ms, 2)
        result.added_p99_ms = round(f[1].p99_ms - f[0].p99_ms, 2)
        result.added_setup_p50_ms = round(f[3].p50_ms - f[2].p50_ms, 2)
        return result
    except Exception:
        for pf in instances:
            print(f"--- {pf.root.name}/maillog (tail) ---\n{pf.maillog_tail(15)}", file=sys.stderr)
        if milter is not None:
            print(f"--- milter.log (tail) ---\n{milter.log()[-2000:]}", file=sys.stderr)
        raise
    finally:
        steps: list[Callable[[], object]] = [pf.stop for pf in instances]
        steps += [milter.stop] if milter else []
        steps += [filter_sink.stop] if filter_sink else []
        steps += [sink.stop]
        for step in steps:
            try:
                step()
            except Exception as exc:
                print(f"clean-up: {exc!r}", file=sys.stderr)
        _remove(root)
        # The sinks stop their loops with Postfix's cached connections open.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def progress(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr, flush=True)


def report(result: Result) -> str:
    rows = [(x.label, x.count, x.p50_ms, x.p99_ms, x.mean_ms) for x in result.figures]
    return "\n".join(
        [
            f"milter latency: {result.messages} messages per path, {result.sessions} session(s), "
            f"{result.blacklist} blacklist entries"
            + "".join(f", {k} = {v}" for k, v in result.main_cf.items()),
            "",
            table(("path", "messages", "p50 ms", "p99 ms", "mean ms"), rows),
            "",
            f"added by the milter per transaction: p50 {result.added_p50_ms} ms, "
            f"p99 {result.added_p99_ms} ms; per new SMTP session: p50 {result.added_setup_p50_ms} ms",
            f"casegate milter peak RSS (VmHWM): {result.milter_peak_rss_mb} MB",
            machine_line(result.machine),
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", "-n", type=int, default=500, help="counted messages per path (default 500)")
    p.add_argument(
        "--sessions",
        "-s",
        type=int,
        default=1,
        help="concurrent SMTP sessions per instance (default 1: one by one)",
    )
    p.add_argument(
        "--connections",
        type=int,
        default=200,
        help="fresh connections per instance for the set-up figure (default 200)",
    )
    p.add_argument("--warmup", type=int, default=20, help="uncounted first messages (default 20)")
    p.add_argument(
        "--blacklist", type=int, default=1000, help="blacklist entries in the milter's store (default 1000)"
    )
    p.add_argument(
        "--main",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="a main.cf setting for both instances, after contrib's (repeatable), "
        "e.g. --main milter_data_macros=",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    try:
        args.main = dict(item.split("=", 1) for item in args.main)
    except ValueError:
        p.error("--main takes NAME=VALUE")
    if args.messages < 1 or args.sessions < 1 or args.connections < 1 or args.warmup < 0:
        p.error("--messages, --sessions and --connections must be at least 1")
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
    print(json.dumps(asdict(result), indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
