"""neurons, ablate, ablate-gen: the Neurons analyses from the command line."""

from __future__ import annotations

import dataclasses
from typing import Any

from neuro.choices import Normalization, Score, SelectionMethod, choices
from neuro.cli import command, open_corpus, open_model, open_split, progress
from neuro.cli.params import add_params
from neuro.instrument.tokens import truncation


def _selection_options(p) -> None:
    from neuro.analysis.selectivity import SelectionParams

    p.add_argument("--method", choices=choices(SelectionMethod), default="pls")
    # --top-fraction serves LAPE too (its top_fraction has the same default and range)
    add_params(p, SelectionParams, ["candidate_quantile", "ratio", "top_fraction"])
    p.add_argument("--normalize", choices=choices(Normalization), default="language_layer",
                   help="divide PLS by its mean per language and layer (default), per language, or not (raw)")
    p.add_argument("--score", choices=choices(Score), default="pls",
                   help="pls: token mean of |a * dL/da| (the paper); attribution: -(1/T) sum_t a * dL/da, the "
                        "first-order estimate of the change in a program's mean loss when a neuron is zeroed")


def _seed_option(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of the random controls (and of sampling)")


def _generation_options(p) -> None:
    _selection_options(p)
    _seed_option(p)
    p.add_argument("--target", required=True, help="language whose specific neurons are ablated")
    p.add_argument("--samples", type=int, default=1, help="samples per problem (n of pass@k)")
    p.add_argument("--k", type=int, nargs="+", default=[1], help="k values of pass@k")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-new-tokens", type=int, default=256)


def _statistics(args, loaded, split):
    """Statistics of the split's selection side: neurons are chosen there and measured elsewhere."""
    from neuro.results.statistics import STATS

    return STATS.get(loaded, split.selection, max_length=args.max_length, cache=args.cache,
                     progress=progress("capture"))


def _selected(args):
    """(model, split, statistics of the selection side, the neurons selected on them), as the options say."""
    loaded = open_model(args)
    split = open_split(args, open_corpus(args))
    stats = _statistics(args, loaded, split)
    return loaded, split, stats, _selection(args, stats)


def _selection(args, stats):
    from neuro.analysis.selectivity import LapeParams, SelectionParams, select_neurons

    if args.method == "lape":
        params = LapeParams(top_fraction=args.top_fraction)
    else:
        params = SelectionParams(candidate_quantile=args.candidate_quantile, ratio=args.ratio,
                                 top_fraction=args.top_fraction, normalize=args.normalize, score=args.score)
    return select_neurons(stats, args.method, params)


def _neurons_options(p) -> None:
    from neuro.analysis.selectivity import PERMUTATIONS
    from neuro.analysis.universality import HALVINGS

    _selection_options(p)
    p.add_argument("--permutations", type=int, default=PERMUTATIONS,
                   help=f"language-label permutations for the p-value of each language's count (default "
                        f"{PERMUTATIONS}, within tasks on a parallel corpus; 0: none)")
    p.add_argument("--halvings", type=int, default=HALVINGS,
                   help=f"random split-halves for the stability of the universal neurons and of their "
                        f"importance-matched control (default {HALVINGS}; 0: none)")
    p.add_argument("--sensitivity", action="store_true",
                   help="add how the counts move with the normalisation and each threshold")
    p.add_argument("--split-seeds", type=int, nargs="+", metavar="SEED",
                   help="instead: select on the selection side of each of these splits and report how stable the "
                        "counts and the selected sets are across them (one statistics capture per new split)")
    p.add_argument("--out", help="export the selected neurons to a .csv or .parquet file")


def _split_seed_stability(args) -> tuple[dict, str]:
    """The same selection on the selection side of several seeded splits: counts per split, and the Jaccard of
    each language's (and the universal) set between every two splits, so a reader sees how much of a count is
    the split's doing."""
    import itertools

    import numpy as np

    from neuro.code.split import SplitParams, split_corpus
    from neuro.results.statistics import STATS

    loaded, corpus = open_model(args), open_corpus(args)
    seeds = list(dict.fromkeys(args.split_seeds))
    if len(seeds) < 2:
        raise ValueError("--split-seeds needs at least two seeds to compare")
    selections = {}
    for i, seed in enumerate(seeds):
        split = split_corpus(corpus, SplitParams(eval_fraction=args.eval_fraction, seed=seed))
        stats = STATS.get(loaded, split.selection, max_length=args.max_length, cache=args.cache,
                          progress=progress(f"split seed {seed} ({i + 1} of {len(seeds)}): capture"))
        selections[seed] = _selection(args, stats)
    keys = [*selections[seeds[0]].languages, "universal"]
    counts = {seed: sel.counts_by_language() for seed, sel in selections.items()}
    members = {seed: {k: set(map(tuple, sel.neurons_for(k, as_pairs=True))) for k in keys}
               for seed, sel in selections.items()}
    jaccard: dict[str, list[float]] = {k: [] for k in keys}
    for a, b in itertools.combinations(seeds, 2):
        for k in keys:
            union = members[a][k] | members[b][k]
            jaccard[k].append(len(members[a][k] & members[b][k]) / len(union) if union else float("nan"))
    stability: dict[str, dict[str, Any]] = {
        k: {"counts": [counts[s][k] for s in seeds], "jaccard_mean": float(np.nanmean(v))
            if not np.all(np.isnan(v)) else float("nan"), "jaccard_pairs": v}
        for k, v in jaccard.items()}
    summary = {"model": loaded.identity, "method": args.method, "split_seeds": seeds,
               "eval_fraction": args.eval_fraction, "stability": stability}
    lines = [f"{args.method} selection on the selection side of splits {seeds} (eval fraction {args.eval_fraction})",
             f"  {'':<12}{'counts':<24}mean Jaccard between splits"]
    for k, row in stability.items():
        lines.append(f"  {k:<12}{' / '.join(map(str, row['counts'])):<24}{row['jaccard_mean']:.2f}")
    return summary, "\n".join(lines)


def _p_text(p: float) -> str:
    return "nan" if p != p else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


@command("neurons", "language-specific and universal neurons (PLS or LAPE): counts per language with "
                    "permutation p-values, universal-neuron stability and matched control, per layer", _neurons_options)
def cmd_neurons(args) -> tuple[dict, str]:
    from neuro.analysis.selectivity import overlap, select_neurons
    from neuro.analysis.sensitivity import sensitivity
    from neuro.results.statistics import CHANCE, UNIVERSALITY

    if args.split_seeds:
        return _split_seed_stability(args)
    loaded, split, stats, selection = _selected(args)
    other = select_neurons(stats, "lape" if args.method == "pls" else "pls")
    by_layer = selection.counts_by_layer()
    # both come from the per-program scores, captured once more (into the cache) where the statistics were
    # shipped without them; kept in the cache, where the Neurons page and the findings read them
    common = dict(method=args.method, params=selection.params, stats_args=dict(max_length=args.max_length),
                  cache=args.cache, progress=progress("capture (per-program scores)"))
    chance = CHANCE.get(loaded, split.selection, permutations=args.permutations, **common) \
        if args.permutations > 0 else None
    universal = UNIVERSALITY.get(loaded, split.selection, halvings=args.halvings, **common) \
        if args.halvings > 0 else None
    summary = selection.summary() | {
        "model": loaded.identity, "snippets": len(split.selection), "split": split.summary(),
        "chance": chance.summary() if chance else None,
        "universality": universal.summary() if universal else None,
        "truncated_programs": truncation(loaded, split.selection, args.max_length).summary(),
        "by_layer": {str(layer): row.to_dict() for layer, row in by_layer.iterrows()},
        "overlap_with_" + other.method: overlap(selection, other).reset_index().to_dict(orient="records"),
    }
    table = sensitivity(stats, selection.params) if args.sensitivity and args.method == "pls" else None
    if table is not None:
        summary["sensitivity"] = table.to_dict(orient="records")
    if args.out:
        chosen = selection.selected()
        if str(args.out).endswith(".parquet"):
            chosen.to_parquet(args.out, index=False)
        else:
            chosen.to_csv(args.out, index=False)
        summary["exported"] = str(args.out)
    lines = [f"method {selection.method}, candidate threshold {selection.threshold:.4g}, "
             f"{selection.total:,} neurons, selected on {split.caption()}"]
    counts = selection.counts_by_language()
    p, p_holm = (chance.p_values(), chance.p_holm()) if chance else ({}, {})
    for k, v in counts.items():
        line = f"  {k:<12}{v:>7}  ({100 * v / selection.total:.2f} %)"
        if chance and k in p:
            line += (f"   p {_p_text(p[k])}, Holm p {_p_text(p_holm[k])}   (shuffled: mean {chance.mean()[k]:.1f}, "
                     f"max {chance.max()[k]})")
        lines.append(line)
    if chance:
        lines.append(f"p: (1 + permutations selecting at least as many) / (1 + {chance.permutations}), labels permuted "
                     f"{chance.permutation}; Holm over {len(p)} languages")
    if universal:
        lines.append("universal: " + universal.text())
        lines.append("  count by top fraction: " + ", ".join(f"{r['top_fraction']:g}: {r['universal']} (cap {r['cap']})"
                                                             for r in universal.by_fraction))
    lines.append("per layer:\n" + by_layer.to_string())
    if table is not None:
        lines.append("sensitivity (one parameter varied at a time):\n"
                     + table.drop(columns="is_base").to_string(index=False))
    return summary, "\n".join(lines)


def _ablate_options(p) -> None:
    _selection_options(p)
    _seed_option(p)
    p.add_argument("--draws", type=int, default=100,
                   help="controls matched on importance per group (same layer and score decile; default 100: "
                        "p down to 1/101; each draw is one pass over the evaluation programs)")
    p.add_argument("--uniform-draws", type=int, default=20,
                   help="uniform controls per group (same layer only; default 20)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the intervals (default 2000)")


@command("ablate", "loss change per language when each language's neurons are zeroed, with task-bootstrap "
         "intervals, beside controls matched on importance and uniform ones (Monte Carlo p-values, Holm)",
         _ablate_options)
def cmd_ablate(args) -> tuple[dict, str]:
    from neuro.analysis.ablation_effects import ablation_effects
    from neuro.results.statistics import ABLATION

    loaded, split, stats, selection = _selected(args)
    result, hit = ABLATION.fetch(loaded, split.evaluation, selection=selection, draws=args.draws,
                                 uniform_draws=args.uniform_draws, seed=args.seed, max_length=args.max_length,
                                 cache=args.cache, progress=progress("ablation (one pass per ablated set)"))
    effects = ablation_effects(result, n_resamples=args.resamples, seed=args.seed)
    summary = {"model": loaded.identity, "method": selection.method, "score": getattr(selection.params, "score", None),
               "split": split.summary(), "cache_hit": hit, "base_loss": result.base,
               "draws": {"matched": result.draws("matched"), "uniform": result.draws("uniform")},
               "passes": 1 + len(result.conditions),
               "truncated_programs": truncation(loaded, [*split.selection, *split.evaluation],  # stats + ablation
                                                args.max_length).summary(),
               "delta": result.delta.to_dict(orient="index"),
               "delta_matched_mean": result.delta_control("matched").to_dict(orient="index"),
               "delta_uniform_mean": result.delta_control("uniform").to_dict(orient="index"),
               **effects.summary()}
    text = (f"selected on / evaluated on: {split.caption()}\n"
            "loss change (rows: ablated group, columns: evaluated language)\n" + result.delta.round(4).to_string()
            + "\n\n" + effects.text())
    return summary, text


@command("ablate-gen", "pass@k of generated code with and without a language's neurons (needs a capable model)",
         _generation_options)
def cmd_ablate_gen(args) -> tuple[dict, str]:
    import numpy as np

    from neuro.analysis.generation import GenerationParams, evaluate_pass_at_k
    from neuro.code.sandbox import sandbox_features, sandbox_warning
    from neuro.instrument.ablation import matched_like, selection_scores
    from neuro.instrument.intervention import Intervention, neuron_pairs

    loaded, split, stats, selection = _selected(args)
    neurons = selection.neurons_for(args.target)
    if not neurons:
        raise ValueError(f"no neurons are specific to {args.target} with these parameters")
    params = GenerationParams(samples=args.samples, temperature=args.temperature,
                              max_new_tokens=args.max_new_tokens, seed=args.seed)
    ks = sorted({1, *args.k})
    # the control: as many neurons per layer, from the same decile of the score that selected them
    matched = matched_like(neurons, selection_scores(selection)[args.target], np.random.default_rng(args.seed),
                           exclude=neurons)
    conditions = {"none": [], args.target: [Intervention(neuron_pairs(neurons), "zero")],
                  "matched": [Intervention(neuron_pairs(matched), "zero")]}
    results = {}
    for name, interventions in conditions.items():
        results[name] = evaluate_pass_at_k(loaded, split.evaluation, params, ks=ks, interventions=interventions,
                                           progress=progress(f"generate [{name} ablated]"))
    summary = {"model": loaded.identity, "target": args.target, "split": split.summary(), "sandbox": sandbox_features(),
               "neurons": sum(len(v) for v in neurons.values()), "control": "matched (same layer, same score decile)",
               "truncated_programs": truncation(loaded, split.selection, args.max_length).summary(),
               "params": dataclasses.asdict(params),
               "pass_at_k": {name: r.by_language for name, r in results.items()}}
    lines = [f"pass@k with nothing / {args.target} neurons / matched random neurons (same layer and score decile) "
             "zeroed"]
    if warning := sandbox_warning():
        lines.append("warning: " + warning)
    for name, r in results.items():
        lines.append(f"[{name}] " + ", ".join(f"{lang}: " + " ".join(f"@{k}={v:.3f}" for k, v in by_k.items())
                                            for lang, by_k in r.by_language.items()))
    return summary, "\n".join(lines)
