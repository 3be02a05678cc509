"""Pooled program embeddings per layer, cached; their centring before cosine; and their 2-D
projections (UMAP) for the Embeddings view.

Centring: mean-pooled states share a large common direction (anisotropy) and, on top of it, a
per-language direction (a linear probe reads the language off every layer at ~99 %). Subtracting each
language's mean leaves what the programs of one language differ in, which is what aligns across
languages (Libovicky et al., 2020, "On the language neutrality of pre-trained multilingual
representations"). On the demo model this more than doubles cross-language clone MAP@R.

Where a score is measured, the means are fitted on the selection side of the corpus split
(neuro/split.py) and applied to the evaluation side (`Centering.fit(...).apply(...)` on different
rows); `centred_rows` fits and applies on the same rows and serves pictures, not scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .capture import Progress, pooled_states
from .corpus import Snippet, corpus_hash
from .models import LoadedModel
from .browse import remember_model
from .resume import chunked_rows, drop_chunks
from .store import Entry, Store, make_key

POOLED_KIND = "pooled_states"
PROJECTION_KIND = "projection"
# Version of every cached result derived from pooled states (pooled states, clone embeddings and
# evaluations, layer reports, projections): 2 = the mean leaves out BOS and special tokens.
POOLED_VERSION = 2

CENTERINGS = {
    "language": "each program minus the mean of its language's programs (default)",
    "corpus": "every program minus the corpus mean",
    "none": "raw states",
}
DEFAULT_CENTERING = "language"
MIN_LANGUAGE_ROWS = 5  # a language with fewer programs is centred on the corpus mean (its own mean is noise)


def unit_rows(x: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Rows minus `mean` (if given), scaled to unit length: cosine similarity becomes a dot product."""
    x = np.asarray(x, dtype=np.float32)
    if mean is not None:
        x = x - mean
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def check_centering(center: str) -> str:
    if center not in CENTERINGS:
        raise ValueError(f"centring must be one of {', '.join(CENTERINGS)}, not {center!r}")
    return center


@dataclass(frozen=True)
class Centering:
    """The means subtracted before cosine: per language and for the whole corpus."""

    how: str
    corpus_mean: np.ndarray
    language_means: dict[str, np.ndarray]

    @classmethod
    def fit(cls, x: np.ndarray, langs: Sequence[str], how: str = DEFAULT_CENTERING) -> Centering:
        x = np.asarray(x, dtype=np.float32)
        langs = np.asarray(langs)
        means = {}
        if check_centering(how) == "language":
            for lang in dict.fromkeys(langs.tolist()):
                rows = langs == lang
                if rows.sum() >= MIN_LANGUAGE_ROWS:
                    means[lang] = x[rows].mean(0)
        return cls(how, x.mean(0), means)

    def mean_for(self, lang: str | None) -> np.ndarray | None:
        """What a program in `lang` is centred on (None: nothing)."""
        if self.how == "none":
            return None
        if self.how == "language" and lang in self.language_means:
            return self.language_means[lang]
        return self.corpus_mean

    def apply(self, x: np.ndarray, langs: Sequence[str]) -> np.ndarray:
        """Unit rows of `x` after centring each row for its language."""
        out = np.array(x, dtype=np.float32)
        if self.how != "none":
            langs = np.asarray(langs)
            for lang in dict.fromkeys(langs.tolist()):
                out[langs == lang] -= self.mean_for(lang)
        return unit_rows(out)


def centred_rows(x: np.ndarray, snippets: Sequence[Snippet], how: str = DEFAULT_CENTERING) -> np.ndarray:
    """Unit rows of one embedding per snippet, centred as `how` says, fitted on these rows (for
    pictures; a measured score fits `Centering` on the selection side instead)."""
    langs = [s.lang for s in snippets]
    return Centering.fit(x, langs, how).apply(x, langs)


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


def project_2d(points: np.ndarray, seed: int = 0, neighbors: int = 15) -> np.ndarray:
    """UMAP (cosine) to two dimensions; the first call in a process JIT-compiles for ~20-30 s."""
    import umap

    if len(points) < 4:
        raise ValueError("a projection needs at least 4 programs")
    reducer = umap.UMAP(n_components=2, n_neighbors=min(neighbors, len(points) - 1), metric="cosine",
                        random_state=seed, n_jobs=1)
    return reducer.fit_transform(points).astype(np.float32)


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
