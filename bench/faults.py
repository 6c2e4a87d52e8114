"""Fault runs too long for the suite, with the suite's own code and checks.

    .venv/bin/python bench/faults.py pg-outage [--rate 10] [--before 15] [--outage 60] [--after 15] [--json]
    .venv/bin/python bench/faults.py kill {serve-pg,milter,postfix} [--messages 600] [--json]

``pg-outage`` is tests/system/test_fault_postgres.py's scenario (a private
PostgreSQL cluster stopped under a steady load of new cases) with the full
60 s outage of issue 8; ``kill`` runs a scenario of
tests/system/test_fault_kill.py with more messages. Each prints its figures
(and checks them as the test does: exit 1 when a check fails). Needs root,
the postfix package and the PostgreSQL binaries; everything is removed at the
end (``CASEGATE_KEEP_POSTFIX=1`` keeps the folders).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

import benchlib  # noqa: F401 - puts the repository root on sys.path
from benchlib import machine, machine_line, terminate_on_sigterm

from tests.system import test_fault_kill as kill
from tests.system import test_fault_postgres as pgout


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="fault", required=True)
    o = sub.add_parser("pg-outage", help="PostgreSQL stopped under load")
    o.add_argument("--rate", type=float, default=10.0, help="new cases per second")
    o.add_argument("--before", type=float, default=15.0, help="seconds of load before the stop")
    o.add_argument("--outage", type=float, default=60.0, help="seconds PostgreSQL is down")
    o.add_argument("--after", type=float, default=15.0, help="seconds of load after the start")
    k = sub.add_parser("kill", help="kill -9 / stop of one part mid-burst")
    k.add_argument("what", choices=sorted(kill.SCENARIOS))
    k.add_argument("--messages", type=int, default=600)
    for q in (o, k):
        q.add_argument("--json", action="store_true", help="print the figures as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    terminate_on_sigterm()

    def progress(text: str) -> None:
        if not args.json:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    started = time.monotonic()
    figures: object
    check: object
    if args.fault == "pg-outage":
        figures = pgout.run_pg_outage(rate=args.rate, before=args.before, outage=args.outage,
                                      after=args.after, drain_timeout=600, progress=progress)
        check = pgout.check_outage
    else:
        figures = kill.SCENARIOS[args.what](n=args.messages, progress=progress)
        check = kill.check_kill
    seconds = time.monotonic() - started
    failure = None
    try:
        check(figures)  # type: ignore[operator]
    except AssertionError as exc:
        failure = str(exc) or repr(exc)
    if args.json:
        print(json.dumps({"fault": args.fault, "figures": asdict(figures),  # type: ignore[call-overload]
                          "seconds": round(seconds, 1), "failure": failure,
                          "machine": machine()}, indent=2, default=str))
    else:
        print(figures.summary())  # type: ignore[attr-defined]
        print(f"run took {seconds:.0f}s; checks: {'FAILED: ' + failure if failure else 'passed'}")
        print(machine_line(machine()))
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
