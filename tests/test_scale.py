"""Paper scale: the memory plan against what it plans, chunked cross-entropy, checkpointed capture,
out-of-memory retries and models split over devices by accelerate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SNIPPETS, tiny_model

from neuro.cli import main
from neuro.instrument.losses import model_token_losses, token_losses
from neuro.instrument.statistics import capture_statistics
from neuro.model.plan import GIB, _measured, parse_bytes, plan_commands, read_config, token_costs

CONFIGS = Path(__file__).resolve().parents[1] / "bench" / "configs"
STAT_ARRAYS = ("act_abs_sum", "active_count", "pls_sum", "attribution_sum", "type_sum", "top_values",
               "unit_pls", "unit_attribution", "unit_active")


def assert_same_statistics(a, b, rtol=1e-5, atol=1e-6):
    for name in STAT_ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=name)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_allclose(a.loss_sum, b.loss_sum, rtol=1e-5)


# --------------------------------------------------------------------------- cross-entropy in chunks

@pytest.mark.parametrize("kind", ["llama", "gemma2", "gpt2", "gpt_neox"])
def test_chunked_losses_equal_cross_entropy_over_the_models_logits(kind):
    """No full logits tensor, same losses and the same input gradients (Gemma 2 soft-caps its logits)."""
    loaded = tiny_model(kind)
    ids = torch.tensor([[1, 5, 9, 33, 7, 2, 8], [1, 4, 4, 12, 0, 0, 0]])
    mask = torch.tensor([[1] * 7, [1, 1, 1, 1, 0, 0, 0]])
    embeds = loaded.embeddings(ids).detach()
    a = embeds.clone().requires_grad_(True)
    expected, expected_mask = token_losses(loaded.model(inputs_embeds=a, attention_mask=mask).logits, ids, mask)
    expected.sum().backward()
    b = embeds.clone().requires_grad_(True)
    import neuro.instrument.losses as losses

    original = losses.ce_chunk_tokens
    losses.ce_chunk_tokens = lambda vocab: 3  # several chunks of positions
    try:
        got, got_mask = model_token_losses(loaded, ids, mask, inputs_embeds=b)
    finally:
        losses.ce_chunk_tokens = original
    got.sum().backward()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_mask, expected_mask)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- checkpointing and retries

@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_checkpointed_capture_counts_every_token_once(kind):
    """Blocks recomputed in the backward run the hooks again: the statistics must equal a plain capture
    (gated FFN: `up` read from the recomputation; non-gated: the activation itself)."""
    loaded = tiny_model(kind)
    kwargs = dict(gradients=True, syntax=True, top_k=4, batch_tokens=96)
    plain = capture_statistics(loaded, SNIPPETS, checkpointing=False, **kwargs)
    checkpointed = capture_statistics(loaded, SNIPPETS, checkpointing=True, **kwargs)
    assert checkpointed.meta["checkpointing"] and not plain.meta["checkpointing"]
    assert_same_statistics(checkpointed, plain)
    np.testing.assert_array_equal(checkpointed.top_ids, plain.top_ids)
    np.testing.assert_array_equal(checkpointed.type_count, plain.type_count)


def test_a_batch_that_runs_out_of_memory_is_dropped_whole_and_retried_smaller(tiny_llama):
    """An allocation failure in the backward (after the forward hooks have seen the batch): nothing of
    that batch may stay counted, the batch is halved and the totals equal a clean capture's."""
    loaded = tiny_llama
    clean = capture_statistics(loaded, SNIPPETS, gradients=True, syntax=True, top_k=4, batch_tokens=512)
    failures = []

    def fail_once(module, args, out):
        if out.requires_grad and out.shape[0] > 1 and not failures:
            failures.append(out.shape[0])

            def boom(grad):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
            out.register_hook(boom)

    handle = loaded.sites()[1].up.register_forward_hook(fail_once)
    try:
        retried = capture_statistics(loaded, SNIPPETS, gradients=True, syntax=True, top_k=4, batch_tokens=512)
    finally:
        handle.remove()
    assert failures, "the injected failure never fired: the test tests nothing"
    assert retried.meta["batch_halvings"] >= 1 and retried.meta["batch_tokens"] == 256
    assert_same_statistics(retried, clean)


def test_an_error_that_is_not_out_of_memory_is_not_retried(tiny_llama):
    def broken(module, args, out):
        raise RuntimeError("something else")

    handle = tiny_llama.sites()[0].up.register_forward_hook(broken)
    try:
        with pytest.raises(RuntimeError, match="something else"):
            capture_statistics(tiny_llama, SNIPPETS, gradients=True, batch_tokens=512)
    finally:
        handle.remove()


# --------------------------------------------------------------------------- across devices

def whole_and_split(tmp_path):
    """A saved tiny Llama loaded whole on the CPU, and again with accelerate offloading blocks 1 and 2 to disk
    (their weights on the meta device, moved to the execution device per forward)."""
    from transformers import AutoModelForCausalLM

    from neuro.model.loading import load_model, prepare

    saved = tiny_model("llama")
    saved.model.save_pretrained(tmp_path / "m")
    saved.tokenizer.save_pretrained(tmp_path / "m")
    whole = load_model(tmp_path / "m", device="cpu")
    device_map = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.layers.2": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m", device_map=device_map, dtype=torch.float32,
                                                 offload_folder=str(tmp_path / "offload"))
    split = prepare(model, saved.tokenizer, source="split", fingerprint=whole.fingerprint)
    assert any(p.is_meta for p in split.sites()[2].down.parameters()), "layer 2 is not offloaded"
    return whole, split


def test_a_model_split_by_accelerate_gives_the_same_statistics(tmp_path):
    """Hooks find their layer's device from the activations, not the (offloaded, meta) weights."""
    whole, split = whole_and_split(tmp_path)
    kwargs = dict(gradients=True, syntax=True, top_k=4, batch_tokens=256)
    assert_same_statistics(capture_statistics(split, SNIPPETS, **kwargs), capture_statistics(whole, SNIPPETS, **kwargs))


# --------------------------------------------------------------------------- the plan

def test_saved_memory_measured_on_a_narrow_copy_scales_to_the_full_width():
    """The plan measures a copy with every width divided by 16 and scales up: against the saved tensors of
    the full-width blocks counted directly."""
    import transformers as T

    from neuro.model.plan import _saved_bytes

    config = T.LlamaConfig(hidden_size=512, intermediate_size=1536, num_attention_heads=8, num_key_value_heads=2,
                           num_hidden_layers=2, vocab_size=1000)
    per_layer, _rest = _measured(json.dumps(config.to_dict(), default=str, sort_keys=True), "float32")
    direct = (_saved_bytes(config, 2, 1, torch.float32, 64) - _saved_bytes(config, 1, 1, torch.float32, 64)) / 64
    # per-head terms (e.g. attention's log-sum-exp) do not narrow, so scaling them up errs on the safe side
    assert direct <= per_layer <= 1.05 * direct, (per_layer, direct)
    assert token_costs(config, "float32").saved_per_layer == per_layer


@pytest.mark.parametrize("name,parameters", [("llama-3.1-8b", 8_030_261_248), ("qwen2.5-coder-32b", 32_763_876_352)])
def test_the_paper_models_fit_one_80gb_gpu_for_every_command(name, parameters):
    """From config.json alone: the published parameter counts, and every command fits an 80 GB card
    beside 64 GB of host memory, at HumanEval-X's size and at 10,000 programs per language."""
    config = read_config(CONFIGS / name)
    for per_language in (164, 10_000):
        plan = plan_commands(config, dtype="bfloat16", device_memory=parse_bytes("80GB"),
                             host_memory=parse_bytes("64GB"), programs_per_language=per_language)
        assert plan.model.parameters == parameters
        assert plan.model.weight_bytes == 2 * parameters
        for command, c in plan.commands.items():
            assert c.fits, (name, per_language, command, c)
            assert c.device_bytes <= 80 * GIB and c.host_bytes <= 64 * GIB, (command, c)
            assert c.batch_tokens >= 512
        # the layer states are on disk: host memory stays one layer's matrix
        assert plan.commands["layers"].host_bytes < 0.2 * plan.commands["layers"].disk_bytes or per_language < 1000


def test_the_plan_covers_the_intervention_commands_and_generation_pays_for_its_kv_cache():
    """Llama-3.1-8B's KV cache: 2 (keys, values) x 32 layers x 8 KV heads x 128 x 2 bytes = 128 KiB a token, so
    a steering batch needs at least that much more device memory than a forward-only batch of as many tokens."""
    config = read_config(CONFIGS / "llama-3.1-8b")
    plan = plan_commands(config, dtype="bfloat16", device_memory=parse_bytes("80GB"))
    assert {"neuron", "intervene", "steer"} <= set(plan.commands)
    steer, intervene = plan.commands["steer"], plan.commands["intervene"]
    assert steer.device_bytes - intervene.device_bytes >= min(steer.batch_tokens, intervene.batch_tokens) * 128 * 1024


def test_a_smaller_card_gets_smaller_batches_then_checkpointing_then_a_no():
    config = read_config(CONFIGS / "qwen2.5-coder-32b")
    plans = {gb: plan_commands(config, device_memory=parse_bytes(f"{gb}GB"), programs_per_language=164)
             .commands["neurons"] for gb in (141, 80, 70, 40)}
    assert plans[141].batch_tokens >= plans[80].batch_tokens
    assert plans[70].checkpointing and plans[70].fits
    assert not plans[40].fits and plans[40].batch_tokens == 0  # 61 GiB of weights alone


def test_plan_cli_prints_the_interface(capsys):
    code = main(["plan", "--model", str(CONFIGS / "qwen2.5-coder-32b"), "--programs-per-language", "10000",
                 "--device-memory", "80GB", "--host-memory", "64GB", "--dtype", "bfloat16", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["commands"]) == {"neurons", "ablate", "layers", "clones eval", "neuron", "intervene", "steer",
                                    "finetune", "transfer"}
    for c in out["commands"].values():
        assert {"device_bytes", "host_bytes", "disk_bytes", "batch_tokens", "checkpointing", "fits"} <= set(c)
        assert isinstance(c["device_bytes"], int) and isinstance(c["fits"], bool)
    assert out["model"]["parameters"] == 32_763_876_352


def test_plan_needs_nothing_but_config_json(tmp_path, capsys):
    folder = tmp_path / "only-config"
    folder.mkdir()
    (folder / "config.json").write_text((CONFIGS / "llama-3.1-8b" / "config.json").read_text())
    assert main(["plan", "--model", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["n_layers"] == 32
    assert main(["plan", "--model", str(tmp_path / "missing"), "--json"]) == 2
    assert "error" in json.loads(capsys.readouterr().out)


def test_parse_bytes():
    assert parse_bytes("80GB") == 80 * GIB == parse_bytes("80GiB") == parse_bytes("80 G")
    assert parse_bytes("512MB") == 512 << 20
    with pytest.raises(ValueError):
        parse_bytes("lots")


def test_the_sidebar_shows_the_plan_before_a_model_loads():
    """A folder with only config.json: the plan is on the sidebar although the model cannot load."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.session_state["model_kind"] = "Local folder"
    at.session_state["model_path"] = str(CONFIGS / "llama-3.1-8b")
    at.run()
    assert "Will it fit? (memory plan)" in [e.label for e in at.sidebar.expander]
    table = at.sidebar.dataframe[0].value
    assert list(table["command"]) == ["neurons", "ablate", "layers", "clones eval", "neuron", "intervene", "steer",
                                      "finetune", "transfer"]
    assert any("8.03B parameters" in c.value for c in at.sidebar.caption)


def test_pooled_states_of_a_split_model_equal_one_devices(tmp_path):
    """Hidden states read from blocks accelerate placed elsewhere (offloaded to disk) equal one device's."""
    from neuro.instrument.states import pooled_states

    whole, split = whole_and_split(tmp_path)
    np.testing.assert_allclose(np.asarray(pooled_states(split, SNIPPETS)), np.asarray(pooled_states(whole, SNIPPETS)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gpt_neox", "gemma2", "phi3", "gpt_bigcode", "starcoder2"])
def test_every_architecture_gets_a_plan(kind):
    """The narrow copy must build for every adapter's config (GPT-2 names its widths through aliases)."""
    from conftest import tiny_config

    costs = token_costs(tiny_config(kind, 300), "float32")
    assert costs.saved_per_layer > 0 and costs.saved > costs.saved_per_layer
    assert costs.checkpointed < costs.saved


def test_the_sidebar_loads_a_model_with_the_device_map_it_shows(tmp_path):
    """The sidebar's device map and max memory reach accelerate's loading: a malformed max memory is said on
    the page, a good one loads the model."""
    from streamlit.testing.v1 import AppTest

    saved = tiny_model("llama")
    saved.model.save_pretrained(tmp_path / "m")
    saved.tokenizer.save_pretrained(tmp_path / "m")

    def page(max_memory: str):
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
        at.session_state["model_kind"] = "Local folder"
        at.session_state["model_path"] = str(tmp_path / "m")
        at.session_state["device_map"] = "sequential"
        at.session_state["max_memory"] = max_memory
        at.run()
        assert "Devices" in [e.label for e in at.sidebar.expander] and not at.exception
        return " ".join(e.value for e in [*at.error, *at.warning])

    assert "max memory takes DEVICE=SIZE pairs" in page("lots")
    assert "max memory" not in page("cpu=2GiB")


def test_a_config_that_cannot_be_narrowed_falls_back_to_a_formula_above_the_measurement(caplog):
    """A model whose copy cannot be built (e.g. remote code) still gets a plan, never below the measured one."""
    import transformers as T

    config = T.LlamaConfig(hidden_size=256, intermediate_size=768, num_attention_heads=4, num_key_value_heads=2,
                           num_hidden_layers=2, vocab_size=500)
    measured = token_costs(config, "float32")
    broken = T.LlamaConfig(**config.to_dict())
    broken.hidden_act = "no-such-activation"  # building any copy of it fails
    fallback = token_costs(broken, "float32")
    assert "could not measure a narrow copy" in caplog.text
    assert fallback.saved_per_layer >= measured.saved_per_layer
