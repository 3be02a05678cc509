"""One neuron's activation distribution over a corpus, per language, in bounded memory.

The pass streams programs through the model up to the neuron's layer and bins each real token's
activation (neuro.instrument.tokens.real_token_mask) into a fixed number of bins whose range comes from
the data: the first batch sets it, and a later value outside doubles the bin width (merging bins
pairwise, counts kept exact) until it fits. Memory is O(languages x bins) whatever the corpus size; no
array of the corpus's activations exists anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from neuro.code.corpus import Snippet
from neuro.instrument.hooks import forward_until
from neuro.instrument.tokens import collate, encode, length_batches, real_token_mask
from neuro.model.loading import LoadedModel
from neuro.model.plan import batch_plan
from neuro.progress import Progress

DEFAULT_BINS = 128  # fixed bins over the range grown so far; the empty outer ones are trimmed from the result


class StreamingHistogram:
    """Counts per group in `bins` equal bins [origin + i * width, origin + (i + 1) * width), the range grown
    by doubling the width as values arrive (bin edges stay aligned, so merged counts are exact)."""

    def __init__(self, groups: int, bins: int = DEFAULT_BINS):
        if bins < 2 or bins % 2:
            raise ValueError("bins must be an even number >= 2")
        self.bins, self.groups = bins, groups
        self.counts: np.ndarray = np.zeros((groups, bins), dtype=np.int64)
        self.origin: float | None = None
        self.width = 0.0
        self.low = np.full(groups, np.inf)
        self.high = np.full(groups, -np.inf)

    @property
    def edges(self) -> np.ndarray:
        if self.origin is None:
            return np.zeros(0)
        return self.origin + self.width * np.arange(self.bins + 1)

    def _grow(self, up: bool) -> None:
        half = self.bins // 2
        merged = self.counts[:, 0::2] + self.counts[:, 1::2]
        self.counts = np.zeros_like(self.counts)
        if up:  # [o, o + B w) -> [o, o + 2 B w)
            self.counts[:, :half] = merged
        else:  # [o, o + B w) -> [o - B w, o + B w)
            assert self.origin is not None  # set by the first values added, before anything grows
            self.counts[:, half:] = merged
            self.origin -= self.bins * self.width
        self.width *= 2

    def add(self, group: np.ndarray, values: np.ndarray) -> None:
        group, values = np.asarray(group, dtype=np.int64).ravel(), np.asarray(values, dtype=np.float64).ravel()
        if not values.size:
            return
        if not np.isfinite(values).all():
            raise ValueError("activations contain NaN or inf")
        lo, hi = float(values.min()), float(values.max())
        if self.origin is None:
            span = hi - lo
            span = span if span > 0 else max(abs(lo) * 1e-3, 1e-6)
            self.width = span / (self.bins - 1)  # half a bin of margin each side: no value sits on an edge
            self.origin = lo - self.width / 2
        while lo < self.origin:
            self._grow(up=False)
        while hi >= self.origin + self.bins * self.width:
            self._grow(up=True)
        # binned against the edges a reader is shown (not a recomputed floor that may round the other way)
        index = np.clip(np.searchsorted(self.edges, values, side="right") - 1, 0, self.bins - 1)
        self.counts += np.bincount(group * self.bins + index, minlength=self.groups * self.bins).reshape(
            self.groups, self.bins)
        np.minimum.at(self.low, group, values)
        np.maximum.at(self.high, group, values)


@dataclass(frozen=True)
class ActivationHistogram:
    """counts[i, j]: real tokens of languages[i] whose activation lies in [edges[j], edges[j + 1]); the
    bins cover the data (empty outer bins trimmed). tokens: per language (the counts' row sums)."""

    layer: int
    neuron: int
    languages: list[str]
    edges: np.ndarray   # (bins + 1,)
    counts: np.ndarray  # (languages, bins) int64
    low: np.ndarray     # (languages,) smallest activation seen
    high: np.ndarray    # (languages,) largest

    @property
    def tokens(self) -> dict[str, int]:
        return {lang: int(c) for lang, c in zip(self.languages, self.counts.sum(1))}

    def frame(self):
        """Long table: language, low, high (bin edges), count, share (of the language's tokens)."""
        import pandas as pd

        rows = []
        for i, lang in enumerate(self.languages):
            total = max(int(self.counts[i].sum()), 1)
            for j, c in enumerate(self.counts[i]):
                rows.append({"language": lang, "low": float(self.edges[j]), "high": float(self.edges[j + 1]),
                             "count": int(c), "share": c / total})
        return pd.DataFrame(rows, columns=["language", "low", "high", "count", "share"])

    def summary(self) -> dict:
        return {"layer": self.layer, "neuron": self.neuron, "languages": self.languages,
                "edges": [float(e) for e in self.edges], "counts": self.counts.tolist(), "tokens": self.tokens,
                "min": {lang: float(v) for lang, v in zip(self.languages, self.low)},
                "max": {lang: float(v) for lang, v in zip(self.languages, self.high)}}


def _trimmed(hist: StreamingHistogram) -> tuple[np.ndarray, np.ndarray]:
    used = np.flatnonzero(hist.counts.sum(0))
    if not used.size:
        return np.zeros(1), np.zeros((hist.groups, 0), dtype=np.int64)
    first, last = int(used[0]), int(used[-1])
    return hist.edges[first:last + 2], hist.counts[:, first:last + 1]


def activation_histogram(loaded: LoadedModel, snippets: Sequence[Snippet], layer: int, neuron: int, *,
                         bins: int = DEFAULT_BINS, max_length: int = 512, batch_tokens: int | None = None,
                         max_batch: int = 32, progress: Progress | None = None) -> ActivationHistogram:
    """Histogram per language of neuron (layer, neuron)'s activation at every real token of `snippets`:
    forward passes that stop after `layer`, batches from the memory plan (neuro.model.plan)."""
    loaded.require_weights()
    sites = loaded.sites()
    if not 0 <= layer < len(sites) or not 0 <= neuron < loaded.n_neurons:
        raise ValueError(f"neuron ({layer}, {neuron}) is outside {len(sites)} layers x {loaded.n_neurons} neurons")
    if not snippets:
        raise ValueError("no programs to histogram")
    languages = list(dict.fromkeys(s.lang for s in snippets))
    lang_of = np.array([languages.index(s.lang) for s in snippets])
    encoded = [encode(loaded, s.code, max_length) for s in snippets]
    batch_tokens = batch_tokens or batch_plan(loaded, "forward", max_length).batch_tokens or max_length
    batches = length_batches([len(e.ids) for e in encoded], batch_tokens, max_batch)
    hist = StreamingHistogram(len(languages), bins)
    kept: dict[str, torch.Tensor] = {}

    def keep(a):
        if a.shape[-1] != loaded.n_neurons:
            raise RuntimeError(f"layer {layer}: captured width {a.shape[-1]} != {loaded.n_neurons}")
        kept["a"] = a[..., neuron].float()

    with loaded.hooks([(loaded.hook_sites.neuron_input(layer), keep)], inference=True):
        for done, batch in enumerate(batches, 1):
            ids, mask = collate([encoded[i] for i in batch], loaded.pad_id, loaded.device)
            forward_until(loaded, ids, mask, last_layer=layer)
            real = real_token_mask(loaded, ids, mask).bool().to(kept["a"].device)
            rows = torch.nonzero(real, as_tuple=True)[0].cpu().numpy()
            hist.add(lang_of[np.asarray(batch)][rows], kept.pop("a")[real].cpu().numpy())
            if progress:
                progress(done, len(batches))
    edges, counts = _trimmed(hist)
    return ActivationHistogram(layer, neuron, languages, edges, counts, hist.low, hist.high)
