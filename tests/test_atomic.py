"""neuro.atomic: a replaced file is always one whole write, and no temporary file outlives a write."""

import json
import os
import stat
import threading

import pytest

from neuro import atomic


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_text_bytes_and_json_round_trip(tmp_path):
    atomic.write_text(tmp_path / "a.txt", "héllo\nworld")
    atomic.write_bytes(tmp_path / "b.bin", bytes(range(256)))
    atomic.write_json(tmp_path / "c.json", {"x": [1, 2.5, None], "y": "ü"}, indent=1, sort_keys=True)
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\nworld"
    assert (tmp_path / "b.bin").read_bytes() == bytes(range(256))
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2.5, None], "y": "ü"}
    assert (tmp_path / "c.json").read_text() == json.dumps({"x": [1, 2.5, None], "y": "ü"}, indent=1, sort_keys=True)
    atomic.write_text(tmp_path / "a.txt", "second")  # replacing an existing file
    assert (tmp_path / "a.txt").read_text() == "second"
    assert _leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    atomic.write_json(path, {"old": True})
    with pytest.raises(RuntimeError), atomic.replacing(path) as tmp:
        tmp.write_text('{"new": tr')  # half written when the writer fails
        raise RuntimeError("killed mid-write")
    with pytest.raises(TypeError):
        atomic.write_json(path, {"new": object()})  # not serializable: nothing is written
    assert json.loads(path.read_text()) == {"old": True}
    assert _leftovers(tmp_path) == []
    with pytest.raises(FileNotFoundError):
        atomic.write_text(tmp_path / "missing" / "x.txt", "no folder")
    assert _leftovers(tmp_path) == []


def test_temporary_names_are_unique_hidden_and_beside_the_target(tmp_path):
    path = tmp_path / "x.json"
    with atomic.replacing(path) as first, atomic.replacing(path) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert first.name.startswith(".x.json.") and first.name.endswith(".tmp")
        assert first.exists() and second.exists()
        first.write_text("1")
        second.write_text("2")
    assert path.read_text() == "1"  # the outer block ends last and wins
    with atomic.replacing(path, suffix=".tmp.gch") as tmp:
        assert tmp.name.endswith(".tmp.gch")
    assert path.read_bytes() == b"" and _leftovers(tmp_path) == []


def test_permissions_follow_the_umask_or_mode(tmp_path):
    (tmp_path / "plain").write_text("x")  # what open(path, "w") would give
    atomic.write_text(tmp_path / "atomic", "x")
    assert stat.S_IMODE((tmp_path / "atomic").stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    atomic.write_text(tmp_path / "shared", "x", mode=0o644, fsync=True)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o644


def test_concurrent_writers_never_leave_a_torn_file(tmp_path):
    """Two threads rewrite one path with 1 MB payloads while a reader reads it: every read and the final
    file is exactly one of the payloads (a shared temporary name would interleave them)."""
    path = tmp_path / "shared.bin"
    payloads = {i: bytes([65 + i]) * (1 << 20) for i in range(2)}
    atomic.write_bytes(path, payloads[0])
    stop = threading.Event()
    seen, errors = set(), []

    def writer(i):
        try:
            for _ in range(40):
                atomic.write_bytes(path, payloads[i])
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    def reader():
        while not stop.is_set():
            data = path.read_bytes()
            seen.add(data[:1] if data in payloads.values() else b"torn")

    threads = [threading.Thread(target=writer, args=(i,)) for i in payloads]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert errors == []
    assert b"torn" not in seen and seen <= {b"A", b"B"}
    assert path.read_bytes() in payloads.values()
    assert _leftovers(tmp_path) == []
    assert os.listdir(tmp_path) == ["shared.bin"]
