"""Neuron-guided fine-tuning on tiny random models: exactly the owned rows/columns train, the optimizer
holds state for the deltas alone, the export reloads with identical logits, baselines are sized right,
bad parameters are refused before anything starts, and nothing leaks across the selection / evaluation
split (neurons from the selection side only; training and evaluation on disjoint tasks)."""

import math

import numpy as np
import pytest
import torch
from conftest import SNIPPETS, save_tiny, tiny_model

from neuro.code.split import SplitParams, split_corpus
from neuro.experiments.finetune import (
    FinetuneConfig,
    NeuronDeltas,
    _Adaptation,
    ffn_parts,
    finetune,
    lm_sequences,
    lora_rank_for,
    owned_parameters,
    plan_finetune,
    select_finetune_neurons,
    trainable_count,
    validate_finetune,
)
from neuro.jobs.folders import JobContext, JobRefused, list_jobs, write_json
from neuro.jobs.kinds import FINETUNE, export_model
from neuro.jobs.runner import start_job
from neuro.model.loading import load_model
from neuro.training.batches import Batch, make_batches
from neuro.training.checkpoints import load_tensors
from neuro.training.context import NullContext
from neuro.training.loop import train
from neuro.training.lora import lora_size
from neuro.training.memory import optimizer_state_size

NEURONS = {0: [1, 5, 7], 2: [0, 33]}


def _batches(loaded, snippets=SNIPPETS):
    pad = loaded.tokenizer.pad_token_id
    return make_batches(lm_sequences(loaded, snippets, 64), pad, loaded.device, batch_tokens=4096)


def _logits(loaded, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(input_ids=batch.ids, attention_mask=batch.mask).logits


def _weights(loaded) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}


@pytest.mark.parametrize("kind", ["llama", "gpt2", "phi3", "gpt_neox"])
def test_only_owned_rows_and_columns_change(kind):
    loaded = tiny_model(kind)
    before = _weights(loaded)
    deltas = NeuronDeltas(loaded, NEURONS)
    batches = _batches(loaded)
    with deltas.applied(loaded):
        report = train(loaded.model, list(deltas.parameters()), batches, steps=3, lr=1e-2, ctx=NullContext())
    hidden = loaded.model.get_input_embeddings().embedding_dim
    k = sum(len(v) for v in NEURONS.values())
    per_neuron = 3 * hidden if loaded.adapter.gated else 2 * hidden + 1  # these FFNs have input biases
    assert report.trainable == deltas.size() == k * per_neuron == sum(
        len(v) * owned_parameters(loaded, layer) for layer, v in NEURONS.items())
    # AdamW keeps two moments per delta element, nothing for the frozen model
    assert report.optimizer_state == 2 * deltas.size()
    assert all(not p.requires_grad for p in loaded.model.parameters())
    assert _weights(loaded).keys() == before.keys()
    assert all(torch.equal(v, before[k_]) for k_, v in _weights(loaded).items())  # base untouched while training

    deltas.merge_into(loaded)
    after = _weights(loaded)
    changed = {name for name in after if not torch.equal(after[name], before[name])}
    width = loaded.n_neurons
    expected_rows: dict[str, set] = {}
    for layer, idx in NEURONS.items():
        parts = ffn_parts(loaded, layer)
        for module, rows in [(parts.gate, idx), (parts.up, idx), (parts.input, idx),
                             (parts.fused, idx + [i + width for i in idx])]:
            if module is not None:
                expected_rows[_name(loaded, module)] = set(rows)
        expected_rows[_name(loaded, parts.down) + "#cols"] = set(idx)
    for name in changed:
        assert name.rsplit(".", 1)[0] in {n.replace("#cols", "") for n in expected_rows}, name
    for name, rows in expected_rows.items():
        cols = name.endswith("#cols")
        module_name = name.replace("#cols", "")
        diff = (after[module_name + ".weight"] - before[module_name + ".weight"]).abs()
        conv = type(_module(loaded, module_name)).__name__ == "Conv1D"
        axis_rows = (1 if conv else 0) if not cols else (0 if conv else 1)
        touched = set(np.flatnonzero(diff.sum(dim=1 - axis_rows).numpy() > 0).tolist())
        assert touched and touched <= rows, (name, touched, rows)


def _name(loaded, module) -> str:
    return next(n for n, m in loaded.model.named_modules() if m is module)


def _module(loaded, name):
    return dict(loaded.model.named_modules())[name]


@pytest.mark.parametrize("kind, method", [("llama", "neurons"), ("gpt2", "neurons"), ("llama", "lora"),
                                          ("gpt2", "lora")])
def test_export_reloads_with_the_same_logits(kind, method, tmp_path):
    folder = save_tiny(tmp_path / "base", kind)
    base = load_model(folder, device="cpu")
    config = FinetuneConfig(model=str(folder), target="python", method=method, neurons=NEURONS, steps=4, lr=1e-2,
                            batch_tokens=4096, max_length=64, eval_fraction=0.3)
    job = tmp_path / "job"
    job.mkdir()
    write_json(job / "spec.json", {"kind": "finetune", "params": config.to_json()})
    batch = _batches(base)[0]
    plain = _logits(base, batch)
    planned = trainable_count(base, config)  # before peft changes the model
    result = finetune(base, SNIPPETS, config, NullContext(), checkpoint=JobContext(job).save_checkpoint)
    assert result.trainable_params == planned
    if method == "neurons":  # the deltas apply in hooks only while training: re-apply the saved ones
        deltas = NeuronDeltas(base, NEURONS)
        deltas.load_tensors(load_tensors(job / "checkpoint")[0])
        with deltas.applied(base):
            adapted = _logits(base, batch)
    else:  # LoRA is taken out after the run (the next method may train this model): inject the saved one
        from peft import set_peft_model_state_dict

        from neuro.training.lora import apply_lora
        assert _logits(base, batch).equal(plain)
        tensors, meta = load_tensors(job / "checkpoint")
        peft = apply_lora(base, meta["targets"], int(meta["rank"]))
        set_peft_model_state_dict(peft, tensors)
        adapted = _logits(base, batch)
        peft.unload()
    assert not torch.allclose(adapted, plain)  # the training did something
    out = export_model(job, tmp_path / "export")
    reloaded = load_model(out, device="cpu")
    torch.testing.assert_close(_logits(reloaded, batch), adapted, atol=1e-5, rtol=1e-4)


def test_lora_and_random_baselines_are_comparable(tiny_llama):
    loaded = tiny_model("llama")
    from neuro.instrument.ablation import random_like
    control = random_like(NEURONS, loaded.n_neurons, seed=0, exclude=NEURONS)
    assert {k: len(v) for k, v in control.items()} == {k: len(v) for k, v in NEURONS.items()}
    assert all(not set(control[k]) & set(NEURONS[k]) for k in NEURONS)
    config = FinetuneConfig(model="x", target="python", method="lora", neurons=NEURONS)
    neuron_count = trainable_count(loaded, FinetuneConfig(model="x", target="python", neurons=NEURONS))
    rank = lora_rank_for(loaded, config)
    planned = trainable_count(loaded, config)  # before peft changes the model
    per_rank = lora_size(loaded, [n for n, _ in loaded.model.named_modules() if n.endswith(
        ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")) and int(n.split(".")[2]) in NEURONS], 1)
    adaptation = _Adaptation(loaded, config)
    trainable = sum(p.numel() for p in adaptation.params)
    assert trainable == planned == rank * per_rank
    # LoRA sits on the FFNs of the layers that hold the neurons, sized to the nearest rank
    assert {int(t.split(".")[2]) for t in adaptation.targets} == set(NEURONS)
    assert abs(trainable - neuron_count) <= per_rank / 2 + 1
    batches = _batches(loaded)
    report = train(loaded.model, adaptation.params, batches, steps=1, lr=1e-3, ctx=NullContext())
    assert report.optimizer_state == 2 * trainable


def test_a_run_lowers_the_target_loss():
    loaded = tiny_model("llama")
    config = FinetuneConfig(model="x", target="python", neurons={0: list(range(48)), 1: list(range(48))},
                            steps=30, lr=3e-2, batch_tokens=4096, max_length=64, eval_fraction=0.3)
    train_set = split_corpus(SNIPPETS, SplitParams(0.3, 0)).selection
    result = finetune(loaded, train_set + [s for s in SNIPPETS if s.task == "add"], config, NullContext())
    assert result.losses[-1] < result.losses[0]
    assert result.heldout_after["python"] < result.heldout_before["python"]


def _snips():
    return list(SNIPPETS)


@pytest.mark.parametrize("change, message", [
    (dict(neurons={}), "no neurons selected"),
    (dict(lr=0.0), "learning rate"),
    (dict(lr=math.nan), "learning rate"),
    (dict(lr=-1e-3), "learning rate"),
    (dict(steps=0), "steps"),
    (dict(target="cpp"), "no cpp programs"),
    (dict(method="magic"), "unknown method"),
    (dict(neurons={7: [1]}), "outside"),
    (dict(eval_fraction=1.0), "evaluation fraction"),
])
def test_bad_parameters_are_refused(tiny_llama, tmp_path, change, message):
    config = FinetuneConfig(model="x", target="python", neurons=NEURONS, eval_fraction=0.3)
    bad = FinetuneConfig(**{**config.__dict__, **change})
    reasons = validate_finetune(bad, tiny_llama, _snips())
    assert any(message in r for r in reasons), reasons
    with pytest.raises(JobRefused):
        start_job(FINETUNE, bad, tiny_llama, _snips(), root=tmp_path / "jobs")
    assert list_jobs(tmp_path / "jobs") == []  # nothing was started or even created


def test_empty_training_set_and_memory_are_refused(tiny_llama):
    config = FinetuneConfig(model="x", target="python", neurons=NEURONS, eval_fraction=0.3)
    heldout_tasks = {s.task for s in split_corpus(SNIPPETS, SplitParams(0.3, 0)).evaluation}
    # python only in the evaluated task (the split ranks tasks by hash, so it keeps that task evaluated)
    corpus = [s for s in SNIPPETS if s.lang != "python" or s.task in heldout_tasks]
    assert {s.task for s in split_corpus(corpus, SplitParams(0.3, 0)).evaluation} == heldout_tasks
    assert any("empty training set" in r for r in validate_finetune(config, tiny_llama, corpus))
    assert validate_finetune(config, tiny_llama, _snips()) == []
    reasons = validate_finetune(config, tiny_llama, _snips(), memory_budget=1 << 10)
    assert len(reasons) == 1 and "does not fit" in reasons[0]


# --------------------------------------------------------------------------- no leakage across the split

_MARK = {"python": "# changed", "go": "// changed", "java": "// changed"}


def test_evaluation_programs_do_not_move_the_selected_neurons(tiny_llama, tmp_path, monkeypatch):
    """Editing only evaluation-side programs leaves the neurons (and the random control) a run trains
    unchanged: the statistics they come from see the selection side alone."""
    from dataclasses import replace

    import neuro.results.statistics
    from neuro.analysis.selectivity import SelectionParams
    from neuro.results.store import Store

    seen = []
    real = neuro.results.statistics.STATS

    class Spy:
        def get(self, loaded, snippets, **kwargs):
            seen.append([s.id for s in snippets])
            return real.get(loaded, snippets, **kwargs)

    monkeypatch.setattr(neuro.results.statistics, "STATS", Spy())
    split = split_corpus(SNIPPETS, SplitParams(0.3, 0))
    evaluated = {s.id for s in split.evaluation}
    edited = [replace(s, code=s.code + f"\n{_MARK[s.lang]}\n") if s.id in evaluated else s for s in SNIPPETS]
    edited_split = split_corpus(edited, SplitParams(0.3, 0))
    assert {s.id for s in edited_split.evaluation} == evaluated  # the edit moves nothing across the split
    params = SelectionParams(top_fraction=0.2)
    store = Store(tmp_path)
    plans = []
    for sp in (split, edited_split):
        selection = select_finetune_neurons(tiny_llama, sp, params, store=store, max_length=64)
        plans.append([plan_finetune(tiny_llama, selection, "python", method=method,
                                    neuron_set="specific+universal", split=sp) for method in ("neurons", "random")])
    assert seen == [[s.id for s in split.selection]] * 2  # no evaluation program reached the statistics
    assert plans[0][0].neurons and plans[0][0].neurons == plans[1][0].neurons
    assert plans[0][1].neurons == plans[1][1].neurons
    assert (plans[0][0].eval_fraction, plans[0][0].split_seed) == (0.3, 0)


def test_a_run_trains_and_evaluates_on_disjoint_tasks(monkeypatch):
    import neuro.experiments.finetune as ft

    trained, evaluated = [], []
    real_sequences, real_losses = ft.lm_sequences, ft.program_losses

    def sequences(loaded, snippets, max_length):
        trained.extend(snippets)
        return real_sequences(loaded, snippets, max_length)

    def losses(loaded, snippets, **kwargs):
        evaluated.extend(snippets)
        return real_losses(loaded, snippets, **kwargs)

    monkeypatch.setattr(ft, "lm_sequences", sequences)
    monkeypatch.setattr(ft, "program_losses", losses)
    config = FinetuneConfig(model="x", target="python", neurons=NEURONS, steps=1, batch_tokens=4096,
                            max_length=64, eval_fraction=0.3)
    result = finetune(tiny_model("llama"), SNIPPETS, config, NullContext())
    split = split_corpus(SNIPPETS, SplitParams(0.3, 0))
    assert trained and evaluated and {s.lang for s in trained} == {"python"}
    assert not {s.task for s in trained} & {s.task for s in evaluated}
    assert {s.id for s in evaluated} == {s.id for s in split.evaluation}
    assert {s.id for s in trained} == {s.id for s in split.selection if s.lang == "python"}
    assert result.split == split.summary()


def test_an_old_job_config_still_reads():
    """A job folder from before the shared split (heldout_fraction) opens with the default split."""
    old = {"model": "x", "target": "python", "neurons": {"0": [1]}, "heldout_fraction": 0.2, "seed": 3}
    config = FinetuneConfig.from_json(old)
    assert (config.eval_fraction, config.split_seed, config.seed) == (0.3, 0, 3)


def test_optimizer_state_counts_tensors_only():
    p = torch.nn.Parameter(torch.zeros(3, 4))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones_like(p)
    opt.step()
    assert optimizer_state_size(opt) == 24


# --------------------------------------------------------------------------- the page

def _page_env(tiny_env):
    return tiny_env("ftpage")


def test_finetune_page_refuses_then_runs_and_exports(monkeypatch, tiny_env):
    import time

    from streamlit.testing.v1 import AppTest

    from neuro.paths import REPO_DIR

    env = _page_env(tiny_env)
    monkeypatch.setenv("NEURO_MODEL", str(env / "model"))
    monkeypatch.setenv("NEURO_CORPUS", str(env / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(env / "cache"))
    at = AppTest.from_file(str(REPO_DIR / "views" / "finetune.py"), default_timeout=180).run()
    assert not at.exception, at.exception
    at.number_input(key="ft_steps").set_value(0).run()
    at.button(key="ft_start").click().run()
    assert any("Not started" in e.value and "steps" in e.value for e in at.error)
    assert list_jobs(env / "cache" / "jobs") == []

    at.number_input(key="ft_steps").set_value(3)
    at.multiselect(key="ft_methods").set_value(["full"])
    at.number_input(key="ft_seeds").set_value(1)
    at.number_input(key="ft_lr").set_value(1e-3).run()
    at.button(key="ft_start").click().run()
    assert not at.exception, at.exception
    assert any("Started job" in s.value for s in at.success)
    deadline = time.time() + 240
    while any(j.active for j in list_jobs(env / "cache" / "jobs")) and time.time() < deadline:
        time.sleep(0.5)
    job = list_jobs(env / "cache" / "jobs")[0]
    assert job.state == "finished", (job.path / "log.txt").read_text()
    at.run()
    tables = [d.value for d in at.dataframe if {"target_delta", "job"} <= set(getattr(d.value, "columns", []))]
    assert tables and tables[0]["method"].tolist() == ["full"]
    per_method = [d.value for d in at.dataframe if "seeds" in getattr(d.value, "columns", [])]
    assert per_method and per_method[0]["method"].tolist() == ["Full fine-tuning"]
    assert at.get("vega_lite_chart")  # the loss curve
    at.button(key="ft_export").click().run()
    assert not at.exception, at.exception
    deadline = time.time() + 240
    while any(j.active for j in list_jobs(env / "cache" / "jobs", kind="export")) and time.time() < deadline:
        time.sleep(0.5)
    export = list_jobs(env / "cache" / "jobs", kind="export")[0]
    assert export.state == "finished", (export.path / "log.txt").read_text()
    assert load_model(job.path / "export", device="cpu").n_layers == 3
