"""bench/bench_peers.py: its peers (plain PyTorch hooks, nnsight) compute the project's PLS by their own code,
so on a tiny model they must agree with capture_statistics; the row runner reports every figure."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import SNIPPETS, tiny_model

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_peers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_peers", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_the_peers_compute_the_projects_pls(bench, kind):
    loaded = tiny_model(kind)
    project = bench.RUNNERS["neuro"](loaded, SNIPPETS, 64)
    assert project.shape == (3, loaded.n_layers, loaded.n_neurons) and project.max() > 0
    rows = {"torch-hooks": bench.torch_hooks(loaded, SNIPPETS, 64),
            "one at a time": bench.RUNNERS["neuro-1-by-1"](loaded, SNIPPETS, 64)}
    if importlib.util.find_spec("nnsight") is not None:
        rows["nnsight"] = bench.nnsight_trace(tiny_model(kind), SNIPPETS, 64)  # nnsight rewires the model it wraps
    for name, pls in rows.items():
        assert bench.max_relative_difference(pls, project) < 1e-4, name


def test_a_row_reports_speed_memory_and_its_statistic(bench, tmp_path):
    folder = tmp_path / "model"
    loaded = tiny_model("llama")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    args = SimpleNamespace(model=str(folder), device="cpu", dtype=None, programs=10, max_length=64, repeats=1,
                           threads=1)
    row = bench.run_row("neuro", args, tmp_path)
    assert row["programs"] == 10 and row["tokens"] > 10 and row["tokens_per_s"] > 0
    assert row["peak_rss_mb"] >= row["rss_before_mb"] > 0
    pls = np.load(tmp_path / "neuro.npy")
    assert pls.shape == (5, loaded.n_layers, loaded.n_neurons)
    np.save(tmp_path / "torch-hooks.npy", pls / 1.001)  # a peer half as fast, 0.1 % lower everywhere
    rows = bench.compare([row, {**row, "row": "torch-hooks", "tokens_per_s": row["tokens_per_s"] / 2}], tmp_path)
    assert rows[0]["ratio_to_faster_peer"] == 2.0 and rows[0]["faster_peer"] == "torch-hooks"
    assert rows[0]["max_rel_diff"] == pytest.approx(1e-3, rel=1e-3) and rows[1]["max_rel_diff"] == 0
