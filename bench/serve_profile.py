"""py-spy (and optionally strace -c) of ``casegate serve`` per mailpath.py phase.

    .venv/bin/python bench/serve_profile.py OUT_PREFIX [--strace | --threads | --gil] [mailpath.py options]

Runs bench/mailpath.py unchanged, but samples the ``serve`` process
separately during (c) new cases and (a) replies: ``OUT_PREFIX-c.raw`` and
``OUT_PREFIX-a.raw`` (py-spy collapsed stacks, all threads, idle left out),
summarised with bench/pyspy_top.py into ``OUT_PREFIX-c.txt`` /
``OUT_PREFIX-a.txt``. ``--strace`` also counts the serve process's system
calls per phase (``strace -c -f``) into ``OUT_PREFIX-c.strace`` /
``OUT_PREFIX-a.strace``, instead of py-spy (both at once would distort
each other). ``--threads`` samples nothing: it reads each thread's CPU time
(/proc/PID/task/TID/stat) at the start and end of each phase and prints it
per message and thread (names from ``py-spy dump``), into
``OUT_PREFIX-c.threads`` / ``OUT_PREFIX-a.threads``. ``--gil``: py-spy
samples only the thread holding the interpreter lock (``py-spy --gil``):
Python's own CPU, without the waits on a socket, a lock or SQLite that the
all-threads view counts as busy on some virtual machines (its idle
detection reads the kernel's thread state). py-spy and strace cost
the process CPU: take the ms/msg figures from a plain mailpath.py run (or
``--threads``), not from those.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mailpath
import pyspy_top


def thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """Seconds of CPU (user, system) per thread id of ``pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(task.name)] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return out


def thread_names(pid: int) -> dict[int, str]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    text = subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True, text=True).stdout
    return {int(m.group(1)): m.group(2) for m in re.finditer(r'^Thread (\d+) \(\w+\): "([^"]*)"', text, re.M)}


def main() -> int:
    argv = sys.argv[1:]
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    prefix, rest = argv[0], argv[1:]
    use_strace = "--strace" in rest
    use_threads = "--threads" in rest
    gil = ["--gil"] if "--gil" in rest else []
    rest = [a for a in rest if a not in ("--strace", "--threads", "--gil")]
    original = mailpath.run_phase

    def run_phase(name: str, label: str, **kw: Any) -> Any:
        pid = kw.get("cpu_pid")
        if name not in ("c", "a") or not pid:
            return original(name, label, **kw)
        if use_threads:
            before = thread_cpu(pid)
            try:
                return original(name, label, **kw)
            finally:
                after = thread_cpu(pid)
                names = thread_names(pid)
                n = len(kw["items"])
                zero = (0.0, 0.0)
                rows = sorted(((after[t][0] - before.get(t, zero)[0], after[t][1] - before.get(t, zero)[1],
                                t) for t in after), key=lambda r: -(r[0] + r[1]))
                user, system = sum(r[0] for r in rows), sum(r[1] for r in rows)
                text = [f"serve CPU per message in phase ({name}), {n} messages: "
                        f"{1000 * (user + system) / n:.2f} ms (user {1000 * user / n:.2f}, "
                        f"system {1000 * system / n:.2f})"]
                text += [f"  {1000 * (u + s) / n:7.2f} ms  (user {1000 * u / n:.2f}, system "
                         f"{1000 * s / n:.2f})  {names.get(t, '?')} ({t})" for u, s, t in rows if u + s]
                Path(f"{prefix}-{name}.threads").write_text("\n".join(text) + "\n")
        if use_strace:
            out = f"{prefix}-{name}.strace"
            proc = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", out],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            out = f"{prefix}-{name}.raw"
            exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            proc = subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--format", "raw", "--threads",
                 "--rate", "200", *gil, "--output", out],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return original(name, label, **kw)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
            if not use_strace:
                with open(out) as f:
                    lines = f.readlines()
                Path(f"{prefix}-{name}.txt").write_text(
                    f"casegate serve, mailpath.py phase ({name}), "
                    f"{'the thread holding the GIL' if gil else 'all threads'}\n\n"
                    + pyspy_top.summarise(lines, "", 30) + "\n\n"
                    + "thread casegate-db only\n\n"
                    + pyspy_top.summarise(lines, "casegate-db", 30) + "\n")

    mailpath.run_phase = run_phase
    return mailpath.main(rest)


if __name__ == "__main__":
    sys.exit(main())
