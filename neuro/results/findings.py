"""The Overview's findings (neuro.analysis.findings) from the cached results of a model and corpus.

`gather_findings` reads every input with `compute=False` by default, so it never runs the model: what is
not cached becomes a "not computed yet" line. With `compute=True` (the CLI's `findings --compute`, e.g.
on a GPU box whose cache/ is then copied to a laptop) the missing inputs are computed and kept, with the
same recipes and arguments as the pages that show them, so the pages find them too:

- statistics: `STATS` of the split's selection side with its defaults (Neurons page, `neurons`);
- neurons: PLS selection with the default `SelectionParams` (the Neurons page's sliders at rest);
- chance: `CHANCE` of that rule (200 permutations, within tasks on a parallel corpus, seed 0);
- universality: `UNIVERSALITY` of that rule (20 split-halves, seed 0);
- concept layers: `LAYER_REPORT` of the selection side (the Layers page's call, else the CLI's);
- clones: `CLONE_EVAL` with its defaults on the split (the Clones page's Evaluation tab at rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

from neuro.analysis.findings import Findings, FindingsInputs, findings
from neuro.analysis.selectivity import SelectionParams, language_relations, select_neurons
from neuro.code.corpus import Snippet
from neuro.code.split import CorpusSplit, SplitParams, split_corpus
from neuro.model.loading import LoadedModel
from neuro.model.reference import ModelRef
from neuro.progress import Progress
from neuro.results.clones import CLONE_EVAL
from neuro.results.layers import LAYER_REPORT
from neuro.results.recipe import Cache, open_store
from neuro.results.statistics import CHANCE, STATS, UNIVERSALITY

SELECTION = SelectionParams()  # the Neurons page's and `neurons`' defaults

# the layer report under the keys the Layers page (no args), `python -m neuro layers` and `concept_layers`
# (without the contribution passes) keep it; the first is computed when asked to compute
LAYER_REPORT_ARGS: tuple[dict, ...] = ({}, dict(tokens_per_snippet=12, contribution=True, max_length=512),
                                       dict(contribution=False))


class _Model(TypedDict):
    """The model fields of `FindingsInputs`, the same on every return."""

    model: str
    n_layers: int
    n_neurons: int


@dataclass(frozen=True)
class Inputs:
    """What `gather_inputs` found, and which inputs it had to compute (empty unless `compute`)."""

    inputs: FindingsInputs
    computed: list[str]


def _split(snippets: Sequence[Snippet], split: CorpusSplit | SplitParams | None) -> CorpusSplit:
    if isinstance(split, CorpusSplit):
        return split
    return split_corpus(snippets, split or SplitParams())


def gather_inputs(loaded: LoadedModel | ModelRef, snippets: Sequence[Snippet], *,
                  split: CorpusSplit | SplitParams | None = None, cache: Cache = None, compute: bool = False,
                  progress: Progress | None = None) -> Inputs:
    """The cached results the findings are read from (None where not cached); `compute`: compute and keep
    the missing ones (which needs a `LoadedModel`; a `ModelRef` only finds what is cached)."""
    if compute and not isinstance(loaded, LoadedModel):
        raise TypeError("computing the missing findings needs the loaded model, not its reference")
    store = open_store(cache)
    snippets = list(snippets)
    label = f"{len(snippets)} programs in {len({s.lang for s in snippets})} languages"
    base = _Model(model=loaded.source, n_layers=loaded.n_layers, n_neurons=loaded.n_neurons)
    reasons: dict[str, str] = {}
    computed: list[str] = []
    try:
        sides = _split(snippets, split)
    except ValueError as err:
        why = f"this corpus cannot be split into selection and evaluation programs ({err})"
        return Inputs(FindingsInputs(corpus=label, **base,
                                     reasons={k: why for k in ("selection", "chance", "universality", "layers",
                                                                       "clones")}), [])
    label += f"; {sides.caption()}"

    selection = relations = chance = universal = None
    stats = STATS.get(loaded, sides.selection, cache=store, compute=False)
    if stats is None and compute:
        assert isinstance(loaded, LoadedModel)  # checked above: computing needs the model
        stats = STATS.get(loaded, sides.selection, cache=store, progress=progress)
        computed.append("statistics")
    if stats is not None and stats.pls_sum is None:
        reasons["selection"] = ("the cached statistics have no gradients, so no PLS: recapture them with gradients "
                                "(Neurons page, or `python -m neuro capture`)")
        stats = None
    if stats is not None:
        try:
            selection = select_neurons(stats, "pls", SELECTION)
            relations = language_relations(stats)
        except ValueError as err:
            reasons["selection"] = f"no neuron selection on these statistics ({err})"
    if selection is not None:
        assert stats is not None  # the selection is made from them
        for params in (SELECTION, None):  # None: the recipe's default, the same rule under another key
            chance = CHANCE.get(loaded, sides.selection, method="pls", params=params, cache=store, compute=False)
            if chance is not None:
                break
        if chance is None and compute:
            assert isinstance(loaded, LoadedModel)  # checked above: computing needs the model
            if stats.has_units() or stats.units_omitted:  # omitted: CHANCE captures them again first
                chance = CHANCE.get(loaded, sides.selection, method="pls", params=SELECTION, cache=store,
                                    progress=progress)
                computed.append("chance")
            else:
                reasons["chance"] = "not available: these statistics keep no per-program scores to permute"
        for params in (SELECTION, None):
            universal = UNIVERSALITY.get(loaded, sides.selection, method="pls", params=params, cache=store,
                                         compute=False)
            if universal is not None:
                break
        if universal is None and compute:
            assert isinstance(loaded, LoadedModel)  # checked above: computing needs the model
            if stats.has_units() or stats.units_omitted:
                universal = UNIVERSALITY.get(loaded, sides.selection, method="pls", params=SELECTION, cache=store,
                                             progress=progress)
                computed.append("universality")
            else:
                reasons["universality"] = "not available: these statistics keep no per-program scores to halve"

    layers = None
    for args in LAYER_REPORT_ARGS:
        layers = LAYER_REPORT.get(loaded, sides.selection, cache=store, compute=False, **args)
        if layers is not None:
            break
    if layers is None and compute:
        assert isinstance(loaded, LoadedModel)  # checked above: computing needs the model
        layers = LAYER_REPORT.get(loaded, sides.selection, cache=store, progress=progress)
        computed.append("layers")

    clones = None
    if len({s.task for s in snippets}) == len(snippets):
        reasons["clones"] = ("not available: this corpus has no parallel programs (no task in two languages), so "
                             "there is nothing to retrieve")
    else:
        try:
            clones = CLONE_EVAL.get(loaded, snippets, split=sides, cache=store, compute=False)
            if clones is None and compute:
                assert isinstance(loaded, LoadedModel)  # checked above: computing needs the model
                clones = CLONE_EVAL.get(loaded, snippets, split=sides, cache=store, progress=progress)
                computed.append("clones")
        except ValueError as err:
            reasons["clones"] = f"not available: {err}"

    return Inputs(FindingsInputs(corpus=label, selection=selection, chance=chance, universality=universal,
                                 relations=relations,
                                 layers=layers, clones=clones, reasons=reasons, **base), computed)


FINDINGS_KINDS = (STATS.kind, CHANCE.kind, UNIVERSALITY.kind, LAYER_REPORT.kind, CLONE_EVAL.kind)


def cache_signature(cache: Cache = None) -> tuple:
    """A cheap fingerprint of the cached entries the findings read (the modification times of their kind
    folders, in the cache and in the shipped results): it changes when one of them is kept or removed, so a
    page can keep the findings until then."""
    store = open_store(cache)
    roots = [store.root, *([store.shipped] if store.shipped else [])]
    signature: list[tuple[str, str, int | None]] = []
    for root in roots:
        for kind in FINDINGS_KINDS:
            try:
                signature.append((str(root), kind, (root / kind).stat().st_mtime_ns))
            except OSError:
                signature.append((str(root), kind, None))
    return tuple(signature)


def gather_findings(loaded: LoadedModel | ModelRef, snippets: Sequence[Snippet], *,
                    split: CorpusSplit | SplitParams | None = None, cache: Cache = None, compute: bool = False,
                    progress: Progress | None = None) -> Findings:
    """The findings for a model and corpus from the cache (never runs the model unless `compute`)."""
    return findings(gather_inputs(loaded, snippets, split=split, cache=cache, compute=compute,
                                  progress=progress).inputs)
