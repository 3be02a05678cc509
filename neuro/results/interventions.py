"""Cached results of the intervention tools: per-language mean activations (what the "mean" operation sets a
neuron to) and the steering sweep (neuro.analysis.steering)."""

from __future__ import annotations

import numpy as np

from neuro.instrument.means import LanguageMeans, language_means
from neuro.results.recipe import Call, Recipe, picked
from neuro.results.store import Entry


def _means(call: Call) -> Entry:
    result = language_means(call.loaded, call.snippets, max_length=call.args["max_length"], progress=call.progress)
    return Entry(arrays={"means": result.means, "tokens": result.tokens}, meta={"languages": result.languages})


MEANS: Recipe[LanguageMeans] = Recipe(
    kind="neuron_means", version=1, compute=_means, key_parts=picked("max_length"), defaults=dict(max_length=512),
    read=lambda entry: LanguageMeans(list(entry.meta["languages"]), np.asarray(entry.arrays["means"]),
                                     np.asarray(entry.arrays["tokens"])))
"""Each neuron's mean activation over each language's programs (real tokens), one forward pass: the values the
"mean" intervention uses; computed on the selection side of the split (the programs neurons are chosen on)."""
