"""attribution-check: first-order and path-integrated attribution beside measured zeroing, on strong neurons."""

from __future__ import annotations

from neuro.choices import QuadratureRule, choices
from neuro.cli import command, open_corpus, open_model, open_split, progress


def _options(p) -> None:
    p.add_argument("--neurons-per-kind", type=int, default=10,
                   help="the N largest by mean |activation| and the N largest by |attribution| on the selection "
                        "side, each the maximum over languages (default 10 each)")
    p.add_argument("--points", type=int, default=4,
                   help="K points of the path between the activation and zero (default 4; each costs one backward "
                        "pass per neuron)")
    p.add_argument("--rule", choices=choices(QuadratureRule), default="midpoint",
                   help="quadrature of the path: midpoint ((i + 1/2) / K) or Gauss-Legendre (default midpoint)")
    p.add_argument("--min-effect", type=float, default=1e-4,
                   help="measured changes smaller than this (nats) have no sign to agree with (default 1e-4)")


@command("attribution-check", "first-order vs path-integrated attribution vs measured single-neuron zeroing, on "
                              "strong neurons chosen on the selection side and measured on the evaluation side",
         _options)
def cmd_attribution_check(args) -> tuple[dict, str]:
    from neuro.instrument.path_attribution import attribution_check, quadrature, strong_neurons
    from neuro.instrument.tokens import truncation
    from neuro.results.statistics import STATS

    rule = quadrature(args.points, args.rule)  # a bad --points fails before the model loads
    loaded = open_model(args)
    split = open_split(args, open_corpus(args))
    stats = STATS.get(loaded, split.selection, max_length=args.max_length, cache=args.cache,
                      progress=progress("capture"))
    chosen = strong_neurons(stats, args.neurons_per_kind)
    check = attribution_check(loaded, split.evaluation, chosen, points=rule, max_length=args.max_length,
                              min_effect=args.min_effect, progress=progress("attribution check"))
    summary = {"model": loaded.identity, "split": split.summary(),
               "truncated_programs": truncation(loaded, split.evaluation, args.max_length).summary(),
               **check.summary()}
    lines = [f"{len(chosen)} neurons chosen on the selection side, measured on {split.caption()}",
             f"path: {rule.rule}, K = {len(rule.points)}; sign agreement over pairs with |measured| >= "
             f"{check.min_effect:g} nats"]
    for name, row in check.agreement().items():
        lines.append(f"  {name:<12} sign agreement {row['sign_agreement']:.3f} ({row['signed_pairs']} pairs)   "
                     f"Spearman {row['spearman']:.3f}   Pearson {row['pearson']:.3f}   "
                     f"mean |error| {row['mean_abs_error']:.2e}")
    bad = check.disagreements()
    lines.append(f"{len(bad)} (neuron, language) pairs where an estimate and the measurement differ in sign "
                 "or by more than 2x:")
    if len(bad):
        lines.append(bad.to_string(index=False, float_format=lambda v: f"{v:+.5f}"))
    return summary, "\n".join(lines)
