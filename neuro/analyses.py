"""Cached entry points shared by the CLI and the app: compute once, then read from the cache."""

from __future__ import annotations

from collections.abc import Sequence

from .capture import CorpusStats, Progress, capture_statistics
from .corpus import Snippet, corpus_hash
from .models import LoadedModel
from .store import Entry, Store, make_key

STATS_KIND = "corpus_stats"


def corpus_statistics(loaded: LoadedModel, snippets: Sequence[Snippet], *, gradients: bool = True,
                      syntax: bool = True, top_k: int = 16, max_length: int = 512, store: Store | None = None,
                      progress: Progress | None = None) -> tuple[CorpusStats, bool]:
    """Per-language neuron statistics (PLS with `gradients`; syntax profiles and top-k examples),
    from the cache when it has them. Returns (stats, cache_hit).
    """
    store = store or Store()
    params = dict(gradients=gradients, syntax=syntax, top_k=top_k, max_length=max_length)
    key = make_key(STATS_KIND, model=loaded.identity, corpus=corpus_hash(snippets), **params)

    def compute() -> Entry:
        stats = capture_statistics(loaded, snippets, progress=progress, **params)
        meta = dict(stats.meta, corpus=corpus_hash(snippets), n_snippets=len(snippets))
        return Entry(arrays=stats.to_arrays(), meta=meta)

    entry, hit = store.get_or_compute(STATS_KIND, key, compute)
    return CorpusStats.from_arrays(entry.arrays, entry.meta), hit
