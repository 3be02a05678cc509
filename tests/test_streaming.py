"""Corpus-sized arrays streamed: pooled states per layer on disk, the token reservoir, chunk totals, one key."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
from conftest import SNIPPETS

from neuro.code.corpus import Snippet, save_jsonl
from neuro.instrument.states import layer_states, pooled_states, sample_positions, token_sample
from neuro.results import open_store, resume
from neuro.results.layered import InMemory, LayerFiles, LayerWriter
from neuro.results.store import Entry, Store


class Cancelled(Exception):
    pass


def _cancel_after(programs: int):
    def report(done, total):
        if done >= programs:
            raise Cancelled
    return report


def _corpus(n: int) -> list[Snippet]:
    """`n` distinct programs cycling through the test snippets (a comment makes each distinct)."""
    out = []
    for i in range(n):
        base = SNIPPETS[i % len(SNIPPETS)]
        comment = "#" if base.lang == "python" else "//"
        out.append(Snippet(f"{base.id}-{i}", base.lang, base.task, f"{base.code}{comment} variant {i}\n", base.prompt))
    return out


# --------------------------------------------------------------------------- the per-layer form


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_layer_files_equal_the_array_in_ram(tmp_path, dtype):
    """Written in uneven blocks, kept by the store and loaded back: bit for bit the 3-D array, read a layer
    (a memory map of its own file) at a time; a flipped bit in one layer file makes the entry missing."""
    full = np.random.default_rng(0).standard_normal((11, 4, 6)).astype(dtype)
    store = Store(tmp_path, shipped=None)
    writer = LayerWriter(11, 4, 6, dtype=dtype, folder=store.staging("k"), name="x")
    for lo, hi in [(0, 3), (3, 4), (4, 11)]:
        writer.write(lo, full[lo:hi])
    staged = writer.finish()
    assert isinstance(staged, LayerFiles) and staged.owned is not None
    np.testing.assert_array_equal(np.asarray(staged), full)
    store.save("k", "key", Entry(layered={"x": staged}, meta={"a": 1}))
    assert staged.owned is None and not list((tmp_path / "k").glob(".tmp-*"))  # staging handed to the entry
    files = sorted(p.name for p in (tmp_path / "k" / "key").glob("*.npy"))
    assert files == [f"x.layer{i:04d}.npy" for i in range(4)]
    loaded = store.load("k", "key").layered["x"]
    assert loaded.shape == (11, 4, 6) and loaded.dtype == dtype and len(loaded) == 11
    assert isinstance(loaded[:, 2], np.memmap)
    np.testing.assert_array_equal(np.asarray(loaded), full)
    for layer in range(4):
        np.testing.assert_array_equal(loaded[:, layer], full[:, layer])
    np.testing.assert_array_equal(loaded[[1, 5], -1], full[[1, 5], -1])
    np.testing.assert_array_equal(loaded[[2, 7]], full[[2, 7]])
    np.testing.assert_array_equal(loaded.mean(1), full.mean(1))  # summed a layer at a time, as numpy does
    np.testing.assert_array_equal(InMemory([full[:, i] for i in range(4)]).mean(1), full.mean(1))
    path = tmp_path / "k" / "key" / "x.layer0003.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    assert store.load("k", "key") is None


def test_a_writer_on_a_full_disk_carries_on_in_ram(tmp_path, monkeypatch):
    """A write that fails midway (a full disk) loses nothing: the rows written so far are read back and the
    rest kept in RAM; the staging folder is gone."""
    import errno
    import os

    full = np.random.default_rng(1).standard_normal((9, 3, 5)).astype(np.float32)
    folder = tmp_path / ".tmp-stage-x"
    folder.mkdir()
    writer = LayerWriter(9, 3, 5, folder=folder, name="x")
    writer.write(0, full[:4])
    real = os.pwrite

    def full_disk(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "pwrite", full_disk)
    writer.write(4, full[4:])
    monkeypatch.setattr(os, "pwrite", real)
    out = writer.finish()
    assert isinstance(out, InMemory) and not folder.exists()
    np.testing.assert_array_equal(np.asarray(out), full)


def test_pooled_states_are_kept_per_layer_and_equal_the_pass_in_ram(tiny_llama, tmp_path, monkeypatch):
    """POOLED's entry is one file per layer, and what it reads equals the states of one pass held in RAM
    (the same batches: bit for bit); the clone index's layer is read from its layer's file alone."""
    from neuro.results.embeddings import LAYER_EMBEDDINGS, POOLED

    monkeypatch.setenv("NEURO_CHUNK_PROGRAMS", "1000")  # one chunk: the same batches as the pass in RAM
    corpus = _corpus(10)
    store = open_store(tmp_path)
    pooled = POOLED.get(tiny_llama, corpus, max_length=64, cache=store)
    whole = pooled_states(tiny_llama, corpus, max_length=64)
    np.testing.assert_array_equal(np.asarray(pooled), whole)
    entry = store.load(POOLED.kind, POOLED.key(tiny_llama, corpus, max_length=64))
    assert not entry.arrays and list(entry.layered) == ["pooled"]
    assert len(list(store.path(POOLED.kind, POOLED.key(tiny_llama, corpus, max_length=64)).glob("*.npy"))) == 3
    layer = LAYER_EMBEDDINGS.get(tiny_llama, corpus, layer=1, max_length=64, cache=store)
    assert isinstance(layer, np.memmap) and not list((tmp_path / LAYER_EMBEDDINGS.kind).glob("*"))
    np.testing.assert_array_equal(layer, whole[:, 1])


def test_a_resumed_pooled_pass_equals_an_uninterrupted_one(tiny_llama, tmp_path, monkeypatch):
    """Killed (cancelled) after two chunks and resumed: the kept per-layer files are bit for bit those of a
    pass that ran through (the same chunks, the same batches)."""
    from neuro.results.embeddings import POOLED

    monkeypatch.setenv("NEURO_CHUNK_PROGRAMS", "3")
    corpus = _corpus(10)
    resumed_store = open_store(tmp_path / "resumed")
    with pytest.raises(Cancelled):
        POOLED.get(tiny_llama, corpus, max_length=64, cache=resumed_store, progress=_cancel_after(7))
    assert len(list((tmp_path / "resumed" / resume.CHUNKS_DIR / POOLED.kind).glob("*/*/manifest.json"))) == 2
    import gc

    gc.collect()  # the cancelled pass's writer is gone, and its staged files with it
    assert not list((tmp_path / "resumed" / POOLED.kind).glob(".tmp-stage-*/*"))
    resumed = POOLED.get(tiny_llama, corpus, max_length=64, cache=resumed_store)
    straight = POOLED.get(tiny_llama, corpus, max_length=64, cache=open_store(tmp_path / "straight"))
    np.testing.assert_array_equal(np.asarray(resumed), np.asarray(straight))


def test_chunk_totals_are_summed_once_in_corpus_order(tmp_path):
    """chunked_sum keeps each chunk as its own entry (never a running total rewritten after each chunk) and
    folds them in corpus order, the same whether some came from an interrupted run."""
    corpus = _corpus(10)
    added, writes = [], []

    def compute(lo, hi, progress):
        entry = Entry(arrays={"x": np.arange(lo, hi, dtype=np.float64)})
        if progress:
            progress(hi - lo, hi - lo)
        return entry

    def add(total, part):
        added.append((len(total.arrays["x"]), len(part.arrays["x"])))
        return Entry(arrays={"x": np.concatenate([total.arrays["x"], part.arrays["x"]])})

    store = open_store(tmp_path)
    save = store.save
    store.save = lambda kind, key, entry: writes.append(len(entry.arrays["x"])) or save(kind, key, entry)
    with pytest.raises(Cancelled):
        resume.chunked_sum(store, "k", "key", corpus, compute, add, size=3, progress=_cancel_after(7))
    assert writes == [3, 3]  # each chunk once, its own size
    total = resume.chunked_sum(store, "k", "key", corpus, compute, add, size=3)
    np.testing.assert_array_equal(total.arrays["x"], np.arange(10))
    assert writes == [3, 3, 3, 1] and added[-3:] == [(3, 3), (6, 3), (9, 1)]


# --------------------------------------------------------------------------- the reservoir of sampled tokens


def _chosen(loaded, snippets, **kwargs) -> set[tuple[str, int]]:
    picks = token_sample(loaded, snippets, tokens_per_snippet=4, max_length=64, **kwargs)
    return {(s.id, int(p)) for s, ps in zip(snippets, picks) for p in ps}


def test_the_reservoir_keeps_every_sampled_token_of_a_small_corpus(tiny_llama):
    """Below `max_tokens` the positions are those each program samples on its own (today's numbers)."""
    from neuro.instrument.tokens import encode

    corpus = _corpus(10)
    picks = token_sample(tiny_llama, corpus, tokens_per_snippet=4, max_length=64, max_tokens=40)
    for s, p in zip(corpus, picks):
        np.testing.assert_array_equal(p, sample_positions(len(encode(tiny_llama, s.code, 64).ids), 4, 0, s.code))


def test_the_reservoir_is_fixed_in_size_and_independent_of_order(tiny_llama):
    corpus = _corpus(30)
    every = _chosen(tiny_llama, corpus, max_tokens=None)
    kept = _chosen(tiny_llama, corpus, max_tokens=25)
    assert len(every) == 120 and len(kept) == 25 and kept <= every
    shuffled = list(corpus)
    random.Random(3).shuffle(shuffled)
    assert _chosen(tiny_llama, shuffled, max_tokens=25) == kept
    assert kept <= _chosen(tiny_llama, corpus, max_tokens=60)  # a larger reservoir keeps what a smaller one kept
    assert _chosen(tiny_llama, corpus, max_tokens=25, seed=1) != kept
    # a uniform sample: no program holds much more than its share (4 x 25/120 = 0.83 tokens on average)
    per_program = pd.Series([i for i, _ in kept]).value_counts()
    assert per_program.max() <= 4 and per_program.size >= 12


def test_the_layer_report_samples_the_same_tokens_whatever_the_chunks(tiny_llama, tmp_path, monkeypatch):
    """The report's states from chunks of 3 programs and from one chunk: the same sampled tokens (the
    reservoir, fixed before the pass), the same states, the same report."""
    from neuro.results.layers import LAYER_REPORT

    corpus = _corpus(14)
    params = dict(tokens_per_snippet=4, contribution=False, max_length=64, max_tokens=30)
    reports = []
    for size in ("3", "1000"):
        monkeypatch.setenv("NEURO_CHUNK_PROGRAMS", size)
        reports.append(LAYER_REPORT.get(tiny_llama, corpus, cache=tmp_path / size, **params))
    assert reports[0].meta["tokens_sampled"] <= 30
    pd.testing.assert_frame_equal(reports[0].scores, reports[1].scores, rtol=1e-4)
    picks = token_sample(tiny_llama, corpus, tokens_per_snippet=4, max_length=64, max_tokens=30)
    states = layer_states(tiny_llama, corpus, picks=picks, max_length=64)
    assert states.tokens.shape[0] == 30 and states.token_index.shape == (30, 2)
    assert not list(tmp_path.rglob(".tmp-stage-*/*"))  # the report's staged states are scratch, deleted


def test_a_resumed_layer_report_equals_an_uninterrupted_one(tiny_llama, tmp_path, monkeypatch):
    from neuro.results.layers import LAYER_REPORT

    monkeypatch.setenv("NEURO_CHUNK_PROGRAMS", "3")
    corpus = _corpus(12)
    params = dict(tokens_per_snippet=4, contribution=False, max_length=64, max_tokens=20)
    with pytest.raises(Cancelled):
        LAYER_REPORT.get(tiny_llama, corpus, cache=tmp_path / "a", progress=_cancel_after(7), **params)
    resumed = LAYER_REPORT.get(tiny_llama, corpus, cache=tmp_path / "a", **params)
    straight = LAYER_REPORT.get(tiny_llama, corpus, cache=tmp_path / "b", **params)
    pd.testing.assert_frame_equal(resumed.scores, straight.scores)
    pd.testing.assert_frame_equal(resumed.pairs, straight.pairs)


# --------------------------------------------------------------------------- one key, clone evaluation unchanged


def test_a_default_given_or_left_out_is_one_layer_report_key(tiny_llama, snippets):
    from neuro.instrument.states import DEFAULT_MAX_TOKENS
    from neuro.results.layers import LAYER_REPORT

    bare = LAYER_REPORT.key(tiny_llama, snippets)
    assert LAYER_REPORT.key(tiny_llama, snippets, tokens_per_snippet=12, contribution=True, max_length=512,
                            seed=0, max_tokens=DEFAULT_MAX_TOKENS) == bare
    assert LAYER_REPORT.key(tiny_llama, snippets, contribution=False) != bare
    assert LAYER_REPORT.key(tiny_llama, snippets, max_tokens=100) != bare


def test_clones_eval_reads_the_layer_report_that_layers_cached(tiny_llama, tmp_path, capsys, monkeypatch):
    """`layers` then `clones eval` on one cache: the second computes no layer report (one entry, and the
    report's computation is never called again)."""
    import neuro.results.layers as layers
    from neuro.cli import main

    tiny_llama.model.save_pretrained(tmp_path / "model")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "model")
    save_jsonl(SNIPPETS, tmp_path / "corpus.jsonl")
    common = ["--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "corpus.jsonl"),
              "--cache", str(tmp_path / "cache"), "--json"]
    computed = []
    report = layers.layer_report
    monkeypatch.setattr(layers, "layer_report", lambda *a, **k: computed.append(1) or report(*a, **k))
    assert main(["layers", *common]) == 0
    concept = json.loads(capsys.readouterr().out)["concept_layers"]
    assert main(["clones", "eval", *common]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(computed) == 1 and len(open_store(tmp_path / "cache").entries(layers.LAYER_REPORT.kind)) == 1
    assert summary["concept_layers"] == concept


def test_clone_evaluation_from_layer_files_equals_the_one_from_the_array(tiny_llama, snippets, tmp_path):
    """The clone evaluation reading the pooled states a layer at a time from their files gives exactly the
    numbers it gives from the same states held whole (the single-array form entries were kept in before,
    still read: the shipped results)."""
    from neuro.results.clones import CLONE_EVAL
    from neuro.results.embeddings import POOLED

    files = open_store(tmp_path / "files")
    by_layer = CLONE_EVAL.get(tiny_llama, snippets, layer=1, cache=files)
    pooled = POOLED.get(tiny_llama, snippets, cache=files, compute=False)
    assert isinstance(pooled, LayerFiles)
    whole = open_store(tmp_path / "whole")
    whole.save(POOLED.kind, POOLED.key(tiny_llama, snippets), Entry(arrays={"pooled": np.asarray(pooled)}))
    assert isinstance(POOLED.get(tiny_llama, snippets, cache=whole, compute=False), InMemory)
    held = CLONE_EVAL.get(tiny_llama, snippets, layer=1, cache=whole)
    pd.testing.assert_frame_equal(by_layer.scores, held.scores, check_exact=True)
    pd.testing.assert_frame_equal(by_layer.sweep, held.sweep, check_exact=True)
