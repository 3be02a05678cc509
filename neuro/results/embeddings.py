"""TODO docstring (neuro.results.embeddings)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neuro.analysis.embeddings import centred_rows, check_centering, project_2d
from neuro.code.corpus import Snippet, corpus_hash
from neuro.instrument.states import pooled_states
from neuro.model.cards import remember_model
from neuro.model.loading import LoadedModel
from neuro.progress import Progress
from neuro.results.resume import chunked_rows, drop_chunks
from neuro.results.store import Entry, Store, make_key

POOLED_KIND = "pooled_states"

PROJECTION_KIND = "projection"

# Version of every cached result derived from pooled states (pooled states, clone embeddings and
# evaluations, layer reports, projections): 2 = the mean leaves out BOS and special tokens.
POOLED_VERSION = 2

def pooled_key(loaded: LoadedModel, snippets: Sequence[Snippet], max_length: int = 512) -> str:
    """The cache key of a corpus's all-layer pooled states."""
    return make_key(POOLED_KIND, model=loaded.identity, corpus=corpus_hash(snippets), max_length=max_length,
                    version=POOLED_VERSION)

def cached_pooled(loaded: LoadedModel, snippets: Sequence[Snippet], *, max_length: int = 512,
                  store: Store | None = None, progress: Progress | None = None) -> np.ndarray:
    """Mean-pooled block outputs of every snippet at every layer: (snippets, layers, hidden), cached."""
    store = store or Store()
    return resumable_pooled(loaded, snippets, POOLED_KIND, pooled_key(loaded, snippets, max_length),
                            max_length=max_length, store=store, progress=progress)

def resumable_pooled(loaded: LoadedModel, snippets: Sequence[Snippet], kind: str, key: str, *,
                     layer: int | None = None, name: str = "pooled", max_length: int = 512,
                     store: Store | None = None, progress: Progress | None = None) -> np.ndarray:
    """Pooled states cached as array `name` of entry (kind, key): every layer (snippets, layers, hidden),
    or with `layer` that layer only (snippets, hidden), from a pass that stops after it.

    The pass is resumable (neuro.resume): each finished chunk of programs is kept in the cache until
    the whole result is saved, so a killed or cancelled pass resumes from its chunks; a cache that
    cannot be written costs only that (the result is returned and the store logs why it is not kept)."""
    store = store or Store()
    entry = store.load(kind, key)
    if entry is not None:
        return entry.arrays[name]

    def rows(part: Sequence[Snippet], part_progress: Progress | None) -> np.ndarray:
        pooled = pooled_states(loaded, part, upto_layer=layer, max_length=max_length, progress=part_progress)
        return pooled if layer is None else pooled[:, layer]

    def chunk(lo: int, hi: int, chunk_progress: Progress | None) -> Entry:
        return Entry(arrays={name: rows(snippets[lo:hi], chunk_progress)})

    parts = chunked_rows(store, kind, key, snippets, chunk, progress=progress) if snippets else []
    result = np.concatenate([p.arrays[name] for p in parts]) if parts else rows(snippets, progress)
    if store.try_save(kind, key, Entry(arrays={name: result})) is not None:
        drop_chunks(store, kind, key)
        remember_model(loaded, store.root)
    return result

def cached_projection(loaded: LoadedModel, snippets: Sequence[Snippet], layer: int, *, seed: int = 0,
                      center: str = "none", store: Store | None = None,
                      progress: Progress | None = None) -> tuple[np.ndarray, bool]:
    """2-D UMAP of the pooled states at `layer` (centred as `center` says), cached on disk:
    (points (snippets, 2), cache_hit)."""
    check_centering(center)
    store = store or Store()
    key = make_key(PROJECTION_KIND, model=loaded.identity, corpus=corpus_hash(snippets), layer=layer, seed=seed,
                   center=center, version=POOLED_VERSION)

    def compute() -> Entry:
        pooled = cached_pooled(loaded, snippets, store=store, progress=progress)[:, layer]
        points = pooled if center == "none" else centred_rows(pooled, snippets, center)
        return Entry(arrays={"xy": project_2d(points, seed=seed)})
    entry, hit = store.get_or_compute(PROJECTION_KIND, key, compute)
    return entry.arrays["xy"], hit
