"""Paper scale: does peak host memory grow with the corpus? (issue 21)

`growth`: peak RSS of `python -m neuro layers` and of `python -m neuro clones eval` (each a subprocess on a
fresh cache, measured with getrusage(RUSAGE_CHILDREN) in a wrapper process of its own) on the demo model,
with the demo corpus (or its first --limit programs) and with that corpus grown `--factor` times (each
program repeated with a small edit that keeps its task and language: a comment naming the copy), side by
side. The goal: growth under 10 %
(corpus-sized arrays live on disk one layer at a time; RAM holds one layer's matrix and a fixed reservoir of
sampled tokens).

    python bench/bench_scale.py growth [--limit N] [--factor 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuro.code.corpus import Snippet, load_corpus, save_jsonl  # noqa: E402
from neuro.paths import DEMO_MODEL_DIR  # noqa: E402

COMMENT = {"python": "#"}  # every other language of the demo corpus comments with //

WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")


def grown(snippets: list[Snippet], factor: int) -> list[Snippet]:
    """The corpus `factor` times: copy k > 0 of each program ends with a comment naming it (distinct text,
    same task, same language)."""
    out = list(snippets)
    for k in range(1, factor):
        for s in snippets:
            mark = COMMENT.get(s.lang, "//")
            out.append(Snippet(f"{s.id}~{k}", s.lang, s.task, f"{s.code.rstrip()}\n{mark} copy {k}\n", s.prompt))
    return out


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of `python -m neuro ARGS`, alone in a wrapper process."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "neuro", *args],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    kb, rc = out.stdout.split()
    if rc != "0":
        raise RuntimeError(f"python -m neuro {' '.join(args)} failed ({rc}): {out.stderr[-2000:]}")
    return int(kb) / 1024, time.perf_counter() - start


def growth(limit: int = 0, factor: int = 4, model: str = str(DEMO_MODEL_DIR), contribution: bool = True) -> dict:
    """Peak RSS of `layers` and `clones eval` on the corpus and on it grown `factor` times (`contribution`:
    with the layers' FFN ablation passes, on at most 200 programs whatever the corpus size).

    Measure from a corpus whose batches are already full (100 programs or more on the demo model): below
    that, a larger corpus fills the fixed-size batches more and their activations grow with it, up to the cap."""
    base = load_corpus(None)
    if limit:
        base = base[:limit]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="neuro-bench-scale-") as work:
        for name, corpus in (("1x", base), (f"{factor}x", grown(base, factor))):
            corpus_file, cache = Path(work) / f"{name}.jsonl", Path(work) / f"cache-{name}"
            save_jsonl(corpus, corpus_file)
            common = ["--model", model, "--corpus", str(corpus_file), "--cache", str(cache)]
            layers_mb, layers_s = peak_rss_mb(["layers", *common, *([] if contribution else ["--no-contribution"])])
            clones_mb, clones_s = peak_rss_mb(["clones", "eval", *common])
            rows[name] = {"programs": len(corpus), "layers_peak_mb": round(layers_mb, 1),
                          "layers_seconds": round(layers_s, 1), "clones_eval_peak_mb": round(clones_mb, 1),
                          "clones_eval_seconds": round(clones_s, 1)}
    small, large = rows["1x"], rows[f"{factor}x"]
    return {"model": model, "factor": factor, "limit": limit or None, "contribution": contribution, "runs": rows,
            "layers_growth": round(large["layers_peak_mb"] / small["layers_peak_mb"] - 1, 4),
            "clones_eval_growth": round(large["clones_eval_peak_mb"] / small["clones_eval_peak_mb"] - 1, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document")
    parts = p.add_subparsers(dest="part", required=True)
    g = parts.add_parser("growth", parents=[common], help="peak RSS of `layers` and `clones eval` as the corpus grows")
    g.add_argument("--limit", type=int, default=0, help="the first N programs of the demo corpus (default: all)")
    g.add_argument("--factor", type=int, default=4, help="how many times the corpus grows (default 4)")
    g.add_argument("--model", default=str(DEMO_MODEL_DIR))
    g.add_argument("--no-contribution", action="store_true", help="`layers` without its FFN ablation passes")
    args = p.parse_args()
    result = growth(args.limit, args.factor, args.model, contribution=not args.no_contribution)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for name, row in result["runs"].items():
        print(f"{name:>4} {row['programs']:>6} programs  layers {row['layers_peak_mb']:8.1f} MB "
              f"({row['layers_seconds']:.0f} s)   clones eval {row['clones_eval_peak_mb']:8.1f} MB "
              f"({row['clones_eval_seconds']:.0f} s)")
    print(f"peak RSS growth at {args.factor}x the corpus: layers {100 * result['layers_growth']:+.1f} %, "
          f"clones eval {100 * result['clones_eval_growth']:+.1f} %  (goal: under 10 %)")


if __name__ == "__main__":
    main()
