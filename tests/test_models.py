"""Model loading: local folders, clear errors offline and for unsupported architectures."""

import time

import pytest
import torch
from conftest import tiny_model

from neuro.model.adapters import ADAPTERS, UnsupportedArchitecture
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
