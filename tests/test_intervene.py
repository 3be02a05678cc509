"""Ablation: zeroing neurons equals zeroing their down-projection columns; hooks vanish afterwards."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_model

from neuro.instrument.ablation import (
    AblationResult,
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
    result = ablation_matrix(tiny_llama, snippets, groups, draws=3)
    assert list(result.delta.index) == ["python", "go"]
    assert set(result.delta.columns) == {"python", "go", "java"}
    base = language_losses(tiny_llama, snippets)
    assert result.base == pytest.approx(base)
    with ablated(tiny_llama, groups["go"]):
        go_losses = language_losses(tiny_llama, snippets)
    assert result.delta.loc["go", "java"] == pytest.approx(go_losses["java"] - base["java"])
    assert result.sizes == {"python": 3, "go": 2}
    # three different random draws, each the right size: their spread is not zero
    assert len(result.random_draws) == 3
    assert (result.delta_random_sd.to_numpy() > 0).any()
    with pytest.raises(ValueError, match="draws"):
        ablation_matrix(tiny_llama, snippets, groups, draws=0)


def test_selectivity_is_bounded_and_compares_with_random_draws():
    delta = pd.DataFrame({"python": [0.8, 0.1], "go": [0.2, 0.5], "java": [0.2, 0.1]}, index=["python", "go"])
    draws = [delta * 0 + 0.1 + 0.01 * d for d in range(4)]  # 0.10, 0.11, 0.12, 0.13 everywhere
    result = AblationResult({"python": 1.0, "go": 1.0, "java": 1.0}, delta, draws, {"python": 1, "go": 1})
    assert result.selectivity() == pytest.approx({"python": 0.6, "go": 0.4})
    table = result.summary()
    assert table.loc["python", "random_mean"] == pytest.approx(0.115)
    assert table.loc["python", "random_sd"] == pytest.approx(np.std([0.10, 0.11, 0.12, 0.13], ddof=1))
    assert table.loc["python", "z"] == pytest.approx((0.8 - 0.115) / table.loc["python", "random_sd"])
    assert table.loc["python", "random_at_least"] == 0.0
    assert table.loc["python", "selectivity_random_mean"] == pytest.approx(0.0)
    # others unchanged (0): a ratio would be infinite, the difference is just the own change
    alone = AblationResult(result.base, delta.assign(go=0.0, java=0.0).loc[["python"]],
                           [d.loc[["python"]] for d in draws], {"python": 1})
    assert alone.selectivity() == pytest.approx({"python": 0.8})
    both = pd.concat([delta, delta.iloc[[0]].rename(index={"python": "universal"})])
    with_universal = AblationResult(result.base, both, [both] * 2, {"python": 1, "go": 1, "universal": 2})
    table = with_universal.summary()
    assert np.isnan(table.loc["universal", "selectivity"])
    assert table.loc["universal", "loss_change"] == pytest.approx(0.4)  # not a language: the mean over all
    helped = AblationResult(result.base, -delta, draws, {"python": 1, "go": 1})
    assert helped.selectivity()["python"] < 0 and helped.summary().loc["python", "random_at_least"] == 1.0
