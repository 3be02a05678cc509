"""Layer scores on a corpus (default: HumanEval-X, 820 programs) and the speed-up of early exit.

Prints the wall time of every per-layer score on this machine, and, side by side in one run, the time
to embed the corpus at a middle layer with early exit versus with a full forward pass.

    python bench/bench_layers.py [--model DIR] [--corpus ../shared/data/humaneval-x] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuro.analysis.layers import layer_report  # noqa: E402
from neuro.code.corpus import load_corpus  # noqa: E402
from neuro.instrument.states import pooled_states  # noqa: E402
from neuro.model.loading import load_model  # noqa: E402
from neuro.paths import DEMO_MODEL_DIR  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEMO_MODEL_DIR))
    p.add_argument("--corpus", default=str(ROOT.parent / "shared" / "data" / "humaneval-x"))
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if not Path(args.corpus).exists():
        sys.exit(f"corpus {args.corpus} not found (HumanEval-X lives in ../shared/data/humaneval-x)")
    loaded = load_model(args.model)
    snippets = load_corpus(args.corpus)
    if args.limit:
        snippets = snippets[: args.limit]
    middle = loaded.n_layers // 2 - 1

    start = time.perf_counter()
    report = layer_report(loaded, snippets, contribution=True)
    report_s = time.perf_counter() - start

    full, early = [], []
    for _ in range(args.reps):  # interleaved
        t = time.perf_counter()
        pooled_states(loaded, snippets)
        full.append(time.perf_counter() - t)
        t = time.perf_counter()
        pooled_states(loaded, snippets, upto_layer=middle)
        early.append(time.perf_counter() - t)
    result = {
        "model": loaded.source, "programs": len(snippets), "layers": loaded.n_layers,
        "layer_report_s": round(report_s, 1), "concept_layers": report.concept_layers,
        "embed_full_s": round(min(full), 2), f"embed_upto_layer_{middle}_s": round(min(early), 2),
        "early_exit_speedup": round(min(full) / min(early), 2),
        "scores": report.scores.round(4).to_dict(orient="records"),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    cols = [c for c in report.scores.columns if not c.startswith("syntax_acc_")]
    print(report.scores[cols].round(3).to_string(index=False))
    print(f"concept layers: {report.concept_layers}\n{report.rule}")
    print(f"{len(snippets)} programs: all layer scores in {report_s:.1f} s; embedding with a full pass "
          f"{min(full):.2f} s, stopping after layer {middle} {min(early):.2f} s "
          f"(x{result['early_exit_speedup']} faster)")


if __name__ == "__main__":
    main()
