"""Per-layer scores: each metric on data with a known answer, then the whole report on a tiny model."""

import numpy as np
import pandas as pd
import pytest

from neuro.layers import (cached_layer_report, choose_concept_layers, concept_layers, layer_report, linear_cka,
                          pair_alignment, probe_accuracy)
from neuro.store import Store


def test_pair_alignment_perfect_and_shuffled():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8))
    perfect = pair_alignment(x, x + 0.01 * rng.normal(size=x.shape))
    assert perfect.accuracy == 1.0 and perfect.mrr == 1.0 and perfect.cka > 0.99
    shuffled = pair_alignment(x, x[rng.permutation(20)])
    assert shuffled.accuracy < 0.3 and shuffled.mrr < 0.6


def test_linear_cka_invariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(50, 6))) < 0.5


def test_probe_accuracy_separable_versus_noise():
    rng = np.random.default_rng(2)
    labels = np.repeat(["a", "b", "c"], 30)
    centers = {"a": 0, "b": 5, "c": 10}
    separable = np.stack([rng.normal(centers[label], 0.5, size=4) for label in labels])
    assert probe_accuracy(separable, labels) > 0.95
    assert probe_accuracy(rng.normal(size=(90, 4)), labels) < 0.6
    assert np.isnan(probe_accuracy(separable[:2], labels[:2]))


def test_concept_rule():
    lang_id = [1.0, 1.0, 0.95, 0.7, 0.72, 0.9, 0.98, 1.0]
    align = [0.1, 0.2, 0.5, 0.9, 0.88, 0.6, 0.3, 0.2]
    choice = choose_concept_layers(lang_id, align)
    assert choice.layers == [3, 4] and "fallen" in choice.rule
    flat = choose_concept_layers([1.0] * 8, align)
    assert flat.layers == [3, 4] and "alignment alone" in flat.rule


def test_report_on_tiny_model_and_cache(tiny_llama, snippets, tmp_path):
    report = layer_report(tiny_llama, snippets, tokens_per_snippet=6)
    assert list(report.scores.layer) == [0, 1, 2]
    for column in ("lang_id_acc", "align_acc", "align_mrr", "align_cka", "syntax_acc", "contribution"):
        assert column in report.scores
    assert set(report.pairs.query_lang) == {"python", "go", "java"}
    matrix = report.pair_matrix(1)
    assert matrix.shape == (3, 3) and np.isnan(matrix.loc["go", "go"])
    assert all(0 <= x < 3 for x in report.concept_layers)
    assert report.normalized().value.dropna().between(0, 1).all()
    store = Store(tmp_path)
    first = cached_layer_report(tiny_llama, snippets, store=store, tokens_per_snippet=6)
    again = cached_layer_report(tiny_llama, snippets, store=store, tokens_per_snippet=6, compute=False)
    assert again is not None and again.concept_layers == first.concept_layers
    pd.testing.assert_frame_equal(again.scores, first.scores)
    override = layer_report(tiny_llama, snippets, contribution=False, concept_override=[2])
    assert override.concept_layers == [2] and "user" in override.rule
    assert concept_layers(tiny_llama, snippets, store=store)
