"""Cached pooled states and projections."""

import numpy as np

from neuro.instrument.states import pooled_states
from neuro.results.embeddings import cached_pooled, cached_projection
from neuro.results.store import Store


def test_cached_pooled_and_projection(tiny_llama, snippets, tmp_path):
    store = Store(tmp_path)
    pooled = cached_pooled(tiny_llama, snippets, store=store)
    np.testing.assert_allclose(pooled, pooled_states(tiny_llama, snippets), rtol=1e-5)
    xy, hit = cached_projection(tiny_llama, snippets, layer=1, store=store)
    assert xy.shape == (len(snippets), 2) and not hit and np.isfinite(xy).all()
    again, hit = cached_projection(tiny_llama, snippets, layer=1, store=store)
    assert hit
    np.testing.assert_array_equal(again, xy)


def test_projection_of_language_centred_states(tiny_llama, snippets, tmp_path, monkeypatch):
    import neuro.results.embeddings as embeddings

    store = Store(tmp_path)
    raw, _ = cached_projection(tiny_llama, snippets, layer=1, store=store)
    seen = []
    real = embeddings.project_2d
    monkeypatch.setattr(embeddings, "project_2d", lambda points, seed=0: seen.append(points) or real(points, seed))
    centred, hit = cached_projection(tiny_llama, snippets, layer=1, center="language", store=store)
    assert not hit and centred.shape == raw.shape  # its own cache entry
    pooled = cached_pooled(tiny_llama, snippets, store=store)[:, 1]
    np.testing.assert_allclose(seen[0], embeddings.centred_rows(pooled, snippets, "language"), rtol=1e-6)
    assert cached_projection(tiny_llama, snippets, layer=1, center="language", store=store)[1]


def test_results_cached_before_the_pooling_change_are_not_reused(tiny_llama, snippets, tmp_path):
    from neuro.code.corpus import corpus_hash
    from neuro.results.embeddings import POOLED_KIND, POOLED_VERSION, pooled_key
    from neuro.results.store import Entry, make_key

    store = Store(tmp_path)
    stale = make_key(POOLED_KIND, model=tiny_llama.identity, corpus=corpus_hash(snippets), max_length=512)
    store.save(POOLED_KIND, stale, Entry(arrays={"pooled": np.zeros((len(snippets), 3, 32), np.float32)}))
    assert POOLED_VERSION >= 2 and pooled_key(tiny_llama, snippets) != stale
    pooled = cached_pooled(tiny_llama, snippets, store=store)  # recomputed, not the stale zeros
    np.testing.assert_allclose(pooled, pooled_states(tiny_llama, snippets), rtol=1e-5)
