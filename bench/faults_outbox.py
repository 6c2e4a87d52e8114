"""Postfix's re-injection listener down for 10 minutes while mail comes in.

    .venv/bin/python bench/faults_outbox.py [--outage 600] [--gap 2] [--cases 20] [--json]

The scenario of tests/system/test_fault_reinject.py (its ``Outage`` class),
for as long as a real outage lasts: a sink, a private Postfix built from
contrib/postfix/ and ``casegate serve`` with its default back-off
(``retry_min_seconds`` 2, ``retry_max_seconds`` 300). ``--cases`` cases are
opened, then the filter-free listener is taken out of master.cf (Postfix
reloaded) for ``--outage`` seconds while one message every ``--gap`` seconds
comes in, in turn a new case, a customer's follow-up and a CSR's answer
(from a trusted address) on the open cases. Then the listener is put back.

Prints: messages casegate took (250) during the outage and any it deferred,
the outgoing messages waiting at the return, the time from the return to
the last delivery at the sink, the longest back-off in casegate's log and
the most attempts of one message, streams (case, recipient) delivered out of
order, duplicate Message-IDs at the sink, stored messages never delivered,
delivered Message-IDs no stored message has. Exit 1 when any of the last
four is not 0 or casegate deferred anything. Everything is removed at the
end (``CASEGATE_KEEP_POSTFIX=1`` keeps the folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

import benchlib  # noqa: F401 - puts the repository root on sys.path
from benchlib import machine, machine_line, terminate_on_sigterm

from tests.system.test_fault_reinject import outage_env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outage", type=float, default=600.0, help="seconds the listener is down")
    ap.add_argument("--gap", type=float, default=2.0, help="seconds between incoming messages")
    ap.add_argument("--cases", type=int, default=20, help="cases opened before the outage")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    terminate_on_sigterm()
    m = machine()
    started = time.monotonic()

    def progress(text: str) -> None:
        if not args.json:
            print(f"  {text}", file=sys.stderr, flush=True)

    with outage_env() as env:
        fig = env.run(outage=args.outage, gap=args.gap, cases=args.cases,
                      drain_timeout=args.outage + 400, progress=progress)
    total = time.monotonic() - started
    bad = (fig.deferred_by_casegate or fig.out_of_order or fig.duplicate_message_ids
           or fig.missing or fig.changed_message_ids)
    if args.json:
        print(json.dumps({"figures": asdict(fig), "seconds": round(total, 1), "machine": m},
                         indent=2))
    else:
        print(fig.line())
        for stream in fig.out_of_order[:10]:
            print(f"  out of order: {stream}")
        print(f"run {total:.0f}s; {machine_line(m)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
