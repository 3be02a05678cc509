"""Model loading: local folders, clear errors offline and for unsupported architectures."""

import dataclasses
import time
from types import SimpleNamespace

import pytest
import torch
from conftest import ARCHITECTURES, tiny_model

from neuro.model.adapters import ADAPTERS, Adapter, UnsupportedArchitecture
from neuro.model.errors import ModelLoadError
from neuro.model.loading import load_model, model_info


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    loaded = tiny_model("llama")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder, loaded


def test_load_local_folder(saved_llama):
    folder, original = saved_llama
    loaded = load_model(folder, device="cpu")
    assert loaded.model.dtype == torch.float32
    assert not any(p.requires_grad for p in loaded.model.parameters())
    info = model_info(loaded)
    assert (info.model_type, info.n_layers, info.neurons_per_layer, info.total_neurons) == ("llama", 3, 48, 144)
    assert "down_proj" in info.neuron_site
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, original.model(ids).logits)
    assert load_model(folder, device="cpu").fingerprint == loaded.fingerprint


def test_fingerprint_changes_with_weights(saved_llama, tmp_path):
    folder, original = saved_llama
    other = tiny_model("llama", seed=1)
    other.model.save_pretrained(tmp_path)
    other.tokenizer.save_pretrained(tmp_path)
    assert load_model(tmp_path, device="cpu").fingerprint != load_model(folder, device="cpu").fingerprint


def test_offline_hub_id_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(ModelLoadError, match="offline"):
        load_model("meta-llama/Llama-3.1-8B")
    assert time.time() - start < 10


def test_missing_folder_and_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope" / "deeper"))
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(tmp_path)


def test_unsupported_architecture_lists_supported(tmp_path):
    import transformers as T

    cfg = T.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)
    cfg.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitecture) as err:
        load_model(tmp_path)
    for name in ("llama", "gpt2", "qwen2", "starcoder2"):
        assert name in str(err.value)
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2", "gpt_neox",
            "starcoder2"} <= set(ADAPTERS)


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_adapter_names_point_at_the_modules(kind):
    loaded = tiny_model(kind)
    adapter, modules = loaded.adapter, dict(loaded.model.named_modules())
    assert loaded.blocks is modules[adapter.blocks]
    for site in loaded.sites():
        assert modules[adapter.block_prefix(site.layer)[:-1]] is site.block
        assert modules[adapter.ffn_prefix(site.layer)[:-1]] is site.mlp
        assert modules[adapter.ffn_prefix(site.layer) + adapter.down] is site.down
        inputs = [m for m in (site.gate, site.up, site.gate_up, site.fc_in) if m is not None]
        assert len(inputs) == (2 if site.gate is not None else 1)
        for module in inputs:  # row n of every input projection is neuron n's (gate_up: twice)
            out = module.weight.shape[1] if type(module).__name__ == "Conv1D" else module.weight.shape[0]
            assert out == loaded.n_neurons * (2 if module is site.gate_up else 1)
        assert (site.fc_in is None) == adapter.gated
    # the logit lens relies on it: unembedding(final_norm(last block's output)) is the model's output
    kept = []

    def keep(module, args, out):
        kept.append(out[0] if isinstance(out, tuple) else out)
    handle = loaded.blocks[-1].register_forward_hook(keep)
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([[3, 17, 42, 8]])).logits
        handle.remove()
        again = loaded.unembedding(loaded.final_norm(kept[0]))
    cap = getattr(loaded.config, "final_logit_softcapping", None)  # Gemma 2 caps its logits
    torch.testing.assert_close(torch.tanh(again / cap) * cap if cap else again, logits)


def test_pad_id_is_the_pad_token_else_eos_else_0():
    loaded = tiny_model("llama")
    assert loaded.pad_id == loaded.tokenizer.pad_token_id
    for pad, eos, expected in [(5, 7, 5), (None, 7, 7), (None, 0, 0), (None, None, 0)]:
        tokenizer = SimpleNamespace(pad_token_id=pad, eos_token_id=eos)
        assert dataclasses.replace(loaded, tokenizer=tokenizer).pad_id == expected
    assert dataclasses.replace(loaded, tokenizer=None).pad_id == 0  # browse-only without a tokenizer


def test_an_adapter_entry_names_one_complete_ffn():
    common = dict(name="x", blocks="b", mlp="m", down="d", act="a")
    assert Adapter(**common, gate="g", up="u").gated
    assert Adapter(**common, gate_up="gu").gated
    assert not Adapter(**common, fc_in="i").gated
    broken_entries = [{}, {"gate": "g"}, {"up": "u"}, {"gate": "g", "up": "u", "fc_in": "i"},
                      {"gate_up": "gu", "fc_in": "i"}]
    for broken in broken_entries:
        with pytest.raises(ValueError, match="adapter x"):
            Adapter(**common, **broken)
    assert Adapter(**common, fc_in="i").site_label() == "b.{i}.m.d (input)"
