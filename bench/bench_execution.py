"""Run HumanEval-X's canonical solutions through the sandboxed executor: pass rate per language.

A correct executor passes (nearly) all of them, so this checks the harness (file layout, imports,
assert shims, limits) rather than any model.

    python bench/bench_execution.py [--languages cpp,go] [--limit 20] [--jobs 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from neuro.code.corpus import LANGS, load_corpus, normalize_lang  # noqa: E402
from neuro.code.sandbox import run_snippet, sandbox_features, toolchains  # noqa: E402

DATA = REPO / ".." / "shared" / "data" / "humaneval-x"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA), help="folder of humaneval_<lang>.jsonl(.gz) files")
    ap.add_argument("--languages", default=",".join(LANGS), help="comma-separated languages")
    ap.add_argument("--limit", type=int, default=None, help="first N tasks per language")
    ap.add_argument("--jobs", type=int, default=1, help="parallel runs (the executor is thread-safe)")
    ap.add_argument("--timeout", type=float, default=10.0, help="run timeout per program, seconds")
    ap.add_argument("--json", action="store_true", help="print a machine-readable summary")
    args = ap.parse_args(argv)

    if not Path(args.data).is_dir():
        print(f"HumanEval-X not found at {args.data}: nothing to benchmark", file=sys.stderr)
        return 0
    langs = [normalize_lang(x) for x in args.languages.split(",") if x.strip()]
    available = toolchains()
    skipped = [x for x in langs if not available[x]]
    langs = [x for x in langs if available[x]]
    snippets = [s for s in load_corpus(args.data) if s.lang in langs]
    if args.limit is not None:
        snippets = [s for lang in langs for s in [x for x in snippets if x.lang == lang][:args.limit]]

    start = time.monotonic()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(lambda s: run_snippet(s, timeout=args.timeout), snippets))
    wall = time.monotonic() - start

    summary: dict = {"languages": {}, "failures": [], "skipped": skipped, "wall_s": round(wall, 1),
                     "sandbox": sandbox_features(), "jobs": args.jobs}
    for lang in langs:
        rows = [(s, r) for s, r in zip(snippets, results, strict=True) if s.lang == lang]
        passed = sum(r.passed for _, r in rows)
        summary["languages"][lang] = {"n": len(rows), "passed": passed,
                                      "pass_rate": round(passed / len(rows), 4) if rows else None,
                                      "seconds": round(sum(r.duration for _, r in rows), 1),
                                      "seconds_per_program": round(sum(r.duration for _, r in rows) / len(rows), 3)
                                      if rows else None}
        summary["failures"] += [{"id": s.id, "status": r.status, "reason": r.reason} for s, r in rows if not r.passed]

    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{'language':<11} {'n':>4} {'passed':>6} {'rate':>7} {'run time':>9} {'s/program':>9}")
    for lang, row in summary["languages"].items():
        rate = f"{100 * row['pass_rate']:.1f} %" if row["n"] else "-"
        per = f"{row['seconds_per_program']:.3f}" if row["n"] else "-"
        print(f"{lang:<11} {row['n']:>4} {row['passed']:>6} {rate:>7} {row['seconds']:>8.1f}s {per:>9}")
    for lang in skipped:
        print(f"{lang:<11} skipped: toolchain not installed")
    if summary["failures"]:
        print("\nfailures:")
        for f in summary["failures"]:
            print(f"  {f['id']:<22} {f['status']:<14} {f['reason']}")
    sandbox = summary["sandbox"]
    print(f"\nwall time {wall:.1f} s with {args.jobs} job(s); sandbox: {sandbox.get('isolation', '?')} ("
          + ", ".join(k for k, v in sandbox.items() if v is True) + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
