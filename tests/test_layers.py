"""Per-layer scores: each metric on data with a known answer, then the whole report on a tiny model."""

import numpy as np
import pandas as pd
import pytest

from neuro.analysis.layers import choose_concept_layers, layer_report, linear_cka, pair_alignment, probe_accuracy
from neuro.results import open_store
from neuro.results.layers import LAYER_REPORT, concept_layers


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
    store = open_store(tmp_path)
    first = LAYER_REPORT.get(tiny_llama, snippets, cache=store, tokens_per_snippet=6)
    again = LAYER_REPORT.get(tiny_llama, snippets, cache=store, tokens_per_snippet=6, compute=False)
    assert again is not None and again.concept_layers == first.concept_layers
    pd.testing.assert_frame_equal(again.scores, first.scores)
    override = layer_report(tiny_llama, snippets, contribution=False, concept_override=[2])
    assert override.concept_layers == [2] and "user" in override.rule
    assert concept_layers(tiny_llama, snippets, cache=store)


def test_concept_layers_are_chosen_on_the_selection_side(tiny_llama, snippets, tmp_path):
    from neuro.code.split import split_corpus
    from neuro.results.layers import default_concept_layer

    split = split_corpus(snippets)  # seed 0: "rev" is evaluated; "add" is the only parallel task left
    store = open_store(tmp_path)
    report = LAYER_REPORT.get(tiny_llama, split, cache=store, contribution=False, tokens_per_snippet=4)
    again = LAYER_REPORT.get(tiny_llama, split.selection, cache=store, contribution=False, tokens_per_snippet=4,
                             compute=False)
    assert again is not None and len(store.entries(LAYER_REPORT.kind)) == 1  # a split means its selection side
    assert report.meta["snippets"] == len(split.selection) and report.pairs.empty
    # No language pair shares two tasks there: the middle layer stands in, and the rule says why.
    assert report.concept_layers == [1] and "middle layer" in report.rule
    assert concept_layers(tiny_llama, split, cache=store) == concept_layers(tiny_llama, split.selection, cache=store)
    assert default_concept_layer(tiny_llama, split, cache=store) == 1


def test_layers_cli_reports_the_split(tiny_env, snippets, tmp_path, capsys):
    import json

    from neuro.cli import main
    from neuro.code.split import SplitParams, split_corpus

    tiny_env(folder=tmp_path, corpus=snippets)
    code = main(["layers", "--no-contribution", "--tokens-per-snippet", "4", "--eval-fraction", "0.3",
                 "--split-seed", "2", "--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "corpus.jsonl"),
                 "--cache", str(tmp_path / "cache"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    split = split_corpus(snippets, SplitParams(eval_fraction=0.3, seed=2))  # only "sum/python" is evaluated
    assert code == 0 and summary["split"] == split.summary() and summary["snippets"] == len(split.selection) == 6
    assert [row["layer"] for row in summary["layers"]] == [0, 1, 2]


# --------------------------------------------------------------------------- the probe converges

def _collinear_states(n=1200, p=512, rank=16, classes=12, seed=0):
    """Like early-layer hidden states: p features mixing a few latent directions whose scales fall from
    1 to 1e-4, and labels that depend on the faint directions too. Standardizing leaves this
    ill-conditioned; L-BFGS with max_iter=300 stopped short on it with a ConvergenceWarning."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, rank))
    x = (z * np.logspace(0, -4, rank)) @ rng.normal(size=(rank, p)) + 1e-3 * rng.normal(size=(n, p))
    y = (z @ rng.normal(size=(rank, classes)) + rng.gumbel(size=(n, classes))).argmax(1)
    return x, y


@pytest.fixture()
def strict():
    """A ConvergenceWarning fails the test."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        yield


def test_probe_on_separable_and_random_high_dimensional_data(strict):
    """n_samples < n_features: always separable, so only the L2 term bounds the fit."""
    from neuro.analysis.layers import make_probe

    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], 40)
    means = 0.6 * rng.normal(size=(3, 400))
    x = means[labels] + rng.normal(size=(120, 400))
    held = rng.permutation(120)
    train, test = held[:60], held[60:]
    assert make_probe().fit(x[train], labels[train]).score(x[test], labels[test]) == 1.0
    assert probe_accuracy(x, labels) == 1.0
    noise = rng.normal(size=(120, 400))
    assert make_probe().fit(noise[train], labels[train]).score(noise[train], labels[train]) == 1.0  # memorized
    assert abs(probe_accuracy(noise, labels) - 1 / 3) < 0.15  # and nothing learned


def test_probe_converges_on_collinear_states(strict):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _collinear_states()
    accuracy = probe_accuracy(x, y, folds=3)
    # the same model fitted to convergence by L-BFGS given all the iterations it wants
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=20_000))
    expected = cross_val_score(reference, x, y, cv=StratifiedKFold(3, shuffle=True, random_state=0)).mean()
    assert accuracy == pytest.approx(expected, abs=0.01)
    assert accuracy > 3 / 12  # far above chance (1/12)


def test_probe_on_pooled_states_of_a_tiny_model(tiny_llama, snippets, strict):
    from neuro.instrument.states import layer_states

    states = layer_states(tiny_llama, snippets, tokens_per_snippet=6)
    langs = [s.lang for s in snippets]
    for layer in range(tiny_llama.n_layers):
        assert 0.0 <= probe_accuracy(states.pooled[:, layer], langs) <= 1.0
        tokens = states.tokens[:, layer]
        labels = np.array([snippets[int(i)].lang for i in states.token_index[:, 0]])
        assert 0.0 <= probe_accuracy(tokens, labels, folds=3) <= 1.0


def test_concept_layers_report_progress_only_while_computing(tiny_llama, snippets, tmp_path):
    """The Transfer page's bar: reports that end at done == total while the scores are computed, none
    once they are cached."""
    store = open_store(tmp_path)
    first, again = [], []
    layers = concept_layers(tiny_llama, snippets, cache=store, progress=lambda done, total: first.append((done, total)))
    assert first and first[-1][0] == first[-1][1] and all(d <= t for d, t in first)
    assert [d for d, _ in first] == sorted(d for d, _ in first)
    assert concept_layers(tiny_llama, snippets, cache=store, progress=lambda d, t: again.append((d, t))) == layers
    assert again == []
