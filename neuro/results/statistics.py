"""Cached per-language neuron statistics and ablation matrices (recipes `STATS` and `ABLATION`)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence

import numpy as np

from neuro.code.corpus import Snippet, corpus_hash
from neuro.analysis.selectivity import ChanceLevel, chance_level
from neuro.analysis.selectivity import PERMUTATIONS, unit_groups  # CHANCE
from neuro.analysis.universality import FRACTIONS, HALVINGS, UniversalityReport, universality  # UNIVERSALITY
from neuro.instrument.ablation import (
    AblationResult,
    ablation_losses,
    as_layer_map,
    plan_ablation,
    program_loss_pass,
    score_deciles,
    selection_scores,
    top_mean_control,
)
from neuro.instrument.statistics import STATS_VERSION, CorpusStats, capture_statistics, node_type_vocabulary
from neuro.instrument.tokens import encode
from neuro.model.plan import NODE_TYPES
from neuro.model.loading import LoadedModel
from neuro.progress import Progress
from neuro.results.recipe import Cache, Call, Recipe, open_store, picked
from neuro.results.store import Entry, make_key

log = logging.getLogger(__name__)

# a resumable capture has at most this many chunks (each kept in the cache until the whole is saved)
STATS_MAX_CHUNKS = 32


def _stats_entry(stats: CorpusStats, snippets: Sequence[Snippet]) -> Entry:
    meta = dict(stats.meta, corpus=corpus_hash(snippets), n_snippets=len(snippets))
    return Entry(arrays=stats.to_arrays(), meta=meta)


def _add_stats_entries(total: Entry, part: Entry) -> Entry:
    """The statistics of two disjoint chunks of one corpus, summed (CorpusStats.merge)."""
    merged = CorpusStats.from_arrays(total.arrays, total.meta).merge(CorpusStats.from_arrays(part.arrays, part.meta))
    meta = dict(total.meta)
    cut, more = total.meta.get("truncated_programs"), part.meta.get("truncated_programs")
    if cut and more and cut.get("count") is not None and more.get("count") is not None:  # each chunk counts its own
        meta["truncated_programs"] = dict(cut, count=cut["count"] + more["count"], of=cut["of"] + more["of"])
    return Entry(arrays=merged.to_arrays(), meta=meta)


def _capture(call: Call) -> Entry:
    """A local capture runs in resumable chunks of programs (corpus order), each adding to a running total
    kept in the cache, so a killed or cancelled capture resumes from its last finished chunk. Another
    `capture` (e.g. a data-parallel one, whose ranks must run every call together) runs in one call."""
    loaded, snippets, capture = call.loaded, call.snippets, call.args["capture"]
    params = {name: call.args[name] for name in ("gradients", "syntax", "top_k", "max_length")}
    if capture is capture_statistics and snippets:
        vocabulary: dict = {}

        def chunk(lo: int, hi: int, chunk_progress: Progress | None) -> Entry:
            if params["syntax"] and "types" not in vocabulary:  # aligned once per capture, not per chunk
                encoded = [encode(loaded, s.code, params["max_length"]) for s in snippets]
                vocabulary["types"] = node_type_vocabulary(encoded, snippets, NODE_TYPES)[0]
            part = capture(loaded, snippets, progress=chunk_progress, indices=range(lo, hi),
                           node_types=vocabulary.get("types"), **params)
            return _stats_entry(part, snippets)

        return call.chunked_sum(chunk, _add_stats_entries, max_chunks=STATS_MAX_CHUNKS)
    return _stats_entry(capture(loaded, snippets, progress=call.progress, **params), snippets)


STATS: Recipe[CorpusStats] = Recipe(
    kind="corpus_stats", version=STATS_VERSION, compute=_capture,
    read=lambda entry: CorpusStats.from_arrays(entry.arrays, entry.meta),
    key_parts=picked("gradients", "syntax", "top_k", "max_length"),
    defaults=dict(gradients=True, syntax=True, top_k=16, max_length=512, capture=capture_statistics))
"""Per-language neuron statistics: PLS with `gradients`, syntax profiles with `syntax`, `top_k` examples.
`capture` computes them (default: the local, resumable capture; e.g. neuro.instrument.distributed's
`distributed_statistics` under torchrun, with `save=False` on the ranks that must not write)."""


def without_units(entry: Entry) -> Entry:
    """A STATS entry without its per-unit arrays (22 of the demo's 26 MB; only a chance level needs them),
    its meta saying so: what the shipped results keep (neuro/assets/precomputed)."""
    stats = CorpusStats.from_arrays(entry.arrays, entry.meta).without_units()
    return Entry(arrays=stats.to_arrays(), tables=dict(entry.tables), meta=stats.meta)


UNITS_MESSAGE = ("the shipped statistics leave out the per-program scores a chance level is computed from: "
                 "capturing the statistics once more, with them (kept in the cache)")


def statistics_with_units(loaded: LoadedModel, snippets: Sequence[Snippet], *, cache: Cache = None,
                          progress: Progress | None = None, save: bool = True, **stats_args) -> CorpusStats:
    """STATS with its per-unit arrays (what a chance level needs): the cached statistics, or, when those
    are shipped without them (`without_units`), the statistics captured again into the writable cache,
    where every later request finds them first."""
    store = open_store(cache)
    stats = STATS.get(loaded, snippets, cache=store, progress=progress, save=save, **stats_args)
    if stats.has_units() or not stats.units_omitted:
        return stats
    log.warning("%s", UNITS_MESSAGE)
    return STATS.get(loaded, snippets, cache=store.writable_only(), progress=progress, save=save, **stats_args)


def _ablation_groups(loaded: LoadedModel, snippets: Sequence[Snippet], args: dict) -> tuple[Sequence[Snippet], dict]:
    """The neuron groups to ablate: each language's (and the universal) neurons of the selection, the
    scores they were selected by (for controls matched on importance) and the universal set's top-mean
    control."""
    selection = args["selection"]
    groups = {lang: selection.neurons_for(lang) for lang in selection.languages}
    if args["include_universal"]:
        groups["universal"] = selection.universal_neurons()
    groups = {name: as_layer_map(neurons) for name, neurons in groups.items() if neurons}
    if not groups:
        raise ValueError("the selection has no neurons to ablate; loosen the selection parameters")
    scores = selection_scores(selection)
    top_mean = top_mean_control(selection) if "universal" in groups else None
    selected_by = getattr(selection.params, "score", None) or ("probability" if selection.method == "lape" else "pls")
    return snippets, dict(args, groups=groups, scores={k: scores[k] for k in groups}, top_mean=top_mean,
                          selected_by=selected_by)


def _indices(neurons) -> dict[str, list[int]]:
    return {str(layer): [int(n) for n in idx] for layer, idx in as_layer_map(neurons).items()}


def _ablation_key(args: dict) -> dict:
    """The selection's parameters AND every ablated neuron's index (two selections with the same counts per
    layer ablate different neurons), the deciles the matched controls are drawn from, draws and seed."""
    deciles = hashlib.sha256()
    for name in sorted(args["scores"]):
        for row in args["scores"][name]:
            deciles.update(score_deciles(row).astype(np.int8).tobytes())
    return dict(selection=args["selection"].summary(), seed=args["seed"], draws=args["draws"],
                uniform_draws=args["uniform_draws"], max_length=args["max_length"], selected_by=args["selected_by"],
                groups={k: _indices(g) for k, g in args["groups"].items()},
                top_mean=_indices(args["top_mean"]) if args["top_mean"] is not None else None,
                deciles=deciles.hexdigest()[:16])


def _ablate(call: Call) -> Entry:
    """One resumable step per ablated set (a killed run resumes from its last finished pass)."""
    a = call.args
    conditions = plan_ablation(a["groups"], call.loaded.n_neurons, scores=a["scores"], draws=a["draws"],
                               uniform_draws=a["uniform_draws"], seed=a["seed"], top_mean=a["top_mean"])
    run = program_loss_pass(call.loaded, call.snippets, max_length=a["max_length"])
    total = 1 + len(conditions)

    def step(index: int) -> Entry:
        losses = run() if index == 0 else ablation_losses(call.loaded, run, conditions[index - 1].neurons)
        report(index)
        return Entry(arrays={"losses": losses})

    def report(index: int) -> None:
        if call.progress:
            call.progress(index + 1, total)

    keys = [make_key("ablation_step", result=call.key, index=0)] + [
        make_key("ablation_step", result=call.key, index=i + 1, group=c.group, control=c.control, draw=c.draw,
                 neurons=c.pairs()) for i, c in enumerate(conditions)]
    entries = call.steps(keys, step, loaded=report)
    losses = np.stack([e.arrays["losses"] for e in entries[1:]])
    result = AblationResult.build(call.snippets, entries[0].arrays["losses"], conditions, losses,
                                  a["selected_by"], a["seed"])
    return Entry(arrays={"base": result.base_losses, "losses": result.losses},
                 tables={"programs": result.programs, "conditions": result.conditions, "neurons": result.neurons},
                 meta={"unit": result.unit, "selected_by": result.selected_by, "seed": result.seed})


def _read_ablation(entry: Entry) -> AblationResult:
    return AblationResult(entry.tables["programs"], entry.meta["unit"], entry.arrays["base"],
                          entry.tables["conditions"], entry.arrays["losses"], entry.tables["neurons"],
                          entry.meta["selected_by"], entry.meta["seed"])


ABLATION_DRAWS = 100        # matched controls per group: p down to 1/101 (2/101 two-sided), where the model is small
ABLATION_UNIFORM_DRAWS = 20

ABLATION: Recipe[AblationResult] = Recipe(
    kind="ablation", version=3,  # 3: per-program losses, matched and uniform controls, neuron indices in the key
    compute=_ablate, read=_read_ablation, key_parts=_ablation_key, prepare=_ablation_groups,
    defaults=dict(include_universal=True, draws=ABLATION_DRAWS, uniform_draws=ABLATION_UNIFORM_DRAWS, seed=0,
                  max_length=512))
"""Each evaluation program's loss with each of a `selection`'s language groups (and its universal group with
`include_universal`) zeroed, beside `draws` controls matched on importance (same layer and score decile)
and `uniform_draws` uniform ones (same layer), and the universal set's top-mean control: one forward
pass over the snippets per ablated set (1 + groups x (1 + draws + uniform_draws) + 1; on the demo's 100
evaluation programs about 7 s each on a laptop CPU). The snippets are the programs the effects are
measured on: the evaluation side of the split whose selection side chose `selection` (neuro.code.split).
Effects, intervals and p-values: neuro.analysis.ablation_effects."""


def _chance_key(args: dict) -> dict:
    params = args["params"]
    return dict(method=args["method"], params=dataclasses.asdict(params) if params is not None else None,
                permutations=args["permutations"], seed=args["seed"],
                stats=STATS.key_parts({**STATS.defaults, **args["stats_args"]}))


def _chance(call: Call) -> Entry:
    a = call.args
    stats = statistics_with_units(call.loaded, call.snippets, cache=call.store, progress=call.progress,
                                  save=call.save, **a["stats_args"])
    level = chance_level(stats, a["method"], a["params"], a["permutations"], seed=a["seed"],
                         groups=unit_groups(stats, call.snippets))
    return Entry(tables={"counts": level.counts},
                 meta=dict(method=level.method, score=level.score, permutations=level.permutations, units=level.units,
                           observed=level.observed, stratified=level.stratified, strata=level.strata,
                           seed=level.seed))


def _read_chance(entry: Entry) -> ChanceLevel:
    m = entry.meta
    return ChanceLevel(m["method"], m["score"], m["permutations"], m["units"], entry.tables["counts"],
                       dict(m.get("observed", {})), bool(m.get("stratified", False)), int(m.get("strata", 1)),
                       int(m.get("seed", 0)))


CHANCE: Recipe[ChanceLevel] = Recipe(
    # 2: 200 permutations by default, within tasks on a parallel corpus, the real counts kept for per-language
    # p-values; no universal column (a label permutation cannot test universality)
    kind="chance_level", version=2, compute=_chance, key_parts=_chance_key, inputs={"stats_version": STATS},
    read=_read_chance, defaults=dict(method="pls", params=None, permutations=PERMUTATIONS, seed=0, stats_args={}))
"""The chance level of a selection rule (neuro.analysis.selectivity.chance_level): its per-language counts when
the units' language labels are permuted (within tasks on a parallel corpus), with the real counts for
p-values, from the statistics of the same programs (`STATS` with `stats_args`, computed first when they are
not cached or are shipped without their per-unit arrays). Small, so a page can show it without the
per-program arrays it is computed from."""


def _universality_key(args: dict) -> dict:
    return dict(_chance_key(dict(args, permutations=None)), halvings=args["halvings"],
                fractions=[float(f) for f in args["fractions"]])


def _universality(call: Call) -> Entry:
    a = call.args
    stats = statistics_with_units(call.loaded, call.snippets, cache=call.store, progress=call.progress,
                                  save=call.save, **a["stats_args"])
    report = universality(stats, a["method"], a["params"], groups=unit_groups(stats, call.snippets),
                          halvings=a["halvings"], seed=a["seed"], fractions=a["fractions"])
    return Entry(meta={"report": dataclasses.asdict(report)})


UNIVERSALITY: Recipe[UniversalityReport] = Recipe(
    kind="universality", version=1, compute=_universality, key_parts=_universality_key,
    inputs={"stats_version": STATS},
    read=lambda entry: UniversalityReport.from_summary(entry.meta["report"]),
    defaults=dict(method="pls", params=None, halvings=HALVINGS, seed=0, fractions=FRACTIONS, stats_args={}))
"""What a rule's universal neurons are beyond a count (neuro.analysis.universality.universality): split-half
stability beside the top-by-mean baseline, the importance-matched control, the count by top fraction; from
the per-program scores of the same programs, like `CHANCE`."""
