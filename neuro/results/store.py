"""Content-addressed on-disk cache of results under `cache/`.

An entry is a folder named by the hash of its key (kind, model identity and weights fingerprint,
corpus hash, method parameters, schema version). It holds arrays (safetensors), tables (parquet), large
arrays one `.npy` file per layer (`Entry.layered`: read a layer at a time as a memory map, never whole;
neuro.results.layered) and a JSON manifest written last, with the size and CRC-32 of every file. An
entry is written in a temporary folder and renamed into place, so readers never see half an entry; an
entry whose files do not match its manifest (truncated, edited, half-copied) is treated as missing and recomputed.

Below the writable cache lies a read-only layer: results shipped with the repository in the same
`<kind>/<key>/` layout (neuro/assets/precomputed, written only by `python -m neuro precompute`). `load`
reads it when the cache misses; nothing is ever written into it or deleted from it, and a damaged
shipped entry is reported and treated as missing (computed and kept in the writable cache).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from neuro.paths import cache_dir, precomputed_dir
import neuro.results.layered as layer_files
from neuro.results.layered import Layered, LayerFiles, layer_file

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


@dataclass
class Entry:
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    layered: dict[str, Layered] = field(default_factory=dict)  # (rows, layers, cols), kept one file per layer


def make_key(kind: str, **parts) -> str:
    """Stable hash of a cache key; `parts` must be JSON-serialisable (sorted for stability)."""
    payload = json.dumps({"kind": kind, "schema": SCHEMA_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _checksum(path: Path) -> str:
    """CRC-32 of a file: catches truncated, half-copied or edited files at ~1 GB/s (not a security hash)."""
    crc = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


_LAYER_CRCS: dict[tuple, str] = {}  # (device, inode, size, mtime_ns) -> CRC-32 of a layer file seen in this process


def _stamp(path: Path) -> tuple:
    """What identifies a file's bytes unless it is edited: its inode (kept by a rename and a hard link),
    size and modification time."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _file_crc(path: Path, name: str) -> str:
    """CRC-32 of an entry's file; a layer file's is remembered while the file is unchanged, so a corpus-sized
    array is read through once per process, not at every load (its pages are then read a layer at a time)."""
    if not name.endswith(".npy"):
        return _checksum(path)
    stamp = _stamp(path)
    if stamp not in _LAYER_CRCS:
        _LAYER_CRCS[stamp] = _checksum(path)
    return _LAYER_CRCS[stamp]


class CacheWriteError(OSError):
    """The cache cannot be written (read-only folder, full disk, ...): the message says where and why."""


def _replaced(folder: Path, manifest_text: str | None) -> bool:
    """Whether the entry in `folder` now has another manifest than `manifest_text`, or none: a concurrent
    writer replaced or moved it while it was read."""
    try:
        return (folder / "manifest.json").read_text() != manifest_text
    except OSError:
        return True


STALE_SECONDS = 3600  # a temporary folder this old belongs to a writer that was killed


def _sweep_stale(parent: Path) -> None:
    """Remove the temporary folders a killed writer left in `parent` (never a live writer's: too young)."""
    now = time.time()
    for folder in parent.glob(".*-*"):
        try:
            if folder.name.startswith((".tmp-", ".old-")) and now - folder.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def _verify(folder: Path) -> dict | None:
    """The manifest of the entry in `folder` when every file matches it (size and CRC-32), else None."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        for name, info in manifest["files"].items():
            path = folder / name
            if path.stat().st_size != info["size"] or _file_crc(path, name) != info["crc32"]:
                return None
        return manifest
    except (OSError, ValueError, KeyError, TypeError):
        return None


_FAILED_WRITES: dict[Path, tuple[float, str]] = {}  # cache root -> (when, why) of its last failed write

FAILURE_MEMORY_S = 600.0


def cache_problem(root: str | os.PathLike | None = None, within_s: float = FAILURE_MEMORY_S,
                  probe: bool = True) -> str | None:
    """Why results are not being kept in the cache at `root`, for a page or the CLI to say: a write this
    process failed within `within_s` seconds (a full disk shows only then), or a folder that cannot be
    written now (with `probe`: one small file written and removed); None when the cache works."""
    root = Path(root) if root is not None else cache_dir()
    when, why = _FAILED_WRITES.get(root.resolve(), (0.0, ""))
    if why and time.time() - when < within_s:
        return why
    if not probe:
        return None
    test_file = root / f".probe-{uuid.uuid4().hex[:8]}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        test_file.write_bytes(b"")
        test_file.unlink()
    except OSError as err:
        return (f"the cache folder {root} cannot be written ({err.strerror or err}): results are computed but "
                "not kept, so each is computed again next time")
    return None


def _read(folder: Path) -> Entry:
    """The entry in `folder`; raises when it is missing, damaged or does not match its manifest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, info in manifest["files"].items():
        path = folder / name
        if path.stat().st_size != info["size"] or _file_crc(path, name) != info["crc32"]:
            raise ValueError(f"{name} does not match its manifest")
    entry = Entry(meta=manifest.get("meta", {}))
    if "arrays.safetensors" in manifest["files"]:
        entry.arrays = load_file(str(folder / "arrays.safetensors"))
    for name in manifest.get("tables", []):
        entry.tables[name] = pd.read_parquet(folder / f"{name}.parquet")
    for name, info in manifest.get("layered", {}).items():
        shape = tuple(info["shape"])
        entry.layered[name] = LayerFiles([folder / layer_file(name, i) for i in range(shape[1])], shape,
                                         info["dtype"])
    return entry


def _keep_layers(array: Layered, name: str, folder: Path) -> list[str]:
    """The layer files of `array` in `folder`: hard links to a staging folder's files (no copy; the same
    device), else written a layer at a time. Their names."""
    names = [layer_file(name, i) for i in range(array.n_layers)]
    for i, file in enumerate(names):
        source = array.paths[i] if isinstance(array, LayerFiles) else None
        if source is not None:
            try:
                os.link(source, folder / file)
                continue
            except OSError as err:
                if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
        layer_files.save_layer(folder / file, array.layer(i))
    return names


_REPORTED: set[tuple[Path, float]] = set()  # damaged shipped entries already reported (folder, mtime)

DEFAULT_SHIPPED = "default"


class Store:
    """The writable cache at `root` (default: cache/ or $NEURO_CACHE) over the read-only `shipped` layer
    (default: neuro/assets/precomputed or $NEURO_PRECOMPUTED; None: no shipped layer)."""

    def __init__(self, root: str | os.PathLike | None = None,
                 shipped: str | os.PathLike | None = DEFAULT_SHIPPED):
        self.root = Path(root) if root is not None else cache_dir()
        shipped = precomputed_dir() if shipped == DEFAULT_SHIPPED else shipped
        self.shipped = None if shipped is None or Path(shipped).resolve() == self.root.resolve() else Path(shipped)
        self.last_write_error: str | None = None

    def writable_only(self) -> Store:
        """This cache without the shipped layer (a result recomputed in full although one is shipped)."""
        return Store(self.root, shipped=None)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def staging(self, kind: str) -> Path | None:
        """A new empty folder beside the entries of `kind` for a pass to write a large array in before it is
        kept (neuro.results.layered.LayerWriter); None when the cache cannot be written. Named like a
        writer's temporary folder: one left by a killed pass is swept an hour after its last write."""
        folder = self.root / kind / f".tmp-stage-{uuid.uuid4().hex[:8]}"
        try:
            folder.mkdir(parents=True)
        except OSError as err:
            log.warning("cannot stage a large array under %s (%s): it is kept in RAM", self.root, err.strerror or err)
            return None
        return folder

    def exists(self, kind: str, key: str) -> bool:
        return self.load(kind, key) is not None

    def save(self, kind: str, key: str, entry: Entry) -> Path:
        """Write `entry` atomically (temporary folder, then rename). Raises CacheWriteError when the cache
        cannot be written (read-only folder, full disk); nothing half-written is left behind.

        Two processes saving the same key at once both succeed and leave one readable entry: the entry is
        content-addressed, so the first readable copy stays and the other writer's is dropped. Temporary
        folders left by a killed writer are removed by a later save once they are an hour old."""
        final = self.path(kind, key)
        tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            _sweep_stale(final.parent)
            tmp.mkdir()
            files: dict[str, None] = {}  # the entry's file names, in order
            if entry.arrays:
                arrays = {k: np.ascontiguousarray(v) for k, v in entry.arrays.items()}
                save_file(arrays, str(tmp / "arrays.safetensors"))
                files["arrays.safetensors"] = None
            for name, table in entry.tables.items():
                table.to_parquet(tmp / f"{name}.parquet", index=False)
                files[f"{name}.parquet"] = None
            layers = {}
            for name, array in entry.layered.items():
                files.update(dict.fromkeys(_keep_layers(array, name, tmp)))
                layers[name] = {"shape": list(array.shape), "dtype": np.dtype(array.dtype).str}
            manifest = {
                "kind": kind, "key": key, "schema": SCHEMA_VERSION, "created": time.time(),
                "meta": entry.meta, "tables": sorted(entry.tables),
                "files": {name: {"size": (tmp / name).stat().st_size, "crc32": _file_crc(tmp / name, name)}
                          for name in files},
            }
            if layers:
                manifest["layered"] = layers
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
            self._place(tmp, final)
            for name, array in entry.layered.items():
                if isinstance(array, LayerFiles) and array.owned:  # staged: read from the kept entry from now on
                    array.kept_in([final / layer_file(name, i) for i in range(array.n_layers)])
        except (OSError, SafetensorError) as err:
            if isinstance(err, SafetensorError) and "I/O error" not in str(err):
                raise
            reason = getattr(err, "strerror", None) or str(err).split("I/O error: ")[-1]
            raise CacheWriteError(f"cannot write the cache entry {kind}/{key} under {self.root}: {reason}") from err
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    @staticmethod
    def _place(tmp: Path, final: Path) -> None:
        """Rename `tmp` to `final`. Where a readable entry is already there (an earlier or concurrent
        writer of the same content-addressed key), it stays and `tmp` is dropped, so readers never see a
        gap; a damaged one is first moved aside (one rename: a reader sees it, nothing, or the new one)."""
        for attempt in range(3):
            try:
                os.replace(tmp, final)
                return
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == 2:
                    raise
            if _verify(final) is not None:
                return
            old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(final, old)
            except FileNotFoundError:
                continue  # another writer moved it first
            shutil.rmtree(old, ignore_errors=True)

    def try_save(self, kind: str, key: str, entry: Entry) -> Path | None:
        """`save`, but a cache that cannot be written only logs a warning (the caller keeps its computed
        result); the message is also kept in `last_write_error` for a page to show."""
        try:
            return self.save(kind, key, entry)
        except CacheWriteError as err:
            self.last_write_error = f"{err}; the result is computed but not kept"
            _FAILED_WRITES[self.root.resolve()] = (time.time(), self.last_write_error)
            log.warning("%s", self.last_write_error)
            return None

    def load(self, kind: str, key: str) -> Entry | None:
        """The entry, or None when it is missing or damaged (a damaged entry is deleted). When the writable
        cache misses, the shipped layer's entry (never deleted: a damaged one is reported and missed)."""
        folder = self.path(kind, key)
        for attempt in range(3):
            if not folder.is_dir():
                return self.load_shipped(kind, key)
            text = None
            try:
                text = (folder / "manifest.json").read_text()
                return _read(folder)
            except Exception as err:  # corrupt, truncated or half-copied: recompute, never crash a page
                if attempt < 2 and _replaced(folder, text):
                    continue  # a concurrent writer replaced the entry while it was read: read it again
                log.warning("cache entry %s/%s is damaged (%s); it will be recomputed", kind, key, err)
                shutil.rmtree(folder, ignore_errors=True)
                return self.load_shipped(kind, key)
        return None

    def load_shipped(self, kind: str, key: str) -> Entry | None:
        """The shipped layer's entry, or None when there is none or it is damaged (reported, kept as is)."""
        if self.shipped is None:
            return None
        folder = self.shipped / kind / key
        if not folder.is_dir():
            return None
        try:
            return _read(folder)
        except Exception as err:
            try:
                stamp = (folder / "manifest.json").stat().st_mtime
            except OSError:
                stamp = 0.0
            if (folder, stamp) not in _REPORTED:
                _REPORTED.add((folder, stamp))
                log.warning("the shipped result %s is damaged (%s): it is computed instead; rebuild the shipped "
                            "results with `python -m neuro precompute`", folder, err)
            return None

    def entries(self, kind: str) -> list[dict]:
        """Manifests of the readable entries of one kind in the writable cache (for listing results in the
        UI and CLI; the shipped layer is not listed)."""
        out = []
        for manifest in sorted((self.root / kind).glob("*/manifest.json")):
            try:
                out.append(json.loads(manifest.read_text()))
            except (OSError, ValueError):
                continue
        return out
