"""The fuzz suite's long profile (issue 30): thousands of mutated files of every kind through
the readers (in-process) and the commands (through the command line's entry point), every
outcome logged; reports the cases per reader/command, how many were accepted and refused,
and every contract violation (a traceback, an error that names no file, more than one line,
a partial output, a case over its time bound). Goal: ≥ 5,000 cases, no violation.

    python benchmarks/fuzz.py [--cases-per-test 500] [--workers 2] [--json FILE]

Each violation is a failing case to keep as a fixed regression example in tests/fuzz."""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

from _common import REPO, machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases-per-test", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "log.jsonl")
        env = {**os.environ, "HYPOTHESIS_PROFILE": "long", "IMAT_FUZZ_LOG": log,
               "IMAT_FUZZ_CASES": str(a.cases_per_test)}
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "-n", str(a.workers), "tests/fuzz", "-k", "not reported"],
                           cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        rows = []
        if os.path.exists(log):
            with open(log, encoding="utf-8") as f:
                rows = [json.loads(x) for x in f]
    by_kind: dict = collections.defaultdict(collections.Counter)
    for x in rows:
        by_kind[x["kind"]]["violation" if x["problem"] else x["outcome"]] += 1
    bad = [x for x in rows if x["problem"]]
    slowest = max((x["seconds"] for x in rows), default=0.0)
    out = {"machine": machine(), "cases": len(rows), "violations": len(bad),
           "accepted": sum(x["outcome"] == "ok" and not x["problem"] for x in rows),
           "refused": sum(x["outcome"] == "refused" and not x["problem"] for x in rows),
           "wall_s": round(wall, 1), "slowest_case_s": slowest, "pytest_exit": r.returncode,
           "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
           "violation_list": bad[:50]}
    print(json.dumps(out, indent=1))
    if r.returncode not in (0, 5):
        print(r.stdout[-3000:], r.stderr[-2000:], file=sys.stderr)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    ok = len(rows) >= 5000 and not bad and r.returncode == 0
    print(f"fuzz: {len(rows)} cases (goal ≥ 5,000), {len(bad)} violation(s) (goal 0): "
          f"{'met' if ok else 'NOT met'}", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
