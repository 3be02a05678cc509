"""Scores against ground truth that does not share their formula: a model whose neurons are planted by hand.

A tiny Llama is set up so that its attention writes nothing (o_proj = 0) and each layer's FFN holds
planted neurons: for each language, two neurons that fire only on that language's tokens and raise the
logits of that language's tokens (the next token of a program in that language is always one of them),
and one universal neuron that fires on every program token and lowers the logits of "junk" tokens,
which never occur but which the model would otherwise predict after any program token. Every other
neuron is weak random background. PLS, attribution and LAPE must each put exactly the planted neurons
at the top; ablation must hurt exactly the planted language.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import word_tokenizer

from neuro.analysis.selectivity import LapeParams, SelectionParams, chance_level, select_neurons
from neuro.code.corpus import Snippet
from neuro.code.split import SplitParams, split_corpus
from neuro.instrument.ablation import ablated, language_losses
from neuro.instrument.statistics import capture_statistics
from neuro.model.loading import prepare

LANGS = ["python", "go", "java"]
WORDS = 12           # vocabulary words per language
JUNK = 24            # words that never occur in a program
HIDDEN, WIDTH, LAYERS = 64, 48, 2
PLANTED = {("python", 0, 5), ("python", 1, 17), ("go", 0, 9), ("go", 1, 30), ("java", 0, 40), ("java", 1, 2)}
UNIVERSAL = (1, 44)  # (layer, neuron)


def _tokenizer():
    return word_tokenizer(LANGS, WORDS, JUNK)


def _word_ids(tokenizer, lang: str) -> list[int]:
    return tokenizer.convert_tokens_to_ids([f"{lang[:2]}{i}" for i in range(WORDS)])


def planted_model(seed: int = 0):
    """The hand-built model described in the module docstring, and its tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=WIDTH,
                         num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=4,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM._from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    # hidden dimensions: 0-2 the language of the token, 3 "a program token", 4-6 "a token of language L
    # comes next", 7 "a junk token comes next", the rest token identity
    lang_dim = {lang: i for i, lang in enumerate(LANGS)}
    common, junk_out = 3, 7
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed.normal_(0, 0.3)
        embed[:, :8] = 0
        for lang in LANGS:
            embed[_word_ids(tokenizer, lang), lang_dim[lang]] = 2.0
            embed[_word_ids(tokenizer, lang), common] = 2.0
        head = model.lm_head.weight
        head.normal_(0, 0.02)
        for lang in LANGS:
            head[_word_ids(tokenizer, lang), 4 + lang_dim[lang]] = 1.5
        junk = tokenizer.convert_tokens_to_ids([f"junk{i}" for i in range(JUNK)])
        head[junk, junk_out] = 3.0
        head[:, :4] = 0
        head[junk, common] = 1.0  # junk is likely after any program token, unless the universal neuron says no
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            mlp = layer.mlp
            for proj in (mlp.gate_proj, mlp.up_proj):
                proj.weight.normal_(0, 0.05)
                proj.weight[:, :8] = 0  # background neurons ignore the language and signal dimensions
            mlp.down_proj.weight.normal_(0, 0.02)
            mlp.down_proj.weight[:8] = 0
        for lang, layer, neuron in PLANTED:
            mlp = model.model.layers[layer].mlp
            for proj in (mlp.gate_proj, mlp.up_proj):
                proj.weight[neuron] = 0
                proj.weight[neuron, lang_dim[lang]] = 0.3
            mlp.down_proj.weight[:, neuron] = 0
            mlp.down_proj.weight[4 + lang_dim[lang], neuron] = 0.5
        layer, neuron = UNIVERSAL
        mlp = model.model.layers[layer].mlp
        for proj in (mlp.gate_proj, mlp.up_proj):
            proj.weight[neuron] = 0
            proj.weight[neuron, common] = 0.3
        mlp.down_proj.weight[:, neuron] = 0
        mlp.down_proj.weight[junk_out, neuron] = -0.5
    return prepare(model, tokenizer, source="planted")


def planted_corpus(programs: int = 12, length: int = 40, seed: int = 0) -> list[Snippet]:
    """Random programs of each language's own words (a task is shared across languages by index)."""
    rng = np.random.default_rng(seed)
    return [Snippet(f"t{i}/{lang}", lang, f"t{i}",
                    " ".join(f"{lang[:2]}{w}" for w in rng.integers(0, WORDS, size=int(rng.integers(length // 2,
                                                                                                       length)))))
            for i in range(programs) for lang in LANGS]


@pytest.fixture(scope="module")
def planted():
    loaded = planted_model()
    corpus = planted_corpus()
    return loaded, corpus, capture_statistics(loaded, corpus, gradients=True)


def _specific(selection) -> set[tuple[str, int, int]]:
    return {(lang, layer, neuron) for lang in selection.languages
            for layer, neuron in selection.neurons_for(lang, as_pairs=True)}


def _top_by_max(scores: np.ndarray, k: int) -> set[tuple[int, int]]:
    flat = scores.max(axis=0).reshape(-1)
    return {divmod(int(i), WIDTH) for i in np.argsort(-flat)[:k]}


def test_planted_neurons_fire_only_on_their_language(planted):
    loaded, corpus, stats = planted
    prob = stats.activation_probability()
    for lang, layer, neuron in PLANTED:
        assert prob[LANGS.index(lang), layer, neuron] == 1.0
        assert all(prob[i, layer, neuron] == 0.0 for i, other in enumerate(LANGS) if other != lang)
    assert (prob[:, UNIVERSAL[0], UNIVERSAL[1]] == 1.0).all()


@pytest.mark.parametrize("score", ["pls", "attribution"])
@pytest.mark.parametrize("normalize", ["none", "language_layer"])
def test_pls_and_attribution_recover_exactly_the_planted_neurons(planted, score, normalize):
    _, _, stats = planted
    planted_pairs = {(layer, neuron) for _, layer, neuron in PLANTED}
    # the seven planted neurons are the seven highest by max score, without any selection rule
    assert _top_by_max(stats.score(score), 7) == planted_pairs | {UNIVERSAL}
    params = SelectionParams(candidate_quantile=0.9, ratio=1.5, top_fraction=7 / (LAYERS * WIDTH),
                             normalize=normalize, score=score)
    selection = select_neurons(stats, "pls", params)
    assert _specific(selection) == PLANTED
    assert selection.universal_neurons(as_pairs=True) == [UNIVERSAL]


def test_lape_recovers_exactly_the_planted_specific_neurons(planted):
    _, _, stats = planted
    selection = select_neurons(stats, "lape", LapeParams(top_fraction=6 / (LAYERS * WIDTH)))
    assert _specific(selection) == PLANTED


def test_attribution_sign_and_ablation_agree_on_the_planted_model(planted):
    """Zeroing a planted neuron raises exactly its language's loss; over planted and background neurons
    the attribution orders the measured loss changes (a first-order estimate: right in rank, while a
    large effect is underestimated)."""
    from scipy.stats import spearmanr

    loaded, corpus, stats = planted
    base = language_losses(loaded, corpus)
    attribution = stats.attribution()
    rng = np.random.default_rng(0)
    background = [(int(layer), int(n)) for layer, n in zip(rng.integers(0, LAYERS, 10), rng.integers(0, WIDTH, 10))
                  if (layer, n) not in {(p[1], p[2]) for p in PLANTED} | {UNIVERSAL}]
    measured, estimated = [], []
    for lang, layer, neuron in [*sorted(PLANTED), *[(None, *b) for b in background]]:
        with ablated(loaded, {layer: [neuron]}):
            after = language_losses(loaded, corpus)
        change = np.array([after[k] - base[k] for k in LANGS])
        if lang is not None:
            own = LANGS.index(lang)
            assert change[own] > 0.05 and attribution[own, layer, neuron] > 0
            assert np.abs(np.delete(change, own)).max() < 1e-6  # it never fires there
        measured.append(change.mean())
        estimated.append(attribution[:, layer, neuron].mean())
    assert spearmanr(measured, estimated).statistic > 0.8


def test_chance_level_is_low_for_planted_and_identity_matches(planted):
    """Shuffled labels select (almost) nothing specific; the unit sums reproduce the real scores."""
    _, _, stats = planted
    for name in ("pls", "attribution", "probability"):
        np.testing.assert_allclose(stats.unit_score(name, stats.unit_lang), stats.score(name), rtol=1e-4,
                                   atol=1e-9)
    params = SelectionParams(top_fraction=7 / (LAYERS * WIDTH), normalize="none")
    chance = chance_level(stats, "pls", params, permutations=10)
    real = select_neurons(stats, "pls", params).counts_by_language()
    assert chance.counts.shape == (10, len(LANGS))  # languages only: no permutation null for universal
    for lang in LANGS:
        assert real[lang] == 2 and chance.mean()[lang] < 1.0


def test_no_leakage_selection_ignores_evaluation_programs(planted):
    """Neurons are chosen on the split's selection side: rewriting every evaluation program changes nothing."""
    loaded, corpus, _ = planted
    split = split_corpus(corpus, SplitParams(eval_fraction=0.3, seed=1))
    assert {s.task for s in split.selection}.isdisjoint({s.task for s in split.evaluation})
    changed = [Snippet(s.id, s.lang, s.task, s.code + " " + s.code) if s in split.evaluation else s for s in corpus]
    split2 = split_corpus(changed, SplitParams(eval_fraction=0.3, seed=1))
    assert [s.id for s in split2.selection] == [s.id for s in split.selection]
    params = SelectionParams(top_fraction=7 / (LAYERS * WIDTH))
    first = select_neurons(capture_statistics(loaded, split.selection), "pls", params)
    second = select_neurons(capture_statistics(loaded, split2.selection), "pls", params)
    assert _specific(first) == _specific(second)
    np.testing.assert_array_equal(first.frame["cls"].to_numpy(), second.frame["cls"].to_numpy())


def test_pls_does_not_depend_on_program_length(planted):
    """One language's programs repeated to double length keep their PLS (no 1/T left in the score)."""
    loaded, corpus, _ = planted
    python = [s for s in corpus if s.lang == "python"]
    short = capture_statistics(loaded, python, gradients=True)
    doubled = capture_statistics(loaded, [Snippet(s.id, s.lang, s.task, s.code + " " + s.code) for s in python])
    planted_pairs = [(layer, neuron) for lang, layer, neuron in PLANTED if lang == "python"]
    for layer, neuron in planted_pairs:
        ratio = doubled.pls()[0, layer, neuron] / short.pls()[0, layer, neuron]
        assert 0.8 < ratio < 1.25, ratio
