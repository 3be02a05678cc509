"""Seeds and spread for fine-tuning and transfer (issue 22, items 3 and 5): a seed changes the random control's
neurons and the data order and reproduces its numbers; the spread over seeds and the paired differences are
those of the per-seed values (checked by hand); task-level intervals estimate exactly the reported means;
transfer's lower layers never overlap the concept layers; trainable-parameter counts equal the numels of
what requires grad."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import SNIPPETS, tiny_model

from neuro.code.corpus import Snippet
from neuro.experiments.finetune import (
    FinetuneConfig,
    _Adaptation,
    compare_finetune,
    finetune,
    plan_finetune_runs,
    trainable_count,
)
from neuro.experiments.intervals import language_intervals, mean_of_languages_interval, paired_items
from neuro.experiments.seeds import Run, compare, cost, seeded_batches
from neuro.experiments.transfer import TransferConfig, adapt_layers, lower_layers, resolve_layers
from neuro.experiments.transfer import trainable_count as transfer_count
from neuro.training.context import NullContext

T_975_2 = 4.302652729911275  # Student's t, 97.5th percentile, 2 degrees of freedom (a table value)

NEURONS = {0: [1, 5, 7], 2: [0, 33]}

# python-only extra tasks, so the training side has several programs whose batching a seed can change
EXTRA = [Snippet(f"f{i}/python", "python", f"f{i}", f"def f{i}(x):\n    return x * {i} + {i + 1}\n" * (1 + i % 3),
                 f"Scale by {i}.") for i in range(8)]
EXTRA += [Snippet(f"f{i}/go", "go", f"f{i}", f"func F{i}(x int) int {{\n\treturn x * {i}\n}}\n", f"Scale by {i}.")
          for i in range(8)]
CORPUS = SNIPPETS + EXTRA


# --------------------------------------------------------------------------- what a seed decides

def test_a_seed_decides_which_programs_share_a_batch():
    sequences = [([1] * n, [1] * n) for n in (5, 9, 3, 7, 8, 4, 6, 2, 10, 5, 3, 9)]

    def groups(seed):
        batches = seeded_batches(sequences, 0, "cpu", batch_tokens=24, seed=seed)
        for b in batches:
            assert b.ids.numel() <= 24 or b.ids.shape[0] == 1  # the padded budget holds
        rows = sorted(tuple(sorted(int(m.sum()) for m in b.mask)) for b in batches)
        assert sorted(n for row in rows for n in row) == sorted(len(s[0]) for s in sequences)  # each once
        return rows

    assert groups(0) == groups(0)
    assert len({tuple(groups(seed)) for seed in range(5)}) > 1
    # without jitter the batches are the length-sorted ones every other pass uses
    from neuro.training.batches import make_batches
    rows = lambda bs: sorted(tuple(sorted(int(m.sum()) for m in b.mask)) for b in bs)  # noqa: E731
    sorted_batches = make_batches(sequences, 0, "cpu", 24)
    assert rows(seeded_batches(sequences, 0, "cpu", 24, seed=3, jitter=0)) == rows(sorted_batches)


def test_seeds_draw_different_random_controls_and_share_them_across_methods(tiny_llama):
    from neuro.analysis.selectivity import SelectionParams, select_neurons
    from neuro.instrument.statistics import capture_statistics

    stats = capture_statistics(tiny_llama, SNIPPETS, max_length=64)
    selection = select_neurons(stats, "pls", SelectionParams(top_fraction=0.2))
    configs = plan_finetune_runs(tiny_llama, selection, "python", ["full", "neurons", "random"], [0, 1, 2],
                                 neuron_set="specific+universal", steps=2)
    assert [(c.method, c.seed) for c in configs] == [(m, s) for m in ("neurons", "random", "full") for s in (0, 1, 2)]
    assert len({c.comparison for c in configs}) == 1 and all(c.seeds == [0, 1, 2] for c in configs)
    assert [c.lr for c in configs] == [1e-3] * 6 + [1e-4] * 3
    guided = [c.neurons for c in configs if c.method == "neurons"]
    random = [c.neurons for c in configs if c.method == "random"]
    assert guided[0] and guided[0] == guided[1] == guided[2]  # the chosen set does not depend on the seed
    assert len({json.dumps(r, sort_keys=True) for r in random}) == 3  # each seed draws other neurons
    for draw in random:  # ... of the same size per layer, never one of the chosen neurons
        assert {k: len(v) for k, v in draw.items()} == {k: len(v) for k, v in guided[0].items()}
        assert all(not set(draw[k]) & set(guided[0][k]) for k in draw)
    assert cost(["neurons", "random", "full"], [0, 1, 2]) == "runs = 3 methods x 3 seeds = 9"
    with pytest.raises(ValueError, match="twice"):
        plan_finetune_runs(tiny_llama, selection, "python", ["neurons"], [0, 0])


def _run(method="neurons", seed=0, **changes):
    config = FinetuneConfig(**{**dict(model="x", target="python", method=method, neurons=NEURONS, steps=4, lr=2e-2,
                                      batch_tokens=48, max_length=64, eval_fraction=0.3, seed=seed), **changes})
    return finetune(tiny_model("llama"), CORPUS, config, NullContext())


@pytest.mark.parametrize("method", ["neurons", "lora"])
def test_the_same_seed_reproduces_a_run_and_another_changes_it(method):
    first, again, other = _run(method, 0), _run(method, 0), _run(method, 1)
    assert first.losses == again.losses and first.heldout_after == again.heldout_after
    assert first.per_program == again.per_program and first.target_delta_ci == again.target_delta_ci
    # the neurons are the same (the deltas start at zero): only the data order differs, and it shows
    assert first.losses != other.losses
    assert first.heldout_after != other.heldout_after
    assert first.heldout_before == other.heldout_before


def test_a_run_keeps_per_program_losses_that_average_to_its_numbers():
    r = _run(steps=2)
    by_lang = {}
    for item in r.per_program:
        by_lang.setdefault(item["lang"], []).append(item["after"] - item["before"])
    assert set(by_lang) == set(r.heldout_delta)
    for lang, changes in by_lang.items():
        assert math.isclose(np.mean(changes), r.heldout_delta[lang], abs_tol=1e-9)
        assert math.isclose(r.heldout_delta_ci[lang]["estimate"], r.heldout_delta[lang], abs_tol=1e-9)
    assert r.target_delta_ci["units"] == len({i["task"] for i in r.per_program})
    assert math.isclose(r.others_delta_ci["estimate"], r.others_delta_mean, abs_tol=1e-9)


def test_full_runs_of_several_seeds_each_start_from_the_same_weights(tmp_path, tiny_env, capsys):
    from neuro.cli import main

    tiny_env(folder=tmp_path, corpus=CORPUS)
    code = main(["finetune", "--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "corpus.jsonl"),
                 "--target", "python", "--top-fraction", "0.2", "--eval-fraction", "0.3", "--steps", "3",
                 "--lr", "0.01", "--device", "cpu", "--cache", str(tmp_path / "cache"), "--json", "--batch-tokens",
                 "48", "--method", "neurons,full", "--seeds", "0", "1"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["runs"] == 4 and report["cost"] == "runs = 2 methods x 2 seeds = 4"
    results = [job["result"] for job in report["jobs"]]
    assert [(r["method"], r["seed"]) for r in results] == [("neurons", 0), ("neurons", 1), ("full", 0), ("full", 1)]
    assert len({json.dumps(r["heldout_before"], sort_keys=True) for r in results}) == 1  # the weights were restored
    assert results[2]["heldout_after"] != results[3]["heldout_after"]
    # the comparison is made of the per-seed values of these very results
    (comparison,) = report["comparisons"]
    arms = {a["arm"]: a for a in comparison["arms"]}
    assert arms["neurons"]["values"] == [results[0]["target_delta"], results[1]["target_delta"]]
    assert arms["full"]["values"] == [results[2]["target_delta"], results[3]["target_delta"]]
    (diff,) = comparison["differences"]
    assert (diff["a"], diff["b"]) == ("neurons", "full")
    assert diff["values"] == pytest.approx([results[0]["target_delta"] - results[2]["target_delta"],
                                            results[1]["target_delta"] - results[3]["target_delta"]])
    assert diff["verdict"]


# --------------------------------------------------------------------------- spread and paired differences

def test_spread_and_paired_differences_match_a_hand_computation():
    items = lambda shift: [{"id": f"{t}/{lang}", "lang": lang, "task": t, "v": shift + k}  # noqa: E731
                           for k, t in enumerate("abcd") for lang in ("go",)]
    runs = [Run("neurons", s, v, items(v)) for s, v in zip((0, 1, 2), (-0.1, -0.2, -0.3))]
    runs += [Run("random", s, v, items(0.0)) for s, v in zip((0, 1, 2), (0.0, -0.11, -0.19))]
    c = compare(runs, metric="m", reference="neurons", lower_is_better=True, item_value=lambda it: it["v"])
    neurons, random = c.arms
    assert neurons.values == [-0.1, -0.2, -0.3] and neurons.seeds == [0, 1, 2]
    assert neurons.mean == pytest.approx(-0.2) and neurons.sd == pytest.approx(0.1)
    assert random.mean == pytest.approx(-0.1) and random.sd == pytest.approx(math.sqrt((0.01 + 0.0001 + 0.0081) / 2))
    (d,) = c.differences
    assert d.values == pytest.approx([-0.1, -0.09, -0.11])
    assert d.mean == pytest.approx(-0.1) and d.sd == pytest.approx(0.01)
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert d.ci == pytest.approx([-0.1 - half, -0.1 + half])
    assert d.ci[1] < 0 and d.seed_indistinguishable is False
    # per program the difference is the shift, whatever the task: averaged over seeds, -0.2 for every task
    assert d.task_ci["estimate"] == pytest.approx(-0.2)
    assert d.task_ci["low"] == pytest.approx(-0.2) and d.task_ci["high"] == pytest.approx(-0.2)
    assert "lower than random" in d.verdict()
    assert c.runs == 6 and c.cost == "runs = 2 methods x 3 seeds = 6"
    summary = c.summary()
    assert summary["differences"][0]["values"] == pytest.approx([-0.1, -0.09, -0.11])


def test_a_difference_whose_interval_covers_zero_is_called_indistinguishable():
    runs = [Run("concept", s, v) for s, v in enumerate((1.0, 3.0, 2.0))]
    runs += [Run("all", s, v) for s, v in enumerate((2.0, 1.0, 2.5))]
    (d,) = compare(runs, metric="bleu", reference="concept").differences
    assert d.values == [-1.0, 2.0, -0.5] and d.seed_indistinguishable
    assert "indistinguishable on this corpus" in d.verdict()
    one = compare([Run("concept", 0, 1.0), Run("all", 0, 2.0)], metric="bleu", reference="concept")
    assert one.differences[0].values == [-1.0] and one.differences[0].seed_indistinguishable is None


def test_task_intervals_estimate_the_reported_means_and_pair_by_program():
    items = [{"id": f"{t}/{lang}", "lang": lang, "task": t, "v": v}
             for t, lang, v in [("a", "go", 1.0), ("b", "go", 3.0), ("c", "go", 8.0),
                                ("a", "java", 2.0), ("b", "java", 6.0), ("c", "java", 1.0), ("d", "java", 3.0)]]
    cis = language_intervals(items, lambda it: it["v"], n_resamples=500)
    assert cis["go"].estimate == pytest.approx(4.0) and cis["java"].estimate == pytest.approx(3.0)
    assert cis["go"].low <= 4.0 <= cis["go"].high and cis["go"].units == 4
    both = mean_of_languages_interval(items, lambda it: it["v"], ["go", "java"], n_resamples=500)
    assert both.estimate == pytest.approx(3.5)  # (4 + 3) / 2, not the mean of all 7 programs
    assert 1.0 <= both.low <= both.high <= 8.0
    other = [{**it, "v": it["v"] * 2} for it in items]
    diffs = paired_items([other, other], [items, items[:3]], lambda it: it["v"])
    assert [d.id for d in diffs] == ["a/go", "b/go", "c/go"]  # only programs every run evaluated
    assert [d.diff for d in diffs] == [1.0, 3.0, 8.0]


# --------------------------------------------------------------------------- transfer layers and counts

def test_lower_layers_never_overlap_the_concept_layers(tiny_llama):
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        concept = sorted(set(rng.integers(0, n, size=int(rng.integers(1, 6))).tolist()))
        lower = lower_layers(concept)
        assert not set(lower) & set(concept)
        assert lower == list(range(len(lower))) and all(x < min(concept) for x in lower)
        assert len(lower) == min(len(concept), min(concept))
    assert resolve_layers("lower", tiny_llama, SNIPPETS, concept=[0])[0] == []


@pytest.mark.parametrize("method, layers", [("lora", [1]), ("lora", [0, 1, 2]), ("full", [0, 2])])
def test_transfer_counts_equal_what_requires_grad(method, layers):
    loaded = tiny_model("llama")
    config = TransferConfig(model="x", source="python", layers=layers, method=method, rank=3)
    planned = transfer_count(loaded, config)
    adapt_layers(loaded, config)
    assert planned == sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", ["neurons", "random", "lora", "full"])
def test_finetune_counts_equal_what_requires_grad(method):
    loaded = tiny_model("llama")
    config = FinetuneConfig(model="x", target="python", method=method, neurons=NEURONS)
    planned = trainable_count(loaded, config)
    adaptation = _Adaptation(loaded, config)
    counted = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)
    if adaptation.deltas is not None:  # the deltas live beside the frozen model
        counted += sum(p.numel() for p in adaptation.deltas.parameters() if p.requires_grad)
    assert planned == counted > 0
    if method in ("neurons", "random"):  # 3 rows/columns of 32 per neuron of the tiny gated FFN
        assert counted == 5 * 3 * 32
    adaptation.remove()


def test_seed_comparisons_group_finished_results():
    def result(method, seed, delta, comparison="c1"):
        from neuro.experiments.finetune import FinetuneResult
        config = FinetuneConfig(model="x", target="python", method=method, seed=seed, comparison=comparison)
        return FinetuneResult(config=config, target="python", method=method, heldout_before={}, heldout_after={},
                              steps=1, trainable_params=10, optimizer_state=20, target_delta=delta, seed=seed)

    results = {"j1": result("neurons", 0, -0.3), "j2": result("random", 0, -0.1), "j3": result("neurons", 1, -0.5),
               "j4": result("random", 1, -0.2), "j5": result("neurons", 0, -9.0, comparison="c2")}
    out = compare_finetune(results)
    assert set(out) == {"c1", "c2"}
    (d,) = out["c1"].differences
    assert d.values == pytest.approx([-0.2, -0.3]) and out["c1"].arm("neurons").jobs == ["j1", "j3"]
    assert out["c2"].differences == [] and out["c2"].arm("neurons").values == [-9.0]


def test_transfer_scores_carry_task_intervals(monkeypatch):
    """A transfer run's per-language scores and zero-shot means carry task-level intervals whose estimates are
    the reported numbers (BLEU-4 here is the mean of sentence scores)."""
    from neuro.experiments.transfer import transfer

    corpus = SNIPPETS + [Snippet(f"{t}/{lang}", lang, t, code, f"Do {t}.")
                         for t in ("mul", "neg", "sq") for lang, code in
                         (("python", f"def {t}(x):\n    return x\n"), ("go", f"func {t}(x int) int {{ return x }}\n"),
                          ("java", f"class S {{ int {t}(int x) {{ return x; }} }}\n"))]
    config = TransferConfig(model="x", source="python", layers=[1], steps=2, lr=5e-2, batch_size=4, max_new_tokens=4,
                            eval_fraction=0.5, rank=2, eval_before=False, seed=0)
    torch.manual_seed(0)
    r = transfer(tiny_model("llama"), corpus, config, NullContext())
    for values in r.scores.values():
        assert values.bleu4_ci.estimate == pytest.approx(values.bleu4)
        assert values.rouge_l_ci.estimate == pytest.approx(values.rouge_l)
    assert r.zero_shot_bleu4_ci.estimate == pytest.approx(r.zero_shot_bleu4)
    assert r.zero_shot_rouge_l_ci.estimate == pytest.approx(r.zero_shot_rouge_l)
    assert {i.lang for i in r.per_program} == set(r.scores) and r.seed == 0
