"""Fine-tuning's memory check counts the weights once (a foreground run trains the copy already loaded), and
the methods of one run share that one loaded model: each method's result equals running it alone."""

import json

import pytest
from conftest import SNIPPETS, tiny_model

from neuro.experiments.finetune import FinetuneConfig, _Adaptation, validate_finetune
from neuro.model.identity import module_fingerprint
from neuro.training import memory
from neuro.training.memory import estimate_training_bytes, job_budget, resident_bytes

# tiny llama (tests/conftest.py): vocab 300, hidden 32, FFN 48, 3 layers, 4 heads of 8, 2 KV heads, untied
# embed 300*32 = 9600; per layer q 32*32 + k 32*16 + v 32*16 + o 32*32 = 3072, FFN 3 * 32*48 = 4608,
# two norms 64: 7744, three layers 23232; final norm 32; lm_head 9600: 42464 parameters, 169856 bytes fp32
PARAMS, WEIGHT_BYTES = 42464, 169856
BUFFER_BYTES = 2 * 4 * 4  # rotary inv_freq and original_inv_freq: head_dim / 2 = 4 floats each

NEURONS = {0: [1, 5, 7]}  # 3 neurons owning 3 x 32 values each (gate and up rows, a down column): 288


def _snips():
    return list(SNIPPETS)


def test_the_estimate_matches_a_hand_computation(tiny_llama):
    assert sum(p.numel() for p in tiny_llama.model.parameters()) == PARAMS
    weights = WEIGHT_BYTES
    state = 288 * 3 * 4                       # gradient + two AdamW moments, fp32, of 288 trained values
    activations = 64 * 3 * (16 * 32 + 4 * 48) * 4  # 64 tokens x 3 layers x 704 values x 4 bytes = 540672
    logits = 64 * 300 * 4 * 3                 # fp32 logits, their gradient and softmax: 230400
    expected = int(1.2 * (weights + state + activations + logits))
    assert expected == 1133260
    assert estimate_training_bytes(tiny_llama, 288, 64, full=False, dtype="float32", device="cpu") == expected
    # the check's figure, end to end: refused one byte short of it, accepted at it
    config = FinetuneConfig(model="x", target="python", neurons=NEURONS, batch_tokens=64, eval_fraction=0.3,
                            dtype="float32", device="cpu")
    assert validate_finetune(config, tiny_llama, _snips(), memory_budget=expected) == []
    refused = validate_finetune(config, tiny_llama, _snips(), memory_budget=expected - 1)
    assert len(refused) == 1 and "does not fit" in refused[0] and "about 0.00 GiB" in refused[0]


def test_the_loaded_weights_count_once_for_a_run_that_trains_them(tiny_llama, monkeypatch):
    """The 32B case in small: after loading, less is free than the estimate (weights included), yet the run
    fits, because it trains the resident copy instead of loading a second one."""
    assert resident_bytes(tiny_llama, "cpu") == WEIGHT_BYTES + BUFFER_BYTES
    assert resident_bytes(tiny_llama, "cuda") == 0  # nothing of it is on a GPU
    config = FinetuneConfig(model="x", target="python", neurons=NEURONS, batch_tokens=64, eval_fraction=0.3,
                            dtype="float32", device="cpu")
    needed = 1133260
    free_after_loading = needed - WEIGHT_BYTES // 2  # less than the estimate, more than it less the weights
    monkeypatch.setattr(memory, "available_memory", lambda device=None: free_after_loading)
    assert job_budget(tiny_llama, "cpu", reuses_loaded=False) == free_after_loading
    assert job_budget(tiny_llama, "cpu", reuses_loaded=True) == free_after_loading + WEIGHT_BYTES + BUFFER_BYTES
    fresh_copy = validate_finetune(config, tiny_llama, _snips())  # a worker that loads its own copy: refused
    assert len(fresh_copy) == 1 and "does not fit" in fresh_copy[0]
    reuse = job_budget(tiny_llama, "cpu", reuses_loaded=True)
    assert validate_finetune(config, tiny_llama, _snips(), memory_budget=reuse) == []


@pytest.mark.parametrize("method", ["neurons", "lora", "full"])
def test_a_method_hands_the_model_back_as_it_found_it(method):
    """After the adaptation is removed the model is the base one again (full: frozen again, weights changed)."""
    loaded = tiny_model("llama")
    before, modules = module_fingerprint(loaded.model), [type(m) for m in loaded.model.modules()]
    config = FinetuneConfig(model="x", target="python", method=method, neurons=NEURONS, lora_rank=2)
    adaptation = _Adaptation(loaded, config)
    with adaptation.applied():
        pass
    adaptation.remove()
    assert [type(m) for m in loaded.model.modules()] == modules
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert module_fingerprint(loaded.model) == before


@pytest.fixture(scope="module")
def env(tiny_env):
    return tiny_env("shared")


COMPARED = ("method", "trainable_params", "optimizer_state", "train_loss_first", "train_loss_last",
            "heldout_before", "heldout_after", "neurons_per_layer", "lora_rank")


def test_the_methods_of_one_run_share_one_loaded_model(env, monkeypatch, capsys):
    import neuro.cli
    import neuro.training.loop
    from neuro.cli import main

    loads = []
    for module in (neuro.cli, neuro.training.loop):
        def counting(*args, _real=module.load_model, **kwargs):
            loads.append(args[0])
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, "load_model", counting)

    def run(methods: str) -> list[dict]:
        code = main(["finetune", "--model", str(env / "model"), "--corpus", str(env / "corpus.jsonl"),
                     "--target", "python", "--top-fraction", "0.2", "--eval-fraction", "0.3", "--steps", "3",
                     "--lr", "0.01", "--device", "cpu", "--cache", str(env / "cache"), "--json",
                     "--seeds", "0", "--method", methods])
        report = json.loads(capsys.readouterr().out)
        assert code == 0, report
        assert all(job["state"] == "finished" for job in report["jobs"]), report
        return [job["result"] for job in report["jobs"]]

    together = run("full,neurons,random,lora")  # full listed first: it changes the weights, so it runs last
    assert len(loads) == 1
    assert [r["method"] for r in together] == ["full", "neurons", "random", "lora"]
    for result in together:
        loads.clear()
        alone = run(result["method"])[0]
        assert len(loads) == 1
        assert {k: result[k] for k in COMPARED} == {k: alone[k] for k in COMPARED}
        assert alone["heldout_after"] != alone["heldout_before"]  # it did train
