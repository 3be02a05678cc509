"""Cached entry points shared by the CLI and the app: compute once, then read from the cache."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from neuro.analysis.selectivity import NeuronSelection
from neuro.code.corpus import Snippet, corpus_hash
from neuro.instrument.ablation import AblationResult, ablation_matrix
from neuro.instrument.statistics import STATS_VERSION, CorpusStats, capture_statistics
from neuro.model.cards import remember_model
from neuro.model.loading import LoadedModel
from neuro.progress import Progress
from neuro.results.resume import chunked_sum, drop_chunks
from neuro.results.store import Entry, Store, make_key

STATS_KIND = "corpus_stats"

# a resumable capture has at most this many chunks: each chunk re-reads the whole corpus's tokens and
# syntax (0.3 s for 330 programs), so on a large corpus the chunks grow instead of multiplying
STATS_MAX_CHUNKS = 32

def _stats_key(loaded: LoadedModel, snippets: Sequence[Snippet], params: dict) -> str:
    return make_key(STATS_KIND, model=loaded.identity, corpus=corpus_hash(snippets), version=STATS_VERSION, **params)

def corpus_statistics(loaded: LoadedModel, snippets: Sequence[Snippet], *, gradients: bool = True,
                      syntax: bool = True, top_k: int = 16, max_length: int = 512, store: Store | None = None,
                      progress: Progress | None = None, capture=capture_statistics,
                      save: bool = True) -> tuple[CorpusStats, bool]:
    """Per-language neuron statistics (PLS with `gradients`; syntax profiles and top-k examples),
    from the cache when it has them. Returns (stats, cache_hit).

    `capture` computes them (e.g. neuro.distributed.distributed_statistics under torchrun); `save=False`
    reads the cache but does not write it (the other ranks of a data-parallel run).

    A local capture is resumable (neuro.resume): its finished chunks of programs are kept in the cache,
    so a run that is killed or cancelled (a closed page) resumes from them; a cache that cannot be
    written only logs why the result is not kept.
    """
    store = store or Store()
    params = dict(gradients=gradients, syntax=syntax, top_k=top_k, max_length=max_length)
    key = _stats_key(loaded, snippets, params)
    entry = store.load(STATS_KIND, key)
    hit = entry is not None
    if not hit:
        if capture is capture_statistics and snippets:
            # one pass, resumable: each chunk of programs (corpus order) adds to a running total kept in
            # the cache, so a killed or cancelled capture resumes from its last finished chunk
            def chunk(lo: int, hi: int, chunk_progress: Progress | None) -> Entry:
                part = capture(loaded, snippets, progress=chunk_progress, indices=range(lo, hi), **params)
                return _stats_entry(part, snippets)

            entry = chunked_sum(store, STATS_KIND, key, snippets, chunk, _add_stats_entries, progress=progress,
                                save=save, max_chunks=STATS_MAX_CHUNKS)
        else:  # e.g. a data-parallel capture: its ranks must run every call together, so one call
            entry = _stats_entry(capture(loaded, snippets, progress=progress, **params), snippets)
        if save and store.try_save(STATS_KIND, key, entry) is not None:
            drop_chunks(store, STATS_KIND, key)
            remember_model(loaded, store.root)
    return CorpusStats.from_arrays(entry.arrays, entry.meta), hit

def _stats_entry(stats: CorpusStats, snippets: Sequence[Snippet]) -> Entry:
    meta = dict(stats.meta, corpus=corpus_hash(snippets), n_snippets=len(snippets))
    return Entry(arrays=stats.to_arrays(), meta=meta)

def _add_stats_entries(total: Entry, part: Entry) -> Entry:
    """The statistics of two disjoint chunks of one corpus, summed (CorpusStats.merge)."""
    merged = CorpusStats.from_arrays(total.arrays, total.meta).merge(CorpusStats.from_arrays(part.arrays, part.meta))
    return Entry(arrays=merged.to_arrays(), meta=dict(total.meta))

ABLATION_KIND = "ablation"

ABLATION_VERSION = 2  # 2: several random draws, evaluated on programs the neurons were not selected on

def ablation(loaded: LoadedModel, snippets: Sequence[Snippet], selection: NeuronSelection, *,
             include_universal: bool = True, draws: int = 5, seed: int = 0, max_length: int = 512,
             store: Store | None = None, progress: Progress | None = None) -> tuple[AblationResult, bool]:
    """Ablation matrix for a selection's language groups (and its universal group), cached.

    `snippets` are the programs the effects are measured on: the evaluation side of the split whose
    selection side chose `selection` (neuro.split)."""
    store = store or Store()
    groups = {lang: selection.neurons_for(lang) for lang in selection.languages}
    if include_universal:
        groups["universal"] = selection.universal_neurons()
    groups = {name: neurons for name, neurons in groups.items() if neurons}
    if not groups:
        raise ValueError("the selection has no neurons to ablate; loosen the selection parameters")
    key = make_key(ABLATION_KIND, model=loaded.identity, corpus=corpus_hash(snippets), version=ABLATION_VERSION,
                   selection=selection.summary(), seed=seed, draws=draws, max_length=max_length,
                   groups={k: sorted((int(layer), len(v)) for layer, v in g.items()) for k, g in groups.items()})

    def compute() -> Entry:
        result = ablation_matrix(loaded, snippets, groups, draws=draws, seed=seed, max_length=max_length,
                                 progress=progress)
        draws_table = pd.concat([f.rename_axis("ablated").reset_index().assign(draw=d)
                                 for d, f in enumerate(result.random_draws)], ignore_index=True)
        return Entry(tables={"delta": result.delta.rename_axis("ablated").reset_index(), "random": draws_table},
                     meta={"base": result.base, "sizes": result.sizes})

    entry, hit = store.get_or_compute(ABLATION_KIND, key, compute)
    delta = entry.tables["delta"].set_index("ablated").rename_axis(None)
    random = entry.tables["random"]
    frames = [random[random["draw"] == d].drop(columns="draw").set_index("ablated").rename_axis(None)
              .loc[delta.index, delta.columns] for d in sorted(random["draw"].unique())]
    return AblationResult(entry.meta["base"], delta, frames, entry.meta["sizes"]), hit

def corpus_statistics_cached(loaded: LoadedModel, snippets: Sequence[Snippet], *, gradients: bool = True,
                             syntax: bool = True, top_k: int = 16, max_length: int = 512,
                             store: Store | None = None) -> CorpusStats | None:
    """The cached statistics, or None when they have not been computed (never runs the model)."""
    params = dict(gradients=gradients, syntax=syntax, top_k=top_k, max_length=max_length)
    entry = (store or Store()).load(STATS_KIND, _stats_key(loaded, snippets, params))
    return None if entry is None else CorpusStats.from_arrays(entry.arrays, entry.meta)
