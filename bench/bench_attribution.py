"""Does a neuron score predict what zeroing the neuron does? Scores vs measured single-neuron ablation, with
the neurons scored on the selection side and zeroed on the evaluation side of the split (neuro.code.split).

Per language: capture the statistics of its selection-side programs (one backward pass of each program's
summed loss), pick neurons of one layer (the top ones by PLS and as many random ones), then on the
evaluation-side programs zero each alone and measure the change of the language's mean loss, beside two
estimates computed on those same evaluation programs: the first-order attribution (-(1/T) sum_t a_t dL/da_t
at the activation) and the path-integrated one (the gradient averaged over K points between the activation
and zero, neuro.instrument.path_attribution). Reports, side by side, the Spearman rank correlation of the
measured change with: the selection-side attribution and PLS (what a selection rule sees), the
evaluation-side first-order and path-integrated estimates; and each estimate's sign agreement.

    python bench/bench_attribution.py [--json] [--model DIR] [--corpus FILE] [--languages python,go]
                                      [--layer 3] [--top 8] [--random 8] [--points 4] [--rule midpoint]
                                      [--programs 40] [--max-length 512]
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
from neuro.code.split import split_corpus  # noqa: E402
from neuro.instrument.ablation import neuron_effects  # noqa: E402
from neuro.instrument.path_attribution import FIRST_ORDER, path_attribution, quadrature  # noqa: E402
from neuro.instrument.statistics import capture_statistics  # noqa: E402
from neuro.model.loading import load_model  # noqa: E402
from neuro.paths import DEMO_MODEL_DIR  # noqa: E402

MIN_EFFECT = 1e-4  # nats: measured changes below this have no sign to agree with


def choose(loaded, selection, layer: int, top: int, random: int, seed: int = 0) -> dict[str, dict]:
    """Per language: neurons of `layer` (top by PLS, then random) and their selection-side scores."""
    stats = capture_statistics(loaded, selection, gradients=True, units=False)
    out = {}
    for li, lang in enumerate(stats.languages):
        pls, attribution = stats.pls()[li, layer], stats.attribution()[li, layer]
        chosen = [int(n) for n in np.argsort(-pls)[:top]]
        rest = np.setdiff1d(np.arange(loaded.n_neurons), chosen)
        chosen += [int(n) for n in np.random.default_rng(seed).choice(rest, size=min(random, len(rest)),
                                                                       replace=False)]
        out[lang] = {"neurons": chosen, "pls": pls[chosen], "attribution": attribution[chosen]}
    return out


def rank(a, b) -> float:
    return float(spearmanr(a, b).statistic) if np.ptp(a) > 0 and np.ptp(b) > 0 else float("nan")


def sign_agreement(estimate: np.ndarray, measured: np.ndarray) -> float:
    keep = np.abs(measured) >= MIN_EFFECT
    return float((np.sign(estimate[keep]) == np.sign(measured[keep])).mean()) if keep.any() else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(DEMO_MODEL_DIR))
    parser.add_argument("--corpus", help="Snippet JSONL or folder (default: the embedded demo corpus)")
    parser.add_argument("--languages", help="comma-separated (default: every language of the corpus)")
    parser.add_argument("--layer", type=int, help="default: the layer below the middle")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--random", type=int, default=8)
    parser.add_argument("--points", type=int, default=4, help="K points of the path-integrated estimate")
    parser.add_argument("--rule", choices=["midpoint", "gauss"], default="midpoint")
    parser.add_argument("--programs", type=int, default=40, help="programs per language on each side (at most)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    start = time.time()
    loaded = load_model(args.model)
    corpus = load_corpus(args.corpus)
    languages = args.languages.split(",") if args.languages else list(dict.fromkeys(s.lang for s in corpus))
    split = split_corpus([s for s in corpus if s.lang in languages])
    side = lambda programs: [s for lang in languages for s in [p for p in programs if p.lang == lang][: args.programs]]  # noqa: E731
    selection, evaluation = side(split.selection), side(split.evaluation)
    layer = args.layer if args.layer is not None else max(0, loaded.n_layers // 2 - 1)
    chosen = choose(loaded, selection, layer, args.top, args.random)
    pairs = sorted({(layer, n) for c in chosen.values() for n in c["neurons"]})
    rule = quadrature(args.points, args.rule)
    timings = {}
    t = time.time()
    first = path_attribution(loaded, evaluation, pairs, points=FIRST_ORDER, max_length=args.max_length)
    timings["first_order_s"] = time.time() - t
    t = time.time()
    path = path_attribution(loaded, evaluation, pairs, points=rule, max_length=args.max_length)
    timings["path_s"] = time.time() - t
    t = time.time()
    measured = neuron_effects(loaded, evaluation, pairs, max_length=args.max_length)
    timings["zeroing_s"] = time.time() - t
    at = lambda frame, lang, neurons: frame.set_index("neuron").loc[neurons, lang].to_numpy()  # noqa: E731
    per_language = {}
    for lang, c in chosen.items():
        if lang not in measured.columns:
            continue
        truth = at(measured, lang, c["neurons"])
        fo, pa = at(first, lang, c["neurons"]), at(path, lang, c["neurons"])
        per_language[lang] = {
            "neurons": len(c["neurons"]), "selection_programs": sum(s.lang == lang for s in selection),
            "evaluation_programs": sum(s.lang == lang for s in evaluation),
            "spearman_selection_attribution": rank(c["attribution"], truth),
            "spearman_selection_pls_abs": rank(c["pls"], truth),
            "spearman_first_order": rank(fo, truth), "spearman_path": rank(pa, truth),
            "sign_first_order": sign_agreement(fo, truth), "sign_path": sign_agreement(pa, truth),
            "mean_abs_error_first_order": float(np.abs(fo - truth).mean()),
            "mean_abs_error_path": float(np.abs(pa - truth).mean()),
            "measured_range": [float(truth.min()), float(truth.max())]}
        print(f"{lang}: {per_language[lang]}", file=sys.stderr)
    keys = [k for k in next(iter(per_language.values())) if k.startswith(("spearman", "sign", "mean_abs"))]
    mean = {k: float(np.nanmean([r[k] for r in per_language.values()])) for k in keys}
    result = {"model": loaded.identity, "layer": layer, "quadrature": rule.summary(), "neurons": len(pairs),
              "mean_over_languages": mean, "per_language": per_language,
              "timings": {k: round(v, 1) for k, v in timings.items()}, "seconds": round(time.time() - start, 1)}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"layer {layer}, {len(pairs)} neurons scored on the selection side, zeroed on the evaluation side; "
          f"path: {rule.rule} K={len(rule.points)}")
    print(f"{'':<12} {'Spearman with measured zeroing':^50}  {'sign agreement':^18}")
    print(f"{'':<12} {'sel. attr':>12}{'sel. PLS':>12}{'eval 1st':>12}{'eval path':>12}  {'1st':>8}{'path':>10}")
    for lang, r in [*per_language.items(), ("mean", mean)]:
        print(f"{lang:<12} {r['spearman_selection_attribution']:>12.3f}{r['spearman_selection_pls_abs']:>12.3f}"
              f"{r['spearman_first_order']:>12.3f}{r['spearman_path']:>12.3f}  {r['sign_first_order']:>8.3f}"
              f"{r['sign_path']:>10.3f}")
    print(f"seconds: first order {timings['first_order_s']:.1f} (one pass), path {timings['path_s']:.1f} "
          f"({len(rule.points)} x {len(pairs)} passes), zeroing {timings['zeroing_s']:.1f} ({len(pairs)} + 1 passes)")


if __name__ == "__main__":
    main()
