"""Does a neuron score predict what zeroing the neuron does? Score vs measured single-neuron ablation.

For each language: capture the statistics of its programs (one backward pass of each program's summed
loss), pick neurons of one layer (the top ones by PLS and as many random ones), zero each alone and
measure the change of the language's mean loss on the same programs, then report the Spearman rank
correlation of the measured change with the attribution score (-(1/T) sum_t a_t dL/da_t, signs kept) and
with PLS (mean |a_t dL/da_t|, which cannot tell helping from hurting neurons).

    python bench/bench_attribution.py [--json] [--model DIR] [--corpus FILE] [--languages python,go]
                                      [--layer 3] [--top 15] [--random 15] [--programs 40]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuro.code.corpus import load_corpus  # noqa: E402
from neuro.instrument.ablation import neuron_effects  # noqa: E402
from neuro.instrument.statistics import capture_statistics  # noqa: E402
from neuro.model.loading import load_model  # noqa: E402
from neuro.paths import DEMO_MODEL_DIR  # noqa: E402


def measure(loaded, programs, layer: int, top: int, random: int, seed: int = 0) -> dict:
    stats = capture_statistics(loaded, programs, gradients=True, units=False)
    pls, attribution = stats.pls()[0, layer], stats.attribution()[0, layer]
    chosen = list(np.argsort(-pls)[:top])
    rest = np.setdiff1d(np.arange(loaded.n_neurons), chosen)
    chosen += list(np.random.default_rng(seed).choice(rest, size=min(random, len(rest)), replace=False))
    effects = neuron_effects(loaded, programs, [(layer, int(n)) for n in chosen])
    measured = effects[programs[0].lang].to_numpy()
    return {"neurons": len(chosen), "programs": len(programs),
            "spearman_attribution": float(spearmanr(attribution[chosen], measured).statistic),
            "spearman_pls_abs": float(spearmanr(pls[chosen], measured).statistic),
            "measured_range": [float(measured.min()), float(measured.max())]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(DEMO_MODEL_DIR))
    parser.add_argument("--corpus", help="Snippet JSONL or folder (default: the embedded demo corpus)")
    parser.add_argument("--languages", help="comma-separated (default: every language of the corpus)")
    parser.add_argument("--layer", type=int, help="default: the layer below the middle")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--random", type=int, default=15)
    parser.add_argument("--programs", type=int, default=40, help="programs per language")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    start = time.time()
    loaded = load_model(args.model)
    corpus = load_corpus(args.corpus)
    languages = args.languages.split(",") if args.languages else list(dict.fromkeys(s.lang for s in corpus))
    layer = args.layer if args.layer is not None else max(0, loaded.n_layers // 2 - 1)
    per_language = {}
    for lang in languages:
        programs = [s for s in corpus if s.lang == lang][: args.programs]
        per_language[lang] = measure(loaded, programs, layer, args.top, args.random)
        print(f"{lang}: {per_language[lang]}", file=sys.stderr)
    mean = lambda key: float(np.mean([r[key] for r in per_language.values()]))  # noqa: E731
    result = {"model": loaded.identity, "layer": layer, "neurons": sum(r["neurons"] for r in per_language.values()),
              "spearman_attribution": mean("spearman_attribution"), "spearman_pls_abs": mean("spearman_pls_abs"),
              "per_language": per_language, "seconds": round(time.time() - start, 1)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"layer {layer}: Spearman with measured single-neuron ablation, mean over {len(languages)} languages: "
              f"attribution {result['spearman_attribution']:.3f}, PLS {result['spearman_pls_abs']:.3f}")
        for lang, r in per_language.items():
            print(f"  {lang:<12} attribution {r['spearman_attribution']:.3f}   PLS {r['spearman_pls_abs']:.3f}")


if __name__ == "__main__":
    main()
