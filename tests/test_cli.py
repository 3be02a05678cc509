"""`python -m neuro` end to end on a tiny model folder: JSON on stdout only, clear errors."""

import json
import math
import subprocess
import sys

import pytest
from conftest import SNIPPETS

from neuro.code.split import split_corpus
from neuro.paths import REPO_DIR


@pytest.fixture(scope="module")
def env(tiny_env):
    return tiny_env("cli", kind="qwen2")


def neuro(*args, env_dir):
    cmd = [sys.executable, "-m", "neuro", *args, "--cache", str(env_dir / "cache")]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_DIR, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def test_info_json(env):
    out = neuro("info", "--model", str(env / "model"), "--json", env_dir=env)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert (info["model_type"], info["n_layers"], info["neurons_per_layer"]) == ("qwen2", 3, 48)


def test_capture_json_then_cache_hit(env):
    args = ("capture", "--model", str(env / "model"), "--corpus", str(env / "corpus.jsonl"), "--json")
    first = neuro(*args, env_dir=env)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)  # stdout is exactly one JSON document
    assert summary["cache_hit"] is False and summary["gradients"] is True
    assert set(summary["languages"]) == {"python", "go", "java"}
    selection = split_corpus(SNIPPETS).selection  # capture reads the split's selection side
    assert summary["split"]["selection_programs"] == len(selection) and summary["split"]["unit"] == "task"
    assert summary["languages"]["python"]["samples"] == sum(s.lang == "python" for s in selection)
    assert summary["node_types"] > 3 and summary["top_k"] == 16
    assert "capture:" in first.stderr  # progress goes to stderr
    second = json.loads(neuro(*args, env_dir=env).stdout)
    assert second["cache_hit"] is True and second["languages"] == summary["languages"]


def test_errors_exit_2_with_message(env):
    out = neuro("info", "--model", str(env / "nope" / "x"), "--json", env_dir=env)
    assert out.returncode == 2
    assert "does not exist" in json.loads(out.stdout)["error"]
    out = neuro("capture", "--model", str(env / "model"), "--corpus", str(env / "missing.jsonl"), env_dir=env)
    assert out.returncode == 2 and "error:" in out.stderr and "Traceback" not in out.stderr


def test_neurons_and_ablate_json(env, tmp_path):
    base = ("--model", str(env / "model"), "--corpus", str(env / "corpus.jsonl"), "--json")
    out = neuro("neurons", *base, "--out", str(tmp_path / "sel.csv"), env_dir=env)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["method"] == "pls" and summary["n_layers"] == 3
    assert set(summary["counts"]) == {"python", "go", "java", "universal"}
    assert sum(sum(v.values()) for v in summary["by_layer"].values()) == sum(summary["counts"].values())
    assert (tmp_path / "sel.csv").read_text().startswith("layer,neuron")
    split = split_corpus(SNIPPETS)
    assert summary["split"]["evaluation_programs"] == len(split.evaluation) and summary["split"]["seed"] == 0
    assert summary["chance"]["permutations"] == 200
    assert set(summary["chance"]["p_holm"]) == set(summary["counts"]) - {"universal"}
    assert summary["universality"]["halvings"] == 20
    assert summary["universality"]["count"] == summary["counts"]["universal"]
    out = neuro("ablate", *base, "--ratio", "1.0", "--draws", "2", "--uniform-draws", "1", "--resamples", "50",
                env_dir=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    # measured on the evaluation side only: its languages, not the selection side's
    assert set(result["base_loss"]) == {s.lang for s in split.evaluation}
    assert result["draws"] == {"matched": 2, "uniform": 1} and result["split"] == summary["split"]
    assert set(result["delta"]) <= {"python", "go", "java", "universal"}
    assert set(result["groups"]) == set(result["delta"]) and result["alternative"] == "two-sided"
    for group in result["groups"].values():  # effect with its interval, both controls with their p-values
        effect = group["effect"]
        assert (effect["units"], effect["unit"]) == (len({s.task for s in split.evaluation}), result["unit"])
        assert effect["low"] <= effect["estimate"] <= effect["high"] if effect["units"] > 1 else \
            math.isnan(effect["low"])  # one evaluation task: no interval
        assert group["controls"]["matched"]["draws"] == 2 and group["controls"]["uniform"]["draws"] == 1
        assert group["controls"]["matched"]["p"] >= group["controls"]["matched"]["p_floor"] == 2 / 3
    out = neuro("neurons", *base, "--ratio", "0.5", env_dir=env)
    assert out.returncode == 2 and "ratio" in json.loads(out.stdout)["error"]


def test_neurons_split_seeds_stability(env):
    """Selection on several splits: one count per split for every key, Jaccard between the splits' sets in
    [0, 1] (NaN only where both sets are empty); the same split twice is refused (nothing to compare)."""
    import math

    from neuro.analysis.selectivity import SelectionParams, select_pls
    from neuro.code.split import SplitParams
    from neuro.instrument.statistics import capture_statistics
    from neuro.model.loading import load_model

    base = ("--model", str(env / "model"), "--corpus", str(env / "corpus.jsonl"), "--json", "--ratio", "1.0")
    out = neuro("neurons", *base, "--split-seeds", "0", "2", env_dir=env)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["split_seeds"] == [0, 2]
    assert set(summary["stability"]) == {"python", "go", "java", "universal"}
    # the counts are those of a selection made directly on each split's selection side
    loaded = load_model(str(env / "model"))
    for i, seed in enumerate((0, 2)):
        side = split_corpus(SNIPPETS, SplitParams(seed=seed)).selection
        direct = select_pls(capture_statistics(loaded, side), SelectionParams(ratio=1.0)).counts_by_language()
        assert {k: v["counts"][i] for k, v in summary["stability"].items()} == direct
    for row in summary["stability"].values():
        assert len(row["jaccard_pairs"]) == 1
        j = row["jaccard_pairs"][0]
        assert (math.isnan(j) and sum(row["counts"]) == 0) or 0.0 <= j <= 1.0
    refused = neuro("neurons", *base, "--split-seeds", "3", "3", env_dir=env)
    assert refused.returncode == 2 and "at least two seeds" in refused.stderr
