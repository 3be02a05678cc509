"""Cached pooled states and projections."""

import numpy as np

from neuro.capture import pooled_states
from neuro.embeddings import cached_pooled, cached_projection
from neuro.store import Store


def test_cached_pooled_and_projection(tiny_llama, snippets, tmp_path):
    store = Store(tmp_path)
    pooled = cached_pooled(tiny_llama, snippets, store=store)
    np.testing.assert_allclose(pooled, pooled_states(tiny_llama, snippets), rtol=1e-5)
    xy, hit = cached_projection(tiny_llama, snippets, layer=1, store=store)
    assert xy.shape == (len(snippets), 2) and not hit and np.isfinite(xy).all()
    again, hit = cached_projection(tiny_llama, snippets, layer=1, store=store)
    assert hit
    np.testing.assert_array_equal(again, xy)
