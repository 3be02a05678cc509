"""Quick runs and job progress: the evaluation subset (stratified, deterministic, said in the results), the whole
job's progress across phases on a real tiny job, Resume keeping the elapsed time, the loss-curve chart, and the
pages' job state (a cancelled job in the picker, a finished run in the Export panel)."""

import math
import random
import time
from collections import Counter

import pytest
from conftest import SNIPPETS, save_tiny, tiny_model

from neuro.code.corpus import Snippet, save_jsonl
from neuro.experiments.finetune import FinetuneConfig, method_table, results_table
from neuro.experiments.subsets import stratified_subset
from neuro.experiments.transfer import TransferConfig, comparison_table, transfer, zero_shot_change
from neuro.jobs.folders import JobContext, cancel_job, find_job, list_jobs, read_job, requeue, write_json
from neuro.jobs.kinds import job_result
from neuro.jobs.runner import create_job, run_job
from neuro.paths import REPO_DIR
from neuro.training.checkpoints import TRAIN_STATE
from neuro.training.context import NullContext


def _corpus() -> list[Snippet]:
    """20 python tasks, 10 java, 10 go (java and go share tasks t0..t9 with python)."""
    out = [Snippet(f"t{i}/python", "python", f"t{i}", f"x = {i}\n") for i in range(20)]
    out += [Snippet(f"t{i}/{lang}", lang, f"t{i}", f"// {i}\n") for lang in ("java", "go") for i in range(10)]
    return out


def test_the_subset_keeps_each_languages_share_and_the_same_tasks():
    items = _corpus()
    subset = stratified_subset(items, 8)
    assert Counter(s.lang for s in subset) == {"python": 4, "java": 2, "go": 2}  # 8 x 20/40, 8 x 10/40, ...
    assert {s.task for s in subset if s.lang == "java"} == {s.task for s in subset if s.lang == "go"}
    assert [s.id for s in subset] == [s.id for s in items if s in subset]  # the given order is kept
    shuffled = random.Random(1).sample(items, len(items))
    assert {s.id for s in stratified_subset(shuffled, 8)} == {s.id for s in subset}  # deterministic
    assert stratified_subset(items, 0) == items and stratified_subset(items, 40) == items
    assert len(stratified_subset(items, 3)) == 3 and {s.lang for s in stratified_subset(items, 3)} == {
        "python", "java", "go"}  # one per language when N covers them
    assert len(stratified_subset(items, 1)) == 1


def _job_env(tmp_path):
    save_tiny(tmp_path / "model")
    return tiny_model("llama")  # the same weights as the saved folder (same seed)


def test_overall_progress_is_monotone_across_phases_on_a_real_job(tmp_path, monkeypatch):
    """A tiny fine-tuning job, run here: every status it writes has the whole job's fraction, which never falls
    when a phase ends (the phase's own fraction goes from 1 back to 0), and it goes through phases 1, 2, 3 of 3.
    The subset of 2 of the 3 evaluation programs is said in the result."""
    loaded = _job_env(tmp_path)
    seen = []
    original = JobContext._write_status

    def observe(self, **changes):
        original(self, **changes)
        seen.append(dict(self._status.get("progress") or {}))

    monkeypatch.setattr(JobContext, "_write_status", observe)
    config = FinetuneConfig(model=str(tmp_path / "model"), target="go", neurons={0: [1, 5], 2: [3]}, steps=4,
                            lr=1e-2, batch_tokens=4096, max_length=64, eval_fraction=0.3, eval_programs=2)
    folder = create_job("finetune", config.to_json(), label="progress", snippets=SNIPPETS, root=tmp_path / "jobs")
    info = run_job(folder, loaded=loaded)
    assert info.state == "finished", (folder / "log.txt").read_text()
    planned = [p for p in seen if p.get("phases")]
    overall = [p["overall"] for p in planned]
    assert overall == sorted(overall) and overall[-1] == pytest.approx(1.0)
    assert [p["index"] for p in planned] == sorted(p["index"] for p in planned)
    assert {p["index"] for p in planned} == {1, 2, 3} and planned[0]["phases"] == 3
    phase_changes = [(a, b) for a, b in zip(planned, planned[1:]) if a["phase"] != b["phase"]]
    assert any(a["done"] >= a["total"] and b["done"] < b["total"] for a, b in phase_changes)  # the old 98 -> 14
    result = job_result(info)
    assert (result.heldout_programs, result.heldout_total) == (2, 3)
    assert {item["lang"] for item in result.per_program} == {"go", "java"}  # stratified: one per language
    assert results_table({info.id: result})["evaluated"].tolist() == ["evaluated on 2 of 3 programs"]
    row = method_table({info.id: result}).iloc[0]
    assert row["method"] == "Neuron-guided" and row["target_delta"] == pytest.approx(
        result.heldout_after["go"] - result.heldout_before["go"])


def test_a_job_reports_phase_and_overall_fraction(tmp_path):
    """Phases weighted 1 : 2 : 1; half of phase 2 is (1 + 1) / 4 of the job; an unlisted phase keeps the value."""
    folder = create_job("finetune", {}, root=tmp_path)
    ctx = JobContext(folder)
    ctx._write_status(state="running", started=time.time())
    ctx.phases([("a", 1), ("b", 2), ("c", 1)])
    ctx.progress(1, 1, "a")
    ctx.progress(5, 10, "b")
    info = read_job(folder)
    assert info.fraction == pytest.approx(0.5) and (info.phase_index, info.phase_count) == (2, 3)
    assert "50 % overall · phase 2 of 3: b (5/10)" in info.progress_text()
    ctx.progress(0, 1, "something else")
    assert read_job(folder).fraction == pytest.approx(0.5)
    ctx.progress(0, 4, "c")
    assert read_job(folder).fraction == pytest.approx(0.75)


def test_resume_keeps_the_elapsed_time(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    folder = create_job("finetune", {"model": "x"}, root=tmp_path)
    write_json(folder / "status.json", {"state": "cancelled", "created": 990.0, "started": 1000.0,
                                        "finished": 1030.0})
    (folder / "checkpoint").mkdir()
    write_json(folder / "checkpoint" / TRAIN_STATE, {"step": 3})
    clock[0] = 1100.0
    assert read_job(folder).elapsed == pytest.approx(30)
    requeue(folder)
    assert read_job(folder).elapsed == pytest.approx(30)  # queued again: the first run's 30 s, not 0 s
    ctx = JobContext(folder)
    ctx.begin()
    ctx._stop.set()
    clock[0] = 1112.0
    assert read_job(folder, reconcile=False).elapsed == pytest.approx(42)  # 30 s before + 12 s of this run
    ctx.end("finished")
    clock[0] = 1500.0
    assert read_job(folder, reconcile=False).elapsed == pytest.approx(42)


def test_transfer_subset_and_paired_change(tmp_path):
    """The zero-shot change is the zero-shot mean after minus before (the per-language means of each program's
    change), with an interval around it; the subset is said in the table."""
    config = TransferConfig(model="tiny", source="python", layers=[1], steps=1, lr=1e-2, batch_size=2,
                            max_new_tokens=4, eval_fraction=0.34, eval_programs=2, eval_before=True)
    result = transfer(tiny_model("llama"), SNIPPETS, config, NullContext())
    assert (result.eval_pairs, result.eval_total) == (2, 3)
    others = [lang for lang in result.scores if lang != "python"]
    assert others
    before = sum(result.scores[lang].bleu4_before for lang in others) / len(others)
    change = zero_shot_change(result, "bleu4")
    assert change.estimate == pytest.approx(result.zero_shot_bleu4 - before, abs=1e-9)
    assert change.units == 1 and math.isnan(change.low)  # one evaluation task: no interval, said as such
    table = comparison_table({"job": result}, "bleu4")
    assert table["zero-shot Δ (after - before)"].iloc[0] == pytest.approx(round(change.estimate, 2))
    assert table["Δ CI"].iloc[0] is None
    assert table["evaluated"].iloc[0] == "evaluated on 2 of 3 programs"
    assert zero_shot_change(result.__class__.from_json({**result.to_json(), "per_program": [
        {k: v for k, v in it.to_json().items() if not k.endswith("_before")} for it in result.per_program]}),
        "bleu4") is None


# --------------------------------------------------------------------------- charts and pages

def _spec(frame):
    from views.ui.charts import loss_curves
    return loss_curves(frame).to_dict()


def test_the_overlay_chart_tells_methods_and_curves_apart():
    import pandas as pd

    from views.ui.charts import EVAL_CURVE, TRAIN_CURVE

    rows = [{"method": m, "run": f"{m} 0", "curve": TRAIN_CURVE, "step": s, "loss": 3.0 - s / 10}
            for m in ("Neuron-guided", "LoRA (peft)") for s in (1, 2, 3)]
    rows += [{"method": m, "run": f"{m} 0", "curve": EVAL_CURVE, "step": s, "loss": 3.1 - s / 10}
             for m in ("Neuron-guided", "LoRA (peft)") for s in (0, 3)]
    spec = _spec(pd.DataFrame(rows))
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["line", "point"]
    line = spec["layer"][0]["encoding"]
    assert line["color"]["field"] == "method" and line["strokeDash"]["field"] == "curve"
    assert line["strokeDash"]["legend"] is not None  # a dash legend beside the colour legend
    assert line["strokeDash"]["scale"]["range"][0] != line["strokeDash"]["scale"]["range"][1]
    data = next(iter(spec["datasets"].values()))
    assert {row["method"] for row in data} == {"Neuron-guided", "LoRA (peft)"}


def test_a_one_step_curve_draws_its_point():
    import pandas as pd

    from views.ui.charts import TRAIN_CURVE

    spec = _spec(pd.DataFrame([{"method": "full", "run": "a", "curve": TRAIN_CURVE, "step": 1, "loss": 2.5}]))
    assert [row["step"] for row in next(iter(spec["datasets"].values()))] == [1]
    assert any(layer["mark"]["type"] == "point" for layer in spec["layer"])


def test_a_fragment_rerun_that_sees_a_job_change_reruns_the_page():
    from types import SimpleNamespace

    from views.ui import needs_app_rerun

    state = {}
    queued, cancelled = SimpleNamespace(id="a", state="queued"), SimpleNamespace(id="a", state="cancelled")
    state["k_full"] = True
    assert not needs_app_rerun(state, "k", [queued])  # the full run draws the page
    assert not needs_app_rerun(state, "k", [queued])  # the live panel polls: nothing changed
    assert needs_app_rerun(state, "k", [cancelled])  # cancelled: the picker shows "(queued)": redraw the page
    state["k_full"] = True
    assert not needs_app_rerun(state, "k", [cancelled])  # that full run: no loop


def _page(monkeypatch, tmp_path, page):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("NEURO_MODEL", str(tmp_path / "model"))
    monkeypatch.setenv("NEURO_CORPUS", str(tmp_path / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(tmp_path / "cache"))
    return AppTest.from_file(str(REPO_DIR / "views" / page), default_timeout=180)


def test_a_cancelled_job_reads_cancelled_in_the_picker(tmp_path, monkeypatch):
    root = tmp_path / "cache" / "jobs"
    folder = create_job("finetune", {"model": "x", "target": "python"}, label="waiting", root=root)
    at = _page(monkeypatch, tmp_path, "jobs.py").run()
    assert not at.exception, at.exception
    assert any("(queued)" in o for o in at.selectbox(key="jobs_pick").options)
    at.button(key=f"cancel_{folder.name}").click().run()
    assert not at.exception, at.exception
    assert find_job(folder).state == "cancelled"
    options = at.selectbox(key="jobs_pick").options
    assert any(f"{folder.name} (cancelled)" in o for o in options) and not any("(queued)" in o for o in options)


def test_export_lists_a_run_that_just_finished(tmp_path, monkeypatch):
    """The transfer page drawn while a run is queued says so; once it finished (here: the worker run in this
    process), the next draw lists it in the Export panel."""
    loaded = _job_env(tmp_path)
    save_jsonl(SNIPPETS, tmp_path / "corpus.jsonl")
    root = tmp_path / "cache" / "jobs"
    config = TransferConfig(model=str(tmp_path / "model"), source="python", layers=[1], steps=1, batch_size=2,
                            max_new_tokens=3, eval_fraction=0.34, eval_programs=2)
    folder = create_job("transfer", config.to_json(), label="quick", snippets=SNIPPETS, root=root)
    at = _page(monkeypatch, tmp_path, "transfer.py")
    at.session_state["eval_fraction"] = 0.34
    at.run()
    assert not at.exception, at.exception
    assert any("in progress" in c.value for c in at.caption)
    assert not [s for s in at.selectbox if s.key == "tr_export_job"]
    assert run_job(folder, loaded=loaded).state == "finished"
    at.run()
    assert not at.exception, at.exception
    picker = at.selectbox(key="tr_export_job")
    assert any(folder.name in o for o in picker.options)
    tables = [d.value for d in at.dataframe if "evaluated" in getattr(d.value, "columns", [])]
    assert tables and tables[0]["evaluated"].iloc[0] == "evaluated on 2 of 3 programs"
    assert list_jobs(root)[0].fraction == 1.0
    cancel_job(folder, root=root)  # a finished job is left as it is
    assert find_job(folder).state == "finished"


def test_finetune_page_overlays_the_methods_of_a_launch(tmp_path, monkeypatch):
    """Two methods launched together (one job each, one comparison id), run here: the page draws one chart with
    a colour per method, a dash per curve and point marks, and a table with one row per method."""
    import json

    loaded = _job_env(tmp_path)
    save_jsonl(SNIPPETS, tmp_path / "corpus.jsonl")
    root = tmp_path / "cache" / "jobs"
    for method in ("neurons", "random"):
        config = FinetuneConfig(model=str(tmp_path / "model"), target="python", method=method, steps=1,
                                neurons={0: [1, 5]} if method == "neurons" else {0: [2, 7]}, lr=1e-2,
                                batch_tokens=4096, max_length=64, comparison="launch-1", seeds=[0])
        folder = create_job("finetune", config.to_json(), label=method, snippets=SNIPPETS, root=root)
        assert run_job(folder, loaded=loaded).state == "finished", (folder / "log.txt").read_text()
    at = _page(monkeypatch, tmp_path, "finetune.py").run()
    assert not at.exception, at.exception
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    titles = [s.get("title") for s in specs]
    overlays = [s for s in specs if "latest launch" in str(s.get("title"))]
    assert len(overlays) == 1, (titles, [w.value for w in at.warning], [e.value for e in at.error])
    overlay = overlays[0]
    assert [layer["mark"]["type"] for layer in overlay["layer"]] == ["line", "point"]
    encoding = overlay["layer"][0]["encoding"]
    assert encoding["color"]["field"] == "method" and encoding["strokeDash"]["field"] == "curve"
    tables = [d.value for d in at.dataframe if "seeds" in getattr(d.value, "columns", [])]
    assert tables and sorted(tables[0]["method"]) == ["Neuron-guided", "Random neurons (control)"]


def test_cli_transfer_evaluates_on_n_programs(tmp_path):
    import json
    import subprocess
    import sys

    _job_env(tmp_path)
    save_jsonl(SNIPPETS, tmp_path / "corpus.jsonl")
    out = subprocess.run([sys.executable, "-m", "neuro", "transfer", "--model", str(tmp_path / "model"), "--corpus",
                          str(tmp_path / "corpus.jsonl"), "--source", "python", "--layers", "all", "--steps", "1",
                          "--seeds", "0", "--max-new-tokens", "3", "--eval-fraction", "0.34", "--eval-programs", "2",
                          "--cache", str(tmp_path / "cache"), "--json"], capture_output=True, text=True,
                         cwd=REPO_DIR, timeout=600, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    (job,) = json.loads(out.stdout)["jobs"]
    assert job["state"] == "finished" and (job["result"]["eval_pairs"], job["result"]["eval_total"]) == (2, 3)
    assert find_job(job["path"]).params["eval_programs"] == 2
