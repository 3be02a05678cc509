"""Neuron selection on statistics whose right answer is known by construction, plus one real capture."""

from __future__ import annotations

import json

import math
import time

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy
from scipy.stats import spearmanr

from neuro.analysis.selectivity import (
    LapeParams,
    NeuronSelection,
    SelectionParams,
    cluster_languages,
    language_relations,
    language_similarity,
    lape_entropy,
    overlap,
    select_lape,
    select_lape_scores,
    select_neurons,
    select_pls,
    select_pls_scores,
    similarity_matrix,
    top_count,
)
from neuro.instrument.statistics import CorpusStats, capture_statistics

RAW = SelectionParams(normalize="none")  # the paper's raw comparison
LANGS = ["cpp", "java", "python", "go", "javascript"]


def make_stats(pls: np.ndarray | None, prob: np.ndarray | None = None, languages=LANGS) -> CorpusStats:
    """CorpusStats whose pls() and activation_probability() return exactly the given arrays."""
    shape = (pls if pls is not None else prob).shape
    samples = np.full(len(languages), 4.0)
    tokens = np.full(len(languages), 100.0)
    prob = np.zeros(shape) if prob is None else prob
    return CorpusStats(list(languages), act_abs_sum=np.ones(shape), active_count=prob * tokens[:, None, None],
                       pls_sum=None if pls is None else pls * samples[:, None, None], tokens=tokens,
                       samples=samples, loss_sum=np.zeros(len(languages)))


def background(layers=4, neurons=250, seed=0, low=0.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, size=(len(LANGS), layers, neurons))


def reference_pls_classes(pls: np.ndarray, params: SelectionParams) -> list[str]:
    """The rules written out neuron by neuron (Python loops, sorted lists): an independent oracle."""
    n_langs = pls.shape[0]
    cols = [list(v) for v in pls.reshape(n_langs, -1).T]
    maxes = [max(v) for v in cols]
    mins = [min(v) for v in cols]
    threshold = float(np.quantile(maxes, params.candidate_quantile))
    k = max(1, round(params.top_fraction * len(cols)))
    top_by_max = set(sorted(range(len(cols)), key=lambda i: (-maxes[i], i))[:k])
    top_by_min = set(sorted(range(len(cols)), key=lambda i: (-mins[i], i))[:k])
    out = []
    for i, v in enumerate(cols):
        first, second = sorted(v, reverse=True)[:2]
        ratio = math.inf if second == 0 and first > 0 else (1.0 if first == 0 else first / second)
        if first >= threshold and first > 0 and ratio >= params.ratio and i in top_by_max:
            out.append("specific")
        elif mins[i] >= threshold and mins[i] > 0 and i in top_by_min:
            out.append("universal")
        else:
            out.append("other")
    return out


def assert_consistent(sel: NeuronSelection) -> None:
    """Every row's class agrees with its own ratio / threshold / rank columns."""
    f, p = sel.frame, sel.params
    k = top_count(len(f), p.top_fraction)
    top_by_max = f["max_pls"].rank(method="first", ascending=False) <= k
    top_by_min = f["min_pls"].rank(method="first", ascending=False) <= k
    spec = (f["max_pls"] >= sel.threshold) & (f["max_pls"] > 0) & (f["ratio"] >= p.ratio) & top_by_max
    univ = (f["min_pls"] >= sel.threshold) & (f["min_pls"] > 0) & top_by_min & ~spec
    assert (f["cls"] == "specific").equals(spec)
    assert (f["cls"] == "universal").equals(univ)
    np.testing.assert_allclose(f["max_pls"], f[sel.value_columns].max(axis=1))
    spec_rows = f[spec]
    assert (spec_rows["langs"].astype(str) == spec_rows["top_lang"].astype(str)).all()
    assert (f.loc[~spec, "langs"].astype(str) == "").all()


# --------------------------------------------------------------------------- PLS selection

def planted():
    pls = background(low=0.5, high=0.7)                  # no background neuron reaches ratio 1.5
    pls[:, 1, 7] = 0.01
    pls[LANGS.index("go"), 1, 7] = 50.0                  # only Go: specific to go
    pls[:, 2, 3] = 40.0                                  # high everywhere: universal
    pls[:, 3, 5] = 0.01
    pls[LANGS.index("python"), 3, 5] = 30.0              # top / second = 1.4: not specific
    pls[LANGS.index("java"), 3, 5] = 30.0 / 1.4
    pls[:, 0, 9] = 0.01
    pls[LANGS.index("cpp"), 0, 9] = 45.0                 # top / second = 1.5 exactly: specific (>=)
    pls[LANGS.index("javascript"), 0, 9] = 30.0
    return pls


def test_planted_neurons_get_their_classes():
    sel = select_pls(make_stats(planted()), RAW)
    f = sel.frame.set_index(["layer", "neuron"])
    assert f.loc[(1, 7), "cls"] == "specific" and f.loc[(1, 7), "top_lang"] == "go"
    assert f.loc[(1, 7), "ratio"] == pytest.approx(5000.0) and f.loc[(1, 7), "max_pls"] == 50.0
    assert f.loc[(2, 3), "cls"] == "universal"
    assert f.loc[(3, 5), "cls"] == "other"
    assert f.loc[(3, 5), "ratio"] == pytest.approx(1.4)
    assert (f.loc[(3, 5), "top_lang"], f.loc[(3, 5), "second_lang"]) == ("python", "java")
    assert f.loc[(0, 9), "cls"] == "specific" and f.loc[(0, 9), "top_lang"] == "cpp"
    assert f.loc[(0, 9), "ratio"] == pytest.approx(1.5)
    assert sel.neurons_for("go", as_pairs=True) == [(1, 7)]
    assert sel.universal_neurons(as_pairs=True) == [(2, 3)]
    go = sel.neurons_for("go")
    assert list(go) == [1] and go[1].tolist() == [7]
    assert sel.neurons_for("python") == {}
    assert set(sel.selected()["cls"]) == {"specific", "universal"} and len(sel.selected()) == 3
    assert sel.method == "pls" and (sel.frame["method"] == "pls").all()
    assert len(sel.frame) == 4 * 250
    assert_consistent(sel)


def test_ratio_param_changes_the_boundary():
    sel = select_pls(make_stats(planted()), SelectionParams(ratio=1.3, normalize="none"))
    f = sel.frame.set_index(["layer", "neuron"])
    assert f.loc[(3, 5), "cls"] == "specific" and f.loc[(3, 5), "langs"] == "python"
    sel = select_pls(make_stats(planted()), SelectionParams(ratio=1.6, normalize="none"))
    assert sel.frame.set_index(["layer", "neuron"]).loc[(0, 9), "cls"] == "other"


@pytest.mark.parametrize("q", [0.9, 0.5, 0.99])
def test_threshold_is_the_quantile_of_max_pls(q):
    pls = background(seed=3)
    sel = select_pls_scores(pls, LANGS, SelectionParams(candidate_quantile=q))
    assert sel.threshold == pytest.approx(np.quantile(pls.max(axis=0), q))
    assert sel.params.candidate_quantile == q


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.003])
def test_top_fraction_cut_keeps_exactly_k(fraction):
    # Every neuron is strongly specific (one language 10x the others), so only the top cut binds.
    rng = np.random.default_rng(1)
    pls = np.ones((5, 4, 250))
    winners = rng.integers(0, 5, size=1000)
    values = rng.permutation(np.arange(1000.0)) + 10
    pls.reshape(5, -1)[winners, np.arange(1000)] = values
    sel = select_pls_scores(pls * 1.0, LANGS, SelectionParams(candidate_quantile=0.0, top_fraction=fraction))
    k = round(fraction * 1000)
    assert (sel.frame["cls"] == "specific").sum() == k
    assert set(sel.frame.loc[sel.frame["cls"] == "specific", "max_pls"]) == set(np.sort(values)[-k:])


def test_top_cut_with_ties_is_exact():
    pls = np.ones((5, 2, 100))
    pls[0] = 10.0                                          # 200 neurons all tied, all specific to cpp
    sel = select_pls_scores(pls, LANGS, SelectionParams(candidate_quantile=0.0, top_fraction=0.05))
    assert (sel.frame["cls"] == "specific").sum() == 10
    assert sel.counts_by_language()["cpp"] == 10


def test_candidate_threshold_binds_when_top_fraction_is_loose():
    pls = background(seed=5)
    sel = select_pls_scores(pls, LANGS, SelectionParams(candidate_quantile=0.9, ratio=1.0, top_fraction=0.5))
    n_spec = (sel.frame["cls"] == "specific").sum()
    assert n_spec == (pls.max(axis=0) >= sel.threshold).sum()
    assert n_spec == pytest.approx(100, abs=1)
    assert (sel.frame.loc[sel.frame["cls"] == "specific", "max_pls"] >= sel.threshold).all()


def test_matches_neuron_by_neuron_reference():
    rng = np.random.default_rng(7)
    pls = rng.lognormal(size=(5, 3, 400)) * rng.choice([0.2, 1.0, 5.0], size=(1, 3, 400))
    pls[:, 1, :40] *= 20                                  # a band of strong neurons, some universal
    for params in [SelectionParams(), SelectionParams(0.5, 1.2, 0.05), SelectionParams(0.95, 2.0, 0.02)]:
        sel = select_pls_scores(pls, LANGS, params)
        assert sel.frame["cls"].astype(str).tolist() == reference_pls_classes(pls, params)
        assert_consistent(sel)


def test_dead_neurons_are_never_selected():
    pls = np.zeros((5, 2, 100))
    pls[2, 0, 0] = 1.0
    sel = select_pls_scores(pls, LANGS, SelectionParams(candidate_quantile=0.9, top_fraction=0.5))
    assert sel.threshold == 0.0
    assert sel.neurons_for("python", as_pairs=True) == [(0, 0)]
    assert (sel.frame["cls"] == "specific").sum() == 1 and (sel.frame["cls"] == "universal").sum() == 0
    assert sel.frame["ratio"].iloc[0] == math.inf and sel.frame["ratio"].iloc[1] == 1.0


def test_counts_are_consistent():
    pls = background(seed=11)
    pls[:, 0, :6] = 40 + np.arange(6)                      # high everywhere: universal
    pls[3, 2, 10:20] *= 60                                 # go-specific band in layer 2
    sel = select_pls_scores(pls, LANGS, SelectionParams(top_fraction=0.03))
    by_lang, by_layer = sel.counts_by_language(), sel.counts_by_layer()
    assert list(by_layer.columns) == LANGS + ["universal"] and len(by_layer) == 4
    assert by_layer.sum().to_dict() == by_lang
    assert by_lang["go"] >= 10 and by_layer.loc[2, "go"] >= 10 and by_lang["universal"] >= 6
    spec = (sel.frame["cls"] == "specific").sum()
    assert sum(v for k, v in by_lang.items() if k != "universal") == spec
    share = sel.share()
    assert sum(share.values()) == pytest.approx(1.0)
    assert share["specific"] == pytest.approx(spec / 1000)
    assert sum(len(v) for v in sel.neurons_for("go").values()) == by_lang["go"]
    summary = sel.summary()
    assert summary["counts"] == by_lang and summary["params"]["ratio"] == 1.5


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="two"):
        select_pls_scores(np.ones((1, 2, 3)), ["go"])
    with pytest.raises(ValueError, match="languages"):
        select_pls_scores(np.ones((3, 2, 3)), LANGS)
    with pytest.raises(ValueError, match="NaN"):
        select_pls_scores(np.full((5, 2, 3), np.nan), LANGS)
    with pytest.raises(ValueError, match="gradients"):
        select_pls(make_stats(None, prob=np.ones((5, 2, 3))))
    with pytest.raises(ValueError):
        SelectionParams(ratio=0.5)
    with pytest.raises(ValueError):
        SelectionParams(top_fraction=0.0)
    with pytest.raises(ValueError):
        LapeParams(filter_quantile=1.5)
    with pytest.raises(ValueError, match="unknown"):
        select_neurons(make_stats(planted()), method="nope")
    with pytest.raises(TypeError):
        select_neurons(make_stats(planted()), method="lape", params=SelectionParams())
    with pytest.raises(ValueError, match="unknown language"):
        select_pls(make_stats(planted())).neurons_for("rust")


# --------------------------------------------------------------------------- LAPE

def lape_planted():
    rng = np.random.default_rng(2)
    prob = rng.uniform(0.3, 0.6, size=(5, 4, 250))        # busy everywhere: high entropy
    plants = {(0, 1): ["go"], (1, 2): ["python"], (2, 3): ["cpp"], (3, 4): ["javascript"], (3, 5): ["cpp", "java"]}
    for (layer, n), langs in plants.items():
        prob[:, layer, n] = 0.01
        for lang in langs:
            prob[LANGS.index(lang), layer, n] = 0.9
    prob[:, 0, 0] = 0.0001
    prob[LANGS.index("go"), 0, 0] = 0.05                  # lowest entropy but rarely active: filtered out
    return prob, plants


def test_lape_entropy_matches_scipy():
    prob = np.random.default_rng(0).uniform(0, 1, size=(5, 50))
    prob[:, 0] = 0.0
    prob[1:, 1] = 0.0
    expected = [scipy_entropy(prob[:, i]) if prob[:, i].sum() > 0 else 0.0 for i in range(50)]
    np.testing.assert_allclose(lape_entropy(prob), expected, atol=1e-12)
    assert lape_entropy(prob)[1] == 0.0


def test_lape_finds_planted_low_entropy_neurons():
    prob, plants = lape_planted()
    sel = select_lape(make_stats(None, prob=prob))
    f = sel.frame.set_index(["layer", "neuron"])
    assert sel.method == "lape" and "entropy" in sel.frame and "prob_go" in sel.frame
    for key, langs in plants.items():
        assert f.loc[key, "cls"] == "specific"
        assert f.loc[key, "langs"].split(",") == sorted(langs, key=LANGS.index)
        assert f.loc[key, "top_lang"] in langs
    assert f.loc[(0, 0), "cls"] == "other"                # lowest entropy of all, but below the filter
    assert f.loc[(0, 0), "entropy"] == f["entropy"].min()
    assert sel.threshold == pytest.approx(np.quantile(prob, 0.95))
    assert sel.extra["filter_value"] == pytest.approx(np.quantile(prob, 0.95))
    assert (sel.frame["cls"] != "other").sum() <= top_count(1000, 0.01)
    assert sel.neurons_for("java", as_pairs=True) == [(3, 5)]
    assert (3, 5) in sel.neurons_for("cpp", as_pairs=True)
    # The neuron of two languages counts once in each, so per-layer sums still equal per-language counts.
    assert sel.counts_by_layer().sum().to_dict() == sel.counts_by_language()
    kept = sel.frame[sel.frame["cls"] == "specific"]
    langs = kept["langs"].astype(str).str.split(",")
    for row_langs, (_, row) in zip(langs, kept.iterrows(), strict=True):
        assert all(row[f"prob_{lang}"] > sel.threshold for lang in row_langs)


def test_lape_keeps_the_lowest_entropy_eligible_neurons():
    prob = np.random.default_rng(4).uniform(0.0, 1.0, size=(5, 2, 500))
    params = LapeParams(top_fraction=0.02, filter_quantile=0.9, activation_quantile=0.9)
    sel = select_lape_scores(prob, LANGS, params)
    f = sel.frame
    eligible = (prob.reshape(5, -1) > sel.extra["filter_value"]).any(axis=0)
    expected = np.argsort(np.where(eligible, f["entropy"].to_numpy(), np.inf), kind="stable")[:20]
    assert set(np.flatnonzero(f["cls"] != "other")) == set(expected)


def test_lape_neuron_active_everywhere_is_universal():
    prob = np.random.default_rng(6).uniform(0.0, 0.5, size=(5, 1, 100))
    prob[:, 0, 0] = 0.9
    sel = select_lape_scores(prob, LANGS, LapeParams(top_fraction=1.0))
    assert sel.frame.loc[0, "cls"] == "universal" and sel.frame.loc[0, "langs"] == ""
    assert sel.universal_neurons(as_pairs=True) == [(0, 0)]


def test_select_neurons_dispatches():
    stats = make_stats(planted(), prob=lape_planted()[0])
    assert select_neurons(stats).method == "pls"
    assert select_neurons(stats, "lape", LapeParams(top_fraction=0.02)).params.top_fraction == 0.02


# --------------------------------------------------------------------------- overlap

def test_overlap_arithmetic():
    pls1, pls2 = np.ones((5, 2, 100)), np.ones((5, 2, 100))
    go = LANGS.index("go")
    pls1[go, 0, 0], pls1[go, 0, 1] = 100.0, 90.0
    pls2[go, 0, 1], pls2[go, 1, 2] = 100.0, 90.0
    a = select_pls_scores(pls1, LANGS)
    b = select_pls_scores(pls2, LANGS)
    table = overlap(a, b)
    assert table.loc["go"].tolist()[:3] == [1, 2, 2]
    assert table.loc["go", "jaccard"] == pytest.approx(1 / 3)
    assert table.loc["cpp", ["intersection", "a", "b"]].tolist() == [0, 0, 0]
    assert math.isnan(table.loc["cpp", "jaccard"])
    assert overlap(a, a).loc["go", "jaccard"] == 1.0


def test_overlap_of_pls_and_lape_matches_sets():
    pls = background(seed=9)
    pls[3, 1, :5] *= 40
    prob, _ = lape_planted()
    stats = make_stats(pls, prob=prob)
    a, b = select_pls(stats, SelectionParams(top_fraction=0.02)), select_lape(stats, LapeParams(top_fraction=0.02))
    table = overlap(a, b)
    assert list(table.index) == LANGS
    for lang in LANGS:
        sa, sb = set(a.neurons_for(lang, as_pairs=True)), set(b.neurons_for(lang, as_pairs=True))
        assert table.loc[lang, ["intersection", "a", "b"]].tolist() == [len(sa & sb), len(sa), len(sb)]
    with pytest.raises(ValueError, match="shapes"):
        overlap(a, select_pls_scores(np.ones((5, 1, 10)), LANGS))


# --------------------------------------------------------------------------- language relations

def related_vectors():
    rng = np.random.default_rng(12)
    base = rng.lognormal(size=(5, 3, 200))
    base[LANGS.index("go")] = base[LANGS.index("python")] * rng.uniform(0.98, 1.02, size=(3, 200))
    return base


@pytest.mark.parametrize("method", ["cosine", "spearman"])
def test_similarity_is_symmetric_with_unit_diagonal(method):
    pls = related_vectors()
    sim = language_similarity(make_stats(pls), method=method, params=RAW)
    assert list(sim.index) == LANGS and list(sim.columns) == LANGS
    np.testing.assert_allclose(sim.to_numpy(), sim.to_numpy().T)
    np.testing.assert_allclose(np.diag(sim.to_numpy()), 1.0)
    assert ((sim.to_numpy() >= -1) & (sim.to_numpy() <= 1)).all()
    flat = pls.reshape(5, -1)
    if method == "spearman":
        expected = spearmanr(flat, axis=1).statistic
    else:
        unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
        expected = unit @ unit.T
    np.testing.assert_allclose(sim.to_numpy(), expected, atol=1e-9)
    assert sim.loc["python", "go"] > 0.99 and sim.loc["python", "go"] == sim.to_numpy()[~np.eye(5, dtype=bool)].max()


@pytest.mark.parametrize("method", ["cosine", "spearman"])
def test_near_identical_languages_cluster_first(method):
    rel = language_relations(make_stats(related_vectors()), method=method, params=RAW)
    first = sorted(rel.tree.linkage[0, :2].astype(int))
    assert first == sorted([LANGS.index("python"), LANGS.index("go")])
    leaves = rel.tree.leaves
    assert sorted(leaves) == sorted(LANGS) and abs(leaves.index("python") - leaves.index("go")) == 1
    segments = rel.tree.segments()
    assert len(segments) == 3 * (len(LANGS) - 1)
    assert segments["y"].max() == pytest.approx(rel.tree.linkage[-1, 2])
    assert rel.tree.leaf_positions()["x"].tolist() == [5.0, 15.0, 25.0, 35.0, 45.0]
    assert np.all(np.diff(rel.tree.linkage[:, 2]) >= -1e-12)


def test_candidates_only_restricts_the_vectors():
    pls = related_vectors()
    stats = make_stats(pls)
    everything = language_similarity(stats, params=RAW)
    candidates = language_similarity(stats, candidates_only=True,
                                     params=SelectionParams(candidate_quantile=0.5, normalize="none"))
    flat = pls.reshape(5, -1)
    keep = flat.max(axis=0) >= np.quantile(flat.max(axis=0), 0.5)
    np.testing.assert_allclose(candidates.to_numpy(), similarity_matrix(flat[:, keep], LANGS).to_numpy())
    assert not np.allclose(everything.to_numpy(), candidates.to_numpy())


def test_constant_vector_and_tiny_inputs():
    vectors = np.vstack([np.zeros(10), np.arange(10.0), np.arange(10.0) ** 2])
    sim = similarity_matrix(vectors, ["a", "b", "c"], "spearman")
    assert sim.loc["a", "b"] == 0.0 and sim.loc["a", "a"] == 1.0 and sim.loc["b", "c"] == pytest.approx(1.0)
    tree = cluster_languages(similarity_matrix(vectors[1:], ["b", "c"]))
    assert tree.leaves in (["b", "c"], ["c", "b"]) and len(tree.segments()) == 3
    with pytest.raises(ValueError):
        cluster_languages(similarity_matrix(vectors[:1], ["a"]))
    with pytest.raises(ValueError, match="unknown similarity"):
        similarity_matrix(vectors, ["a", "b", "c"], "pearsonish")


# --------------------------------------------------------------------------- real statistics and scale

def test_selection_on_a_real_capture(tiny_llama, snippets):
    stats = capture_statistics(tiny_llama, snippets)
    sel = select_pls(stats, RAW)
    assert len(sel.frame) == tiny_llama.n_layers * tiny_llama.n_neurons
    assert sel.languages == stats.languages == ["python", "go", "java"]
    assert sel.threshold == pytest.approx(np.quantile(stats.pls().max(axis=0), 0.9))
    assert_consistent(sel)
    assert sel.frame["cls"].astype(str).tolist() == reference_pls_classes(stats.pls(), sel.params)
    loose = select_pls(stats, SelectionParams(candidate_quantile=0.5, ratio=1.1, top_fraction=0.2, normalize="none"))
    assert_consistent(loose)
    assert (loose.frame["cls"] != "other").sum() > 0
    assert loose.counts_by_layer().sum().to_dict() == loose.counts_by_language()
    lape = select_lape(stats, LapeParams(top_fraction=0.1))
    assert lape.frame["entropy"].between(0, math.log(3) + 1e-9).all()
    assert (lape.frame["cls"] != "other").sum() <= top_count(len(lape.frame), 0.1)
    assert list(overlap(loose, lape).index) == stats.languages
    rel = language_relations(stats, method="spearman")
    assert sorted(rel.tree.leaves) == sorted(stats.languages)


def test_scale_of_a_full_llama_8b():
    rng = np.random.default_rng(0)
    shape = (5, 32, 14336)
    stats = make_stats(rng.lognormal(size=shape), prob=rng.beta(2, 2, size=shape))
    start = time.perf_counter()
    sel = select_pls(stats)
    pls_s = time.perf_counter() - start
    start = time.perf_counter()
    lape = select_lape(stats)
    lape_s = time.perf_counter() - start
    print(f"\nPLS selection on 32 x 14336 x 5: {pls_s:.2f} s; LAPE: {lape_s:.2f} s")
    assert len(sel.frame) == len(lape.frame) == 32 * 14336
    k = top_count(32 * 14336, 0.01)
    assert 0 < (sel.frame["cls"] == "specific").sum() <= k
    assert 0 < (lape.frame["cls"] != "other").sum() <= k
    assert sel.counts_by_layer().sum().to_dict() == sel.counts_by_language()


def test_normalization_removes_language_and_layer_scale():
    rng = np.random.default_rng(3)
    pls = rng.uniform(1.0, 1.2, size=(5, 4, 500))
    pls[2] *= 3.0             # one language the model finds hard: every PLS three times larger
    pls[:, 0] *= 10.0         # the first layer's PLS ten times larger
    pls[0, 2, 7] *= 2.5       # one truly cpp-specific neuron in layer 2
    stats = make_stats(pls)
    raw = select_pls(stats, SelectionParams(normalize="none", top_fraction=0.05))
    assert set(raw.frame.loc[raw.frame.cls == "specific", "top_lang"].astype(str)) <= {LANGS[2]}
    assert set(raw.selected().layer) == {0}
    norm = select_pls(stats, SelectionParams(top_fraction=0.05))
    picked = norm.frame[norm.frame.cls == "specific"]
    assert (picked.layer.tolist(), picked.neuron.tolist(), picked.top_lang.astype(str).tolist()) == \
        ([2], [7], [LANGS[0]])
    with pytest.raises(ValueError, match="normalize"):
        SelectionParams(normalize="zscore")


def test_attribution_score_selects_by_the_signed_estimate():
    """score="attribution" ranks by -(1/T) sum a g with its sign, not by |a g|: a neuron with a large PLS
    whose removal would LOWER the loss (negative attribution) is not selected, one with a large positive
    attribution is."""
    pls = background(seed=3)
    attribution = background(seed=4, high=0.5)
    pls[0, 1, 7] = 50.0          # huge |a g| for the first language, but removing it helps that language
    attribution[0, 1, 7] = -30.0
    attribution[1, 2, 9] = 40.0  # large positive attribution for the second language
    stats = make_stats(pls)
    stats.attribution_sum = attribution * stats.samples[:, None, None]
    by_pls = select_neurons(stats, "pls", SelectionParams(normalize="none"))
    by_attr = select_neurons(stats, "pls", SelectionParams(normalize="none", score="attribution"))
    assert (1, 7) in by_pls.neurons_for(LANGS[0], as_pairs=True)
    assert (1, 7) not in by_attr.neurons_for(LANGS[0], as_pairs=True)
    assert (2, 9) in by_attr.neurons_for(LANGS[1], as_pairs=True)
    assert (2, 9) not in by_pls.neurons_for(LANGS[1], as_pairs=True)
    with pytest.raises(ValueError, match="score"):
        SelectionParams(score="signed")
    stats.attribution_sum = None
    with pytest.raises(ValueError, match="recapture"):
        select_neurons(stats, "pls", SelectionParams(score="attribution"))


def test_chance_level_recipe_keeps_the_null_counts(tmp_path):
    """The CHANCE recipe computes the statistics it needs, keeps only the small table of null counts, and
    gives what `chance_level` gives on the same statistics; other parameters are another entry."""
    from conftest import SNIPPETS, tiny_model

    from neuro.analysis.selectivity import chance_level, unit_groups
    from neuro.results.statistics import CHANCE, STATS

    model = tiny_model("llama")
    first, hit = CHANCE.fetch(model, SNIPPETS, cache=tmp_path, permutations=4, stats_args=dict(max_length=64))
    again, hit_again = CHANCE.fetch(model, SNIPPETS, cache=tmp_path, permutations=4, stats_args=dict(max_length=64))
    stats = STATS.get(model, SNIPPETS, cache=tmp_path, compute=False, max_length=64)
    direct = chance_level(stats, "pls", None, 4, groups=unit_groups(stats, SNIPPETS))
    assert (hit, hit_again) == (False, True) and first.units == len(SNIPPETS)
    assert first.summary() == again.summary() == direct.summary()
    assert CHANCE.get(model, SNIPPETS, cache=tmp_path, compute=False, permutations=5,
                      stats_args=dict(max_length=64)) is None
    assert CHANCE.defaults["permutations"] >= 200


def test_universality_recipe_keeps_the_report(tmp_path):
    """UNIVERSALITY gives what `universality` gives on the same statistics and halves, read back from the cache."""
    from conftest import SNIPPETS, tiny_model

    from neuro.analysis.selectivity import unit_groups
    from neuro.analysis.universality import universality
    from neuro.results.statistics import STATS, UNIVERSALITY

    model = tiny_model("llama")
    first, hit = UNIVERSALITY.fetch(model, SNIPPETS, cache=tmp_path, halvings=3, stats_args=dict(max_length=64))
    again, hit_again = UNIVERSALITY.fetch(model, SNIPPETS, cache=tmp_path, halvings=3, stats_args=dict(max_length=64))
    stats = STATS.get(model, SNIPPETS, cache=tmp_path, compute=False, max_length=64)
    direct = universality(stats, "pls", None, groups=unit_groups(stats, SNIPPETS), halvings=3)
    assert (hit, hit_again) == (False, True)
    assert json.dumps(first.summary(), sort_keys=True) == json.dumps(again.summary(), sort_keys=True) \
        == json.dumps(direct.summary(), sort_keys=True)
    assert len(first.universal) == 3 and first.halves_by == ("task" if unit_groups(stats, SNIPPETS) is not None
                                                             else "unit")
