"""The on-disk cache: hits, atomic entries, damaged entries recomputed; the recipes that fill it."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from neuro.results import Recipe, cache_problem, open_store
from neuro.results.store import Entry, Store, make_key


def _entry():
    return Entry(arrays={"x": np.arange(12, dtype=np.float64).reshape(3, 4)},
                 tables={"t": pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})}, meta={"note": "hi"})


def _model(identity="m"):
    """Enough of a LoadedModel for a recipe: an identity (no weights, so no card is written)."""
    return SimpleNamespace(identity=identity, weights_loaded=False)


def _recipe(compute=_entry):
    """A recipe whose result is its entry as stored."""
    return Recipe(kind="k", version=1, compute=lambda call: compute(), read=lambda entry: entry)


def test_second_call_hits(tmp_path):
    store, calls = Store(tmp_path), []

    def compute():
        calls.append(1)
        return _entry()
    recipe = _recipe(compute)
    first, hit1 = recipe.fetch(_model(), [], cache=store)
    second, hit2 = recipe.fetch(_model(), [], cache=store)
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    np.testing.assert_array_equal(second.arrays["x"], first.arrays["x"])
    pd.testing.assert_frame_equal(second.tables["t"], first.tables["t"])
    assert second.meta == {"note": "hi"}
    assert not list(tmp_path.glob("k/.tmp-*"))


def test_truncated_file_is_recomputed(tmp_path):
    store, calls = Store(tmp_path), []
    recipe = _recipe(lambda: calls.append(1) or _entry())
    key = recipe.key(_model(), [])
    store.save("k", key, _entry())
    path = store.path("k", key) / "arrays.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    assert store.load("k", key) is None
    entry, hit = recipe.fetch(_model(), [], cache=store)
    assert not hit and calls == [1] and entry.arrays["x"].shape == (3, 4)
    assert store.load("k", key) is not None


def test_missing_or_garbled_manifest(tmp_path):
    store = Store(tmp_path)
    key = make_key("k", model="m")
    store.save("k", key, _entry())
    (store.path("k", key) / "manifest.json").write_text("{half")
    assert store.load("k", key) is None


def test_keys_differ_by_every_part():
    base = dict(model="m", corpus="c", params={"a": 1})
    keys = {make_key("k", **base), make_key("k2", **base), make_key("k", **dict(base, model="n")),
            make_key("k", **dict(base, corpus="d")), make_key("k", **dict(base, params={"a": 2}))}
    assert len(keys) == 5
    assert make_key("k", a=1, b=2) == make_key("k", b=2, a=1)


def test_bit_flipped_file_is_recomputed(tmp_path):
    """Fault: one bit flipped in an array file (same size): the CRC catches it and the entry is recomputed."""
    store = Store(tmp_path)
    key = _recipe().key(_model(), [])
    store.save("k", key, _entry())
    path = store.path("k", key) / "arrays.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) - 5] ^= 0x10
    path.write_bytes(bytes(data))
    entry, hit = _recipe().fetch(_model(), [], cache=store)
    assert not hit and entry.arrays["x"][2, 3] == 11
    assert store.load("k", key) is not None


def _hammer(root, rounds):
    store = Store(root)
    key = make_key("k", model="m")
    for i in range(rounds):
        store.save("k", key, _entry())
        entry = store.load("k", key)
        assert entry is not None and entry.arrays["x"].shape == (3, 4), i


def test_two_processes_saving_one_entry_at_once(tmp_path):
    """Fault: two processes write (and read) the same entry at once: both finish, one readable entry."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(tmp_path, 40)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    store = Store(tmp_path)
    assert [m["key"] for m in store.entries("k")] == [make_key("k", model="m")]
    assert store.load("k", make_key("k", model="m")) is not None
    assert not [p.name for p in (tmp_path / "k").iterdir() if p.name.startswith(".")]


def test_unwritable_cache_raises_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    """Fault: an injected EROFS on write: `save` raises CacheWriteError naming the cache and the cause;
    a recipe still returns the computed result."""
    import errno
    import os

    import neuro.results.store
    from neuro.results.store import CacheWriteError

    def fail(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(neuro.results.store, "save_file", fail)
    store = Store(tmp_path)
    key = make_key("k", model="m")
    with pytest.raises(CacheWriteError, match="Read-only file system") as info:
        store.save("k", key, _entry())
    assert str(tmp_path) in str(info.value)
    entry, hit = _recipe().fetch(_model(), [], cache=store)
    assert not hit and entry.arrays["x"].shape == (3, 4) and "not kept" in store.last_write_error
    assert not list((tmp_path / "k").iterdir())


def test_read_only_bind_mount(tmp_path, mounted):
    """Fault: the cache folder is a read-only bind mount: entries already there read; a new one is
    computed, returned, and the error says the file system is read-only."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    Store(src).save("k", _recipe().key(_model("old"), []), _entry())
    mounted("--bind", str(src), str(ro))
    mounted("-o", "remount,bind,ro", str(ro))
    store = Store(ro)
    assert _recipe().get(_model("old"), [], cache=store, compute=False) is not None
    entry, hit = _recipe().fetch(_model("new"), [], cache=store)
    assert not hit and entry.arrays["x"].shape == (3, 4)
    assert "Read-only file system" in store.last_write_error
    assert "Read-only file system" in cache_problem(ro) and cache_problem(src) is None
    # a damaged entry on a read-only cache is still reported missing, not a crash
    assert store.load("k", make_key("k", model="absent")) is None


def test_full_disk(tmp_path, mounted):
    """Fault: the cache on a full tmpfs: the write fails with 'No space left', nothing half-written stays,
    and a small entry still fits afterwards."""
    full = tmp_path / "full"
    full.mkdir()
    mounted("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full))
    store = Store(full)
    big = Entry(arrays={"x": np.random.default_rng(0).random(50_000)})
    entry, hit = _recipe(lambda: big).fetch(_model("big"), [], cache=store)
    assert not hit and entry is big
    assert "No space left" in store.last_write_error
    assert "No space left" in cache_problem(full)  # remembered: a small probe file would still fit
    assert cache_problem(full, within_s=0) is None
    assert not list((full / "k").iterdir())
    store.save("k", make_key("k", model="small"), _entry())
    assert store.load("k", make_key("k", model="small")) is not None


def test_a_killed_writers_temporary_folder_is_swept(tmp_path):
    """Fault: a writer killed mid-save leaves `.tmp-*`; it is never read, and a later save removes it once
    it is stale (a young one may belong to a live writer and stays)."""
    import os
    import time

    store = Store(tmp_path)
    (tmp_path / "k").mkdir()
    stale, young = tmp_path / "k" / ".tmp-abc-1", tmp_path / "k" / ".tmp-abc-2"
    for folder in (stale, young):
        folder.mkdir()
        (folder / "arrays.safetensors").write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    assert store.entries("k") == []
    store.save("k", make_key("k", model="m"), _entry())
    assert not stale.exists() and young.exists()


def test_a_recipe_reads_absent_as_none_and_keys_by_every_part(tmp_path):
    """`get(compute=False)` never computes; the key holds the model, corpus, version, key parts and the
    versions of the recipe's inputs, and a cache folder is as good as its store."""
    from neuro.code.corpus import Snippet

    calls = []
    base = _recipe(lambda: calls.append(1) or _entry())
    assert base.get(_model(), [], cache=tmp_path, compute=False) is None and not calls
    assert base.get(_model(), [], cache=tmp_path).meta == {"note": "hi"} and calls == [1]
    assert base.get(_model(), [], cache=open_store(tmp_path), compute=False) is not None and calls == [1]
    with_part = Recipe(kind="k", version=1, compute=base.compute, read=base.read,
                       key_parts=lambda args: {"a": args["a"]}, defaults={"a": 1})
    snippet = Snippet(id="p/0", lang="python", task="t", code="x = 1\n")
    keys = {base.key(_model(), []), base.key(_model("n"), []), base.key(_model(), [snippet]),
            Recipe(kind="k", version=2, compute=base.compute, read=base.read).key(_model(), []),
            with_part.key(_model(), []), with_part.key(_model(), [], a=2),
            Recipe(kind="k", version=1, compute=base.compute, read=base.read, inputs={"up": base}).key(_model(), [])}
    assert len(keys) == 7 and with_part.key(_model(), []) == with_part.key(_model(), [], a=1)


def test_the_registry_lists_every_recipe():
    """Every cached result kind is one recipe, listed once in neuro.results.registry."""
    import importlib
    import pkgutil

    import neuro.results
    from neuro.results.registry import RECIPES

    found = set()
    for info in pkgutil.iter_modules(neuro.results.__path__):
        module = importlib.import_module(f"neuro.results.{info.name}")
        found |= {id(v) for v in vars(module).values() if isinstance(v, Recipe)}
    assert found == {id(r) for r in RECIPES.values()}
    assert all(kind == r.kind for kind, r in RECIPES.items())


# --------------------------------------------------------------------------- the shipped, read-only layer
def _files(folder):
    """Every file under `folder` with its bytes (what a write or a delete would change)."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _shipped(tmp_path, model="m"):
    """A shipped folder holding one entry of `_recipe()` for `model`, and that entry's key."""
    shipped = tmp_path / "shipped"
    key = _recipe().key(_model(model), [])
    Store(shipped, shipped=None).save("k", key, _entry())
    return shipped, key


def test_the_shipped_layer_serves_a_miss_and_is_never_written(tmp_path):
    shipped, key = _shipped(tmp_path)
    before = _files(shipped)
    store, calls = Store(tmp_path / "cache", shipped=shipped), []
    recipe = _recipe(lambda: calls.append(1) or _entry())
    found, hit = recipe.fetch(_model(), [], cache=store)
    assert hit and not calls and found.meta == {"note": "hi"}
    np.testing.assert_array_equal(found.arrays["x"], _entry().arrays["x"])
    assert store.exists("k", key) and not store.path("k", key).exists()  # served, not copied into the cache
    assert recipe.get(_model("other"), [], cache=store) is not None and calls == [1]  # another model computes
    assert store.path("k", recipe.key(_model("other"), [])).is_dir()  # ... and keeps it in the writable cache
    assert _files(shipped) == before and store.entries("k") and len(store.entries("k")) == 1


def test_the_writable_cache_comes_before_the_shipped_layer(tmp_path):
    shipped, key = _shipped(tmp_path)
    store = Store(tmp_path / "cache", shipped=shipped)
    store.save("k", key, Entry(meta={"note": "mine"}))
    assert store.load("k", key).meta == {"note": "mine"}
    assert Store(tmp_path / "cache", shipped=None).load("k", key).meta == {"note": "mine"}
    assert Store(tmp_path / "empty", shipped=None).load("k", key) is None  # without the layer: a miss


def test_a_damaged_shipped_entry_is_reported_missed_and_kept(tmp_path, caplog):
    shipped, key = _shipped(tmp_path)
    data = shipped / "k" / key / "arrays.safetensors"
    raw = bytearray(data.read_bytes())
    raw[-5] ^= 0x01
    data.write_bytes(bytes(raw))
    before = _files(shipped)
    store, calls = Store(tmp_path / "cache", shipped=shipped), []
    with caplog.at_level("WARNING"):
        assert store.load("k", key) is None
    assert any("shipped result" in r.getMessage() and "precompute" in r.getMessage() for r in caplog.records)
    recipe = _recipe(lambda: calls.append(1) or _entry())
    assert recipe.fetch(_model(), [], cache=store)[1] is False and calls == [1]  # computed instead
    assert store.path("k", key).is_dir()  # kept in the writable cache, found first from now on
    assert _files(shipped) == before  # never deleted nor repaired


def test_a_damaged_cache_entry_falls_back_to_the_shipped_one(tmp_path):
    shipped, key = _shipped(tmp_path)
    store = Store(tmp_path / "cache", shipped=shipped)
    store.save("k", key, Entry(meta={"note": "mine"}))
    (store.path("k", key) / "manifest.json").write_text("{garbled")
    assert store.load("k", key).meta == {"note": "hi"} and not store.path("k", key).exists()


def test_where_the_shipped_layer_is(tmp_path, monkeypatch):
    from neuro.paths import PRECOMPUTED_DIR

    monkeypatch.delenv("NEURO_PRECOMPUTED", raising=False)
    assert Store(tmp_path).shipped == PRECOMPUTED_DIR
    assert Store(PRECOMPUTED_DIR).shipped is None  # the shipped folder itself has no layer below it
    monkeypatch.setenv("NEURO_PRECOMPUTED", "none")
    assert Store(tmp_path).shipped is None and open_store(tmp_path).shipped is None
    monkeypatch.setenv("NEURO_PRECOMPUTED", str(tmp_path / "elsewhere"))
    assert Store(tmp_path).shipped == tmp_path / "elsewhere"
    assert Store(tmp_path).load("k", "absent") is None and Store(tmp_path).writable_only().shipped is None
