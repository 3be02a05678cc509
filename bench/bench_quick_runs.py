"""A quick transfer run: wall time of the same short run evaluated on N programs versus more, side by side.

Summarizing every evaluation program before and after training dominates a short run; `eval_programs` takes a
stratified subset (neuro/experiments/subsets.py). Each size runs in this process on a fresh copy of the model,
in the order given, with the same steps and seed; the ratio is each run's time over the first's. Usage:

    python bench/bench_quick_runs.py                      # demo model and corpus, 5 steps, N = 10 and 20
    python bench/bench_quick_runs.py --programs 10 0      # 0: every evaluation program (slow on a CPU)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuro.code.corpus import load_corpus  # noqa: E402
from neuro.code.split import split_corpus  # noqa: E402
from neuro.experiments.transfer import plan_transfer, transfer  # noqa: E402
from neuro.model.loading import load_model  # noqa: E402
from neuro.paths import DEMO_MODEL_DIR  # noqa: E402
from neuro.training.context import NullContext  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEMO_MODEL_DIR))
    p.add_argument("--corpus", default=None, help="default: the demo corpus")
    p.add_argument("--source", default="python")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--programs", type=int, nargs="+", default=[10, 20], help="N per run (0: all)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    snippets = load_corpus(args.corpus)
    rows = []
    for n in args.programs:
        loaded = load_model(args.model, device="cpu")
        split = split_corpus(snippets)
        config = plan_transfer(loaded, split, args.source, "all", steps=args.steps, eval_programs=n)
        start = time.perf_counter()
        result = transfer(loaded, snippets, config, NullContext())
        seconds = time.perf_counter() - start
        rows.append({"eval_programs": n, "evaluated": result.eval_pairs, "of": result.eval_total,
                     "seconds": round(seconds, 1), "zero_shot_bleu4": result.zero_shot_bleu4})
    for row in rows:
        row["time_ratio"] = round(row["seconds"] / rows[0]["seconds"], 2)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for row in rows:
            print(f"N={row['eval_programs']}: evaluated {row['evaluated']} of {row['of']} programs in "
                  f"{row['seconds']} s (x{row['time_ratio']} of the first)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
