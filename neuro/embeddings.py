"""Pooled program embeddings per layer, cached, and their 2-D projections (UMAP) for the Embeddings view."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .capture import Progress, pooled_states
from .corpus import Snippet, corpus_hash
from .models import LoadedModel
from .browse import remember_model
from .store import Entry, Store, make_key

POOLED_KIND = "pooled_states"
PROJECTION_KIND = "projection"


def pooled_key(loaded: LoadedModel, snippets: Sequence[Snippet], max_length: int = 512) -> str:
    """The cache key of a corpus's all-layer pooled states."""
    return make_key(POOLED_KIND, model=loaded.identity, corpus=corpus_hash(snippets), max_length=max_length)


def cached_pooled(loaded: LoadedModel, snippets: Sequence[Snippet], *, max_length: int = 512,
                  store: Store | None = None, progress: Progress | None = None) -> np.ndarray:
    """Mean-pooled block outputs of every snippet at every layer: (snippets, layers, hidden), cached."""
    store = store or Store()
    key = pooled_key(loaded, snippets, max_length)
    entry, hit = store.get_or_compute(POOLED_KIND, key, lambda: Entry(arrays={"pooled": pooled_states(
        loaded, snippets, max_length=max_length, progress=progress)}))
    if not hit:
        remember_model(loaded, store.root)
    return entry.arrays["pooled"]


def project_2d(points: np.ndarray, seed: int = 0, neighbors: int = 15) -> np.ndarray:
    """UMAP (cosine) to two dimensions; the first call in a process JIT-compiles for ~20-30 s."""
    import umap

    if len(points) < 4:
        raise ValueError("a projection needs at least 4 programs")
    reducer = umap.UMAP(n_components=2, n_neighbors=min(neighbors, len(points) - 1), metric="cosine",
                        random_state=seed, n_jobs=1)
    return reducer.fit_transform(points).astype(np.float32)


def cached_projection(loaded: LoadedModel, snippets: Sequence[Snippet], layer: int, *, seed: int = 0,
                      store: Store | None = None, progress: Progress | None = None) -> tuple[np.ndarray, bool]:
    """2-D UMAP of the pooled states at `layer`, cached on disk: (points (snippets, 2), cache_hit)."""
    store = store or Store()
    key = make_key(PROJECTION_KIND, model=loaded.identity, corpus=corpus_hash(snippets), layer=layer, seed=seed)

    def compute() -> Entry:
        pooled = cached_pooled(loaded, snippets, store=store, progress=progress)
        return Entry(arrays={"xy": project_2d(pooled[:, layer], seed=seed)})
    entry, hit = store.get_or_compute(PROJECTION_KIND, key, compute)
    return entry.arrays["xy"], hit
