"""The on-disk cache: hits, atomic entries, damaged entries recomputed."""

import numpy as np
import pandas as pd

from neuro.store import Entry, Store, make_key


def _entry():
    return Entry(arrays={"x": np.arange(12, dtype=np.float64).reshape(3, 4)},
                 tables={"t": pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})}, meta={"note": "hi"})


def test_second_call_hits(tmp_path):
    store, calls = Store(tmp_path), []
    key = make_key("k", model="m", params={"a": 1})

    def compute():
        calls.append(1)
        return _entry()
    first, hit1 = store.get_or_compute("k", key, compute)
    second, hit2 = store.get_or_compute("k", key, compute)
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    np.testing.assert_array_equal(second.arrays["x"], first.arrays["x"])
    pd.testing.assert_frame_equal(second.tables["t"], first.tables["t"])
    assert second.meta == {"note": "hi"}
    assert not list(tmp_path.glob("k/.tmp-*"))


def test_truncated_file_is_recomputed(tmp_path):
    store = Store(tmp_path)
    key = make_key("k", model="m")
    store.save("k", key, _entry())
    path = store.path("k", key) / "arrays.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    assert store.load("k", key) is None
    calls = []
    entry, hit = store.get_or_compute("k", key, lambda: calls.append(1) or _entry())
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
