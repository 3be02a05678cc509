"""intervene: change chosen neurons (zero, mean, scale, set, patch) on your own code, token by token."""

from __future__ import annotations

from neuro.cli import command, open_corpus, open_model, open_split, progress, read_code_file
from neuro.cli.commands.neurons import _selection, _selection_options, _statistics
from neuro.instrument.intervention import OPS


def parse_neurons(text: str) -> list[tuple[int, int]]:
    """ "3:17,5:2" -> [(3, 17), (5, 2)], with a message that says the format on a bad item."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        layer, sep, neuron = item.partition(":")
        if not sep or not layer.strip().isdigit() or not neuron.strip().isdigit():
            raise ValueError(f"--neurons wants LAYER:NEURON pairs separated by commas (e.g. 3:17,5:2), got {item!r}")
        pairs.append((int(layer), int(neuron)))
    if not pairs:
        raise ValueError("--neurons is empty")
    return pairs


def parse_positions(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    start, sep, stop = text.partition(":")
    if not sep or not start.isdigit() or not stop.isdigit():
        raise ValueError(f"--positions wants START:STOP (half-open, token positions), got {text!r}")
    return int(start), int(stop)


def intervention_options(p, *, neurons: bool = True) -> None:
    """The options naming an intervention (shared by `intervene`)."""
    if neurons:
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("--neurons", help="LAYER:NEURON pairs, comma-separated (e.g. 3:17,5:2)")
        which.add_argument("--group", help="a language's selected neurons (e.g. python) or 'universal', chosen on the "
                                           "selection side of the split with the selection options")
    p.add_argument("--op", choices=OPS, default="zero")
    p.add_argument("--value", type=float, help="the factor of --op scale, the value of --op set")
    p.add_argument("--language", help="--op mean: whose programs (selection side) the means are taken over")
    p.add_argument("--source-file", help="--op patch: the program whose activations are substituted")
    p.add_argument("--positions", help="START:STOP token positions to change (default: all)")


def build_intervention(args, loaded, neurons, split=None):
    """The Intervention the options describe (means from the cache, over the split's selection side)."""
    from neuro.instrument.intervention import Intervention

    positions = parse_positions(args.positions)
    if args.op == "mean":
        from neuro.results.interventions import MEANS

        if not args.language:
            raise ValueError("--op mean needs --language (whose mean activation)")
        means = MEANS.get(loaded, split.selection, max_length=args.max_length, cache=args.cache,
                          progress=progress("mean activations"))
        return Intervention.mean(neurons, args.language, means, positions)
    if args.op in ("scale", "set") and args.value is None:
        raise ValueError(f"--op {args.op} needs --value")
    source = read_code_file(args.source_file, "--op patch: the program to take activations from") \
        if args.op == "patch" else None
    value = args.value if args.op in ("scale", "set") else None
    return Intervention(neurons, args.op, value, positions, source=source)


def _options(p) -> None:
    p.add_argument("--code-file", help="the program to run (UTF-8 text)")
    intervention_options(p)
    _selection_options(p)


@command("intervene", "next-token loss and top-1 prediction per token of your code before and after changing "
         "chosen neurons (zero / mean / scale / set / patch): two forward passes", _options)
def cmd_intervene(args) -> tuple[dict, str]:
    from neuro.analysis.token_effects import intervene_tokens

    code = read_code_file(args.code_file, "the program to intervene on")
    explicit = parse_neurons(args.neurons) if args.neurons else None
    loaded = open_model(args)
    split = open_split(args, open_corpus(args)) if args.group or args.op == "mean" else None
    selection = None
    if args.group:
        selection = _selection(args, _statistics(args, loaded, split))
        if args.group not in [*selection.languages, "universal"]:
            raise ValueError(f"--group must be one of {', '.join([*selection.languages, 'universal'])}")
        neurons = selection.neurons_for(args.group, as_pairs=True)
        if not neurons:
            raise ValueError(f"no neurons selected for {args.group} with these parameters")
    else:
        neurons = explicit
    intervention = build_intervention(args, loaded, neurons, split)
    effects = intervene_tokens(loaded, code, [intervention])
    summary = {"model": loaded.identity, "op": args.op, "neurons": [list(p) for p in intervention.neurons],
               "group": args.group, "value": intervention.value, "positions": intervention.positions,
               "language": intervention.language, **effects.summary()}
    if split is not None:
        summary["split"] = split.summary()
    return summary, effects.text()
