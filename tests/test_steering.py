"""Steering against ground truth: on the planted model (tests/test_ground_truth.py) with the language neurons
made to leak a little onto every program token, scaling go's neurons turns python continuations into go at a
known factor, deterministically; matched random neurons never do; the sweep, its cache, the command and the
page."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from test_app import APP
from test_ground_truth import LANGS, PLANTED, UNIVERSAL, WIDTH, planted_corpus, planted_model

from neuro.analysis.generation import GenerationParams
from neuro.analysis.selectivity import SelectionParams, select_neurons
from neuro.analysis.steering import (
    SteerSpec,
    plan_steering,
    steer_prompt,
    steering_sweep,
    steering_interventions,
)
from neuro.code.corpus import save_jsonl
from neuro.code.syntax import Detection
from neuro.instrument.ablation import score_deciles
from neuro.instrument.statistics import capture_statistics
from neuro.paths import REPO_DIR
from neuro.results.interventions import STEERING

GO = {layer: [n] for lang, layer, n in PLANTED if lang == "go"}
PY = {layer: [n] for lang, layer, n in PLANTED if lang == "python"}
PARAMS = GenerationParams(max_new_tokens=8)
SWITCH = 32.0  # measured: go words from this factor on (16 still writes python)


def words(text: str) -> Detection:
    """The planted vocabulary's own "detector": the language most of the words belong to."""
    counts = {lang: sum(w.startswith(lang[:2]) for w in text.split()) for lang in LANGS}
    top = max(counts, key=counts.get)
    return Detection(top, counts[top] / max(1, len(text.split())), {k: float(v) for k, v in counts.items()}, {})


def leaky_planted():
    """The planted model whose language neurons also fire weakly on every program token (gate and up read the
    "a program token" dimension a little), so scaling them acts on any language's input."""
    loaded = planted_model()
    loaded.model.generation_config.eos_token_id = None  # LlamaConfig's default EOS (2) is the word py0 here
    with torch.no_grad():
        for _, layer, n in PLANTED:
            mlp = loaded.model.model.layers[layer].mlp
            for proj in (mlp.gate_proj, mlp.up_proj):
                proj.weight[n, 3] = 0.1
    return loaded


def prompted_corpus():
    return [dataclasses.replace(s, prompt=" ".join(s.code.split()[:6])) for s in planted_corpus(programs=6)]


@pytest.fixture(scope="module")
def leaky():
    loaded, corpus = leaky_planted(), prompted_corpus()
    stats = capture_statistics(loaded, corpus, gradients=True)
    return loaded, corpus, stats


def _scores(stats):
    pls = stats.pls()
    return {lang: pls[i] for i, lang in enumerate(stats.languages)}


def test_scaling_go_neurons_moves_generation_into_go(leaky):
    loaded, corpus, _ = leaky
    spec = SteerSpec("python", "go", factors=(0.0, 1.0, 16.0, SWITCH, 64.0), draws=0)
    for s in [s for s in corpus if s.lang == "python"][:3]:
        steered = steer_prompt(loaded, s.prompt, spec, GO, params=PARAMS, detect=words)
        assert steered.before["lang"] == "python" and steered.before["confidence"] == 1.0
        by_factor = steered.after.set_index("factor")
        assert by_factor.loc[1.0, "completion"] == steered.before["completion"]  # scale 1 is no change
        assert by_factor.loc[0.0, "lang"] == by_factor.loc[16.0, "lang"] == "python"
        for f in (SWITCH, 64.0):
            assert by_factor.loc[f, "lang"] == "go" and by_factor.loc[f, "confidence"] == 1.0
        # deterministic: the same call gives the same continuations
        again = steer_prompt(loaded, s.prompt, spec, GO, params=PARAMS, detect=words)
        assert again.after["completion"].tolist() == steered.after["completion"].tolist()


def test_sweep_selected_vs_matched_random_neurons(leaky):
    loaded, corpus, stats = leaky
    spec = SteerSpec("python", "go", factors=(1.0, SWITCH), draws=3)
    result = steering_sweep(loaded, corpus, spec, GO, _scores(stats), params=PARAMS, detect=words)
    assert len(result.prompts) == 6 and len(result.programs) == 6
    table = result.table(n_resamples=200).set_index(["control", "factor"])
    assert table.loc[("selected", 1.0), "target share"] == 0.0 and table.loc[("selected", 1.0), "source share"] == 1.0
    assert table.loc[("selected", SWITCH), "target share"] == 1.0
    assert table.loc[("matched", SWITCH), "target share"] == 0.0  # background neurons write no language signal
    assert table.loc[("selected", SWITCH), "p vs matched"] == pytest.approx(1 / 4)  # the floor with 3 draws
    # the cost: scale 1 changes no loss at all; go's neurons at 32x make python text harder to predict
    assert table.loc[("selected", 1.0), "loss change"] == 0.0
    assert table.loc[("selected", SWITCH), "loss change"] > table.loc[("matched", SWITCH), "loss change"]
    assert table.loc[("selected", SWITCH), "loss low"] > 0
    summary = result.summary()
    assert summary["draws"] == 3 and summary["neurons"] == {"target": 2, "source": 0}
    json.dumps(summary)


def test_matched_controls_share_layer_and_decile_and_avoid_the_selected(leaky):
    _, _, stats = leaky
    scores = _scores(stats)
    spec = SteerSpec("python", "go", factors=(1.0,), source_factor=0.0, draws=4, seed=3)
    conditions = plan_steering(GO, scores, spec, source=PY)
    assert [c.control for c in conditions] == ["selected"] + ["matched"] * 4
    chosen = {(layer, n) for group in (GO, PY) for layer, idx in group.items() for n in idx}
    for c in conditions[1:]:
        for group, selected, lang in ((c.target, GO, "go"), (c.source, PY, "python")):
            assert {k: len(v) for k, v in group.items()} == {k: len(v) for k, v in selected.items()}
            for layer, idx in group.items():
                deciles = score_deciles(scores[lang][layer])
                assert sorted(deciles[idx]) == sorted(deciles[selected[layer]])  # same decile (a tiny layer: 4.8 each)
                assert not {(layer, int(n)) for n in idx} & chosen
        target = {(layer, int(n)) for layer, v in c.target.items() for n in v}
        assert not target & {(layer, int(n)) for layer, v in c.source.items() for n in v}
    # draw d does not depend on how many draws there are
    fewer = plan_steering(GO, scores, dataclasses.replace(spec, draws=2), source=PY)
    for a, b in zip(fewer[1:], conditions[1:3]):
        assert all(np.array_equal(a.target[k], b.target[k]) for k in a.target)
    # suppressing the source scales its neurons by the source factor; a factor of 1 leaves it out
    ivs = steering_interventions(GO, 2.0, PY, 0.0)
    assert [(iv.op, iv.value, iv.neurons) for iv in ivs] == [("scale", 2.0, ((0, 9), (1, 30))),
                                                              ("scale", 0.0, ((0, 5), (1, 17)))]
    assert len(steering_interventions(GO, 2.0, PY, 1.0)) == 1
    assert UNIVERSAL[1] < WIDTH


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="two languages"):
        SteerSpec("python", "python")
    with pytest.raises(ValueError, match="finite"):
        SteerSpec("python", "go", factors=(1.0, float("inf")))
    with pytest.raises(ValueError, match="repeat"):
        SteerSpec("python", "go", factors=(1.0, 1.0))


def _selection(stats):
    return select_neurons(stats, "pls", SelectionParams(top_fraction=7 / (2 * WIDTH), normalize="none"))


def test_sweep_is_cached(leaky, tmp_path):
    loaded, corpus, stats = leaky
    selection = _selection(stats)
    assert selection.neurons_for("go", as_pairs=True) == sorted((layer, n) for layer, idx in GO.items() for n in idx)
    spec = SteerSpec("python", "go", factors=(1.0, SWITCH), draws=1)
    args = dict(selection=selection, spec=spec, params=PARAMS, cache=tmp_path)
    assert STEERING.get(loaded, corpus, compute=False, **args) is None
    reports = []
    first, hit = STEERING.fetch(loaded, corpus, progress=lambda done, total: reports.append((done, total)), **args)
    assert not hit and reports[-1] == (5, 5)  # base + (selected + 1 draw) x 2 factors
    second, hit = STEERING.fetch(loaded, corpus, **args)
    assert hit
    assert second.generations.equals(first.generations) and np.array_equal(second.base_losses, first.base_losses)
    assert second.table(n_resamples=100).equals(first.table(n_resamples=100))
    assert second.spec == spec


# --------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def leaky_dir(tmp_path_factory, leaky):
    loaded, corpus, _ = leaky
    folder = tmp_path_factory.mktemp("leaky")
    loaded.model.save_pretrained(folder / "model")
    loaded.tokenizer.save_pretrained(folder / "model")
    save_jsonl(corpus, folder / "corpus.jsonl")
    return folder


def _neuro(folder, *args):
    cmd = [sys.executable, "-m", "neuro", *args, "--model", str(folder / "model"), "--corpus",
           str(folder / "corpus.jsonl"), "--cache", str(folder / "cache"), "--top-fraction", str(7 / (2 * WIDTH)),
           "--normalize", "none", "--max-new-tokens", "8", "--json"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_DIR, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_steer_command(leaky_dir, leaky):
    loaded, corpus, _ = leaky
    task = next(s.task for s in corpus if s.lang == "python")
    out = _neuro(leaky_dir, "steer", "--task", task, "--from", "python", "--to", "go", "--factors", f"1,{SWITCH:g}")
    assert out.returncode == 0, out.stderr
    one = json.loads(out.stdout)
    assert one["neurons"] == 2 and [r["factor"] for r in one["after"]] == [1.0, SWITCH]
    prompt = next(s.prompt for s in corpus if s.task == task and s.lang == "python")
    expected = steer_prompt(loaded, prompt, SteerSpec("python", "go", (1.0, SWITCH), draws=0), GO, params=PARAMS)
    assert [r["completion"] for r in one["after"]] == expected.after["completion"].tolist()
    assert one["after"][0]["completion"] == one["before"]["completion"]
    sweep = _neuro(leaky_dir, "steer", "--from", "python", "--to", "go", "--factors", "1,2", "--draws", "1")
    assert sweep.returncode == 0, sweep.stderr
    summary = json.loads(sweep.stdout)
    assert summary["cache_hit"] is False and summary["draws"] == 1
    assert {(r["control"], r["factor"]) for r in summary["sweep"]} == {(c, f) for c in ("selected", "matched")
                                                                      for f in (1.0, 2.0)}
    from neuro.code.split import split_corpus

    evaluation = [s for s in split_corpus(corpus).evaluation if s.lang == "python"]
    assert summary["prompts"] == summary["held_out_programs"] == len(evaluation) < 6  # the evaluation side only
    bad = _neuro(leaky_dir, "steer", "--from", "python", "--to", "python")
    assert bad.returncode == 2 and "two languages" in json.loads(bad.stdout)["error"]


# --------------------------------------------------------------------------- page
def test_sweep_chart_spec():
    from views.steering import sweep_chart

    table = __import__("pandas").DataFrame({
        "control": ["selected", "selected", "matched", "matched"], "factor": [1.0, 8.0, 1.0, 8.0],
        "target share": [0.0, 0.9, 0.0, 0.1], "target low": [0.0, 0.7, 0.0, 0.0],
        "target high": [0.0, 1.0, 0.0, 0.3], "loss change": [0.0, 0.5, 0.0, 0.1]})
    spec = sweep_chart(table, "go").to_dict()
    band, line = spec["layer"]
    assert band["mark"]["type"] == "area" and band["encoding"]["y"]["field"] == "target low"
    assert band["encoding"]["y2"]["field"] == "target high"
    assert line["encoding"]["y"]["field"] == "target share" and line["encoding"]["x"]["field"] == "factor"
    assert line["encoding"]["y"]["scale"]["domain"] == [0, 1]
    data = next(iter(spec["datasets"].values()))
    assert {d["neurons"] for d in data} == {"selected neurons", "matched random neurons (mean of draws)"}


def test_steering_page(monkeypatch, leaky_dir):
    monkeypatch.setenv("NEURO_MODEL", str(leaky_dir / "model"))
    monkeypatch.setenv("NEURO_CORPUS", str(leaky_dir / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(leaky_dir / "page-cache"))
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.switch_page("views/steering.py")
    at.run()
    assert not at.exception, at.exception
    at.number_input(key="steer_top").set_value(round(7 / (2 * WIDTH), 3)).run()
    at.selectbox(key="steer_from").set_value("python").run()
    at.selectbox(key="steer_to").set_value("go").run()
    at.text_input(key="steer_factors").set_value(f"1,{SWITCH:g}").run()
    at.number_input(key="steer_draws").set_value(1).run()
    at.number_input(key="steer_tokens").set_value(8).run()
    assert not at.exception, at.exception
    assert any("5 steps" in c.value for c in at.caption)  # the cost, before anything runs
    assert any(c.value.startswith("Cost: 3 generations of 8 tokens · about ") for c in at.caption)
    assert any(c.value.startswith("Cost: 5 x (") and "about" in c.value for c in at.caption)
    assert not at.get("vega_lite_chart")
    at.button(key="steer_generate").click().run()
    assert not at.exception, at.exception
    unchanged, steered = at.code[0].value, at.code[1].value  # side by side: unchanged, and go's neurons x32
    assert unchanged.split()[6:] and all(w.startswith("py") for w in unchanged.split()[6:])
    assert all(w.startswith("go") for w in steered.split()[7:])  # the first new word comes from the prompt's last
    at.button(key="steer_run").click().run()
    assert not at.exception, at.exception
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1
    spec = json.loads(charts[0].proto.spec)
    assert spec["layer"][1]["encoding"]["y"]["field"] == "target share"
    at.text_input(key="steer_factors").set_value("1,x").run()
    assert any("factors" in e.value for e in at.error)


# --------------------------------------------------------------------------- ablate-gen: the same path
def test_pass_at_k_takes_interventions_through_the_one_path(leaky):
    """evaluate_pass_at_k (ablate-gen) with go's neurons set high writes go words into every python body; with
    `ablate` it zeroes through the same "zero" intervention as `interventions=[zero]`."""
    from neuro.analysis.generation import evaluate_pass_at_k
    from neuro.code.sandbox import ExecutionResult
    from neuro.instrument.intervention import Intervention

    loaded, corpus, _ = leaky
    todo = [dataclasses.replace(s, test="assert True") for s in corpus if s.lang == "python"][:2]
    programs = []

    def record(lang, program, test):  # nothing to execute: planted words are no program
        programs.append(program)
        return ExecutionResult(False, "failed", 1, "", "", False, 0.0, "planted words")

    go_pairs = [(layer, n) for layer, idx in GO.items() for n in idx]
    plain = evaluate_pass_at_k(loaded, todo, PARAMS, run=record)
    steered = evaluate_pass_at_k(loaded, todo, PARAMS, run=record,
                                 interventions=[Intervention(go_pairs, "scale", SWITCH)])
    assert all(words(r["completion"]).lang == "python" for r in plain.samples)
    assert all(words(r["completion"]).lang == "go" for r in steered.samples)
    via_ablate = evaluate_pass_at_k(loaded, todo, PARAMS, run=record, ablate=PY)
    via_zero = evaluate_pass_at_k(loaded, todo, PARAMS, run=record,
                                  interventions=[Intervention([(layer, n) for layer, idx in PY.items() for n in idx])])
    assert [r["completion"] for r in via_ablate.samples] == [r["completion"] for r in via_zero.samples]
    assert len(programs) == 8


def test_ablate_gen_command_uses_matched_controls(leaky_dir, leaky):
    _, corpus, stats = leaky
    with_tests = [dataclasses.replace(s, test="assert True") if s.lang == "python" else s for s in corpus]
    save_jsonl(with_tests, leaky_dir / "tested.jsonl")
    cmd = [sys.executable, "-m", "neuro", "ablate-gen", "--target", "go", "--model", str(leaky_dir / "model"),
           "--corpus", str(leaky_dir / "tested.jsonl"), "--cache", str(leaky_dir / "cache"), "--top-fraction",
           str(7 / (2 * WIDTH)), "--normalize", "none", "--max-new-tokens", "4", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_DIR, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert set(summary["pass_at_k"]) == {"none", "go", "matched"} and summary["neurons"] == 2
    assert summary["pass_at_k"]["none"]["python"]["1"] == 0.0  # planted words are no python program
