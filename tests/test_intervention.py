"""Interventions (zero / mean / scale / set / patch) against hand computations on the planted model
(tests/test_ground_truth.py): which neurons fire where is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_ground_truth import LANGS, PLANTED, UNIVERSAL, planted_corpus, planted_model

from neuro.instrument.ablation import ablated
from neuro.instrument.intervention import Intervention, intervened, patched_positions
from neuro.instrument.means import language_means
from neuro.instrument.statistics import trace_tokens

PY_LAST = next((layer, n) for lang, layer, n in PLANTED if lang == "python" and layer == 1)  # (1, 17)
GO_NEURONS = sorted((layer, n) for lang, layer, n in PLANTED if lang == "go")


@pytest.fixture(scope="module")
def planted():
    loaded = planted_model()
    loaded.model.generation_config.eos_token_id = None  # LlamaConfig's default EOS (2) is the word py0 here
    return loaded, planted_corpus(programs=4)


def _ids(loaded, code: str) -> torch.Tensor:
    from neuro.instrument.tokens import encode

    return torch.tensor([encode(loaded, code, 256).ids])


def _logits(loaded, ids, *interventions) -> torch.Tensor:
    with intervened(loaded, *interventions), torch.no_grad():
        return loaded.model(ids).logits


def _code(corpus, lang: str) -> str:
    return next(s.code for s in corpus if s.lang == lang)


def test_no_op_interventions_change_nothing_bitwise(planted):
    loaded, corpus = planted
    ids = _ids(loaded, _code(corpus, "python"))
    plain = _logits(loaded, ids)
    python = [(layer, n) for lang, layer, n in PLANTED if lang == "python"]
    for iv in (Intervention([], "zero"), Intervention([], "scale", 5.0),
               Intervention(python + GO_NEURONS, "scale", 1.0),
               # a go neuron is exactly 0 on python tokens (act_fn(0) * 0): setting it to 0 is no change
               Intervention(GO_NEURONS, "set", 0.0),
               Intervention(python, "patch", source=_code(corpus, "python"))):
        assert torch.equal(_logits(loaded, ids, iv), plain), iv.label()
    # and nothing stays behind
    assert torch.equal(_logits(loaded, ids), plain)


def test_zeroing_a_planted_neuron_removes_exactly_its_language_boost(planted):
    """Block 1's python neuron writes 0.5 * a into hidden dimension 4 (python's "comes next" signal) and
    nowhere else: with it zeroed, the logits equal the unembedding of (the final hidden state minus that)."""
    loaded, corpus = planted
    ids = _ids(loaded, _code(corpus, "python"))
    kept = {}
    handle = loaded.final_norm.register_forward_pre_hook(lambda m, args: kept.__setitem__("h", args[0].clone()))
    try:
        plain = _logits(loaded, ids)
        hidden = kept["h"]
        zeroed = _logits(loaded, ids, Intervention([PY_LAST], "zero"))
    finally:
        handle.remove()
    a = torch.from_numpy(trace_tokens(loaded, _code(corpus, "python"), layers=[1]).activations[0][:, PY_LAST[1]])
    assert (a[1:] > 0.05).all()  # the neuron fires on every python token
    expected_hidden = hidden.clone()
    expected_hidden[0, :, 4 + LANGS.index("python")] -= 0.5 * a
    with torch.no_grad():
        expected = loaded.unembedding(loaded.final_norm(expected_hidden))
    torch.testing.assert_close(zeroed, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(zeroed, plain)
    # the python words lose probability, the others' relative odds among themselves are unchanged
    py_words = loaded.tokenizer.convert_tokens_to_ids([f"py{i}" for i in range(12)])
    p_plain = plain.softmax(-1)[0, 1:, py_words].sum(-1)
    p_zeroed = zeroed.softmax(-1)[0, 1:, py_words].sum(-1)
    assert (p_zeroed < p_plain).all()


def test_ablated_is_the_zero_intervention(planted):
    loaded, corpus = planted
    ids = _ids(loaded, _code(corpus, "go"))
    with ablated(loaded, {0: [9], 1: [30]}), torch.no_grad():
        via_ablated = loaded.model(ids).logits
    assert torch.equal(via_ablated, _logits(loaded, ids, Intervention(GO_NEURONS, "zero")))
    # zero over an explicit range of every position: the same numbers by the indexed path
    n = ids.shape[1]
    torch.testing.assert_close(_logits(loaded, ids, Intervention(GO_NEURONS, "zero", positions=(0, n))), via_ablated,
                               rtol=0, atol=1e-6)


def test_scale_and_set_equal_their_hand_computation(planted):
    """Scaling block 1's python neuron by f adds (f - 1) * 0.5 * a to hidden dimension 4; setting it to v
    replaces 0.5 * a by 0.5 * v: both checked against the unembedding of the edited final hidden state."""
    loaded, corpus = planted
    code = _code(corpus, "python")
    ids = _ids(loaded, code)
    a = torch.from_numpy(trace_tokens(loaded, code, layers=[1]).activations[0][:, PY_LAST[1]])
    kept = {}
    handle = loaded.final_norm.register_forward_pre_hook(lambda m, args: kept.__setitem__("h", args[0].clone()))
    try:
        _logits(loaded, ids)
        hidden = kept["h"]
        scaled = _logits(loaded, ids, Intervention([PY_LAST], "scale", 3.0))
        set_to = _logits(loaded, ids, Intervention([PY_LAST], "set", 2.0))
    finally:
        handle.remove()
    dim = 4 + LANGS.index("python")
    for edit, got in (((3.0 - 1) * 0.5 * a, scaled), (0.5 * (2.0 - a), set_to)):
        h = hidden.clone()
        h[0, :, dim] += edit
        with torch.no_grad():
            torch.testing.assert_close(got, loaded.unembedding(loaded.final_norm(h)), rtol=1e-5, atol=1e-5)


def test_positions_limit_the_change(planted):
    loaded, corpus = planted
    ids = _ids(loaded, _code(corpus, "python"))
    plain = _logits(loaded, ids)
    late = _logits(loaded, ids, Intervention([PY_LAST], "zero", positions=(5, 10)))
    assert torch.equal(late[0, :5], plain[0, :5]) and torch.equal(late[0, 10:], plain[0, 10:])
    assert not torch.allclose(late[0, 5:10], plain[0, 5:10])


def test_positions_follow_the_cache_in_generation(planted):
    """During cached generation a range keeps meaning absolute positions: setting the go neurons high from
    the first new position on leaves the first new token alone (it is predicted from the last prompt
    position) and turns every later one into a go word."""
    loaded, corpus = planted
    ids = _ids(loaded, _code(corpus, "python"))
    n = ids.shape[1]
    go_words = set(loaded.tokenizer.convert_tokens_to_ids([f"go{i}" for i in range(12)]))

    def generate(*interventions):
        with intervened(loaded, *interventions), torch.no_grad():
            return loaded.model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)[0, n:].tolist()

    plain = generate()
    late = generate(Intervention(GO_NEURONS, "set", 20.0, positions=(n, 10**6)))
    assert not set(plain) & go_words
    assert late[0] == plain[0]
    assert set(late[1:]) <= go_words


def test_patch_takes_the_source_activations_over_the_overlap(planted):
    """Patching the python neurons of a python program from a go program's activations (where they are 0)
    over the shorter input's length equals zeroing them over that prefix."""
    loaded, corpus = planted
    code, source = _code(corpus, "python"), _code(corpus, "go")
    ids = _ids(loaded, code)
    python = [(layer, k) for lang, layer, k in PLANTED if lang == "python"]
    overlap, n = patched_positions(loaded, code, source)
    assert overlap == min(n, _ids(loaded, source).shape[1])
    patched = _logits(loaded, ids, Intervention(python, "patch", source=source))
    # the source's BOS position is the BOS of the code too: same activations there
    zeroed = _logits(loaded, ids, Intervention(python, "zero", positions=(1, overlap)))
    torch.testing.assert_close(patched, zeroed, rtol=0, atol=1e-6)


def test_mean_sets_the_language_mean_measured_by_hand(planted):
    loaded, corpus = planted
    means = language_means(loaded, corpus, max_length=256)
    assert means.languages == LANGS
    for lang in LANGS:
        programs = [s.code for s in corpus if s.lang == lang]
        acts = np.concatenate([trace_tokens(loaded, c).activations[:, 1:] for c in programs], axis=1)  # no BOS
        np.testing.assert_allclose(means.of(lang), acts.mean(1), rtol=1e-4, atol=1e-6)
        assert means.tokens[LANGS.index(lang)] == acts.shape[1]
    iv = Intervention.mean([UNIVERSAL, PY_LAST], "go", means)
    assert iv.value == (float(means.of("go")[PY_LAST]), float(means.of("go")[UNIVERSAL]))  # sorted: (1,17) < (1,44)
    assert iv.value[0] == 0.0  # the python neuron never fires on go
    ids = _ids(loaded, _code(corpus, "python"))
    set_by_hand = Intervention([PY_LAST, UNIVERSAL], "set", (0.0, float(means.of("go")[UNIVERSAL])))
    assert torch.equal(_logits(loaded, ids, iv), _logits(loaded, ids, set_by_hand))
    with pytest.raises(ValueError, match="no mean activations"):
        Intervention.mean([PY_LAST], "rust", means)


@pytest.mark.parametrize("kwargs, message", [
    (dict(neurons=[(0, 1)], op="nudge"), "unknown operation"),
    (dict(neurons=[(0, 1)], op="scale"), "one factor"),
    (dict(neurons=[(0, 1)], op="set"), "needs a value"),
    (dict(neurons=[(0, 1)], op="mean"), "one mean per neuron"),
    (dict(neurons=[(0, 1)], op="patch"), "source code"),
    (dict(neurons=[(0, 1)], op="zero", positions=(3, 3)), "positions"),
    (dict(neurons=[(0, 1), (0, 2)], op="set", value=(1.0,)), "1 values for 2 neurons"),
    (dict(neurons=[(0, 1)], op="scale", value=float("nan")), "finite"),
])
def test_bad_interventions_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Intervention(**kwargs)


def test_neurons_outside_the_model_are_refused(planted):
    loaded, _ = planted
    with pytest.raises(ValueError, match="outside"):
        with intervened(loaded, Intervention([(0, 10_000)], "scale", 2.0)):
            pass
