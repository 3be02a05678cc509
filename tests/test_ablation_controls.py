"""Ablation statistics against ground truth: controls matched on importance come from the group's layers and
score deciles; planted language neurons beat them at the p-value floor with an interval that excludes 0;
a group exchangeable with its controls gets p-values that are not small; hand-computed effects,
selectivity, p-values and Holm; the cache key follows the neuron indices."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_ground_truth import LAYERS, PLANTED, UNIVERSAL, WIDTH, planted_corpus, planted_model

from neuro.analysis.ablation_effects import ablation_effects
from neuro.analysis.selectivity import SelectionParams, select_neurons, select_pls_scores
from neuro.code.corpus import Snippet
from neuro.instrument.ablation import (
    AblationResult,
    Condition,
    ablated,
    ablation_matrix,
    matched_like,
    plan_ablation,
    program_losses,
    top_mean_control,
)
from neuro.instrument.statistics import capture_statistics
from neuro.results.statistics import ABLATION


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny forwards on a shared machine: one thread avoids spinning against other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def planted():
    loaded = planted_model()
    corpus = planted_corpus()
    stats = capture_statistics(loaded, corpus, gradients=True)
    selection = select_neurons(stats, "pls", SelectionParams(top_fraction=7 / (LAYERS * WIDTH)))
    return loaded, corpus, selection


def _decile_by_counting(scores: np.ndarray, neuron: int) -> int:
    """A neuron's decile within its layer from how many neurons score below it (ties: those before it)."""
    below = int((scores < scores[neuron]).sum() + (scores[:neuron] == scores[neuron]).sum())
    return below * 10 // len(scores)


def test_matched_controls_come_from_the_same_layers_and_deciles():
    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, size=(3, 60))
    group = {0: [int(np.argmax(scores[0])), 7], 2: [int(np.argsort(scores[2])[30]), 11, 12]}
    other_group = {0: [int(np.argsort(scores[0])[-2])]}  # another selected neuron, in the top decile too
    exclude = {0: [*group[0], *other_group[0]], 2: group[2]}
    draws = np.random.default_rng(1)
    for _ in range(50):
        control = matched_like(group, scores, draws, exclude)
        assert set(control) == {0, 2}
        for layer, idx in group.items():
            drawn = control[layer]
            assert len(drawn) == len(set(drawn.tolist())) == len(idx)
            assert not set(drawn.tolist()) & set(exclude[layer])
            assert sorted(_decile_by_counting(scores[layer], n) for n in drawn) == \
                sorted(_decile_by_counting(scores[layer], n) for n in idx)


def test_matched_controls_fall_back_to_the_nearest_decile_when_one_runs_out():
    scores = np.arange(20, dtype=float)[None]  # deciles of two neurons each
    group = {0: [18, 19, 17]}  # 18, 19: the top decile, which has nothing left; 17: decile 8 (16 free)
    control = matched_like(group, scores, np.random.default_rng(0))
    assert sorted(control[0].tolist()) == [14, 15, 16]  # decile 8's free neuron, then decile 7's two


def test_planted_neurons_beat_matched_controls_at_the_p_value_floor(planted):
    loaded, corpus, selection = planted
    groups = {lang: selection.neurons_for(lang) for lang in selection.languages}
    groups["universal"] = selection.universal_neurons()
    from neuro.instrument.ablation import selection_scores

    draws, uniform = 9, 4
    result = ablation_matrix(loaded, corpus, groups, scores=selection_scores(selection), draws=draws,
                             uniform_draws=uniform, top_mean=top_mean_control(selection), seed=3)
    assert (result.draws("matched"), result.draws("uniform")) == (draws, uniform)
    effects = ablation_effects(result, n_resamples=500)
    assert effects.unit == "task" and effects.units == 12 and effects.alternative == "two-sided"
    for lang in selection.languages:
        g = effects.groups[lang]
        assert g.effect.low > 0.05 and g.selectivity.low > 0.05  # planted: a large, specific rise
        matched = g.controls["matched"]
        assert matched.p == pytest.approx(2 / (1 + draws)) == pytest.approx(matched.p_floor)  # two-sided floor
        assert matched.p_holm == pytest.approx(min(1.0, 3 * matched.p))  # three equal p-values: Holm x 3
        assert abs(matched.mean) < 0.01 and g.controls["uniform"].draws == uniform
        assert (g.p_labels, g.label_permutations) == (pytest.approx(2 / 1000), 999)  # languages permuted in tasks
    # attribution predicts a rise: one-sided, floor 1 / (1 + draws)
    one_sided = ablation_effects(dataclasses.replace(result, selected_by="attribution"), n_resamples=200)
    assert one_sided.groups["python"].controls["matched"].p == pytest.approx(1 / (1 + draws))
    # the universal neuron raises every language's loss about evenly; its top-mean control barely moves any
    universal = effects.groups["universal"]
    assert universal.effect.low > 0.1 and universal.evenness.low > 0.8
    top = effects.top_mean
    assert top.neurons == 1 and abs(top.effect.estimate) < 0.01
    control_neuron = result.neurons_of(int(result.rows("top_mean")[0]))
    assert control_neuron == {UNIVERSAL[0]: pytest.approx(np.array(control_neuron[UNIVERSAL[0]]))}
    assert int(control_neuron[UNIVERSAL[0]][0]) not in {n for _, layer, n in PLANTED if layer == UNIVERSAL[0]}


def test_p_values_are_not_small_for_a_group_exchangeable_with_its_controls():
    """No structure to find: the "group" is a random neuron per layer, so it is exchangeable with its matched
    draws and p is uniform over seeds (two-sided, 9 draws: P(p <= 0.2) = 0.2)."""
    loaded = planted_model(seed=1)
    corpus = planted_corpus(programs=4, length=16)
    rng = np.random.default_rng(0)
    scores = rng.random((LAYERS, WIDTH))
    pvalues = []
    for seed in range(12):
        group = {layer: [int(rng.integers(0, WIDTH))] for layer in range(LAYERS)}
        result = ablation_matrix(loaded, corpus, {"python": group}, scores={"python": scores}, draws=9,
                                 uniform_draws=0, seed=seed)
        pvalues.append(ablation_effects(result, n_resamples=50).groups["python"].controls["matched"].p)
    pvalues = np.array(pvalues)
    assert (pvalues <= 0.2).sum() <= 6 and pvalues.mean() > 0.3, pvalues


def _labels_carrying_nothing(corpus: list[Snippet], seed: int) -> list[Snippet]:
    """The programs with their language labels shuffled (each its own task, so nothing is paired)."""
    langs = np.random.default_rng(seed).permutation([s.lang for s in corpus])
    return [Snippet(s.id, str(lang), s.id, s.code) for s, lang in zip(corpus, langs)]


def test_selectivity_is_not_significant_when_the_labels_carry_nothing(planted):
    """Select on programs whose labels are shuffled and ablate on fresh ones shuffled too: the selected
    neurons (the planted ones, the most important) still beat their matched controls on their "own"
    language, which measures importance, not language; the label-permutation p of selectivity is not small."""
    loaded = planted[0]
    pvalues = []
    for seed in range(3):
        selecting = _labels_carrying_nothing(planted_corpus(seed=seed), seed)
        evaluating = _labels_carrying_nothing(planted_corpus(programs=8, seed=100 + seed), 100 + seed)
        selection = select_neurons(capture_statistics(loaded, selecting, gradients=True), "pls",
                                   SelectionParams(ratio=1.0, top_fraction=7 / (LAYERS * WIDTH)))
        from neuro.instrument.ablation import selection_scores

        groups = {lang: selection.neurons_for(lang) for lang in selection.languages if selection.neurons_for(lang)}
        result = ablation_matrix(loaded, evaluating, groups, scores=selection_scores(selection), draws=4,
                                 uniform_draws=0, seed=seed)
        effects = ablation_effects(result, n_resamples=50)
        assert effects.unit == "program"
        pvalues += [g.p_labels for g in effects.groups.values()]
    pvalues = np.array(pvalues)
    assert len(pvalues) >= 6 and (pvalues > 0.05).all() and pvalues.mean() > 0.3, pvalues


def _hand_result() -> AblationResult:
    """Two tasks x two languages, one group ("a"), two matched draws, one uniform draw: numbers by hand."""
    snippets = [Snippet(f"{t}/{lang}", lang, t, "") for t in ("t1", "t2") for lang in ("a", "b")]
    base = np.array([1.0, 2.0, 1.0, 2.0])             # t1/a, t1/b, t2/a, t2/b
    conditions = [Condition("a", "selected", 0, {0: np.array([1])}),
                  Condition("a", "matched", 0, {0: np.array([2])}),
                  Condition("a", "matched", 1, {0: np.array([3])}),
                  Condition("a", "uniform", 0, {0: np.array([4])})]
    losses = base + np.array([[0.5, 0.1, 0.3, 0.1],    # own-language (a) change: mean 0.4; b: 0.1
                              [0.1, 0.0, 0.1, 0.0],    # 0.1
                              [0.6, 0.0, 0.4, 0.0],    # 0.5 >= 0.4
                              [-0.1, 0.0, -0.1, 0.0]])  # -0.1
    return AblationResult.build(snippets, base, conditions, losses, "attribution")


def test_effects_and_p_values_match_a_hand_computation():
    result = _hand_result()
    assert result.base == pytest.approx({"a": 1.0, "b": 2.0})
    assert result.delta.loc["a"].to_dict() == pytest.approx({"a": 0.4, "b": 0.1})
    effects = ablation_effects(result, n_resamples=200)
    g = effects.groups["a"]
    assert g.effect.estimate == pytest.approx(0.4) and g.selectivity.estimate == pytest.approx(0.3)
    # two tasks: a resample is (t1, t1), (t2, t2) or mixed -> own-language change 0.5, 0.3 or 0.4
    assert g.effect.low == pytest.approx(0.3) and g.effect.high == pytest.approx(0.5)
    matched = g.controls["matched"]
    assert (matched.draws, matched.mean) == (2, pytest.approx(0.3))
    assert matched.p == pytest.approx((1 + 1) / (1 + 2))  # one draw of two at least as large, one-sided
    assert g.controls["uniform"].p == pytest.approx(1 / 2)
    assert matched.selectivity_mean == pytest.approx((0.1 + 0.5) / 2)
    assert matched.p_selectivity == pytest.approx((1 + 1) / (1 + 2))  # selectivity 0.3 vs the draws' 0.1, 0.5
    # labels permuted within the two tasks: each task's a/b swap or not; selectivity (own - other) is
    # 0.3 unswapped, -0.3 both swapped, -0.1 or +0.1 when one task swaps: P(>= 0.3) = 1/4
    permuted = ablation_effects(result, n_resamples=50, permutations=4000).groups["a"]
    assert permuted.p_labels == pytest.approx(0.25, abs=0.03)


def test_plan_draws_do_not_depend_on_how_many_are_drawn():
    scores = {"x": np.random.default_rng(0).random((2, 40))}
    groups = {"x": {0: [1, 2], 1: [5]}}
    few = plan_ablation(groups, 40, scores=scores, draws=3, uniform_draws=2, seed=4)
    many = plan_ablation(groups, 40, scores=scores, draws=6, uniform_draws=5, seed=4)
    pick = lambda plan, kind: [c.pairs() for c in plan if c.control == kind]  # noqa: E731
    assert pick(many, "matched")[:3] == pick(few, "matched") and pick(many, "uniform")[:2] == pick(few, "uniform")
    with pytest.raises(ValueError, match="score"):
        plan_ablation(groups, 40, draws=2)


def test_per_program_losses_equal_a_pass_under_ablation(planted):
    loaded, corpus, _ = planted
    groups = {"python": {0: [5]}}
    result = ablation_matrix(loaded, corpus[:9], groups, draws=0, uniform_draws=2)
    with ablated(loaded, groups["python"]):
        expected = program_losses(loaded, corpus[:9])
    np.testing.assert_allclose(result.losses[result.rows("selected")[0]], expected, rtol=1e-6)
    np.testing.assert_allclose(result.base_losses, program_losses(loaded, corpus[:9]), rtol=1e-6)


def _selection_with(pls: np.ndarray):
    return select_pls_scores(pls, ["python", "go", "java"], SelectionParams(top_fraction=4 / (2 * 30)))


def test_the_cache_key_changes_with_the_neuron_indices(planted, tmp_path):
    loaded, corpus, _ = planted
    pls = np.random.default_rng(0).gamma(2.0, size=(3, 2, 30))
    for lang, (layer, neuron) in enumerate([(0, 3), (1, 7), (0, 11)]):  # one clear neuron per language
        pls[lang, layer, neuron] = 50.0
    moved = np.roll(pls, 1, axis=2)  # the same scores on the next neurons: the same counts per layer
    first, second = _selection_with(pls), _selection_with(moved)
    assert first.summary() == second.summary() and first.counts_by_layer().equals(second.counts_by_layer())
    assert first.neurons_for("python", as_pairs=True) != second.neurons_for("python", as_pairs=True)
    key = lambda sel, **kw: ABLATION.key(loaded, corpus, selection=sel, **kw)  # noqa: E731
    assert key(first) != key(second)
    assert key(first) == key(_selection_with(pls.copy()))
    assert key(first, draws=5) != key(first) != key(first, uniform_draws=3) and key(first, seed=1) != key(first)


def test_the_recipe_keeps_and_reads_back_every_loss(planted, tmp_path):
    loaded, corpus, selection = planted
    reports = []
    kept = ABLATION.get(loaded, corpus[:12], selection=selection, draws=2, uniform_draws=1, cache=tmp_path,
                        progress=lambda done, total: reports.append((done, total)))
    again, hit = ABLATION.fetch(loaded, corpus[:12], selection=selection, draws=2, uniform_draws=1, cache=tmp_path)
    assert hit and reports[-1][0] == reports[-1][1] == 1 + len(kept.conditions)
    np.testing.assert_array_equal(again.losses, kept.losses)
    assert again.conditions.equals(kept.conditions) and again.neurons.equals(kept.neurons)
    assert again.sizes == kept.sizes == {"python": 2, "go": 2, "java": 2, "universal": 1}
    assert list(again.conditions["control"]).count("top_mean") == 1
