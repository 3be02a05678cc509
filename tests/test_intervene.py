"""Ablation: zeroing neurons equals zeroing their down-projection columns; hooks vanish afterwards."""

import copy

import numpy as np
import pytest
import torch
from conftest import tiny_model

from neuro.instrument.ablation import (
    ablated,
    ablation_matrix,
    as_layer_map,
    language_losses,
    random_like,
)
from neuro.model.loading import prepare


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_ablation_equals_zeroed_weight_columns(kind):
    loaded = tiny_model(kind)
    neurons = {0: [1, 5, 7], 2: [0, 3]}
    reference = copy.deepcopy(loaded.model)
    ref_sites = prepare(reference, loaded.tokenizer, "ref", "ref").sites()
    with torch.no_grad():
        for layer, idx in neurons.items():
            weight = ref_sites[layer].down.weight
            if kind == "gpt2":  # Conv1D stores (in, out)
                weight[idx, :] = 0
            else:
                weight[:, idx] = 0
    ids = torch.tensor([[3, 17, 42, 8, 99, 5]])
    with torch.no_grad():
        original = loaded.model(ids).logits
        with ablated(loaded, neurons):
            inside = loaded.model(ids).logits
        after = loaded.model(ids).logits
        expected = reference(ids).logits
    torch.testing.assert_close(inside, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after, original)
    assert not torch.allclose(inside, original)


def test_ablation_applies_to_generation(tiny_llama):
    ids = torch.tensor([[3, 17, 42]])
    everything = {layer: range(tiny_llama.n_neurons) for layer in range(tiny_llama.n_layers)}
    with torch.no_grad():
        plain = tiny_llama.model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        with ablated(tiny_llama, everything):
            zeroed = tiny_llama.model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
            no_ffn_logits = tiny_llama.model(ids).logits
    assert plain.shape == zeroed.shape
    # with every FFN silenced the output no longer depends on the FFN weights at all
    with torch.no_grad():
        for site in tiny_llama.sites():
            site.down.weight.mul_(2.0)
        with ablated(tiny_llama, everything):
            again = tiny_llama.model(ids).logits
        for site in tiny_llama.sites():
            site.down.weight.mul_(0.5)
    torch.testing.assert_close(again, no_ffn_logits)


def test_bad_neurons_rejected(tiny_llama):
    with pytest.raises(ValueError):
        with ablated(tiny_llama, {99: [0]}):
            pass
    with pytest.raises(ValueError):
        with ablated(tiny_llama, {0: [10_000]}):
            pass


def test_random_control_matches_sizes_and_avoids_selection():
    chosen = {0: [1, 2, 3], 4: [7]}
    control = random_like(chosen, width=10, seed=1, exclude=chosen)
    assert {k: len(v) for k, v in control.items()} == {0: 3, 4: 1}
    assert not set(control[0]) & {1, 2, 3} and 7 not in control[4]
    assert as_layer_map([(0, 2), (0, 1), (0, 2)]) == {0: pytest.approx(np.array([1, 2]))}


def test_ablation_matrix_on_tiny_model(tiny_llama, snippets):
    groups = {"python": {0: [0, 1, 2]}, "go": {1: [4, 5]}}
    scores = {name: np.random.default_rng(0).random((tiny_llama.n_layers, tiny_llama.n_neurons)) for name in groups}
    result = ablation_matrix(tiny_llama, snippets, groups, scores=scores, draws=3, uniform_draws=2)
    assert list(result.delta.index) == ["python", "go"]
    assert set(result.delta.columns) == {"python", "go", "java"}
    base = language_losses(tiny_llama, snippets)
    assert result.base == pytest.approx(base)
    with ablated(tiny_llama, groups["go"]):
        go_losses = language_losses(tiny_llama, snippets)
    assert result.delta.loc["go", "java"] == pytest.approx(go_losses["java"] - base["java"])
    assert result.sizes == {"python": 3, "go": 2}
    # three matched and two uniform draws per group, each the group's size per layer, none of its neurons
    assert (result.draws("matched"), result.draws("uniform")) == (3, 2)
    for row in [*result.rows("matched", "go"), *result.rows("uniform", "go")]:
        drawn = result.neurons_of(int(row))
        assert set(drawn) == {1} and len(drawn[1]) == 2 and not {4, 5} & set(drawn[1].tolist())
    assert len(result.control_draws("matched")) == 3
    assert result.control_draws("uniform")[1].shape == result.delta.shape
    with pytest.raises(ValueError, match="draws"):
        ablation_matrix(tiny_llama, snippets, groups, scores=scores, draws=0, uniform_draws=0)
