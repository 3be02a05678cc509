"""Analyses that survive faults: resumable corpus passes, and injected faults that each end with nothing
lost, nothing corrupt and a clear message.

Faults injected (each test says which): a cancelled computation (an exception from the progress
callback, as a closed page raises), SIGKILL of a CLI capture midway (and of a real app server while a
page computes: tests/browser/test_server_faults.py), a truncated and a bit-flipped cache
file, two processes computing the same entry at once, a cache folder that cannot be written (injected
EROFS and ENOSPC, a read-only bind mount and a full tmpfs where the tests may mount), a corpus file that
vanishes mid-run, a model folder with a missing weight shard.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SNIPPETS, tiny_model

from neuro.code.corpus import Snippet, load_corpus, save_jsonl
from neuro.instrument.states import pooled_states
from neuro.instrument.statistics import capture_statistics
from neuro.results import open_store, resume
from neuro.results.embeddings import LAYER_EMBEDDINGS, POOLED
from neuro.results.statistics import STATS

REPO = Path(__file__).resolve().parents[1]
PARAMS = dict(gradients=True, syntax=True, top_k=4, max_length=64)


class Cancelled(Exception):
    """What a cancelled page computation raises inside the computation (like Streamlit's StopException)."""


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture()
def chunks_of_3(monkeypatch):
    monkeypatch.setenv("NEURO_CHUNK_PROGRAMS", "3")


def _corpus(n: int) -> list[Snippet]:
    """`n` distinct programs cycling through the test snippets."""
    out = []
    for i in range(n):
        base = SNIPPETS[i % len(SNIPPETS)]
        comment = "#" if base.lang == "python" else "//"
        out.append(Snippet(f"{base.id}-{i}", base.lang, f"{base.task}{i}", f"{base.code}{comment} variant {i}\n",
                           base.prompt))
    return out


def assert_stats_close(a, b):
    arrays_a, arrays_b = a.to_arrays(), b.to_arrays()
    assert sorted(arrays_a) == sorted(arrays_b)
    for name in arrays_a:
        if name == "top_ids":
            continue  # equal activations may be listed in another order; their values are compared
        np.testing.assert_allclose(arrays_a[name], arrays_b[name], rtol=1e-5, atol=1e-5, err_msg=name)
    assert a.meta["node_types"] == b.meta["node_types"] and a.languages == b.languages
    distinct = np.abs(np.diff(a.top_values, axis=1)).min(axis=1) > 1e-4  # no ties next to each other
    np.testing.assert_array_equal(a.top_ids[:, 0][distinct], b.top_ids[:, 0][distinct])


def _cancel_after(programs: int):
    """A progress callback that cancels the computation once `programs` programs are done."""
    def report(done, total):
        if done >= programs:
            raise Cancelled
    return report


def _resumed(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "came from finished chunks" in r.getMessage()]


# --------------------------------------------------------------------------- resumable passes


def test_chunked_statistics_equal_an_uninterrupted_pass(model, tmp_path, chunks_of_3):
    whole = capture_statistics(model, SNIPPETS, **PARAMS)
    chunked, hit = STATS.fetch(model, SNIPPETS, cache=tmp_path, **PARAMS)
    assert not hit
    assert_stats_close(chunked, whole)
    assert not (tmp_path / resume.CHUNKS_DIR / STATS.kind).exists()  # chunks dropped once the result is saved


def test_cancelled_statistics_keep_their_chunks_and_resume(model, tmp_path, chunks_of_3, caplog):
    """Fault: a computation cancelled after its second chunk (a closed tab, Ctrl-C, a timeout)."""
    store, seen = open_store(tmp_path), []
    with pytest.raises(Cancelled):
        STATS.fetch(model, SNIPPETS, cache=store, progress=_cancel_after(6), **PARAMS)
    assert STATS.get(model, SNIPPETS, cache=store, compute=False, **PARAMS) is None
    kept = list((tmp_path / resume.CHUNKS_DIR / STATS.kind).glob("*/*/manifest.json"))
    assert len(kept) == 1  # one running total: the first 3 programs (the second chunk was cancelled)
    with caplog.at_level(logging.INFO, logger="neuro.results.resume"):
        stats, hit = STATS.fetch(model, SNIPPETS, cache=store, progress=lambda d, t: seen.append((d, t)),
                                       **PARAMS)
    assert not hit and _resumed(caplog) == [f"{STATS.kind}: 3 of 7 programs came from finished chunks of an "
                                            "interrupted run"]
    assert seen[0] == (3, 7) and seen[-1] == (7, 7) and all(t == 7 for _, t in seen)
    assert_stats_close(stats, capture_statistics(model, SNIPPETS, **PARAMS))
    assert STATS.fetch(model, SNIPPETS, cache=store, **PARAMS)[1]  # now a hit
    assert not (tmp_path / resume.CHUNKS_DIR / STATS.kind).exists()


def test_chunked_pooled_states_resume_and_equal_an_uninterrupted_pass(model, tmp_path, chunks_of_3, caplog):
    """Fault: a pooled-state pass (clones, embeddings, layers) cancelled after two chunks."""
    store = open_store(tmp_path)
    whole = pooled_states(model, SNIPPETS, max_length=64)
    with pytest.raises(Cancelled):
        POOLED.get(model, SNIPPETS, max_length=64, cache=store, progress=_cancel_after(7))
    assert len(list((tmp_path / resume.CHUNKS_DIR / POOLED.kind).glob("*/*/manifest.json"))) == 2
    with caplog.at_level(logging.INFO, logger="neuro.results.resume"):
        pooled = POOLED.get(model, SNIPPETS, max_length=64, cache=store)
    assert _resumed(caplog) == [f"{POOLED.kind}: 6 of 7 programs came from finished chunks of an interrupted run"]
    np.testing.assert_allclose(pooled, whole, rtol=1e-5, atol=1e-5)
    assert store.load(POOLED.kind, POOLED.key(model, SNIPPETS, max_length=64)) is not None
    assert not (tmp_path / resume.CHUNKS_DIR / POOLED.kind).exists()


def test_chunk_boundaries_are_fixed_by_corpus_order():
    assert resume.chunk_bounds(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert resume.chunk_bounds(0, 3) == []


# --------------------------------------------------------------------------- the CLI, killed and rerun

SLOW_CAPTURE = """
import os, sys, time
import neuro.instrument.statistics as capture
original = capture.capture_statistics
def slow(*args, **kwargs):  # a slower model: each chunk takes long enough to be killed midway
    indices = kwargs.get("indices")
    if os.environ.get("FAULT_LOG"):  # which programs each call computes
        with open(os.environ["FAULT_LOG"], "a") as fh:
            fh.write(" ".join(map(str, indices if indices is not None else ["all"])) + "\\n")
    time.sleep(float(os.environ.get("FAULT_SLEEP", "0")))
    return original(*args, **kwargs)
capture.capture_statistics = slow
"""
DRIVER = SLOW_CAPTURE + """
from neuro.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _computed(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model):
    """The tiny model saved in several small safetensors shards with its tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.model.save_pretrained(folder, max_shard_size="40KB", safe_serialization=True)
    model.tokenizer.save_pretrained(folder)
    assert len(list(folder.glob("*.safetensors"))) > 2
    return folder


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    save_jsonl(_corpus(40), path)
    return path


def _env(chunk: int, sleep: float, log: Path | None = None, **extra) -> dict:
    return dict(os.environ, NEURO_CHUNK_PROGRAMS=str(chunk), FAULT_SLEEP=str(sleep), FAULT_LOG=str(log or ""),
                HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO),
                **extra)


def _cli(model_dir, corpus_file, cache, *extra, sleep=0.0, chunk=4, log=None):
    env = _env(chunk, sleep, log)
    args = [sys.executable, "-c", DRIVER, "capture", "--model", str(model_dir), "--corpus", str(corpus_file),
            "--cache", str(cache), "--max-length", "64", "--top-k", "4", "--device", "cpu", *extra]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _final_stats(cache: Path):
    store = open_store(cache)
    entries = store.entries(STATS.kind)
    assert len(entries) == 1
    entry = store.load(STATS.kind, entries[0]["key"])
    assert entry is not None
    from neuro.instrument.statistics import CorpusStats
    return CorpusStats.from_arrays(entry.arrays, entry.meta)


def _prefix_chunks(cache: Path) -> list[Path]:
    return list((cache / resume.CHUNKS_DIR / STATS.kind).glob("*/*/manifest.json"))


def _kill_after_first_chunks(proc: subprocess.Popen, cache: Path) -> None:
    """Wait until the process has kept its first chunks in `cache`, then SIGKILL its process group."""
    deadline = time.time() + 240
    while not _prefix_chunks(cache) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def test_sigkill_of_a_cli_capture_then_a_rerun_resumes(model_dir, corpus_file, tmp_path):
    """Fault: SIGKILL of `python -m neuro capture` after its first chunks; the rerun resumes from them and
    ends with the result of an uninterrupted run."""
    cache, log = tmp_path / "cache", tmp_path / "computed.txt"
    proc = _cli(model_dir, corpus_file, cache, sleep=1.0, log=log)
    _kill_after_first_chunks(proc, cache)
    assert proc.returncode == -signal.SIGKILL
    assert _prefix_chunks(cache) and not open_store(cache).entries(STATS.kind)

    killed_run = _computed(log)
    log.unlink()
    rerun = _cli(model_dir, corpus_file, cache, "-v", "--json", log=log)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-2000:]
    resumed = [line for line in err.splitlines() if "came from finished chunks" in line]
    assert resumed, err[-2000:]
    done = int(resumed[0].split(": ")[-1].split(" of ")[0])
    assert 4 <= done < json.loads(out)["snippets"]  # it did not start from zero, nor skip the rest
    rerun_chunks = _computed(log)
    assert rerun_chunks[0][0] == str(done) and killed_run[0][0] == "0"  # the rerun starts where the chunks end
    assert sum(map(len, rerun_chunks)) == json.loads(out)["snippets"] - done
    assert not _prefix_chunks(cache)

    # an uninterrupted pass over the same programs (the CLI's default split's selection side)
    from neuro.code.split import split_corpus
    from neuro.model.loading import load_model

    loaded = load_model(model_dir, device="cpu")
    selection = split_corpus(load_corpus(corpus_file)).selection
    whole = capture_statistics(loaded, selection, gradients=True, syntax=True, top_k=4, max_length=64)
    assert_stats_close(_final_stats(cache), whole)


def test_two_cli_captures_of_the_same_entry_at_once(model_dir, corpus_file, tmp_path):
    """Fault: two processes compute the same entry at once: both finish, one readable entry."""
    cache = tmp_path / "cache"
    procs = [_cli(model_dir, corpus_file, cache, "--json", sleep=0.05) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, results):
        assert proc.returncode == 0, err[-2000:]
    summaries = [json.loads(out) for out, _ in results]
    assert summaries[0]["languages"] == summaries[1]["languages"]
    _final_stats(cache)  # exactly one entry, and it reads
    assert not [p for p in (cache / STATS.kind).iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- model, corpus, cache faults


def test_model_folder_with_a_missing_shard(model_dir, tmp_path):
    """Fault: one weight shard of a sharded model deleted: a clear ModelLoadError, nothing cached."""
    import shutil

    from neuro.model.errors import ModelLoadError
    from neuro.model.loading import load_model

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    shard = sorted(broken.glob("*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(ModelLoadError) as info:
        load_model(broken, device="cpu")
    message = str(info.value)
    assert str(broken) in message and shard.name in message


def test_corpus_file_vanishing_mid_run(model, tmp_path, chunks_of_3):
    """Fault: the corpus file is deleted while its statistics are computed: the run finishes from the
    programs it loaded and the entry reads back."""
    path = tmp_path / "corpus.jsonl"
    save_jsonl(SNIPPETS, path)
    snippets = load_corpus(path)

    def vanish(done, total):
        if path.exists():
            path.unlink()
    store = open_store(tmp_path / "cache")
    stats, _ = STATS.fetch(model, snippets, cache=store, progress=vanish, **PARAMS)
    assert not path.exists()
    cached = STATS.get(model, snippets, cache=store, compute=False, **PARAMS)
    assert cached is not None
    assert_stats_close(cached, stats)


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_unwritable_cache_still_returns_the_result(model, tmp_path, chunks_of_3, monkeypatch, caplog, code):
    """Fault: every cache write fails (read-only file system, full disk): the analysis returns its result
    and says why nothing was kept."""
    import neuro.results.layered
    import neuro.results.store

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(neuro.results.store, "save_file", fail)  # entries' arrays
    monkeypatch.setattr(neuro.results.layered, "create_npy", fail)  # a pass's per-layer files as it writes them
    monkeypatch.setattr(neuro.results.layered, "save_layer", fail)  # an entry's per-layer files written whole
    store = open_store(tmp_path)
    with caplog.at_level(logging.WARNING, logger="neuro.results.store"):
        stats, hit = STATS.fetch(model, SNIPPETS, cache=store, **PARAMS)
        pooled = POOLED.get(model, SNIPPETS, max_length=64, cache=store)
    assert not hit and pooled.shape[0] == len(SNIPPETS)
    assert_stats_close(stats, capture_statistics(model, SNIPPETS, **PARAMS))
    assert any(os.strerror(code) in r.getMessage() and "computed but not kept" in r.getMessage()
               for r in caplog.records)
    assert os.strerror(code) in store.last_write_error
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing half-written left behind


def test_damaged_chunk_and_damaged_result_are_recomputed(model, tmp_path, chunks_of_3, caplog):
    """Faults: a bit flipped in a kept chunk, then a truncated final entry: each is detected (CRC),
    reported, recomputed, and the result still equals an uninterrupted pass."""
    store = open_store(tmp_path)
    with pytest.raises(Cancelled):
        STATS.fetch(model, SNIPPETS, cache=store, progress=_cancel_after(6), **PARAMS)
    [manifest] = (tmp_path / resume.CHUNKS_DIR / STATS.kind).glob("*/*/manifest.json")
    arrays = manifest.parent / "arrays.safetensors"
    data = bytearray(arrays.read_bytes())
    data[-7] ^= 0x01
    arrays.write_bytes(bytes(data))
    whole = capture_statistics(model, SNIPPETS, **PARAMS)
    with caplog.at_level(logging.INFO):
        stats, _ = STATS.fetch(model, SNIPPETS, cache=store, **PARAMS)
    assert not _resumed(caplog) and any("damaged" in r.getMessage() for r in caplog.records)
    assert_stats_close(stats, whole)

    [final] = (tmp_path / STATS.kind).glob("*/arrays.safetensors")
    final.write_bytes(final.read_bytes()[:100])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        stats, hit = STATS.fetch(model, SNIPPETS, cache=store, **PARAMS)
    assert not hit and any("damaged" in r.getMessage() for r in caplog.records)
    assert_stats_close(stats, whole)
    assert STATS.get(model, SNIPPETS, cache=store, compute=False, **PARAMS) is not None


def test_cache_filling_up_mid_pass(model, tmp_path, monkeypatch, caplog):
    """Fault: the cache is a small tmpfs that fills up after a few chunks of pooled states: the pass
    returns the whole result, says the disk is full, and leaves no half-written entry."""
    full = tmp_path / "full"
    full.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", str(full)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        monkeypatch.setenv("NEURO_CHUNK_PROGRAMS", "1")
        store = open_store(full)
        with caplog.at_level(logging.WARNING, logger="neuro.results.store"):
            pooled = POOLED.get(model, SNIPPETS, max_length=64, cache=store)
        np.testing.assert_allclose(pooled, pooled_states(model, SNIPPETS, max_length=64), rtol=1e-5, atol=1e-5)
        assert "No space left" in store.last_write_error
        kept = list((full / resume.CHUNKS_DIR / POOLED.kind).glob("*/*/manifest.json"))
        # the result's per-layer files were written as the pass went (their pages taken before the disk
        # filled up), so its entry may still fit (hard links and a manifest): then its chunks are dropped as
        # usual; else the chunks that fitted are kept for a later run
        result = store.load(POOLED.kind, POOLED.key(model, SNIPPETS, max_length=64))
        if result is not None:
            np.testing.assert_array_equal(np.asarray(result.layered["pooled"]), np.asarray(pooled))
            assert not kept
        else:
            assert 0 < len(kept) < len(SNIPPETS)
        assert not [p for p in full.rglob(".tmp-*")]
        for manifest in kept:
            assert store.load(f"{resume.CHUNKS_DIR}/{POOLED.kind}/{manifest.parent.parent.name}",
                              manifest.parent.name) is not None
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)


def test_one_layer_pooled_pass_resumes(model, tmp_path, chunks_of_3, caplog):
    """LAYER_EMBEDDINGS (the clone index's single-layer pass) resumes like the full one."""
    store = open_store(tmp_path)
    with pytest.raises(Cancelled):
        LAYER_EMBEDDINGS.get(model, SNIPPETS, layer=1, max_length=64, cache=store, progress=_cancel_after(4))
    with caplog.at_level(logging.INFO, logger="neuro.results.resume"):
        emb = LAYER_EMBEDDINGS.get(model, SNIPPETS, layer=1, max_length=64, cache=store)
    assert _resumed(caplog)
    np.testing.assert_allclose(emb, pooled_states(model, SNIPPETS, max_length=64)[:, 1], rtol=1e-5, atol=1e-5)
    key = LAYER_EMBEDDINGS.key(model, SNIPPETS, layer=1, max_length=64)
    assert store.load(LAYER_EMBEDDINGS.kind, key).arrays["embeddings"].shape == (len(SNIPPETS), 32)
    assert not (tmp_path / resume.CHUNKS_DIR / LAYER_EMBEDDINGS.kind).exists()


def test_cancelled_layer_report_resumes_and_equals_an_uninterrupted_one(model, tmp_path, chunks_of_3, caplog,
                                                                     monkeypatch):
    """Fault: the layer report's computation is cancelled twice, once in its pass over the programs' states
    and once among its per-layer loss passes; each rerun resumes from the kept chunks (counted: no chunk
    of states and no loss pass is computed twice) and the report equals one computed in a single call."""
    import neuro.results.layers as layers
    from neuro.analysis.layers import layer_report

    corpus = _corpus(12)
    params = dict(tokens_per_snippet=4, contribution_limit=6, max_length=64)
    calls = {"states": 0, "losses": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper
    monkeypatch.setattr(layers, "layer_states", counted("states", layers.layer_states))
    monkeypatch.setattr(layers, "contribution_losses", counted("losses", layers.contribution_losses))
    store = open_store(tmp_path)
    with pytest.raises(Cancelled):
        layers.LAYER_REPORT.get(model, corpus, cache=store, progress=_cancel_after(7), **params)
    kept = list((tmp_path / resume.CHUNKS_DIR / layers.LAYER_REPORT.kind).glob("*/*/manifest.json"))
    assert len(kept) == 2 and calls["states"] == 3  # two finished chunks of 3 programs, the third cancelled

    def cancel_in_loss_passes(done, total):
        if done > len(corpus) + 2 * 6:  # the unsilenced pass and one silenced layer are done
            raise Cancelled
    with caplog.at_level(logging.INFO, logger="neuro.results.resume"):
        with pytest.raises(Cancelled):
            layers.LAYER_REPORT.get(model, corpus, cache=store, progress=cancel_in_loss_passes, **params)
    assert calls["states"] == 5 and "6 of 12 programs came from finished chunks" in " ".join(_resumed(caplog))
    assert calls["losses"] == 3  # the third pass was cancelled when it reported
    seen = []
    report = layers.LAYER_REPORT.get(model, corpus, cache=store, progress=lambda d, t: seen.append(d), **params)
    assert calls["states"] == 5 and calls["losses"] == 3 + model.n_layers - 1  # two passes came from the cache
    assert seen == sorted(seen) and seen[-1] == len(corpus) + model.n_layers + (model.n_layers + 1) * 6
    assert not (tmp_path / resume.CHUNKS_DIR / layers.LAYER_REPORT.kind).exists()  # dropped once the report is kept
    whole = layer_report(model, corpus, **params)
    np.testing.assert_allclose(report.scores.to_numpy(float), whole.scores[report.scores.columns].to_numpy(float),
                               atol=1e-5)
    assert report.concept_layers == whole.concept_layers
