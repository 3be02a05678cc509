"""Cached pooled states and projections."""

import numpy as np

from neuro.instrument.states import pooled_states
from neuro.results import open_store
from neuro.results.embeddings import POOLED, PROJECTION


def test_cached_pooled_and_projection(tiny_llama, snippets, tmp_path):
    store = open_store(tmp_path)
    pooled = POOLED.get(tiny_llama, snippets, cache=store)
    np.testing.assert_allclose(pooled, pooled_states(tiny_llama, snippets), rtol=1e-5)
    xy, hit = PROJECTION.fetch(tiny_llama, snippets, layer=1, cache=store)
    assert xy.shape == (len(snippets), 2) and not hit and np.isfinite(xy).all()
    again, hit = PROJECTION.fetch(tiny_llama, snippets, layer=1, cache=store)
    assert hit
    np.testing.assert_array_equal(again, xy)


def test_projection_of_language_centred_states(tiny_llama, snippets, tmp_path, monkeypatch):
    import neuro.results.embeddings as embeddings

    store = open_store(tmp_path)
    raw = PROJECTION.get(tiny_llama, snippets, layer=1, cache=store)
    seen = []
    real = embeddings.project_2d
    monkeypatch.setattr(embeddings, "project_2d", lambda points, seed=0: seen.append(points) or real(points, seed))
    centred, hit = PROJECTION.fetch(tiny_llama, snippets, layer=1, center="language", cache=store)
    assert not hit and centred.shape == raw.shape  # its own cache entry
    pooled = POOLED.get(tiny_llama, snippets, cache=store)[:, 1]
    np.testing.assert_allclose(seen[0], embeddings.centred_rows(pooled, snippets, "language"), rtol=1e-6)
    assert PROJECTION.fetch(tiny_llama, snippets, layer=1, center="language", cache=store)[1]


def test_results_cached_before_the_pooling_change_are_not_reused(tiny_llama, snippets, tmp_path):
    from neuro.code.corpus import corpus_hash
    from neuro.results.store import Entry, make_key

    store = open_store(tmp_path)
    stale = make_key(POOLED.kind, model=tiny_llama.identity, corpus=corpus_hash(snippets), max_length=512)
    store.save(POOLED.kind, stale, Entry(arrays={"pooled": np.zeros((len(snippets), 3, 32), np.float32)}))
    assert POOLED.version >= 2 and POOLED.key(tiny_llama, snippets) != stale
    pooled = POOLED.get(tiny_llama, snippets, cache=store)  # recomputed, not the stale zeros
    np.testing.assert_allclose(pooled, pooled_states(tiny_llama, snippets), rtol=1e-5)


def test_cache_keys_are_those_the_cache_already_holds(tiny_llama, snippets):
    """Each recipe keys its entries as the code before the recipes did, so existing caches stay valid
    (a recipe whose key must change bumps its version instead)."""
    from dataclasses import asdict

    from neuro.code.corpus import corpus_hash
    from neuro.code.split import split_corpus
    from neuro.instrument.statistics import STATS_VERSION
    from neuro.results.clones import CLONE_EVAL
    from neuro.results.embeddings import LAYER_EMBEDDINGS
    from neuro.results.layers import LAYER_REPORT
    from neuro.results.statistics import STATS
    from neuro.results.store import make_key

    model, corpus = tiny_llama.identity, corpus_hash(snippets)
    split = split_corpus(snippets)
    selection = corpus_hash(split.selection)
    expected = {
        POOLED.key(tiny_llama, snippets, max_length=64):
            make_key("pooled_states", model=model, corpus=corpus, max_length=64, version=2),
        LAYER_EMBEDDINGS.key(tiny_llama, snippets, layer=1):
            make_key("clone_embeddings", model=model, corpus=corpus, layer=1, max_length=512, version=2),
        PROJECTION.key(tiny_llama, snippets, layer=2, center="language"):
            make_key("projection", model=model, corpus=corpus, layer=2, seed=0, center="language", version=2),
        STATS.key(tiny_llama, snippets, top_k=4):
            make_key("corpus_stats", model=model, corpus=corpus, version=STATS_VERSION, gradients=True, syntax=True,
                     top_k=4, max_length=512),
        LAYER_REPORT.key(tiny_llama, split, contribution=False):
            make_key("layer_scores", model=model, corpus=selection, pooled=2, version=3, contribution=False),
        CLONE_EVAL.key(tiny_llama, snippets, split=split):
            make_key("clone_eval", model=model, corpus=corpus, layer=None, center="language", strip=False,
                     max_length=512, split=asdict(split.params), version=4, pooled=2),
    }
    for new, old in expected.items():
        assert new == old


def test_umap_is_compiled_once_per_process(tiny_llama, snippets, tmp_path):
    """The Embeddings page compiles UMAP before its timed fits: after any fit, nothing is left to compile."""
    from neuro.analysis.embeddings import compile_projection

    PROJECTION.get(tiny_llama, snippets, layer=0, cache=open_store(tmp_path))
    assert compile_projection() is False
