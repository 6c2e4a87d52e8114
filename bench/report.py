"""How long `casegate report` takes on a large store (issue 11: under a second
for 100,000 cases), on SQLite and PostgreSQL.

    .venv/bin/python bench/report.py                       # 100,000 cases, SQLite and PostgreSQL
    .venv/bin/python bench/report.py --cases 20000 --no-pg --json

Seeds a fresh store with ``bench/seed.py`` (cases over the last 90 days,
about half closed, 3 messages each, 3 pools, 12 CSRs), then adds what the
seeder does not make and the report reads: a 2-day resolution target on two
of the three pools, and a consultation on one case in ten (on time, late or
unanswered). Then it times :func:`casestore.reports.build` over the whole 90
days (every case in the period, the worst case) and rendering it as JSON and
HTML, ``--repeat`` times, and prints the median and the slowest run against
the target. PostgreSQL runs in a database of its own on ``--pg`` (created
and dropped here).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from seed import seed  # noqa: E402

from casestore import models  # noqa: E402
from casestore.report_formats import to_html, to_json  # noqa: E402
from casestore.reports import Period, build  # noqa: E402
from casestore.store import Store  # noqa: E402

TARGET_SECONDS = 1.0
NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def add_report_facts(url: str, *, share: float = 0.1, rnd_seed: int = 1) -> int:
    """Resolution targets on pool1 and pool2; a consultation on ``share`` of the
    cases (asked a day after opening, due a day later, answered on time, late or
    not at all). Returns the number of consultations."""
    rnd = random.Random(rnd_seed)
    store = Store(url, clock=lambda: NOW)
    for name in ("pool1", "pool2"):
        store.set_pool(name, resolve_within=2 * 86400)
    with store.atomic():
        dept = models.Department.get_or_none(models.Department.name == "legal") or models.Department.create(
            name="legal", address="legal@example.com", deadline=86400, created=store.now())
        rows = []
        for case_id, created in (models.Case.select(models.Case.id, models.Case.created)
                                 .order_by(models.Case.id).tuples()):
            if rnd.random() >= share:
                continue
            created = created if isinstance(created, dt.datetime) else dt.datetime.fromisoformat(created)
            asked = created + dt.timedelta(hours=1)
            due = asked + dt.timedelta(days=1)
            fate = rnd.random()
            answered = (asked + dt.timedelta(hours=5) if fate < 0.6 else
                        due + dt.timedelta(hours=7) if fate < 0.85 else None)
            rows.append({"case": case_id, "department": dept.id, "question": "May we?",
                         "asked_by": "csr1@example.com", "status": "answered" if answered else "open",
                         "asked": asked, "due": due, "answered": answered})
        for i in range(0, len(rows), 2000):
            models.Consultation.insert_many(rows[i:i + 2000]).execute()
    if not store.is_sqlite:
        # As autovacuum would by now on a store in use: statistics, and the
        # visibility map that lets index-only scans skip the heap.
        store.db.execute_sql("VACUUM ANALYZE")
    store.close()
    return len(rows)


def measure(url: str, repeat: int, days: int) -> dict[str, Any]:
    """The report over the last ``days`` days, ``repeat`` times on a fresh
    connection each (as a CLI run has): wall and CPU seconds of this process
    (PostgreSQL's own CPU is not in it)."""
    store = Store(url, clock=lambda: NOW)
    period = Period(NOW.date() - dt.timedelta(days=days - 1), NOW.date())
    walls, cpus, render = [], [], []
    report: dict[str, Any] = {}
    for _ in range(repeat):
        store.close()
        w0, c0 = time.perf_counter(), time.process_time()
        report = build(store, period)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        t1 = time.perf_counter()
        to_json(report)
        to_html(report)
        render.append(time.perf_counter() - t1)
    store.close()
    return {"days": days, "wall_median_s": round(statistics.median(walls), 3),
            "wall_min_s": round(min(walls), 3), "cpu_median_s": round(statistics.median(cpus), 3),
            "render_json_html_s": round(statistics.median(render), 3),
            "cases_opened": report["cases_opened"], "cases_closed": report["cases_closed"],
            "emails_received": report["emails_received"], "open_cases": report["open_cases"],
            "overdue_cases": report["overdue_cases"],
            "consultations": report["consulted_on_time"] + report["consulted_late"]
            + report["consultations_pending"]}


def one(label: str, url: str, cases: int, repeat: int, *, seeded: bool = False) -> dict[str, Any]:
    figures: dict[str, Any] = {"store": label}
    if not seeded:
        t0 = time.perf_counter()
        seed(url, cases=cases, messages_per_case=3, pools=3, csrs=12, days=90, seed=1,
             now=NOW, progress=sys.stderr.isatty())
        figures["consultations_seeded"] = add_report_facts(url)
        figures["seed_s"] = round(time.perf_counter() - t0, 1)
    store = Store(url)
    with store.guard():
        figures["cases"] = models.Case.select().count()
        figures["messages"] = models.Message.select().count()
    store.close()
    figures["runs"] = [measure(url, repeat, days) for days in (30, 91)]
    for run in figures["runs"]:
        run["verdict"] = "PASS" if run["wall_median_s"] < TARGET_SECONDS else "SHORT"
    return figures


def _pg(dsn: str) -> tuple[str, Any]:
    import psycopg2

    admin = psycopg2.connect(dsn, connect_timeout=5)
    admin.autocommit = True
    name = f"casegate_bench_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return f"{dsn.rsplit('/', 1)[0]}/{name}", drop


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pg", default=os.environ.get("CASEGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
                    help="a PostgreSQL database to create the benchmark's database from")
    ap.add_argument("--no-pg", action="store_true", help="SQLite only")
    ap.add_argument("--store", action="append", default=[], metavar="URL",
                    help="measure this already seeded store (bench/seed.py with now=2026-12-01 09:00, "
                         "then add_report_facts) instead of seeding; repeatable")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = []
    if args.store:
        results = [one(url.partition(":")[0], url, 0, args.repeat, seeded=True) for url in args.store]
    else:
        with tempfile.TemporaryDirectory(prefix="casegate-report-bench-") as tmp:
            results.append(one("sqlite", f"sqlite:///{tmp}/bench.db", args.cases, args.repeat))
        if not args.no_pg:
            url, drop = _pg(args.pg)
            try:
                results.append(one("postgresql", url, args.cases, args.repeat))
            finally:
                drop()
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"target_s": TARGET_SECONDS, "cpus": os.cpu_count(), "load": load,
                          "results": results}, indent=2))
        return 0
    print(f"casegate report on a store of 90 days, target < {TARGET_SECONDS:.1f} s "
          f"({os.cpu_count()} CPUs, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    for r in results:
        print(f"  {r['store']}: {r['cases']:,} cases, {r['messages']:,} messages"
              + (f" (seeded in {r['seed_s']} s)" if "seed_s" in r else ""))
        for run in r["runs"]:
            print(f"    last {run['days']:>2} days: {run['wall_median_s']:.3f} s median wall "
                  f"(best {run['wall_min_s']:.3f} s of {args.repeat}), {run['cpu_median_s']:.3f} s CPU here, "
                  f"JSON+HTML {run['render_json_html_s']:.3f} s  {run['verdict']}")
            print(f"      {run['cases_opened']:,} opened, {run['cases_closed']:,} closed, "
                  f"{run['emails_received']:,} e-mails, {run['open_cases']:,} open, "
                  f"{run['overdue_cases']:,} overdue, {run['consultations']:,} consultations")
    return 0 if all(run["verdict"] == "PASS" for r in results for run in r["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
