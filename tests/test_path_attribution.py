"""Path-integrated attribution against ground truth: measured single-neuron zeroing on a hand-built model whose
loss saturates along the path to zero, and the first-order attribution of neuro.instrument.statistics (an
independent code path) as its one-point special case."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SNIPPETS, tiny_model, word_tokenizer

from neuro.code.corpus import Snippet
from neuro.code.split import split_corpus
from neuro.instrument.ablation import neuron_effects
from neuro.instrument.path_attribution import (
    FIRST_ORDER,
    _gradient_pass,
    attribution_check,
    path_attribution,
    quadrature,
    strong_neurons,
)
from neuro.instrument.statistics import CorpusStats, capture_statistics
from neuro.instrument.tokens import encode, length_batches
from neuro.model.loading import prepare
from neuro.paths import REPO_DIR

LANGS = ["python", "go"]
WORDS, JUNK, HIDDEN, WIDTH = 8, 16, 32, 16
STRONG, WEAK = (0, 3), (0, 7)  # (layer, neuron): fires on python / on go


def _tokenizer():
    return word_tokenizer(LANGS, WORDS, JUNK)


def saturating_model(strong: tuple[float, float], weak: tuple[float, float] = (0.05, 0.5)):
    """One Llama block, attention writing nothing. The STRONG neuron fires on python tokens and writes
    strong[0] into a hidden dimension the head turns into +strong[1] on every python word (the next token of
    a python program is always one): at its activation the python words already hold nearly all the
    probability, so the loss is flat there (gradient ~0) while zeroing the neuron spreads the probability
    over the whole vocabulary. The WEAK neuron does the same for go with a small write: the loss is close
    to linear along its path."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=WIDTH, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False)
    model = LlamaForCausalLM._from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    words = {lang: tokenizer.convert_tokens_to_ids([f"{lang[:2]}{i}" for i in range(WORDS)]) for lang in LANGS}
    with torch.no_grad():  # hidden dimensions: 0-1 the token's language, 2-3 "a python / go word comes next"
        embed = model.model.embed_tokens.weight
        embed.normal_(0, 0.3)
        embed[:, :4] = 0
        head = model.lm_head.weight
        head.normal_(0, 0.02)
        head[:, :4] = 0
        block = model.model.layers[0]
        block.self_attn.o_proj.weight.zero_()
        mlp = block.mlp
        for proj in (mlp.gate_proj, mlp.up_proj):
            proj.weight.normal_(0, 0.05)
            proj.weight[:, :4] = 0
        mlp.down_proj.weight.normal_(0, 0.02)
        mlp.down_proj.weight[:4] = 0
        for dim, (lang, (_, neuron), (write, logit)) in enumerate(zip(LANGS, (STRONG, WEAK), (strong, weak))):
            embed[words[lang], dim] = 2.0
            head[words[lang], 2 + dim] = logit
            for proj in (mlp.gate_proj, mlp.up_proj):
                proj.weight[neuron] = 0
                proj.weight[neuron, dim] = 0.5
            mlp.down_proj.weight[:, neuron] = 0
            mlp.down_proj.weight[2 + dim, neuron] = write
    return prepare(model, tokenizer, source="saturating")


def saturating_corpus(programs: int = 4, length: int = 20) -> list[Snippet]:
    rng = np.random.default_rng(0)
    return [Snippet(f"t{i}/{lang}", lang, f"t{i}", " ".join(f"{lang[:2]}{w}" for w in rng.integers(0, WORDS, length)))
            for i in range(programs) for lang in LANGS]


def _own(frame: pd.DataFrame, pair, lang: str) -> float:
    return float(frame.set_index(["layer", "neuron"]).loc[pair, lang])


@pytest.fixture(scope="module")
def saturated():
    """A neuron that saturates the loss moderately (the loss rise comes late on the path to zero)."""
    return saturating_model(strong=(0.3, 3.0)), saturating_corpus()


# ------------------------------------------------------------------------------ first order: the K = 1 case

@pytest.mark.parametrize("kind", ["llama", "gpt2"])  # gated and plain FFN: different statistics hooks
def test_one_point_at_one_is_the_statistics_attribution(kind):
    loaded = tiny_model(kind)
    stats = capture_statistics(loaded, SNIPPETS, gradients=True, units=False)
    rng = np.random.default_rng(1)
    pairs = [(layer, int(n)) for layer in range(loaded.n_layers) for n in rng.choice(loaded.n_neurons, 3, False)]
    ours = path_attribution(loaded, SNIPPETS, pairs, points=FIRST_ORDER)
    reference = stats.attribution()
    for row in ours.itertuples(index=False):
        for lang in stats.languages:
            expected = reference[stats.languages.index(lang), row.layer, row.neuron]
            assert getattr(row, lang) == pytest.approx(expected, rel=1e-4, abs=1e-9)
    assert np.abs(ours[stats.languages].to_numpy()).max() > 1e-5  # not all zero


def test_checkpointed_blocks_give_the_same_gradients(tiny_llama):
    encoded = [encode(tiny_llama, s.code, 64) for s in SNIPPETS]
    batches = length_batches([len(e.ids) for e in encoded], 10_000)
    layer_map = {0: np.array([1, 5]), 2: np.array([7])}
    plain = _gradient_pass(tiny_llama, encoded, batches, layer_map, 0.4, checkpointing=False)
    again = _gradient_pass(tiny_llama, encoded, batches, layer_map, 0.4, checkpointing=True)
    for pair in plain:
        np.testing.assert_allclose(again[pair], plain[pair], rtol=1e-5, atol=1e-10)
        assert np.abs(plain[pair]).max() > 0


# ------------------------------------------------------------------------ ground truth: measured zeroing

def test_path_estimate_recovers_a_saturated_effect_that_first_order_misses(saturated):
    loaded, corpus = saturated
    measured = _own(neuron_effects(loaded, corpus, [STRONG]), STRONG, "python")
    first = _own(path_attribution(loaded, corpus, [STRONG], points=FIRST_ORDER), STRONG, "python")
    path = _own(path_attribution(loaded, corpus, [STRONG], points=4), STRONG, "python")
    assert measured > 1.0                      # zeroing it costs more than a nat
    assert abs(first) < 0.1 * measured         # flat at the activation: first order sees almost nothing
    assert path == pytest.approx(measured, rel=0.2)


def test_path_estimate_has_the_measured_sign_where_first_order_has_the_other():
    """A sharper saturation (a larger write): the loss even falls a little as the activation first shrinks,
    so the first-order estimate says zeroing helps, while it costs over a nat."""
    loaded, corpus = saturating_model(strong=(1.0, 3.0)), saturating_corpus()
    measured = _own(neuron_effects(loaded, corpus, [STRONG]), STRONG, "python")
    first = _own(path_attribution(loaded, corpus, [STRONG], points=FIRST_ORDER), STRONG, "python")
    assert measured > 1.0 and first < 0
    for rule in ("midpoint", "gauss"):
        assert _own(path_attribution(loaded, corpus, [STRONG], points=quadrature(4, rule)), STRONG, "python") > 0
    gauss = _own(path_attribution(loaded, corpus, [STRONG], points=quadrature(4, "gauss")), STRONG, "python")
    assert gauss == pytest.approx(measured, rel=0.2)  # its first node sits at alpha = 0.07, inside the rise


def test_both_estimates_agree_with_zeroing_where_the_loss_is_close_to_linear(saturated):
    loaded, corpus = saturated
    measured = _own(neuron_effects(loaded, corpus, [WEAK]), WEAK, "go")
    assert measured > 0.05
    for points in (FIRST_ORDER, 4):
        assert _own(path_attribution(loaded, corpus, [WEAK], points=points), WEAK, "go") == \
            pytest.approx(measured, rel=0.1)
    # a neuron that never fires on a language changes nothing there, and no estimate says otherwise
    assert _own(path_attribution(loaded, corpus, [WEAK], points=4), WEAK, "python") == 0.0


def test_check_reports_sign_agreement_and_lists_the_failure():
    loaded, corpus = saturating_model(strong=(1.0, 3.0)), saturating_corpus()
    check = attribution_check(loaded, corpus, [STRONG, WEAK], points=quadrature(4, "gauss"))
    agreement = check.agreement()
    # pairs with a measured effect: (STRONG, python) and (WEAK, go); the other two change nothing
    assert agreement["path"]["signed_pairs"] == 2 and agreement["path"]["sign_agreement"] == 1.0
    assert agreement["first_order"]["sign_agreement"] == 0.5
    bad = check.disagreements()
    assert set(zip(bad["layer"], bad["neuron"], bad["language"])) == {(*STRONG, "python")}
    assert bad["problem"].iloc[0] == "first_order: sign"
    summary = json.loads(json.dumps(check.summary(), default=str))
    assert summary["quadrature"]["rule"] == "gauss" and len(summary["pairs"]) == 4


# --------------------------------------------------------------------------------- pieces of the estimator

def test_quadratures_integrate_what_they_should():
    f = lambda x: 7 * x ** 6 + 3 * x ** 2  # noqa: E731 - integral over (0, 1) is 2
    gauss = quadrature(4, "gauss")
    assert sum(w * f(x) for x, w in zip(gauss.points, gauss.weights)) == pytest.approx(2.0, rel=1e-12)
    mid = quadrature(4)
    assert mid.points == (0.125, 0.375, 0.625, 0.875) and sum(mid.weights) == pytest.approx(1.0)
    assert sum(w * (2 * x) for x, w in zip(mid.points, mid.weights)) == pytest.approx(1.0)  # linear: exact
    with pytest.raises(ValueError):
        quadrature(0)
    with pytest.raises(ValueError):
        quadrature(3, "simpson")


def test_strong_neurons_take_the_extremes_of_either_sign():
    langs, layers, width = ["a", "b"], 2, 5
    act = np.ones((2, layers, width), dtype=np.float32)
    act[1, 0, 2] = 9.0          # largest mean |a|, in one language only
    attr = np.zeros((2, layers, width), dtype=np.float32)
    attr[0, 1, 4] = -5.0        # largest |attribution| is negative
    attr[1, 0, 2] = 3.0         # the strongest activation also scores second by |attribution|
    stats = CorpusStats(langs, act * 10, act, None, np.array([10.0, 10.0]), np.array([2.0, 2.0]), np.zeros(2),
                        attribution_sum=attr * 2)
    table = strong_neurons(stats, per_kind=2)
    kinds = {(r.layer, r.neuron): r.kind for r in table.itertuples()}
    assert kinds[(0, 2)] == "both" and kinds[(1, 4)] == "attribution"
    assert len(table) == 3 and sum(k == "activation" for k in kinds.values()) == 1  # a tie broken by order
    assert table.set_index(["layer", "neuron"]).loc[(1, 4), "abs_attribution"] == pytest.approx(5.0)


def test_cli_attribution_check_json(tmp_path, tiny_env):
    tiny_env(folder=tmp_path, kind="qwen2")
    cmd = [sys.executable, "-m", "neuro", "attribution-check", "--model", str(tmp_path / "model"), "--corpus",
           str(tmp_path / "corpus.jsonl"), "--neurons-per-kind", "2", "--points", "2", "--json",
           "--cache", str(tmp_path / "cache")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_DIR, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    evaluation = split_corpus(SNIPPETS).evaluation
    assert summary["programs"] == len(evaluation) == summary["split"]["evaluation_programs"]
    assert set(summary["languages"]) == {s.lang for s in evaluation}  # measured on the evaluation side
    assert 2 <= summary["neurons"] <= 4 and summary["quadrature"]["points"] == [0.25, 0.75]
    assert set(summary["agreement"]) == {"first_order", "path"}
    assert {c["kind"] for c in summary["chosen"]} <= {"activation", "attribution", "both"}
