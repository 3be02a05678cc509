"""Data-parallel statistics: 2 CPU processes with gloo give the single-process result."""

import socket

import numpy as np
import torch.multiprocessing as mp
from conftest import SNIPPETS, tiny_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    import torch.distributed as dist

    from neuro.instrument.distributed import distributed_statistics, init_from_env

    init_from_env()
    try:
        loaded = tiny_model("llama")  # same seed in every rank: identical weights
        stats = distributed_statistics(loaded, SNIPPETS, syntax=True, top_k=4, batch_tokens=150)
        np.savez(f"{out_dir}/rank{rank}.npz", **stats.to_arrays())
        dist.barrier()  # neither rank tears gloo down while the other still talks to it (SIGABRT at exit)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process(tmp_path, monkeypatch):
    import sys
    import types

    from neuro.instrument.statistics import POSITION_BITS, capture_statistics, trace_tokens

    # Spawned workers re-run the parent's __main__ module; after an AppTest in this process that is a
    # Streamlit page script, so give them an empty one.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    loaded = tiny_model("llama")
    single = capture_statistics(loaded, SNIPPETS, syntax=True, top_k=4, batch_tokens=150)
    activations = {}  # global token id -> (layers, neurons)
    for i, s in enumerate(SNIPPETS):
        trace = trace_tokens(loaded, s.code)
        for pos in range(trace.activations.shape[1]):
            activations[(i << POSITION_BITS) + pos] = trace.activations[:, pos]
    for rank in range(2):
        got = np.load(tmp_path / f"rank{rank}.npz")
        for name, expected in single.to_arrays().items():
            if name == "top_ids":  # ties (e.g. every program's first token) make ids ambiguous: check
                continue           # instead that each id points at a token with the reported activation
            np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-6, err_msg=name)
        for (layer, rank_k, neuron), gid in np.ndenumerate(got["top_ids"]):
            true = activations[int(gid)][layer, neuron]
            assert abs(true - got["top_values"][layer, rank_k, neuron]) < 1e-4


def test_capture_command_under_torchrun(tmp_path, tiny_env):
    import json
    import subprocess
    import sys

    from neuro.code.split import split_corpus
    from neuro.paths import REPO_DIR

    tiny_env(folder=tmp_path)
    args = ["capture", "--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "corpus.jsonl"),
            "--cache", str(tmp_path / "cache"), "--json"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(_free_port()), "-m", "neuro"]
    out = subprocess.run(torchrun + args, capture_output=True, text=True, cwd=REPO_DIR, timeout=600,
                         env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)  # one JSON document: only rank 0 prints
    assert summary["ranks"] == 2 and summary["cache_hit"] is False
    selection = split_corpus(SNIPPETS).selection  # capture reads the split's selection side
    assert summary["split"]["selection_programs"] == len(selection)
    assert summary["languages"]["python"]["samples"] == sum(s.lang == "python" for s in selection)
    single = subprocess.run([sys.executable, "-m", "neuro", *args], capture_output=True, text=True, cwd=REPO_DIR,
                            timeout=600, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert json.loads(single.stdout)["cache_hit"] is True  # rank 0 wrote the cache a single process reads
