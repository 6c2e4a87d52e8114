"""Top frames of a py-spy profile (``py-spy record --format raw``: collapsed stacks).

    .venv/bin/python bench/pyspy_top.py PROFILE [--top 25] [--thread casegate-db]

Prints, over the samples of the threads whose name contains ``--thread``
(default: all), the functions by inclusive share (on the stack) and by self
share (the leaf), and a coarse split by area: SQL building in peewee, the
database driver executing, the stdlib ``email`` package, jinja2, logging,
casegate's own code. The figures the speed work is steered by.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from collections.abc import Sequence

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::\d+)?\)$")

#: (area, test on a frame's file): the first area that any frame of a stack
#: matches, from the leaf upwards, gets the sample.
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("database driver (sqlite3 / psycopg2 executing, commit)", ("sqlite3/", "psycopg2/")),
    ("peewee building SQL and rows", ("peewee.py", "playhouse/")),
    ("stdlib email (parse, headers, generate)", ("email/",)),
    ("jinja2 rendering", ("jinja2/",)),
    ("logging", ("logging/",)),
    ("aiosmtpd / asyncio", ("aiosmtpd/", "asyncio/")),
    ("casegate code itself", ("rules/", "smtpd_hook/", "casestore/", "milter/")),
)


#: Leaf frames of a thread waiting for work, not working (py-spy's idle
#: detection misses some under GIL contention): left out of the figures.
IDLE_LEAVES = frozenset({
    ("_worker", "concurrent/futures/thread.py"),
    ("Condition.wait", "threading.py"),
    ("EpollSelector.select", "selectors.py"),
    ("QueueListener.dequeue", "logging/handlers.py"),
})


#: peewee's frames that call into the driver's C code: a leaf there is the
#: database executing (SQLite's VM, the commit's fsync), not peewee's Python.
DRIVER_LEAVES = frozenset({
    ("Database.commit", "peewee.py"),
    ("Database._execute_cursor", "peewee.py"),
    ("Database.rollback", "peewee.py"),
    ("SqliteDatabase.begin", "peewee.py"),
    ("CursorWrapper.iterate", "peewee.py"),
})


def frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for part in stack.split(";")[1:]:  # the first element is the thread
        m = FRAME.match(part)
        out.append((m.group("func"), m.group("file")) if m else (part, ""))
    return out


def summarise(lines: Sequence[str], thread: str = "", top: int = 25) -> str:
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if thread and thread not in stack.split(";", 1)[0]:
            continue
        n = int(count_text)
        fs = frames(stack)
        if fs and fs[-1] in IDLE_LEAVES:
            continue
        total += n
        for name in {f"{func} ({file})" for func, file in fs}:
            inclusive[name] += n
        if fs:
            leaf[f"{fs[-1][0]} ({fs[-1][1]})"] += n
        area = "other"
        if fs and fs[-1] in DRIVER_LEAVES:  # py-spy shows no native frames: the C call
            area = AREAS[0][0]
        for _func, file in reversed(fs if area == "other" else ()):
            hit = next((a for a, keys in AREAS if any(k in file for k in keys)), None)
            if hit:
                area = hit
                break
        areas[area] += n
    if not total:
        return "no samples"

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f} %"

    out = [f"{total} busy samples" + (f" in threads matching {thread!r}" if thread else "")]
    out.append("\nby area (leafmost match):")
    out += [f"  {pct(n)}  {name}" for name, n in areas.most_common()]
    out.append(f"\ntop {top} inclusive (on the stack):")
    out += [f"  {pct(n)}  {name}" for name, n in inclusive.most_common(top)]
    out.append(f"\ntop {top} self (leaf):")
    out += [f"  {pct(n)}  {name}" for name, n in leaf.most_common(top)]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--thread", default="", help="only threads whose name contains this")
    args = p.parse_args(argv)
    with open(args.profile) as f:
        print(summarise(f.readlines(), args.thread, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
