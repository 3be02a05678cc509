"""One neuron's card: the direct logit effect on hand-built weights, the streamed histogram against a direct
count, top contexts traced again, single-neuron ablation, the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SNIPPETS, tiny_model

from neuro.analysis.neuron_card import (
    ablate_neuron,
    logit_effect,
    neuron_card,
    neuron_scores,
    norm_gain,
    top_contexts,
)
from neuro.analysis.selectivity import SelectionParams, select_neurons
from neuro.instrument.ablation import neuron_effects
from neuro.instrument.histogram import StreamingHistogram, activation_histogram
from neuro.instrument.statistics import capture_statistics, trace_tokens
from neuro.paths import REPO_DIR


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def stats(llama):
    return capture_statistics(llama, SNIPPETS, syntax=True, top_k=8)


# --------------------------------------------------------------------------- logit effect
def _plant(loaded, layer, neuron, up_token, down_token, dim=3, size=10.0):
    """Hand-built: the neuron's output column is e_dim / gain (so gain * column = e_dim), the unembedding row of
    `up_token` is size * e_dim and that of `down_token` -size * e_dim: those two must come out on top and bottom
    with logits +-size (every other token: its own small random weight on dim)."""
    with torch.no_grad():
        norm = loaded.final_norm
        norm.weight.copy_(torch.linspace(0.5, 2.0, norm.weight.numel()))
        if getattr(norm, "bias", None) is not None:
            norm.bias.copy_(torch.linspace(-1, 1, norm.bias.numel()))  # a bias must not enter the effect
        gain = norm.weight[dim].item()
        unembed = loaded.unembedding.weight
        unembed[up_token].zero_()
        unembed[up_token, dim] = size
        unembed[down_token].zero_()
        unembed[down_token, dim] = -size
        down = loaded.sites()[layer].down
        column = torch.zeros(unembed.shape[1])
        column[dim] = 1.0 / gain
        if isinstance(down, torch.nn.Linear):
            down.weight[:, neuron] = column
        else:  # GPT-2's Conv1D: (in, out)
            down.weight[neuron, :] = column


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_logit_effect_finds_the_planted_tokens(kind, monkeypatch):
    from neuro.analysis import neuron_card as card

    monkeypatch.setattr(card, "UNEMBED_ROWS", 64)  # the vocabulary read in several blocks, the planted rows in two
    loaded = tiny_model(kind, seed=1)
    _plant(loaded, layer=1, neuron=5, up_token=30, down_token=123)
    effect = logit_effect(loaded, 1, 5, k=3)
    assert effect.promoted[0].token_id == 30 and effect.suppressed[0].token_id == 123
    assert effect.promoted[0].logit == pytest.approx(10.0, rel=1e-4)
    assert effect.suppressed[0].logit == pytest.approx(-10.0, rel=1e-4)
    assert effect.promoted[0].token == loaded.tokenizer.decode([30])
    assert effect.promoted[1].logit < 1.0 and effect.promoted[0].logit >= effect.promoted[1].logit
    other = logit_effect(loaded, 1, 6, k=3)  # a neighbour's column is untouched: no planted-size effect
    assert other.promoted[0].logit < 1.0 and other.suppressed[0].logit > -1.0


def test_norm_gain_is_the_weight_for_layer_and_rms_norms_of_any_width():
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    for width in (6, 7):
        w = torch.linspace(0.3, 1.7, width)
        ln = torch.nn.LayerNorm(width)
        rms = LlamaRMSNorm(width)
        gemma = GemmaRMSNorm(width)  # scales by 1 + w
        with torch.no_grad():
            ln.weight.copy_(w)
            ln.bias.copy_(torch.arange(width) * 0.1)
            rms.weight.copy_(w)
            gemma.weight.copy_(w - 1)
        for norm in (ln, rms, gemma):
            gain = norm_gain(norm, width, "cpu", torch.float32)
            assert torch.allclose(gain.float(), w, atol=1e-4), (type(norm).__name__, width, gain)


# --------------------------------------------------------------------------- histogram
def test_streaming_histogram_matches_numpy_on_its_own_edges():
    rng = np.random.default_rng(0)
    hist = StreamingHistogram(groups=2, bins=8)
    every = [[], []]
    for scale, shift in ((0.1, 0.0), (1.0, 5.0), (3.0, -20.0), (0.01, 0.0)):  # the range must grow both ways
        values = rng.normal(shift, scale, 50)
        group = rng.integers(0, 2, 50)
        hist.add(group, values)
        for g in (0, 1):
            every[g].extend(values[group == g])
    edges = hist.edges
    assert len(edges) == 9 and edges[0] <= min(map(min, every)) and edges[-1] > max(map(max, every))
    for g in (0, 1):
        assert hist.counts[g].tolist() == np.histogram(every[g], bins=edges)[0].tolist()
        assert hist.low[g] == min(every[g]) and hist.high[g] == max(every[g])


def test_histogram_counts_every_real_token_once(llama, stats):
    hist = activation_histogram(llama, SNIPPETS, 2, 7, bins=16, batch_tokens=64)
    # the statistics pass counts real tokens per language its own way (its hooks, its batches)
    assert hist.tokens == {lang: int(n) for lang, n in zip(stats.languages, stats.tokens)}
    bos = llama.tokenizer.bos_token_id
    direct = {}
    for s in SNIPPETS:  # by hand: trace each program, drop its first position (the BOS)
        trace = trace_tokens(llama, s.code, layers=[2], max_length=512)
        assert trace.token_ids[0] == bos
        direct.setdefault(s.lang, []).extend(trace.activations[0][1:, 7])
    for i, lang in enumerate(hist.languages):
        assert hist.counts[i].tolist() == np.histogram(direct[lang], bins=hist.edges)[0].tolist()
    assert hist.counts[:, 0].sum() > 0 and hist.counts[:, -1].sum() > 0  # trimmed to the data
    frame = hist.frame()
    assert frame.groupby("language")["share"].sum().round(6).eq(1.0).all()


# --------------------------------------------------------------------------- scores, contexts, ablation
def test_scores_of_a_neuron_that_is_not_selected(stats):
    selection = select_neurons(stats, "pls", SelectionParams())
    frame = selection.frame
    other = frame[frame.cls == "other"].iloc[3]
    scores = neuron_scores(stats, selection, int(other.layer), int(other.neuron))
    assert scores.cls == "other" and not scores.selected
    assert scores.shown_label == "PLS (scaled per language and layer)"
    assert list(scores.table.language) == stats.languages
    best = frame.loc[frame["max_pls"].idxmax()]
    assert neuron_scores(stats, selection, int(best.layer), int(best.neuron)).rank == 1
    with pytest.raises(ValueError, match="outside"):
        neuron_scores(stats, selection, 3, 0)


def test_top_contexts_shade_every_token_and_trace_the_recorded_peak(llama, stats):
    contexts = top_contexts(stats, SNIPPETS, llama, 1, 11, count=3, lines=1)
    assert 1 <= len(contexts) <= 3 and len({c.snippet_id for c in contexts}) == len(contexts)
    assert [c.recorded for c in contexts] == sorted((c.recorded for c in contexts), reverse=True)
    for c in contexts:
        assert len(c.activations) == len(c.offsets) == len(c.node_types) > 1
        assert c.activations[c.peak] == pytest.approx(c.recorded, abs=1e-4)  # the statistics' value, traced again
        assert c.activations.max() == pytest.approx(c.recorded, abs=1e-4)
        code = next(s.code for s in SNIPPETS if s.id == c.snippet_id)
        assert code[c.start:c.start + len(c.text)] == c.text
        assert all(0 <= a < b <= len(c.text) for a, b in c.offsets)


def test_single_neuron_ablation_matches_the_measured_effects(llama):
    result = ablate_neuron(llama, SNIPPETS, 0, 9)
    truth = neuron_effects(llama, SNIPPETS, [(0, 9)]).iloc[0]
    for row in result.table.itertuples():
        assert row.change == pytest.approx(truth[row.language], abs=1e-6)
        assert row.low <= row.change <= row.high or np.isnan(row.low)
    assert result.unit == "task"


def test_card_summary_is_json(llama, stats):
    selection = select_neurons(stats, "pls", SelectionParams())
    card = neuron_card(llama, stats, selection, SNIPPETS, 1, 4, k=4, contexts=2)
    summary = json.loads(json.dumps(card.summary(), default=str))
    assert summary["layer"] == 1 and len(summary["logit_effect"]["promoted"]) == 4
    assert sum(summary["histogram"]["tokens"].values()) == int(stats.tokens.sum())


def test_cli_neuron_json(tmp_path, tiny_env):
    tiny_env(folder=tmp_path, kind="qwen2")
    base = [sys.executable, "-m", "neuro", "neuron", "--model", str(tmp_path / "model"), "--corpus",
            str(tmp_path / "corpus.jsonl"), "--cache", str(tmp_path / "cache"), "--json"]
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(base + ["--layer", "2", "--neuron", "40", "-k", "3", "--ablate"], capture_output=True,
                         text=True, cwd=REPO_DIR, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert (summary["layer"], summary["neuron"]) == (2, 40) and summary["class"] in {"specific", "universal", "other"}
    assert len(summary["logit_effect"]["suppressed"]) == 3 and summary["histogram"]["edges"]
    assert {r["language"] for r in summary["ablation"]["per_language"]} <= {"python", "go", "java"}
    bad = subprocess.run(base + ["--layer", "3", "--neuron", "0"], capture_output=True, text=True, cwd=REPO_DIR,
                         timeout=300, env=env)
    assert bad.returncode == 2 and "layer 3 is outside 0..2" in json.loads(bad.stdout)["error"]
