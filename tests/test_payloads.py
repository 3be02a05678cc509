"""Typed payloads across the backend/UI boundary: a transfer result.json and a job's metrics.json read into frozen
dataclasses and written back as the very JSON they were read from; the pages that show them still render.

tests/data/transfer_result.json was written by the code before the payloads were typed (commit e1dbf18, a 2-step
LoRA transfer of the tiny llama, evaluated before and after), in the job folder's on-disk format."""

import copy
import json
import math
from pathlib import Path

import pytest
from conftest import SNIPPETS

from neuro.analysis.uncertainty import Interval
from neuro.experiments.transfer import TransferResult, comparison_table, zero_shot_change
from neuro.experiments.transfer_scores import LanguageScores, ProgramScores, SummarySample
from neuro.jobs.folders import JobContext, job_metrics, read_json, requeue, write_json
from neuro.jobs.kinds import job_result
from neuro.jobs.runner import create_job
from neuro.jobs.state import MetricPoint
from neuro.paths import REPO_DIR
from neuro.training.checkpoints import TRAIN_STATE

OLD_RESULT = Path(__file__).parent / "data" / "transfer_result.json"


def _old() -> dict:
    return json.loads(OLD_RESULT.read_text())


def _on_disk(data) -> str:
    """What neuro.jobs.state.write_json writes."""
    return json.dumps(data, indent=1, default=str)


# --------------------------------------------------------------------------- transfer result


def test_a_result_written_before_the_types_loads_typed_and_writes_back_byte_for_byte():
    text = OLD_RESULT.read_text()
    data = json.loads(text)
    r = TransferResult.from_json(data)
    assert all(isinstance(v, LanguageScores) for v in r.scores.values()) and set(r.scores) == {"python", "go", "java"}
    assert all(isinstance(s, SummarySample) for s in r.samples) and len(r.samples) == 6  # keep_samples 2 x 3
    assert all(isinstance(p, ProgramScores) for p in r.per_program) and len(r.per_program) == data["eval_pairs"] == 9
    assert isinstance(r.zero_shot_bleu4_ci, Interval) and isinstance(r.scores["go"].rouge_l_ci, Interval)
    # each typed value is the one under its key in the file
    go = data["scores"]["go"]
    assert (r.scores["go"].bleu4, r.scores["go"].rouge_l, r.scores["go"].n) == (go["bleu4"], go["rouge_l"], go["n"])
    assert r.scores["go"].bleu4_before == go["bleu4_before"] and r.scores["go"].bleu4_ci.low == go["bleu4_ci"]["low"]
    assert r.scores["go"].bleu4_ci.units == 3 and r.zero_shot_bleu4_ci.high == data["zero_shot_bleu4_ci"]["high"]
    assert r.samples[0].before == data["samples"][0]["before"] and r.samples[0].code == data["samples"][0]["code"]
    assert r.per_program[0].bleu4_before == data["per_program"][0]["bleu4_before"]
    # an invariance of the file itself: per language, the programs' mean sentence score is the language's score
    for lang, scores in r.scores.items():
        mine = [p.bleu4 for p in r.per_program if p.lang == lang]
        assert len(mine) == scores.n and sum(mine) / len(mine) == pytest.approx(scores.bleu4, rel=1e-9)
    assert _on_disk(r.to_json()) == text


def test_the_job_kind_reads_the_old_file_and_the_cli_prints_it_unchanged(tmp_path):
    from neuro.cli.commands.jobs import _result_json

    data = _old()
    folder = create_job("transfer", data["config"], label="old", root=tmp_path / "jobs")
    write_json(folder / "result.json", data)
    write_json(folder / "status.json", {"state": "finished", "created": 1.0, "finished": 2.0})
    from neuro.jobs.folders import find_job

    info = find_job(folder)
    assert isinstance(job_result(info), TransferResult)
    assert _result_json(info) == data  # `jobs show --json`
    assert _result_json(info, drop=("config", "per_program")) == {k: v for k, v in data.items()
                                                                   if k not in ("config", "per_program")}


def _legacy() -> dict:
    """The file as a job written before scores before training, intervals and per-program scores existed."""
    data = _old()
    for v in data["scores"].values():
        for key in ("bleu4_before", "rouge_l_before", "bleu4_ci", "rouge_l_ci"):
            del v[key]
    for s in data["samples"]:
        s["before"] = None
    for key in ("per_program", "zero_shot_bleu4_ci", "zero_shot_rouge_l_ci", "eval_total", "split", "seed"):
        del data[key]
    return data


def test_a_legacy_result_without_the_optional_keys_loads():
    legacy = _legacy()
    r = TransferResult.from_json(legacy)
    assert r.per_program == [] and r.zero_shot_bleu4_ci is None and r.eval_total is None
    assert all(v.bleu4_before is None and v.bleu4_ci is None and v.rouge_l_ci is None for v in r.scores.values())
    assert all(s.before is None for s in r.samples)
    out = r.to_json()
    assert out["scores"] == legacy["scores"] and out["samples"] == legacy["samples"]  # nothing added per language
    assert zero_shot_change(r, "bleu4") is None
    row = comparison_table({"old": r}, "bleu4").iloc[0]
    assert row["zero-shot CI"] is None and row["Δ CI"] is None and row["evaluated"] == "evaluated on 9 of 9 programs"
    assert row["go"] == round(legacy["scores"]["go"]["bleu4"], 2)


def test_an_interval_without_bounds_is_nan_inside_and_null_on_disk():
    """One evaluation task gives no interval: its bounds are null in the file, NaN in the object, and the tables
    show no interval for it."""
    data = _old()
    data["zero_shot_rouge_l_ci"] |= {"low": None, "high": None, "units": 1, "resamples": 0}
    data["scores"]["go"]["bleu4_ci"] |= {"low": None, "high": None}
    r = TransferResult.from_json(data)
    assert math.isnan(r.zero_shot_rouge_l_ci.low) and r.zero_shot_rouge_l_ci.units == 1
    assert math.isnan(r.scores["go"].bleu4_ci.high) and not math.isnan(r.scores["go"].bleu4_ci.estimate)
    assert _on_disk(r.to_json()) == _on_disk(data)
    assert comparison_table({"j": r}, "rouge_l")["zero-shot CI"].iloc[0] is None
    assert comparison_table({"j": r}, "bleu4")["zero-shot CI"].iloc[0] is not None


# --------------------------------------------------------------------------- job metrics


def test_job_metrics_keep_every_reported_value(tmp_path):
    folder = create_job("finetune", {}, root=tmp_path)
    ctx = JobContext(folder)
    ctx.metric(step=1, loss=2.5, tokens=96)
    ctx.metric(step=2, loss=2.25, tokens=80, lr=0.001)
    ctx.metric(step=3, accuracy=0.5)  # a point without a loss
    ctx._flush_metrics()
    assert read_json(folder / "metrics.json") == [{"step": 1, "loss": 2.5, "tokens": 96},
                                                  {"step": 2, "loss": 2.25, "tokens": 80, "lr": 0.001},
                                                  {"step": 3, "accuracy": 0.5}]
    info = type("Job", (), {"path": folder})()
    points = job_metrics(info)
    assert points == [MetricPoint(1, 2.5, {"tokens": 96}), MetricPoint(2, 2.25, {"tokens": 80, "lr": 0.001}),
                      MetricPoint(3, None, {"accuracy": 0.5})]
    # a resume cuts the points after the checkpoint's step and keeps every value of the others
    write_json(folder / "status.json", {"state": "failed", "created": 1.0, "finished": 2.0})
    (folder / "checkpoint").mkdir()
    write_json(folder / "checkpoint" / TRAIN_STATE, {"step": 2})
    requeue(folder)
    assert read_json(folder / "metrics.json") == [{"step": 1, "loss": 2.5, "tokens": 96},
                                                  {"step": 2, "loss": 2.25, "tokens": 80, "lr": 0.001}]
    resumed = JobContext(folder)  # the resumed worker reads them back and writes them out unchanged
    resumed.begin()
    resumed._stop.set()
    resumed.metric(step=3, loss=2.0, tokens=64)
    resumed._flush_metrics()
    assert [p.to_json() for p in job_metrics(info)] == [{"step": 1, "loss": 2.5, "tokens": 96},
                                                        {"step": 2, "loss": 2.25, "tokens": 80, "lr": 0.001},
                                                        {"step": 3, "loss": 2.0, "tokens": 64}]


# --------------------------------------------------------------------------- pages


def _distinct(data: dict) -> dict:
    """The old file with scores a reader can tell apart (the tiny model's are all ~0)."""
    data = copy.deepcopy(data)
    for i, lang in enumerate(("python", "go", "java")):
        v = data["scores"][lang]
        v.update(bleu4=10.0 + i, rouge_l=20.0 + i, bleu4_before=1.0 + i, rouge_l_before=2.0 + i)
        v["bleu4_ci"].update(estimate=10.0 + i, low=9.0 + i, high=11.5 + i)
    data["zero_shot_bleu4"] = 11.5
    data["zero_shot_bleu4_ci"].update(estimate=11.5, low=10.25, high=12.75)
    data["samples"][0]["prediction"] = "Negate a number."
    return data


def _finished_transfer(env: Path) -> tuple[Path, dict]:
    data = _distinct(_old())
    folder = create_job("transfer", data["config"], label="typed payloads", snippets=SNIPPETS,
                        root=env / "cache" / "jobs")
    write_json(folder / "result.json", data)
    write_json(folder / "metrics.json", [{"step": 1, "loss": 5.5, "tokens": 40}, {"step": 2, "loss": 5.25,
                                                                                  "tokens": 36}])
    write_json(folder / "status.json", {"state": "finished", "created": 1.0, "started": 1.0, "finished": 2.0,
                                        "progress": {"done": 1, "total": 1, "phase": "done"}})
    return folder, data


def _page(monkeypatch, env: Path, page: str):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("NEURO_MODEL", str(env / "model"))
    monkeypatch.setenv("NEURO_CORPUS", str(env / "corpus.jsonl"))
    monkeypatch.setenv("NEURO_CACHE", str(env / "cache"))
    return AppTest.from_file(str(REPO_DIR / "views" / page), default_timeout=180)


def _charts(at) -> list[tuple[dict, list[dict]]]:
    """(spec, data rows) per chart: streamlit sends a chart's data apart from its spec, as Arrow tables."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    out = []
    for c in at.get("vega_lite_chart"):
        frames = [convert_arrow_bytes_to_pandas_df(d.data.data) for d in c.proto.datasets]
        out.append((json.loads(c.proto.spec), [row for f in frames for row in f.to_dict("records")]))
    return out


def test_the_transfer_page_shows_a_finished_run_from_its_typed_result(monkeypatch, tiny_env):
    env = tiny_env("payloads-transfer")
    folder, data = _finished_transfer(env)
    at = _page(monkeypatch, env, "transfer.py").run()
    assert not at.exception, at.exception
    bleu = next(d.value for d in at.dataframe if "zero-shot mean" in getattr(d.value, "columns", [])
                and "python (source)" in d.value.columns and d.value["python (source)"].iloc[0] == 10.0)
    assert bleu["go"].tolist() == [11.0] and bleu["java"].tolist() == [12.0]
    assert bleu["zero-shot mean"].tolist() == [11.5] and bleu["zero-shot CI"].tolist() == ["[10.25, 12.75]"]
    rouge = next(d.value for d in at.dataframe if "zero-shot mean" in getattr(d.value, "columns", [])
                 and d.value["python (source)"].iloc[0] == 20.0)
    assert rouge["java"].tolist() == [22.0]
    rows = {row["language"]: row for spec, data in _charts(at) if "BLEU-4 per language" in str(spec.get("title"))
            for row in data}
    assert (rows["go"]["BLEU-4"], rows["go"]["low"], rows["go"]["high"]) == (11.0, 10.0, 12.5)
    samples = next(d.value for d in at.dataframe if "prediction" in getattr(d.value, "columns", []))
    assert samples["prediction"].iloc[0] == "Negate a number." and len(samples) == len(data["samples"])
    assert samples["before"].tolist() == [s["before"] for s in data["samples"]]
    assert any(c.value.startswith("Before training") and "go BLEU-4 2.0 / ROUGE-L 3.0" in c.value for c in at.caption)
    assert any(c.value.strip() == data["samples"][0]["code"].strip() and c.language == "java" for c in at.code)


def test_the_jobs_page_draws_the_metrics_and_the_result(monkeypatch, tiny_env):
    env = tiny_env("payloads-jobs")
    folder, data = _finished_transfer(env)
    at = _page(monkeypatch, env, "jobs.py").run()
    assert not at.exception, at.exception
    assert any(folder.name in o for o in at.selectbox(key="jobs_pick").options)
    curve = next(data for spec, data in _charts(at) if "Training loss" in str(spec.get("title")))
    assert sorted((row["step"], row["loss"]) for row in curve) == [(1, 5.5), (2, 5.25)]
    shown = [c.value for c in at.code if c.language == "json" and '"scores"' in c.value]
    assert shown and json.loads(shown[0]) == data
