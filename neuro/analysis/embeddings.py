"""Pooled program embeddings per layer, cached; their centring before cosine; and their 2-D
projections (UMAP) for the Embeddings view.

Centring: mean-pooled states share a large common direction (anisotropy) and, on top of it, a
per-language direction (a linear probe reads the language off every layer at ~99 %). Subtracting each
language's mean leaves what the programs of one language differ in, which is what aligns across
languages (Libovicky et al., 2020, "On the language neutrality of pre-trained multilingual
representations"). On the demo model this more than doubles cross-language clone MAP@R.

Where a score is measured, the means are fitted on the selection side of the corpus split
(neuro/code/split.py) and applied to the evaluation side (`Centering.fit(...).apply(...)` on different
rows); `centred_rows` fits and applies on the same rows and serves pictures, not scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from neuro.choices import CenterChoice, choices
from neuro.code.corpus import Snippet

CENTERINGS: dict[CenterChoice, str] = {
    "language": "each program minus the mean of its language's programs (default)",
    "corpus": "every program minus the corpus mean",
    "none": "raw states",
}

assert tuple(CENTERINGS) == choices(CenterChoice)

DEFAULT_CENTERING: CenterChoice = "language"

MIN_LANGUAGE_ROWS = 5  # a language with fewer programs is centred on the corpus mean (its own mean is noise)


def unit_rows(x: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Rows minus `mean` (if given), scaled to unit length: cosine similarity becomes a dot product."""
    x = np.asarray(x, dtype=np.float32)
    if mean is not None:
        x = x - mean
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def check_centering(center: CenterChoice) -> CenterChoice:
    if center not in CENTERINGS:
        raise ValueError(f"centring must be one of {', '.join(CENTERINGS)}, not {center!r}")
    return center


@dataclass(frozen=True)
class Centering:
    """The means subtracted before cosine: per language and for the whole corpus."""

    how: CenterChoice
    corpus_mean: np.ndarray
    language_means: dict[str, np.ndarray]

    @classmethod
    def fit(cls, x: np.ndarray, langs: Sequence[str], how: CenterChoice = DEFAULT_CENTERING) -> Centering:
        x = np.asarray(x, dtype=np.float32)
        labels = np.asarray(langs)
        means = {}
        if check_centering(how) == "language":
            for lang in dict.fromkeys(labels.tolist()):
                rows = labels == lang
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
            labels = np.asarray(langs)
            for lang in dict.fromkeys(labels.tolist()):
                out[labels == lang] -= self.mean_for(lang)
        return unit_rows(out)


def centred_rows(x: np.ndarray, snippets: Sequence[Snippet], how: CenterChoice = DEFAULT_CENTERING) -> np.ndarray:
    """Unit rows of one embedding per snippet, centred as `how` says, fitted on these rows (for
    pictures; a measured score fits `Centering` on the selection side instead)."""
    langs = [s.lang for s in snippets]
    return Centering.fit(x, langs, how).apply(x, langs)


_UMAP_COMPILED = False


def compile_projection() -> bool:
    """JIT-compile UMAP's code with one fit on a few random points, so the fits that follow take their own
    time (progress and time left are then about them). False when it was already compiled in this process."""
    global _UMAP_COMPILED
    if _UMAP_COMPILED:
        return False
    project_2d(np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32))
    return True


def project_2d(points: np.ndarray, seed: int = 0, neighbors: int = 15) -> np.ndarray:
    """UMAP (cosine) to two dimensions; the first call in a process JIT-compiles for ~20-30 s."""
    global _UMAP_COMPILED
    import umap

    if len(points) < 4:
        raise ValueError("a projection needs at least 4 programs")
    reducer = umap.UMAP(n_components=2, n_neighbors=min(neighbors, len(points) - 1), metric="cosine",
                        random_state=seed, n_jobs=1)
    xy = reducer.fit_transform(points).astype(np.float32)
    _UMAP_COMPILED = True
    return xy
