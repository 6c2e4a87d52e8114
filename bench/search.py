"""How long ``case search`` and ``case list`` take on a large store.

    .venv/bin/python bench/search.py [--cases 100000] [--messages-per-case 2]
        [--store sqlite:////tmp/casegate-bench.db] [--store postgresql://postgres@127.0.0.1:5432/casegate_bench]
        [--repeat 5] [--json]

Each store is seeded by bench/seed.py up to ``--cases`` cases (kept between
runs: a second run only measures), then every query runs ``--repeat`` times
in the process (as the CLI runs it: the same functions, a fresh store
object) and the median and worst times are printed, with the number of cases
found. Target: under a second each. One run through the real ``casegate``
CLI per store gives the figure a person sees (Python start included).
Without ``--store`` it uses a SQLite file in /tmp and, when the test
PostgreSQL answers, a database ``casegate_bench`` there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from seed import RARE, seed  # noqa: E402

from casestore.models import Case  # noqa: E402
from casestore.search import list_cases, search  # noqa: E402
from casestore.store import Store, display_url  # noqa: E402

QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("search a case number", {"search": "CS0050000"}),
    ("search a surname", {"search": "kowalski"}),
    ("search first name + surname", {"search": "anna nowak"}),
    ("search an address fragment", {"search": "firma.example.pl"}),
    ("search a subject word (rare)", {"search": "dashboard"}),
    ("search a word everywhere", {"search": "example"}),
    ("search no match", {"search": "zzzzqqq"}),
    ("search --body a word", {"search": "blinks red", "body": True}),
    ("search --body common words", {"search": "locked firmware invoice twice", "body": True}),
    ("search --body a rare word", {"search": RARE[1234], "body": True}),
    ("search --body a rare word + a common one", {"search": f"{RARE[777]} please", "body": True}),
    ("list --status open --limit 50", {"list": {"status": "open", "limit": 50}}),
    ("list --csr --sort created --reverse --limit 50",
     {"list": {"csr": "csr3@example.com", "sort": "created", "reverse": True, "limit": 50}}),
    ("list --pool --sort subject --limit 50", {"list": {"pool": "pool2", "sort": "subject", "limit": 50}}),
    ("list --since 7d --status closed", {"list": {"since": "7d", "status": "closed"}}),
    ("list --csr none (unassigned), all", {"list": {"csr": "none"}}),
]


def _pg_default() -> str | None:
    try:
        import psycopg2

        conn = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = 'casegate_bench'")
            if cur.fetchone() is None:
                cur.execute('CREATE DATABASE "casegate_bench"')
        conn.close()
    except Exception:
        return None
    return "postgresql://postgres@127.0.0.1:5432/casegate_bench"


def run_one(url: str, spec: dict[str, Any]) -> int:
    import datetime as dt

    store = Store(url, create=False)
    try:
        if "search" in spec:
            return len(search(store, spec["search"], body=spec.get("body", False)))
        args = dict(spec["list"])
        if args.get("since") == "7d":
            args["since"] = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
        return len(list_cases(store, **args))
    finally:
        store.close()


def measure(url: str, cases: int, per_case: int, repeat: int) -> dict[str, Any]:
    store = Store(url)
    store.migrate()
    with store.guard():
        have = Case.select().count()
    store.close()
    seeded = None
    if have < cases:
        seeded = seed(url, cases=cases - have, messages_per_case=per_case, progress=sys.stderr.isatty())
    results = []
    for name, spec in QUERIES:
        times = []
        found = 0
        for _ in range(repeat):
            t = time.perf_counter()
            found = run_one(url, spec)
            times.append(time.perf_counter() - t)
        results.append({"query": name, "found": found, "median_ms": round(statistics.median(times) * 1000, 1),
                        "max_ms": round(max(times) * 1000, 1)})
    cli = _cli(url)
    return {"store": display_url(url), "cases": max(have, cases), "seeded": seeded, "queries": results,
            "cli_search_ms": cli}


def _cli(url: str) -> float | None:
    """One `casegate case search` through the installed CLI, wall time."""
    exe = Path(sys.executable).with_name("casegate")
    if not exe.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "casegate.toml"
        config.write_text(f'store = "{url}"\n')
        t = time.perf_counter()
        subprocess.run([str(exe), "--config", str(config), "case", "search", "kowalski", "--json"],
                       capture_output=True, check=False, env={**os.environ})
        return round((time.perf_counter() - t) * 1000, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--messages-per-case", type=int, default=2)
    ap.add_argument("--store", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    urls = args.store or [u for u in ("sqlite:////tmp/casegate-bench.db", _pg_default()) if u]
    reports = [measure(u, args.cases, args.messages_per_case, args.repeat) for u in urls]
    if args.json:
        print(json.dumps(reports, indent=2))
        return 0
    worst = 0.0
    for r in reports:
        print(f"\n{r['store']}: {r['cases']:,} cases")
        if r["seeded"]:
            s = r["seeded"]
            print(f"  seeded {s['rows']['cases']:,} cases in {s['seconds']:.0f} s "
                  f"({s['rows_per_second']:,} rows/s)")
        print(f"  {'query':<48} {'found':>6} {'median ms':>10} {'max ms':>8}")
        for q in r["queries"]:
            worst = max(worst, q["max_ms"])
            mark = "PASS" if q["max_ms"] < 1000 else "SLOW"
            print(f"  {q['query']:<48} {q['found']:>6} {q['median_ms']:>10} {q['max_ms']:>8}  {mark}")
        if r["cli_search_ms"] is not None:
            print(f"  casegate case search kowalski (whole CLI process): {r['cli_search_ms']} ms")
    print(f"\nworst query {worst:.0f} ms: {'PASS' if worst < 1000 else 'SLOW'} (target < 1000 ms); "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    return 0 if worst < 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
