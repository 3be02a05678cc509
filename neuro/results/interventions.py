"""Cached results of the intervention tools: per-language mean activations (what the "mean" operation sets a
neuron to) and the steering sweep (neuro.analysis.steering)."""

from __future__ import annotations

import numpy as np

from neuro.instrument.means import LanguageMeans, language_means
from neuro.results.recipe import Call, Recipe, picked
from neuro.results.store import Entry


def _means(call: Call) -> Entry:
    result = language_means(call.loaded, call.snippets, max_length=call.args["max_length"], progress=call.progress)
    return Entry(arrays={"means": result.means, "tokens": result.tokens}, meta={"languages": result.languages})


MEANS: Recipe[LanguageMeans] = Recipe(
    kind="neuron_means", version=1, compute=_means, key_parts=picked("max_length"), defaults=dict(max_length=512),
    read=lambda entry: LanguageMeans(list(entry.meta["languages"]), np.asarray(entry.arrays["means"]),
                                     np.asarray(entry.arrays["tokens"])))
"""Each neuron's mean activation over each language's programs (real tokens), one forward pass: the values the
"mean" intervention uses; computed on the selection side of the split (the programs neurons are chosen on)."""


# --------------------------------------------------------------------------- steering sweep
def _steering_groups(loaded, snippets, args: dict):
    """The target's (and source's) selected neurons and the scores they were chosen by, from `selection`."""
    from neuro.instrument.ablation import as_layer_map, selection_scores

    selection, spec = args["selection"], args["spec"]
    for lang in (spec.source, spec.target):
        if lang not in selection.languages:
            raise ValueError(f"{lang!r} is not one of the selection's languages ({', '.join(selection.languages)})")
    target = as_layer_map(selection.neurons_for(spec.target))
    if not target:
        raise ValueError(f"no neurons are specific to {spec.target} with these selection parameters")
    source = as_layer_map(selection.neurons_for(spec.source)) if spec.source_factor != 1.0 else None
    scores = selection_scores(selection)
    return snippets, dict(args, target=target, source=source, scores={k: scores[k] for k in (spec.source, spec.target)})


def _steering_key(args: dict) -> dict:
    import dataclasses
    import hashlib

    from neuro.instrument.ablation import score_deciles

    deciles = hashlib.sha256()
    for name in sorted(args["scores"]):
        for row in args["scores"][name]:
            deciles.update(score_deciles(row).astype(np.int8).tobytes())
    indices = {name: {str(layer): [int(n) for n in idx] for layer, idx in (args[name] or {}).items()}
               for name in ("target", "source")}
    return dict(selection=args["selection"].summary(), spec=dataclasses.asdict(args["spec"]),
                params=dataclasses.asdict(args["params"]), max_length=args["max_length"], neurons=indices,
                deciles=deciles.hexdigest()[:16])


def _steer(call: Call) -> Entry:
    """One resumable step per (condition, factor): a killed sweep resumes from its last finished step."""
    from neuro.analysis.steering import assemble, plan_steering, sweep_steps
    from neuro.results.store import make_key

    a = call.args
    conditions = plan_steering(a["target"], a["scores"], a["spec"], a["source"])
    chosen, held_out, labels, step = sweep_steps(call.loaded, call.snippets, a["spec"], conditions,
                                                 params=a["params"], max_length=a["max_length"])
    total = 1 + len(labels)

    def report(index: int) -> None:
        if call.progress:
            call.progress(index + 1, total)

    def compute(index: int) -> Entry:
        generations, losses = step(index)
        report(index)
        return Entry(arrays={"losses": np.asarray(losses, dtype=np.float64)},
                     tables={} if generations is None else {"generations": generations})

    keys = [make_key("steering_step", result=call.key, index=i, label=list(label) if i else "base")
            for i, label in enumerate([None, *labels])]
    entries = call.steps(keys, compute, loaded=report)
    result = assemble(a["spec"], chosen, held_out, labels,
                      [(e.tables.get("generations"), e.arrays["losses"]) for e in entries], conditions)
    return Entry(arrays={"base": result.base_losses},
                 tables={"prompts": result.prompts, "programs": result.programs, "generations": result.generations,
                         "losses": result.losses},
                 meta={"spec": dataclasses_asdict(result.spec), "neurons": result.neurons})


def dataclasses_asdict(spec) -> dict:
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()}


def _read_steering(entry: Entry):
    from neuro.analysis.steering import SteeringResult, SteerSpec

    spec = SteerSpec(**entry.meta["spec"])
    return SteeringResult(spec, entry.tables["prompts"], entry.tables["programs"], entry.tables["generations"],
                          entry.tables["losses"], np.asarray(entry.arrays["base"]), dict(entry.meta["neurons"]))


def _steering_defaults() -> dict:
    from neuro.analysis.steering import STEER_PARAMS

    return dict(params=STEER_PARAMS, max_length=512)


STEERING: Recipe = Recipe(
    kind="steering", version=1, compute=_steer, read=_read_steering, key_parts=_steering_key,
    prepare=_steering_groups, defaults=_steering_defaults())
"""The steering dose-response sweep (neuro.analysis.steering.steering_sweep) of a `selection`'s `spec.target`
neurons on the source's prompts and programs of the snippets given, the EVALUATION side of the split: 1 + (1 +
draws) x factors steps, each one generation over the prompts and one loss pass over the held-out programs."""
