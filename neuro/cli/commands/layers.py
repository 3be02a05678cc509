"""layers: per-layer syntax-versus-semantics scores and the concept layers, on the selection side of the
corpus split (the concept layers are then evaluated on the other side, e.g. by `clones eval`); with
`--split-seeds`, the concept layers chosen on each of several splits and how stable they are."""

from __future__ import annotations

import sys

from neuro.cli import command, open_corpus, open_model, open_split, progress
from neuro.instrument.tokens import truncation


def _options(p) -> None:
    p.add_argument("--tokens-per-snippet", type=int, default=12, help="token states sampled per program "
                                                                      "for the syntax probe (default 12)")
    p.add_argument("--no-contribution", action="store_true", help="skip the FFN ablation per layer")
    p.add_argument("--concept", type=int, nargs="+", help="override the concept layers")
    p.add_argument("--split-seeds", type=int, nargs="+", metavar="SEED",
                   help="the concept layers chosen on the selection side of each of these splits (--eval-fraction "
                        "as given) and how often each layer is chosen. Each split not cached costs its own pass "
                        "over its selection side and its own probes (the contribution passes are skipped: they do "
                        "not enter the rule; nor does the syntax probe, which --tokens-per-snippet 0 skips)")


def _split_seeds(args, loaded, snippets) -> tuple[dict, str]:
    """One layer report per split (the recipe `layers` uses, keyed by the split's selection side), then
    `concept_stability` of their choices, with and without centring."""
    from neuro.analysis.embeddings import DEFAULT_CENTERING
    from neuro.analysis.layers import concept_stability
    from neuro.code.split import SplitParams, split_corpus
    from neuro.results.layers import LAYER_REPORT

    if args.concept:
        raise ValueError("--split-seeds measures the rule's choices: it cannot take --concept")
    seeds = list(dict.fromkeys(args.split_seeds))
    params = dict(tokens_per_snippet=args.tokens_per_snippet, max_length=args.max_length)
    rows = []
    for i, seed in enumerate(seeds):
        split = split_corpus(snippets, SplitParams(eval_fraction=args.eval_fraction, seed=seed))
        report = (LAYER_REPORT.get(loaded, split.selection, cache=args.cache, compute=False, **params)
                  or LAYER_REPORT.get(loaded, split.selection, cache=args.cache, compute=False, contribution=False,
                                      **params))
        cached = report is not None
        print(f"split seed {seed} ({i + 1} of {len(seeds)}): " + (
            "layer scores cached" if cached else
            f"computing layer scores on its {len(split.selection)} selection programs (one forward pass, then "
            f"{loaded.n_layers} layers of probes)"), file=sys.stderr, flush=True)
        if report is None:
            report = LAYER_REPORT.get(loaded, split.selection, cache=args.cache, contribution=False,
                                      progress=progress(f"layers, split seed {seed}"), **params)
        rows.append({"split": split.summary(), "seed": seed, "cached": cached,
                     "concept_layers": report.concept_layers,
                     "concept_layers_by_center": report.meta.get("concept_layers_by_center", {}),
                     "rule": report.rule})
    centred = {r["seed"]: r["concept_layers"] for r in rows}
    uncentred = {r["seed"]: r["concept_layers_by_center"].get("none", []) for r in rows}
    summary = {"model": loaded.identity, "eval_fraction": args.eval_fraction, "split_seeds": seeds,
               "center": DEFAULT_CENTERING, "per_split": rows,
               "stability": concept_stability(centred), "stability_uncentred": concept_stability(uncentred)}
    s, u = summary["stability"], summary["stability_uncentred"]
    lines = [f"concept layers on the selection side of {len(seeds)} splits ({args.eval_fraction:.0%} evaluated), "
             "alignment after per-language centring (as clone search) and, for comparison, uncentred"]
    lines += [f"  seed {r['seed']:>3}: {r['concept_layers']}  (uncentred: {uncentred[r['seed']]};  "
              f"{r['split']['selection_programs']} selection programs)" for r in rows]
    lines += ["", f"layer chosen in k of {len(seeds)} splits: "
              + ", ".join(f"{k}: {v}" for k, v in s["chosen_in"].items()),
              f"middle concept layer (clone search's) per split: {s['middle_layer']}",
              f"mean pairwise Jaccard of the choices: {s['mean_pairwise_jaccard']:.2f}",
              "uncentred: " + ", ".join(f"{k}: {v}" for k, v in u["chosen_in"].items())
              + f" (Jaccard {u['mean_pairwise_jaccard']:.2f})"]
    return summary, "\n".join(lines)


@command("layers", "per-layer language ID, cross-language alignment, syntax probe, contribution; concept layers "
                   "(--split-seeds: their stability across splits)", _options)
def cmd_layers(args) -> tuple[dict, str]:
    from neuro.results.layers import LAYER_REPORT

    loaded, snippets = open_model(args), open_corpus(args)
    if args.split_seeds:
        return _split_seeds(args, loaded, snippets)
    split = open_split(args, snippets)
    params = dict(tokens_per_snippet=args.tokens_per_snippet, contribution=not args.no_contribution,
                  max_length=args.max_length)
    if args.concept:
        params["concept_override"] = tuple(args.concept)
    report = LAYER_REPORT.get(loaded, split.selection, cache=args.cache, progress=progress("layers"), **params)
    summary = {"model": loaded.identity, "split": split.summary(), **report.summary(),
               "truncated_programs": truncation(loaded, split.selection, args.max_length).summary()}
    cols = [c for c in report.scores.columns if not c.startswith("syntax_acc_")]
    by_center = report.meta.get("concept_layers_by_center", {})
    text = (f"layer scores on the selection side: {split.caption()}\n"
            + report.scores[cols].round(3).to_string(index=False) + f"\n\nconcept layers: {report.concept_layers}\n"
            + report.rule
            + (f"\nconcept layers by the centring alignment is measured after: {by_center}" if by_center else "")
            + f"\nprobe folds: {report.meta.get('probe_folds', 'by token')}")
    return summary, text
