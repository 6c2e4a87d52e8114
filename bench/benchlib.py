"""What the benchmarks in bench/ share: the machine, percentiles, SMTP
sessions that submit and time messages, a table printer and clean-up.

The scripts run from the repository root (``.venv/bin/python bench/NAME.py``)
and reuse the test harness in ``tests/support``; importing this module puts
the repository root on ``sys.path`` so that ``tests.support`` resolves.
"""

from __future__ import annotations

import os
import platform
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# -- the machine ---------------------------------------------------------------


def postfix_version() -> str:
    try:
        out = subprocess.run(
            ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def source_state() -> str:
    """The commit measured, and how many code files differ from it (others'
    work in progress is part of what runs)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "status",
                "--porcelain",
                "--",
                "cli.py",
                "smtpd_hook",
                "casestore",
                "rules",
                "milter",
                "contrib",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    changed = len([line for line in status.splitlines() if line.strip()])
    return f"{head or '?'}" + (f" + {changed} uncommitted code files" if changed else "")


def machine() -> dict[str, object]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "postfix": postfix_version(),
        "kernel": platform.release(),
        "load_at_start": round(os.getloadavg()[0], 2),  # other work on the machine skews figures
        "source": source_state(),
    }


def machine_line(m: dict[str, object]) -> str:
    return (
        f"machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, "
        f"Postfix {m['postfix']}, Linux {m['kernel']}, {m['date']}, "
        f"load average {m['load_at_start']} at start; code {m['source']}"
    )


# -- figures -------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(rank) - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return str(value)


# -- sending -------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    key: int  # what the caller matches arrivals by (the message number)
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


@dataclass(frozen=True)
class Timing:
    key: int
    start: float  # time.time() before MAIL FROM (wall clock: comparable with Delivery.received)
    seconds: float  # MAIL FROM .. the reply to the end of DATA


class SendError(RuntimeError):
    pass


def open_session(port: int, source: str | None, timeout: float = 60.0) -> smtplib.SMTP:
    smtp = smtplib.SMTP(
        "127.0.0.1",
        port,
        local_hostname="client.test",
        source_address=(source, 0) if source else None,
        timeout=timeout,
    )
    smtp.ehlo()
    return smtp


def transaction(smtp: smtplib.SMTP, item: Submission) -> Timing:
    """One SMTP transaction on an open session, timed from MAIL FROM to the
    reply to the end of DATA. Anything but success raises SendError."""
    start = time.time()
    t0 = time.perf_counter()
    code, resp = smtp.mail(item.mail_from)
    if code != 250:
        raise SendError(f"MAIL FROM:<{item.mail_from}>: {code} {resp!r}")
    for rcpt in item.rcpt_tos:
        code, resp = smtp.rcpt(rcpt)
        if code not in (250, 251):
            smtp.rset()
            raise SendError(f"RCPT TO:<{rcpt}>: {code} {resp!r}")
    code, resp = smtp.data(item.data)
    if code != 250:
        raise SendError(f"DATA: {code} {resp!r}")
    return Timing(item.key, start, time.perf_counter() - t0)


def send_all(
    port: int,
    items: Sequence[Submission],
    sessions: int,
    *,
    source: str | None = "127.0.0.2",
    rate: float | None = None,
) -> list[Timing]:
    """Submit ``items`` over ``sessions`` concurrent SMTP sessions (one
    connection each, many messages per connection, as smtp-source does).
    As fast as they go, or at most ``rate`` messages per second overall
    (message k starts no earlier than k/rate seconds after the first).
    Returns one Timing per message; the first failure stops every session
    and is raised."""
    lock = threading.Lock()
    pending = iter(items)
    timings: list[Timing] = []
    errors: list[BaseException] = []
    started = time.monotonic()
    count = 0

    def next_item() -> tuple[Submission | None, float]:
        nonlocal count
        with lock:
            if errors:
                return None, 0.0
            item = next(pending, None)
            slot = started + count / rate if rate else 0.0
            count += 1
            return item, slot

    def session() -> None:
        try:
            smtp = open_session(port, source)
            try:
                while True:
                    item, slot = next_item()
                    if item is None:
                        break
                    if slot:
                        time.sleep(max(0.0, slot - time.monotonic()))
                    t = transaction(smtp, item)
                    with lock:
                        timings.append(t)
            finally:
                try:
                    smtp.quit()
                except (OSError, smtplib.SMTPException):
                    smtp.close()
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [
        threading.Thread(target=session, name=f"session-{n}", daemon=True)
        for n in range(max(1, min(sessions, len(items))))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SendError(f"sending failed: {errors[0]!r}") from errors[0]
    return timings


# -- waiting -------------------------------------------------------------------


def wait_progress(
    poll: Callable[[], int], total: int, *, stall: float, what: str, interval: float = 0.02
) -> None:
    """Call ``poll`` (which returns how many of ``total`` are done) until all
    are; raise TimeoutError when nothing moved for ``stall`` seconds."""
    done, last, moved = 0, -1, time.monotonic()
    while done < total:
        done = poll()
        now = time.monotonic()
        if done != last:
            last, moved = done, now
        elif now - moved > stall:
            raise TimeoutError(f"{what}: {done} of {total} after {stall:.0f}s without progress")
        if done < total:
            time.sleep(interval)


# -- processes -----------------------------------------------------------------


def vm_status(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS / VmPeak of a process, in kB (empty when it is gone)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS", "VmPeak"):
                out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # after the command name: state is field 3, utime 14 and stime 15 (proc(5))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postfix_cpu(master_pid: int) -> float | None:
    """CPU seconds used so far by a Postfix instance: its master, the master's
    live children (smtpd, cleanup, qmgr, smtp, ...), and the children it has
    already reaped (the master's cutime and cstime), so a daemon that exits
    between two readings (max_use, max_idle) still counts."""
    try:
        fields = Path(f"/proc/{master_pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # utime 14, stime 15, cutime 16, cstime 17 (proc(5)); fields[0] is field 3
    own = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) or 0.0 for child in children_of(master_pid))


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (all threads' child lists)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class HostCpu:
    """How busy all CPUs were between :meth:`start` and the first of
    :meth:`busy` / :meth:`busy_seconds` (/proc/stat, read once at each end):
    near 100 % means the machine, not the program, set the pace."""

    def __init__(self) -> None:
        self._start = self._read()
        self._end: tuple[int, int] | None = None

    @staticmethod
    def _read() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    def _delta(self) -> tuple[int, int]:
        if self._end is None:
            self._end = self._read()
        return self._end[0] - self._start[0], self._end[1] - self._start[1]

    def busy(self) -> float:
        busy, total = self._delta()
        return round(100.0 * busy / max(1, total), 1)

    def busy_seconds(self) -> float:
        """CPU seconds all CPUs were busy (USER_HZ ticks)."""
        return self._delta()[0] / os.sysconf("SC_CLK_TCK")


def terminate_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt, so clean-up in ``finally`` runs as on
    Ctrl-C; SIGINT does so even when the shell started us with it ignored
    (a background job of a script)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# -- concurrency ---------------------------------------------------------------


def established_to(port: int) -> int:
    """How many established TCP connections have ``port`` as their local port
    (IPv4, /proc/net/tcp): the SMTP sessions a listener holds right now."""
    want = f":{port:04X}"
    count = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1].endswith(want) and fields[3] == "01":  # 01 = ESTABLISHED
                count += 1
    return count


class PeakSessions:
    """Samples :func:`established_to` in a thread; ``peak`` is the most seen."""

    def __init__(self, port: int, interval: float = 0.01) -> None:
        self.port = port
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sessions", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, established_to(self.port))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSessions:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
