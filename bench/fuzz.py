"""What any bytes cost the rules: fuzzed mail, and the shapes of issue 8.

    .venv/bin/python bench/fuzz.py [--count 100000] [--seed 1] [--json]
    .venv/bin/python bench/fuzz.py --shapes [--rules-from DIR] [--json]

The default run feeds ``--count`` inputs from ``tests/support/mutate.py``
(every seed message of tests/data and ../shared/corpus once, then seeded
mutations of them: truncation, byte flips, duplicated and 1 MB headers,
thousands of MIME parts, deep nesting, bad charsets, NUL and bare CR/LF,
8-bit headers ...) through what the engine does with a delivery's bytes:
``rules.inbound.parse``, ``rules.loop.detect``, ``rules.quotes.extract_reply``
and ``body_text``, the files. It prints the count, the CPU time per message
(median, p99, worst, and which input was the worst), the errors (there must
be none) and the peak RSS of the process.

``--shapes`` measures each shape of ``tests/support/poison.py`` at the scale
the issue reported (a 30 MB HTML reply, 10,000 attachments, ...), each in a
fresh process so that its peak RSS is its own: CPU seconds per step and the
growth of the peak RSS over the process's size before parsing.
``--rules-from DIR`` takes ``rules/`` from another checkout (a worktree of
an older commit) to compare before and after.

Runs on demand, not in the test suite; no root, no Postfix.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import benchlib
from benchlib import percentile, table

SECRET = b"b" * 32


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _handle(data: bytes) -> None:
    from rules import automatic, loop
    from rules.inbound import parse
    from rules.quotes import body_text, extract_reply

    inbound = parse(data)
    msg = inbound.msg
    loop.detect(msg, "", secret=SECRET, prefix="CS")
    loop.hops_of(msg, SECRET)
    automatic.suppresses_autoreply(msg)
    automatic.never_autoreply_to(inbound.from_address)
    extract_reply(msg)
    body_text(msg)
    for part in msg.walk():
        part.get_content_type()
    for part in inbound.attachments:
        part.sha256  # noqa: B018 (the engine stores the digest)


def fuzz(count: int, seed: int) -> dict[str, object]:
    from tests.support.mutate import mutated, seeds

    pool = seeds()
    rss_before = _peak_rss_mb()
    times: list[float] = []
    worst = (0.0, "")
    errors: list[str] = []
    started = time.process_time()
    for description, data in mutated(seed, count, pool):
        start = time.process_time()
        try:
            _handle(data)
        except Exception as exc:
            errors.append(f"{description}: {type(exc).__name__}: {exc}")
        spent = time.process_time() - start
        times.append(spent)
        if spent > worst[0]:
            worst = (spent, description)
    return {
        "inputs": len(times),
        "seed messages": len(pool),
        "cpu_seconds": round(time.process_time() - started, 1),
        "median_ms": round(percentile(times, 50) * 1000, 2),
        "p99_ms": round(percentile(times, 99) * 1000, 1),
        "worst_ms": round(worst[0] * 1000, 1),
        "worst_input": worst[1],
        "errors": errors[:20],
        "error_count": len(errors),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_before_mb": round(rss_before, 1),
    }


def one_shape(name: str) -> dict[str, object]:
    """Runs in its own process (``--one``): the steps of one poison shape."""
    from tests.support.poison import SHAPES

    data = SHAPES[name]()
    base = _peak_rss_mb()
    from rules import loop
    from rules.inbound import parse
    from rules.quotes import body_text, extract_reply

    steps: dict[str, str] = {}
    state: dict[str, object] = {}

    def step(label: str, call: object) -> None:
        start = time.process_time()
        try:
            call()  # type: ignore[operator]
            outcome = ""
        except BaseException as exc:  # the point is to see RecursionError
            outcome = f" {type(exc).__name__}"
        steps[label] = f"{time.process_time() - start:.2f}{outcome}"

    step("parse", lambda: state.__setitem__("inbound", parse(data)))
    inbound = state.get("inbound")
    if inbound is not None:
        msg = inbound.msg  # type: ignore[attr-defined]
        step("detect", lambda: loop.detect(msg, "", secret=SECRET, prefix="CS"))
        step("extract_reply", lambda: extract_reply(msg))
        step("body_text", lambda: body_text(msg))
    return {
        "shape": name,
        "MB": round(len(data) / 1e6, 2),
        **steps,
        "rss_growth_mb": round(_peak_rss_mb() - base, 1),
        "opaque": getattr(inbound, "opaque", None),
    }


def shapes(rules_from: str | None) -> list[dict[str, object]]:
    from tests.support.poison import SHAPES

    rows = []
    for name in SHAPES:
        cmd = [sys.executable, __file__, "--one", name]
        if rules_from:
            cmd += ["--rules-from", rules_from]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError) as exc:
            rows.append({"shape": name, "parse": f"failed: {type(exc).__name__}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000, help="fuzzed inputs (default 100,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shapes", action="store_true", help="the shapes of issue 8, one process each")
    parser.add_argument("--rules-from", metavar="DIR", help="import rules/ from another checkout")
    parser.add_argument("--one", metavar="SHAPE", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # From this checkout, before --rules-from puts another one first.
    import tests.support.mutate
    import tests.support.poison  # noqa: F401

    if args.rules_from:
        sys.path.insert(0, str(Path(args.rules_from).resolve()))
    if args.one:
        print(json.dumps(one_shape(args.one)))
        return
    m = benchlib.machine()
    if args.shapes:
        rows = shapes(args.rules_from)
        if args.json:
            print(json.dumps({"machine": m, "shapes": rows}, indent=2))
            return
        cols = ["shape", "MB", "parse", "detect", "extract_reply", "body_text", "rss_growth_mb", "opaque"]
        print("CPU seconds per step; rss_growth_mb: peak RSS over the size before parsing")
        print(table(cols, [[r.get(c, "-") for c in cols] for r in rows]))
        print(benchlib.machine_line(m))
        return
    result = fuzz(args.count, args.seed)
    if args.json:
        print(json.dumps({"machine": m, **result}, indent=2))
        return
    for key, value in result.items():
        if key != "errors":
            print(f"{key}: {value}")
    for error in result["errors"]:  # type: ignore[attr-defined]
        print(f"error: {error}")
    print(benchlib.machine_line(m))


if __name__ == "__main__":
    main()
