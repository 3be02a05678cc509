"""Cached entry points shared by the CLI and the app: compute once, then read from the cache."""

from __future__ import annotations

from collections.abc import Sequence

from .capture import CorpusStats, Progress, capture_statistics
from .corpus import Snippet, corpus_hash
from .intervene import AblationResult, ablation_matrix
from .models import LoadedModel
from .selectivity import NeuronSelection
from .browse import remember_model
from .store import Entry, Store, make_key

STATS_KIND = "corpus_stats"


def _stats_key(loaded: LoadedModel, snippets: Sequence[Snippet], params: dict) -> str:
    # version 2: with the signed attribution (importance_sum)
    return make_key(STATS_KIND, model=loaded.identity, corpus=corpus_hash(snippets), version=2, **params)


def corpus_statistics(loaded: LoadedModel, snippets: Sequence[Snippet], *, gradients: bool = True,
                      syntax: bool = True, top_k: int = 16, max_length: int = 512, store: Store | None = None,
                      progress: Progress | None = None, capture=capture_statistics,
                      save: bool = True) -> tuple[CorpusStats, bool]:
    """Per-language neuron statistics (PLS with `gradients`; syntax profiles and top-k examples),
    from the cache when it has them. Returns (stats, cache_hit).

    `capture` computes them (e.g. neuro.distributed.distributed_statistics under torchrun); `save=False`
    reads the cache but does not write it (the other ranks of a data-parallel run).
    """
    store = store or Store()
    params = dict(gradients=gradients, syntax=syntax, top_k=top_k, max_length=max_length)
    key = _stats_key(loaded, snippets, params)

    def compute() -> Entry:
        stats = capture(loaded, snippets, progress=progress, **params)
        meta = dict(stats.meta, corpus=corpus_hash(snippets), n_snippets=len(snippets))
        return Entry(arrays=stats.to_arrays(), meta=meta)

    entry = store.load(STATS_KIND, key)
    hit = entry is not None
    if not hit:
        entry = compute()
        if save:
            store.save(STATS_KIND, key, entry)
            remember_model(loaded, store.root)
    return CorpusStats.from_arrays(entry.arrays, entry.meta), hit


ABLATION_KIND = "ablation"


def ablation(loaded: LoadedModel, snippets: Sequence[Snippet], selection: NeuronSelection, *,
             include_universal: bool = True, seed: int = 0, max_length: int = 512, store: Store | None = None,
             progress: Progress | None = None) -> tuple[AblationResult, bool]:
    """Ablation matrix for a selection's language groups (and its universal group), cached."""
    store = store or Store()
    groups = {lang: selection.neurons_for(lang) for lang in selection.languages}
    if include_universal:
        groups["universal"] = selection.universal_neurons()
    groups = {name: neurons for name, neurons in groups.items() if neurons}
    if not groups:
        raise ValueError("the selection has no neurons to ablate; loosen the selection parameters")
    key = make_key(ABLATION_KIND, model=loaded.identity, corpus=corpus_hash(snippets),
                   selection=selection.summary(), seed=seed, max_length=max_length,
                   groups={k: sorted((int(layer), len(v)) for layer, v in g.items()) for k, g in groups.items()})

    def compute() -> Entry:
        result = ablation_matrix(loaded, snippets, groups, seed=seed, max_length=max_length, progress=progress)
        return Entry(tables={"delta": result.delta.reset_index(names="ablated"),
                             "delta_random": result.delta_random.reset_index(names="ablated")},
                     meta={"base": result.base, "sizes": result.sizes})

    entry, hit = store.get_or_compute(ABLATION_KIND, key, compute)
    frame = lambda name: entry.tables[name].set_index("ablated").rename_axis(None)  # noqa: E731
    return AblationResult(entry.meta["base"], frame("delta"), frame("delta_random"), entry.meta["sizes"]), hit


def corpus_statistics_cached(loaded: LoadedModel, snippets: Sequence[Snippet], *, gradients: bool = True,
                             syntax: bool = True, top_k: int = 16, max_length: int = 512,
                             store: Store | None = None) -> CorpusStats | None:
    """The cached statistics, or None when they have not been computed (never runs the model)."""
    params = dict(gradients=gradients, syntax=syntax, top_k=top_k, max_length=max_length)
    entry = (store or Store()).load(STATS_KIND, _stats_key(loaded, snippets, params))
    return None if entry is None else CorpusStats.from_arrays(entry.arrays, entry.meta)
