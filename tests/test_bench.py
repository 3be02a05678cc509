"""bench/bench_capture.py: the model presets have the published shapes; a tiny CPU run reports every figure."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import make_tokenizer

from neuro.model.loading import prepare

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_capture.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_capture", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("preset, shape, params", [
    ("llama-3.1-8b", dict(model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=8, vocab_size=128256), 8_030_261_248),
    ("qwen2.5-coder-32b", dict(model_type="qwen2", hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                               num_attention_heads=40, num_key_value_heads=8, vocab_size=152064), 32_763_876_352),
])
def test_presets_have_the_published_shapes(bench, preset, shape, params):
    config = bench.preset_config(preset)
    assert {key: getattr(config, key) for key in shape} == shape
    model = bench.build_model(config, "meta")  # no memory: parameters on the meta device
    assert sum(p.numel() for p in model.parameters()) == params  # the published parameter count
    loaded = prepare(model, None, source=preset, fingerprint="meta")
    assert (loaded.n_layers, loaded.n_neurons) == (shape["num_hidden_layers"], shape["intermediate_size"])
    assert next(model.parameters()).dtype.is_floating_point


def test_preset_rope_and_layer_override(bench):
    llama = bench.preset_config("llama-3.1-8b", layers=1, seq=64)
    assert llama.num_hidden_layers == 1 and llama.hidden_size == 4096
    assert llama.rope_parameters["rope_theta"] == 500000.0 and llama.rope_parameters["rope_type"] == "llama3"
    qwen = bench.preset_config("qwen2.5-coder-32b")
    assert qwen.rope_parameters["rope_theta"] == 1000000.0 and not qwen.tie_word_embeddings
    with pytest.raises(ValueError, match="unknown preset"):
        bench.preset_config("gpt-5")


def test_clamped_tokenizer_keeps_ids_inside_the_vocabulary(bench):
    tok = bench.ClampedTokenizer(make_tokenizer(), vocab_size=50)
    enc = tok("def add(a, b):\n    return a + b\n", add_special_tokens=False, return_offsets_mapping=True)
    assert max(enc["input_ids"]) == 49 and len(enc["offset_mapping"]) == len(enc["input_ids"])
    assert tok.bos_token_id is not None  # attributes pass through


def test_tiny_cpu_run_reports_every_figure(bench, tmp_path, capsys):
    out = tmp_path / "result.json"
    bench.main(["--config", "tiny", "--layers", "2", "--hidden", "64", "--intermediate", "128", "--heads", "4",
                "--batch", "2", "--seq", "32", "--batches", "1", "--reps", "1", "--device", "cpu",
                "--humaneval-x", str(tmp_path / "absent"), "--json", "--json-out", str(out)])
    result = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == result
    assert {"device", "preset", "config", "run", "tokenizer", "tokens_per_s", "ratio_stats_over_forward",
            "ratio_pls_over_backward", "memory", "early_exit", "humaneval_x", "targets_gpu"} <= set(result)
    assert set(result["tokens_per_s"]) == set("abcd") and all(v > 0 for v in result["tokens_per_s"].values())
    assert result["config"]["layers"] == 2 and result["config"]["dtype"] == "float32"
    assert result["ratio_stats_over_forward"] > 0 and result["ratio_pls_over_backward"] > 0
    if "peak_mb_pls" in result["memory"]:  # Linux
        assert {"peak_mb_backward", "ratio_pls_over_backward", "growth_4x"} <= set(result["memory"])
        assert result["memory"]["growth_4x"] < 1.5  # accumulators do not grow with the corpus
    early = result["early_exit"]
    assert early["stop_after_layer"] == 0 and early["of_layers"] == 2 and early["speedup"] > 0
    assert "skipped" in result["humaneval_x"]
