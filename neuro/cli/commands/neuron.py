"""neuron: everything about one neuron (any layer and index), as the Neuron page shows it."""

from __future__ import annotations

from neuro.cli import command, progress
from neuro.cli.commands.neurons import _selected, _selection_options


def _options(p) -> None:
    _selection_options(p)
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--neuron", type=int, required=True, help="index of the neuron in its layer")
    p.add_argument("-k", type=int, default=10, help="promoted and suppressed tokens of the logit effect (default 10)")
    p.add_argument("--contexts", type=int, default=5, help="top contexts, one program each (default 5)")
    p.add_argument("--no-histogram", action="store_true", help="skip the activation histogram (a pass over the "
                                                               "selection programs up to the neuron's layer)")
    p.add_argument("--ablate", action="store_true",
                   help="also zero the neuron alone on the evaluation programs (2 passes) and report the loss change")


@command("neuron", "one neuron: per-language scores and class, syntax profile, top contexts, activation "
                   "histogram, direct logit effect (and --ablate)", _options)
def cmd_neuron(args) -> tuple[dict, str]:
    from neuro.analysis.neuron_card import check_neuron, neuron_card

    loaded, split, stats, selection = _selected(args)
    check_neuron(loaded.n_layers, loaded.n_neurons, args.layer, args.neuron)
    card = neuron_card(loaded, stats, selection, split.selection, args.layer, args.neuron, k=args.k,
                       contexts=args.contexts, histogram=not args.no_histogram,
                       ablate_on=split.evaluation if args.ablate else None, max_length=args.max_length,
                       progress=progress("histogram"))
    s = card.scores
    lines = [f"L{s.layer} N{s.neuron}: {s.cls}{' (' + s.langs + ')' if s.langs else ''}, rank {s.rank:,} of "
             f"{s.total:,} by max {s.shown_label}", s.table.round(4).to_string(index=False), "",
             "direct logit effect (" + card.logits.through + ")",
             "  promoted:   " + ", ".join(f"{t.token!r} {t.logit:+.3f}" for t in card.logits.promoted),
             "  suppressed: " + ", ".join(f"{t.token!r} {t.logit:+.3f}" for t in card.logits.suppressed)]
    for c in card.contexts:
        peak = c.text[slice(*c.offsets[c.peak])]
        lines.append(f"context #{c.rank} {c.snippet_id} ({c.lang}): {peak!r} {c.recorded:+.3f}")
    if card.histogram:
        lines.append(f"histogram: {len(card.histogram.edges) - 1} bins over [{card.histogram.edges[0]:.3g}, "
                     f"{card.histogram.edges[-1]:.3g}], tokens {card.histogram.tokens}")
    if card.ablation:
        table = card.ablation.table.round(4).to_string(index=False)
        lines.append(f"zeroed alone, on the evaluation programs:\n{table}")
    return {"model": loaded.identity, **card.summary()}, "\n".join(lines)
