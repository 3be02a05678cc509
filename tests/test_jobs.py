"""Jobs as real subprocesses on a tiny model: they finish writing progress, metrics, a result and a
checkpoint; a fresh process (an "app restart") lists them from disk; cancel and a killed worker both
leave a clean, final state; a killed job resumes from its checkpoint to the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import SNIPPETS

from neuro.experiments.finetune import FinetuneConfig, FinetuneResult, finetune
from neuro.jobs.folders import (
    JobContext,
    JobRefused,
    cancel_job,
    checkpoint_step,
    find_job,
    job_metrics,
    list_jobs,
    process_alive,
    read_job,
    read_json,
    write_json,
)
from neuro.jobs.kinds import FINETUNE, KINDS, export_model, job_config, job_result
from neuro.jobs.runner import create_job, resume_job, start_job
from neuro.model.loading import load_model
from neuro.paths import REPO_DIR
from neuro.training.context import NullContext

NEURONS = {0: [1, 5, 7], 2: [0, 33]}


@pytest.fixture(scope="module")
def env(tiny_env):
    return tiny_env("jobs")


@pytest.fixture(scope="module")
def model(env):
    return load_model(env / "model", device="cpu")


def _config(env, **changes) -> FinetuneConfig:
    base = dict(model=str(env / "model"), target="python", neurons=NEURONS, steps=6, lr=1e-2,
                batch_tokens=4096, max_length=64, eval_fraction=0.3)
    return FinetuneConfig(**{**base, **changes})


def _wait(path, predicate, timeout=240.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = find_job(path)
        if predicate(info):
            return info
        time.sleep(0.2)
    raise AssertionError(f"timed out; job is {find_job(path)}; log:\n{(path / 'log.txt').read_text()}")


def _temporaries(path):
    return [p.name for p in path.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def finished(env, model):
    root = env / "cache" / "jobs"
    info = start_job(FINETUNE, _config(env), model, SNIPPETS, root=root)
    assert info.state in ("queued", "running")
    return _wait(info.path, lambda i: not i.active)


def test_a_job_subprocess_runs_to_completion(finished, env):
    assert finished.state == "finished", (finished.path / "log.txt").read_text()
    assert (finished.done, finished.total) == (1, 1) or finished.fraction == 1.0
    metrics = job_metrics(finished)
    assert [m.step for m in metrics] == list(range(1, 7))
    assert all(m.loss > 0 and m.extra["tokens"] > 0 for m in metrics)
    result = job_result(finished)
    assert isinstance(result, FinetuneResult) and result.config == _config(env)
    assert set(result.heldout_before) == set(result.heldout_after) >= {"python"}
    assert result.trainable_params == 5 * 3 * 32 and result.optimizer_state == 2 * 5 * 3 * 32
    assert result.losses == [] and "losses" not in read_json(finished.path / "result.json")  # in metrics.json
    assert (finished.path / "checkpoint" / "weights.safetensors").is_file()
    assert checkpoint_step(finished) == 6 and not (finished.path / "checkpoint" / "optimizer.pt").exists()
    assert not _temporaries(finished.path)
    deadline = time.time() + 30  # the state is final before the interpreter exits
    while process_alive(finished.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not process_alive(finished.pid)
    assert "finished" in (finished.path / "log.txt").read_text()


def test_jobs_survive_an_app_restart(finished, env):
    """A new process (like a restarted app or a second tab) sees the job from disk alone."""
    out = subprocess.run([sys.executable, "-m", "neuro", "jobs", "list", "--json", "--cache", str(env / "cache")],
                         capture_output=True, text=True, cwd=REPO_DIR, timeout=120,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    rows = {row["id"]: row for row in json.loads(out.stdout)["jobs"]}
    assert rows[finished.id]["state"] == "finished" and rows[finished.id]["progress"] == 100.0
    assert [j.id for j in list_jobs(env / "cache" / "jobs")] .count(finished.id) == 1


def test_cancel_leaves_a_clean_state(env, model):
    root = env / "cache" / "jobs"
    info = start_job(FINETUNE, _config(env, steps=1_000_000), model, SNIPPETS, root=root)
    running = _wait(info.path, lambda i: i.state == "running" and i.phase == "training" and i.done >= 1)
    pid = running.pid
    assert process_alive(pid)
    cancelled = cancel_job(running.id, root=root)
    assert cancelled.state == "cancelled"
    assert not process_alive(pid)
    assert not _temporaries(info.path)
    status = read_json(info.path / "status.json")
    assert status["finished"] and status["message"] == "cancelled by user"
    # a second cancel (another tab) changes nothing
    assert cancel_job(running.id, root=root).state == "cancelled"


def test_a_killed_worker_is_shown_as_failed(env, model):
    root = env / "cache" / "jobs"
    info = start_job(FINETUNE, _config(env, steps=1_000_000), model, SNIPPETS, root=root)
    running = _wait(info.path, lambda i: i.state == "running" and i.done >= 1)
    os.killpg(os.getpgid(running.pid), signal.SIGKILL)
    failed = _wait(info.path, lambda i: not i.active, timeout=30)
    assert failed.state == "failed" and "ended without finishing" in failed.error
    assert read_json(info.path / "status.json")["state"] == "failed"  # recorded, not only displayed


def test_a_job_from_before_the_shared_split_still_lists(tmp_path):
    """An old finished job (heldout_fraction in its params, no split in its result) lists and tabulates."""
    from neuro.experiments.finetune import results_table
    from neuro.jobs.kinds import finished_results

    params = {**_config(tmp_path).to_json(), "heldout_fraction": 0.2}
    del params["eval_fraction"], params["split_seed"]
    folder = create_job("finetune", params, label="old", root=tmp_path / "jobs")
    result = {"config": params, "target": "python", "method": "neurons", "neurons": 5, "trainable_params": 480,
              "trainable_share": 0.01, "heldout_before": {"python": 5.0}, "heldout_after": {"python": 4.0},
              "target_delta": -1.0, "others_delta_mean": None, "optimizer_state": 960, "steps": 6}
    write_json(folder / "result.json", result)
    write_json(folder / "status.json", {"state": "finished", "created": time.time(), "finished": time.time()})
    jobs = list_jobs(tmp_path / "jobs")
    assert [j.state for j in jobs] == ["finished"]
    table = results_table(finished_results(jobs, FINETUNE))
    assert table["target_delta"].tolist() == [-1.0] and table["split"].isna().all()
    assert job_config(find_job(folder)).eval_fraction == 0.3


def test_every_kind_reads_back_what_it_writes(finished):
    """The registry's typed configs and results survive their JSON: what a worker writes, pages read."""
    assert set(KINDS) == {"finetune", "transfer", "export", "statistics", "ablation"}
    for kind in KINDS.values():
        assert kind.config.__name__.endswith("Config") and kind.result.__name__.endswith("Result")
    config = job_config(finished)
    assert FINETUNE.config.from_json(json.loads(json.dumps(config.to_json()))) == config
    result = job_result(finished)
    assert FINETUNE.result.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_cancel_of_a_queued_job_and_atomic_writes(tmp_path):
    folder = create_job("finetune", {"model": "x"}, label="never started", root=tmp_path)
    assert find_job(folder).state == "queued"
    assert cancel_job(folder.name, root=tmp_path).state == "cancelled"
    write_json(tmp_path / "x.json", {"a": 1})
    assert read_json(tmp_path / "x.json") == {"a": 1}
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError):
        create_job("nonsense", {}, root=tmp_path)


def test_checkpoint_replaces_the_whole_folder(tmp_path):
    folder = create_job("finetune", {}, root=tmp_path)
    ctx = JobContext(folder)
    ctx.save_checkpoint(lambda d: (d / "a.txt").write_text("1"))
    ctx.save_checkpoint(lambda d: (d / "b.txt").write_text("2"))
    assert sorted(p.name for p in (folder / "checkpoint").iterdir()) == ["b.txt"]
    assert not _temporaries(folder)


def test_a_running_job_says_how_long_its_phase_has_left(tmp_path, monkeypatch):
    """The time left is measured from the phase's first report: 20 of 100 steps in 10 s leave about 40 s;
    a new phase starts a new measurement."""
    clock = [1000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    folder = create_job("finetune", {}, root=tmp_path)
    ctx = JobContext(folder)
    ctx._write_status(state="running", started=clock[0])
    ctx.progress(0, 100, "train")
    clock[0] += 10
    ctx.progress(20, 100, "train")
    info = read_job(folder)
    assert info.seconds_left() == pytest.approx(40) and info.progress_text().endswith("(20/100) · about 40 s left")
    ctx.progress(0, 8, "evaluate")
    clock[0] += 0.6
    ctx.progress(2, 8, "evaluate")
    assert read_job(folder).seconds_left() is None  # under a second of this phase: not yet measured


def test_jobs_page_lists_cancels_and_resumes(finished, env, model, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("NEURO_CACHE", str(env / "cache"))
    root = env / "cache" / "jobs"
    running = start_job(FINETUNE, _config(env, steps=1_000_000, checkpoint_every=1), model, SNIPPETS, root=root)
    _wait(running.path, lambda i: i.state == "running" and checkpoint_step(i))
    at = AppTest.from_file(str(REPO_DIR / "views" / "jobs.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    listed = at.dataframe[0].value
    assert {finished.id, running.id} <= set(listed["id"])
    assert listed.set_index("id").loc[finished.id, "state"] == "finished"
    at.button(key=f"cancel_{running.id}").click().run()
    assert not at.exception, at.exception
    assert find_job(running.path).state == "cancelled"
    at.run()  # the cancelled job has checkpoints: it offers Resume; the finished one does not
    keys = {b.key for b in at.button}
    assert f"resume_{running.id}" in keys and f"resume_{finished.id}" not in keys
    at.button(key=f"resume_{running.id}").click().run()
    assert not at.exception, at.exception
    assert find_job(running.path).state in ("queued", "running")
    assert cancel_job(running.id, root=root).state == "cancelled"
    at.selectbox(key="jobs_pick").set_value(finished.id).run()
    assert any(m.label == "State" and m.value == "finished" for m in at.metric)
    assert any("finished" in c.value for c in at.code)  # the log


def test_a_killed_job_resumes_from_its_checkpoint(env, model, monkeypatch):
    """SIGKILL right after the first checkpoint; `jobs resume` continues there and ends with every step's
    metric and the losses and held-out result of an uninterrupted run."""
    import torch

    # One thread: on a busy machine two OpenMP threads wait on each other (~30x slower steps here).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = env / "cli-cache" / "jobs"
    steps = 120
    config = _config(env, steps=steps, checkpoint_every=10)
    info = start_job(FINETUNE, config, model, SNIPPETS, root=root)
    state = info.path / "checkpoint" / "train_state.json"
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(os.getpgid(read_json(info.path / "launcher.json")["pid"]), signal.SIGKILL)
    killed = _wait(info.path, lambda i: not i.active, timeout=30)
    step = checkpoint_step(killed)
    assert killed.state == "failed" and 10 <= step < steps and step % 10 == 0
    with pytest.raises(ValueError, match="resume the job"):  # no export of a half-trained model
        export_model(info.path, env / "half-export")

    out = _cli("jobs", "resume", info.id, "--json", env_dir=env, OMP_NUM_THREADS="1")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == "finished"
    done = find_job(info.path)
    metrics = job_metrics(done)
    assert [m.step for m in metrics] == list(range(1, steps + 1))
    assert f"resuming from the checkpoint at step {step}" in (info.path / "log.txt").read_text()
    result = job_result(done)
    assert result.steps == steps and checkpoint_step(done) == steps
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = finetune(load_model(env / "model", device="cpu"), SNIPPETS, config, NullContext())
    finally:
        torch.set_num_threads(threads)
    assert [m.loss for m in metrics] == pytest.approx(whole.losses, rel=1e-4)
    assert result.heldout_after == pytest.approx(whole.heldout_after, rel=1e-4)
    assert result.heldout_before == pytest.approx(whole.heldout_before, rel=1e-6)
    assert result.optimizer_state == whole.optimizer_state
    again = _cli("jobs", "resume", info.id, "--json", env_dir=env, OMP_NUM_THREADS="1")
    assert again.returncode == 2 and "already finished" in json.loads(again.stdout)["error"]


def test_resume_is_refused_without_a_checkpoint_or_when_finished(finished, tmp_path):
    with pytest.raises(JobRefused, match="already finished"):
        resume_job(finished)
    assert find_job(finished.path).state == "finished" and job_result(finished)
    queued = create_job("finetune", {"model": "x"}, root=tmp_path)
    with pytest.raises(JobRefused, match="is queued"):
        resume_job(queued.name, root=tmp_path)
    cancelled = cancel_job(queued.name, root=tmp_path)
    with pytest.raises(JobRefused, match="no checkpoint"):
        resume_job(cancelled)
    failed = create_job("finetune", {"model": "x"}, root=tmp_path)
    write_json(failed / "status.json", {"state": "failed", "created": time.time(), "error": "killed"})
    with pytest.raises(JobRefused, match="no checkpoint"):
        resume_job(failed.name, root=tmp_path)
    assert find_job(failed).state == "failed"  # a refusal changes nothing


def test_a_checkpoint_killed_between_its_renames_is_recovered(tmp_path):
    folder = create_job("finetune", {}, root=tmp_path)
    JobContext(folder).save_checkpoint(lambda d: (d / "train_state.json").write_text('{"step": 4}'))
    os.replace(folder / "checkpoint", folder / ".checkpoint.old.tmp")  # where a kill would leave it
    write_json(folder / "status.json", {"state": "failed", "created": time.time()})
    from neuro.jobs.folders import remove_temporaries
    remove_temporaries(folder)
    assert checkpoint_step(find_job(folder)) == 4 and not _temporaries(folder)


def _cli(*args, env_dir, **env):
    return subprocess.run([sys.executable, "-m", "neuro", *args, "--cache", str(env_dir / "cli-cache")],
                          capture_output=True, text=True, cwd=REPO_DIR, timeout=600,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", **env})


def test_cli_finetune_compares_methods_and_refuses_bad_input(env):
    common = ("--model", str(env / "model"), "--corpus", str(env / "corpus.jsonl"), "--target", "python",
              "--top-fraction", "0.2", "--eval-fraction", "0.3", "--split-seed", "0", "--json")
    out = _cli("finetune", *common, "--method", "neurons,random", "--steps", "2", "--seeds", "0", "1", env_dir=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    jobs = report["jobs"]
    assert report["split"]["eval_fraction"] == 0.3 and report["split"]["unit"] == "task"
    assert all(j["result"]["split"] == report["split"] for j in jobs)
    assert [j["state"] for j in jobs] == ["finished"] * 4 and report["runs"] == 4
    results = [j["result"] for j in jobs]
    assert [(r["method"], r["seed"]) for r in results] == [("neurons", 0), ("neurons", 1), ("random", 0), ("random", 1)]
    assert results[0]["trainable_params"] == results[2]["trainable_params"] > 0
    assert results[0]["neurons_per_layer"] == results[2]["neurons_per_layer"]
    (comparison,) = report["comparisons"]
    assert [a["arm"] for a in comparison["arms"]] == ["neurons", "random"]
    assert comparison["differences"][0]["values"] == [results[0]["target_delta"] - results[2]["target_delta"],
                                                      results[1]["target_delta"] - results[3]["target_delta"]]
    listed = json.loads(_cli("jobs", "list", "--json", env_dir=env).stdout)["jobs"]
    assert {j["id"] for j in jobs} <= {j["id"] for j in listed}
    bad = _cli("finetune", *common, "--lr", "nan", env_dir=env)
    assert bad.returncode == 2 and "learning rate" in json.loads(bad.stdout)["error"]
