"""The scores on the shipped demo model against ground truth: measured ablation, a length invariance, and
neurons implanted by hand into its trained weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from neuro.analysis.selectivity import SelectionParams, chance_level, select_neurons
from neuro.code.corpus import Snippet, load_corpus
from neuro.instrument.ablation import ablated, language_losses, neuron_effects
from neuro.instrument.statistics import capture_statistics
from neuro.instrument.tokens import encode
from neuro.model.loading import load_model
from neuro.paths import DEMO_MODEL_DIR, demo_corpus_available, demo_model_available

pytestmark = pytest.mark.skipif(not (demo_model_available() and demo_corpus_available()),
                                reason="demo model or corpus not in this checkout")


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_MODEL_DIR)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(None)


def test_attribution_predicts_single_neuron_ablation(demo, corpus):
    """Spearman >= 0.9 between the attribution and the measured loss change of zeroing each neuron alone,
    over 30 neurons of one layer (the 15 highest by PLS and 15 random): the same check as
    bench/bench_attribution.py, on programs of one language."""
    programs = [s for s in corpus if s.lang == "go"][:20]
    stats = capture_statistics(demo, programs, gradients=True, units=False)
    layer = 3
    pls, attribution = stats.pls()[0, layer], stats.attribution()[0, layer]
    rng = np.random.default_rng(1)
    top = list(np.argsort(-pls)[:15])
    chosen = top + list(rng.choice(np.setdiff1d(np.arange(demo.n_neurons), top), 15, replace=False))
    measured = neuron_effects(demo, programs, [(layer, int(n)) for n in chosen])["go"].to_numpy()
    assert np.ptp(measured) > 1e-4  # the neurons differ measurably
    assert spearmanr(attribution[chosen], measured).statistic >= 0.9


def test_a_length_split_of_one_language_selects_no_more_than_chance(demo, corpus):
    """One language's programs split into a short and a long half and labelled as two languages: raw PLS
    (--normalize none) selects at most the permutation null's maximum plus 5 "specific" neurons per
    label. (With a mean loss in the gradient it selected 82 short-specific and 0 long-specific ones.)"""
    programs = [s for s in corpus if s.lang == "java"]
    lengths = [len(encode(demo, s.code, 512).ids) for s in programs]
    order = np.argsort(lengths, kind="stable")
    half = len(order) // 2
    relabelled = [Snippet(programs[i].id, "short" if rank < half else "long", programs[i].id, programs[i].code)
                  for rank, i in enumerate(order)]
    stats = capture_statistics(demo, relabelled, gradients=True)
    assert stats.tokens[1] / stats.samples[1] > 1.5 * stats.tokens[0] / stats.samples[0]  # really a length split
    params = SelectionParams(normalize="none")
    counts = select_neurons(stats, "pls", params).counts_by_language()
    chance = chance_level(stats, "pls", params, permutations=10)
    for label in ("short", "long"):
        assert counts[label] <= chance.max()[label] + 5, (counts, chance.summary())
    ratio = stats.pls()[0].mean() / stats.pls()[1].mean()
    assert 0.8 < ratio < 1.25, ratio  # the mean PLS of short and long programs agree


def _mlp_inputs(loaded, layer: int, snippets) -> tuple[np.ndarray, np.ndarray]:
    """The FFN input (normalized residual) of every real token at `layer`, with its program's index."""
    kept, rows = [], []
    mlp = loaded.model.model.layers[layer].mlp
    handle = mlp.register_forward_pre_hook(lambda module, args: kept.append(args[0][0, 1:].detach().clone()))
    try:
        with torch.inference_mode():
            for i, s in enumerate(snippets):
                loaded.model(torch.tensor([encode(loaded, s.code, 512).ids]))
                rows += [i] * (kept[-1].shape[0])
    finally:
        handle.remove()
    return torch.cat(kept).numpy(), np.array(rows)


def _helpful_direction(loaded, layer: int, snippets) -> np.ndarray:
    """Minus the mean gradient of the programs' summed loss with respect to the block's output over their
    real tokens: the residual direction that, written at those tokens, lowers their loss most."""
    grads = []
    block = loaded.model.model.layers[layer]

    def keep(module, args, output):
        states = output[0] if isinstance(output, tuple) else output
        states.retain_grad()
        grads.append(states)
    handle = block.register_forward_hook(keep)
    try:
        for s in snippets:
            ids = torch.tensor([encode(loaded, s.code, 512).ids])
            inputs = loaded.model.get_input_embeddings()(ids).detach().requires_grad_(True)
            logits = loaded.model(inputs_embeds=inputs).logits
            torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").backward()
    finally:
        handle.remove()
        loaded.model.zero_grad(set_to_none=True)
    direction = -torch.cat([g.grad[0, 1:] for g in grads]).mean(0).numpy()
    return direction / np.linalg.norm(direction)


def implant(loaded, layer: int, neuron: int, lang: str, snippets) -> None:
    """Overwrite one neuron of the (Llama) demo model: it fires on `lang`'s tokens (a linear probe without
    intercept on the FFN input, as gate and up rows) and writes, as its down-projection column, the
    residual direction that most lowers `lang`'s next-token loss, at the strength among a few that lowers
    it most on `snippets`."""
    from sklearn.linear_model import LogisticRegression

    x, rows = _mlp_inputs(loaded, layer, snippets)
    y = np.array([snippets[i].lang == lang for i in rows])
    probe = LogisticRegression(fit_intercept=False, C=1.0, max_iter=2000).fit(x, y)
    w = probe.coef_[0] / np.linalg.norm(probe.coef_[0])
    scale = 4.0 / np.median(x[y] @ w)
    mine = [s for s in snippets if s.lang == lang]
    direction = _helpful_direction(loaded, layer, mine)
    residual = float(np.median(np.linalg.norm(x, axis=1)))
    mlp = loaded.model.model.layers[layer].mlp
    with torch.no_grad():
        mlp.gate_proj.weight[neuron] = torch.tensor(w * scale, dtype=torch.float32)
        mlp.up_proj.weight[neuron] = torch.tensor(w * scale, dtype=torch.float32)
        losses = {}
        for strength in (0.005, 0.01, 0.02, 0.04, 0.08):
            mlp.down_proj.weight[:, neuron] = torch.tensor(direction * strength * residual, dtype=torch.float32)
            losses[strength] = language_losses(loaded, mine)[lang]
        best = min(losses, key=losses.get)
        mlp.down_proj.weight[:, neuron] = torch.tensor(direction * best * residual, dtype=torch.float32)


def test_neurons_implanted_into_the_trained_model_are_found(corpus):
    """A neuron implanted per language (firing on its tokens, writing what lowers its next-token loss) is
    found specific to that language by PLS (raw and scaled) and by attribution (scaled), on programs
    other than the ones it was fitted on; zeroing it hurts its language most."""
    demo = load_model(DEMO_MODEL_DIR)  # modified below: not the shared fixture
    tasks = sorted({s.task for s in corpus})
    fit_tasks, eval_tasks = set(tasks[:6]), set(tasks[6:18])
    fit = [s for s in corpus if s.task in fit_tasks]
    evaluation = [s for s in corpus if s.task in eval_tasks]
    planted = {"python": (2, 100), "go": (1, 700)}
    for lang, (layer, neuron) in planted.items():
        implant(demo, layer, neuron, lang, fit)
    demo.fingerprint = "implanted"  # (an in-memory edit; nothing is cached here)
    base = language_losses(demo, evaluation)
    for lang, (layer, neuron) in planted.items():
        with ablated(demo, {layer: [neuron]}):
            after = language_losses(demo, evaluation)
        change = {k: after[k] - base[k] for k in base}
        assert max(change, key=change.get) == lang and change[lang] > 0.005, change
    stats = capture_statistics(demo, evaluation, gradients=True, units=False)
    # raw attribution ranks all layers on one scale, where the first layer's large effects fill the top 1 %
    for score, normalize in [("pls", "none"), ("pls", "language_layer"), ("attribution", "language_layer")]:
        selection = select_neurons(stats, "pls", SelectionParams(normalize=normalize, score=score))
        for lang, (layer, neuron) in planted.items():
            assert (layer, neuron) in selection.neurons_for(lang, as_pairs=True), (score, normalize, lang)
