"""Corpus-sized arrays kept as one matrix per layer: (rows, layers, cols) read and written a layer at a time.

At the paper's scale the pooled states of a corpus (programs x layers x hidden, fp32) take 26 GB
(Llama-3.1-8B) to 66 GB (Qwen2.5-Coder-32B): they cannot live whole in RAM. A `Layered` array is read
through `layer(i)` (one (rows, cols) matrix: a read-only memory map of that layer's file, or a view of an
array in RAM), so an analysis that walks the layers holds one layer at a time. For callers written for a
3-D array it also answers `a[:, i]`, `a[rows, i]`, `len(a)`, `a.shape`, `a.mean(1)` (summed layer by
layer) and `np.asarray(a)` (the whole array: for small corpora and tests only).

A `LayerWriter` builds one from blocks of rows (a chunk of programs at every layer) as a pass produces
them: it writes each block's layers straight into per-layer `.npy` files in a staging folder of the cache
(`Store.staging`), so the pass never holds more than its chunk. Where the cache cannot be written (read-only,
full disk) it carries on in RAM, as passes did before. The store then keeps the files as an entry's
(hard links, no copy; neuro.results.store).
"""

from __future__ import annotations

import logging
import os
import shutil
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def layer_file(name: str, layer: int) -> str:
    """The file name of one layer of the array `name` inside an entry."""
    return f"{name}.layer{layer:04d}.npy"


class Layered:
    """A (rows, layers, cols) array held as one (rows, cols) matrix per layer (subclasses say where)."""

    shape: tuple[int, int, int]
    dtype: np.dtype

    def layer(self, index: int) -> np.ndarray:
        """The (rows, cols) matrix of one layer."""
        raise NotImplementedError

    @property
    def n_layers(self) -> int:
        return self.shape[1]

    @property
    def ndim(self) -> int:
        return 3

    def __len__(self) -> int:
        return self.shape[0]

    def layers(self):
        """Each layer's matrix in turn."""
        return (self.layer(i) for i in range(self.n_layers))

    def __getitem__(self, key):
        """`a[:, l]` and `a[rows, l]` read one layer; `a[rows]` reads those rows at every layer."""
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], (int, np.integer)):
            rows, layer = key
            layer = int(layer) + (self.n_layers if layer < 0 else 0)
            if not 0 <= layer < self.n_layers:
                raise IndexError(f"layer {key[1]} out of range for {self.n_layers} layers")
            matrix = self.layer(layer)
            return matrix if isinstance(rows, slice) and rows == slice(None) else matrix[rows]
        if isinstance(key, tuple):
            raise TypeError("a layered array is indexed as a[rows, layer] or a[rows]")
        return np.stack([m[key] for m in self.layers()], axis=-2)

    def mean(self, axis: int) -> np.ndarray:
        """The mean over layers (`axis=1`), summed a layer at a time in layer order (as numpy sums that axis)."""
        if axis != 1:
            raise ValueError("a layered array is averaged over its layers (axis=1) only")
        wide = np.float32 if self.dtype == np.float16 else None  # numpy averages float16 in float32 too
        total: np.ndarray | None = None
        for m in self.layers():
            total = np.array(m, dtype=wide) if total is None else np.add(total, m, out=total)
        assert total is not None, "a layered array has at least one layer"
        mean = total / np.asarray(self.n_layers, dtype=total.dtype)
        return mean.astype(self.dtype) if wide else mean

    def __array__(self, dtype=None, copy=None):
        out = np.stack(list(self.layers()), axis=1) if self.n_layers else np.zeros(self.shape, self.dtype)
        return out if dtype is None else out.astype(dtype, copy=False)

    def discard(self) -> None:
        """Free what this array holds beyond its owner's (a staging folder's files)."""


class InMemory(Layered):
    """Layers in RAM: a (rows, layers, cols) array, or one (rows, cols) matrix per layer."""

    def __init__(self, data: np.ndarray | Sequence[np.ndarray]):
        self._full: np.ndarray | None
        self._layers: list[np.ndarray] | None
        if isinstance(data, np.ndarray):
            if data.ndim != 3:
                raise ValueError(f"a layered array is 3-D (rows, layers, cols), not {data.shape}")
            self._full, self._layers = data, None
            self.shape, self.dtype = (data.shape[0], data.shape[1], data.shape[2]), data.dtype
        else:
            self._full, self._layers = None, list(data)
            first = self._layers[0]
            self.shape, self.dtype = (first.shape[0], len(self._layers), first.shape[1]), first.dtype

    def layer(self, index: int) -> np.ndarray:
        if self._full is not None:
            return self._full[:, index]
        assert self._layers is not None  # one of the two is always set
        return self._layers[index]

    def mean(self, axis: int) -> np.ndarray:
        return self._full.mean(axis) if self._full is not None else super().mean(axis)

    def __array__(self, dtype=None, copy=None):
        if self._full is not None:
            return self._full if dtype is None else self._full.astype(dtype, copy=False)
        return super().__array__(dtype, copy)


class LayerFiles(Layered):
    """Layers in `.npy` files, one per layer, each read as a read-only memory map when it is asked for.

    `owned`: a staging folder whose files belong to this array alone (a pass's output not yet kept, or
    scratch states): it is deleted with the array (or by `discard`); an entry's files are never deleted."""

    def __init__(self, paths: Sequence[Path], shape: tuple[int, int, int], dtype, owned: Path | None = None):
        self.paths = [Path(p) for p in paths]
        rows, layers, cols = (int(x) for x in shape)
        self.shape, self.dtype = (rows, layers, cols), np.dtype(dtype)
        self.owned = owned
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(owned), True) if owned else None

    def layer(self, index: int) -> np.ndarray:
        return np.load(self.paths[index], mmap_mode="r")

    def kept_in(self, paths: Sequence[Path]) -> None:
        """Read from `paths` (the same bytes, kept in an entry) from now on; the staging folder goes."""
        self.paths = [Path(p) for p in paths]
        self.discard()
        self.owned = None

    def discard(self) -> None:
        if self._finalizer is not None:
            self._finalizer()


def save_layer(path: Path, matrix: np.ndarray) -> None:
    """One layer's matrix as an .npy file (the one place a layer file is written whole)."""
    np.save(path, np.ascontiguousarray(matrix), allow_pickle=False)


def create_npy(path: Path, rows: int, cols: int, dtype: np.dtype) -> int:
    """An .npy file of (rows, cols) holding zeros (sparse where the file system allows); its data offset."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": (rows, cols)})
        offset = fh.tell()
        fh.truncate(offset + rows * cols * dtype.itemsize)
    return offset


class LayerWriter:
    """Builds a `Layered` (rows, layers, cols) from blocks of rows at every layer, written as they come.

    `folder`: an empty staging folder (Store.staging) that the files are written in and that the result
    owns; None, or a write that fails (a full disk), keeps the layers in RAM instead (what was written is
    read back, the folder deleted)."""

    def __init__(self, rows: int, layers: int, cols: int, *, dtype=np.float32, folder: Path | None = None,
                 name: str = "array"):
        self.shape, self.dtype, self.name = (rows, layers, cols), np.dtype(dtype), name
        self.folder: Path | None = Path(folder) if folder is not None and rows * cols * layers else None
        self._memory: list[np.ndarray] | None = None
        self._offsets: list[int] = []  # each layer file's data offset, once the files are created
        if self.folder is None:
            self._memory = [np.zeros((rows, cols), self.dtype) for _ in range(layers)]
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        # a pass that stops (cancelled, failed) leaves no staged files once its writer is dropped
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.folder), True) if self.folder else None
        self._written = 0  # rows written so far, in order

    def _path(self, layer: int) -> Path:
        assert self.folder is not None  # only called while the layers are staged in files
        return self.folder / layer_file(self.name, layer)

    def _to_memory(self, err: OSError, folder: Path, written: int) -> None:
        """Carry on in RAM: the rows written so far are read back and the staging folder is deleted."""
        log.warning("cannot stage %s in %s (%s): it is kept in RAM instead", self.name, folder,
                    err.strerror or err)
        rows, layers, cols = self.shape
        memory = [np.zeros((rows, cols), self.dtype) for _ in range(layers)]
        if written and self.folder is not None:
            for i in range(layers):
                memory[i][:written] = np.load(self._path(i), mmap_mode="r")[:written]
        self._memory, self.folder = memory, None
        shutil.rmtree(folder, ignore_errors=True)
        if self._cleanup is not None:
            self._cleanup.detach()

    def write(self, lo: int, block: np.ndarray) -> None:
        """Rows lo..lo+len(block) at every layer: `block` is (rows, layers, cols) in this array's layer order."""
        block = np.asarray(block)
        rows, layers, cols = self.shape
        if block.ndim != 3 or block.shape[1:] != (layers, cols) or not 0 <= lo <= lo + len(block) <= rows:
            raise ValueError(f"a block of {block.shape} at row {lo} does not fit {self.shape}")
        if self.folder is not None:
            try:
                if not self._offsets:  # created at the first block: a pass cancelled before it leaves nothing
                    self._offsets = [create_npy(self._path(i), rows, cols, self.dtype) for i in range(layers)]
                for i in range(layers):
                    data = np.ascontiguousarray(block[:, i], dtype=self.dtype).tobytes()
                    fd = os.open(self._path(i), os.O_WRONLY)
                    try:
                        start = self._offsets[i] + lo * cols * self.dtype.itemsize
                        while data:
                            done = os.pwrite(fd, data, start)
                            data, start = data[done:], start + done
                    finally:
                        os.close(fd)
                os.utime(self.folder)  # a live staging folder is never swept as a killed writer's
            except OSError as err:
                self._to_memory(err, self.folder, written=self._written)
        if self.folder is None:
            assert self._memory is not None  # set whenever the folder is not
            for i in range(layers):
                self._memory[i][lo:lo + len(block)] = block[:, i]
        self._written = max(self._written, lo + len(block))

    def finish(self) -> Layered:
        """The array written: its files (owned: deleted with it unless the store keeps them) or its layers in RAM."""
        if self.folder is not None and not self._offsets:  # nothing was written: zeros
            self.write(0, np.zeros((0, *self.shape[1:]), self.dtype))
        if self.folder is not None:
            assert self._cleanup is not None  # set with the folder
            self._cleanup.detach()  # the array owns the folder now
            return LayerFiles([self._path(i) for i in range(self.shape[1])], self.shape, self.dtype, owned=self.folder)
        if not self.shape[1]:
            return InMemory(np.zeros(self.shape, self.dtype))
        assert self._memory is not None  # set whenever the folder is not
        return InMemory(self._memory)
