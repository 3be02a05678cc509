"""Cached pooled program states (recipes `POOLED`, `LAYER_EMBEDDINGS`) and their 2-D projections
(`PROJECTION`).

POOLED's version is the version of every cached result derived from pooled states: 2 = the mean leaves
out BOS and special tokens."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neuro.analysis.embeddings import centred_rows, check_centering, project_2d
from neuro.code.corpus import Snippet
from neuro.instrument.states import pooled_states
from neuro.model.loading import LoadedModel
from neuro.progress import Progress
from neuro.results.layered import InMemory, Layered
from neuro.results.recipe import Call, Recipe, picked
from neuro.results.store import Entry


def _pooled_pass(call: Call, name: str, layer: int | None = None) -> Entry:
    """Pooled states as array `name`: every layer (snippets, layers, hidden), kept one file per layer
    (`Entry.layered`), or with `layer` that layer only (snippets, hidden), from a pass that stops after it.

    The pass is resumable (neuro.results.resume): each finished chunk of programs is kept in the cache until
    the whole result is saved, so a killed or cancelled pass resumes from its chunks. Each chunk's rows are
    written into the result's per-layer files as they come: the pass holds one chunk, never the corpus."""
    def rows(part: Sequence[Snippet], part_progress: Progress | None) -> np.ndarray:
        pooled = pooled_states(call.loaded, part, upto_layer=layer, max_length=call.args["max_length"],
                               progress=part_progress)
        return pooled if layer is None else pooled[:, layer]

    def chunk(lo: int, hi: int, chunk_progress: Progress | None) -> Entry:
        return Entry(arrays={name: rows(call.snippets[lo:hi], chunk_progress)})

    if not call.snippets:
        return Entry(arrays={name: rows(call.snippets, call.progress)})
    hidden = call.loaded.embeddings.weight.shape[1]
    if layer is not None:  # one layer's matrix, filled chunk by chunk
        out = np.zeros((len(call.snippets), hidden), np.float32)
        for lo, hi, part in call.chunks(chunk, progress=call.progress):
            out[lo:hi] = part.arrays[name]
        return Entry(arrays={name: out})
    writer = call.layer_writer(len(call.snippets), call.loaded.n_layers, hidden, name)
    for lo, _, part in call.chunks(chunk, progress=call.progress):
        writer.write(lo, part.arrays[name])
    return Entry(layered={name: writer.finish()})


def _read_pooled(entry: Entry, name: str = "pooled") -> Layered:
    """The all-layer states of an entry: kept one file per layer, or (entries written before, e.g. the shipped
    results) one array."""
    return entry.layered[name] if name in entry.layered else InMemory(entry.arrays[name])


POOLED: Recipe[Layered] = Recipe(
    kind="pooled_states", version=2, compute=lambda call: _pooled_pass(call, "pooled"),
    read=_read_pooled, key_parts=picked("max_length"), defaults=dict(max_length=512))
"""Mean-pooled block outputs of every snippet at every layer: (snippets, layers, hidden) as a `Layered`
array (neuro.results.layered: `pooled[:, layer]` reads one layer, memory-mapped from its own file). One
pass over the corpus shared by the Embeddings and Clones pages, clone evaluation and search."""


def _check_layer(loaded: LoadedModel, snippets: Sequence[Snippet], args: dict) -> tuple[Sequence[Snippet], dict]:
    if not 0 <= args["layer"] < loaded.n_layers:
        raise ValueError(f"layer must lie in 0..{loaded.n_layers - 1}")
    return snippets, args


def _sliced_from_pooled(call: Call) -> np.ndarray | None:
    """One layer of the all-layer states when those are cached (no second pass; read from that layer's
    file alone)."""
    full = POOLED.get(call.loaded, call.snippets, cache=call.store, compute=False, max_length=call.args["max_length"])
    return None if full is None else full[:, call.args["layer"]]


LAYER_EMBEDDINGS: Recipe[np.ndarray] = Recipe(
    kind="clone_embeddings", version=POOLED.version,
    compute=lambda call: _pooled_pass(call, "embeddings", call.args["layer"]),
    read=lambda entry: entry.arrays["embeddings"], key_parts=picked("layer", "max_length"),
    defaults=dict(max_length=512), prepare=_check_layer, reuse=_sliced_from_pooled)
"""(snippets, hidden) pooled states at one `layer` (the clone index's embeddings): sliced from POOLED's
entry when it exists, else from a pass that stops after `layer` (a middle layer costs only the blocks
below). Its version is POOLED's: it holds the same states."""


def _check_center(loaded: LoadedModel, snippets: Sequence[Snippet], args: dict) -> tuple[Sequence[Snippet], dict]:
    check_centering(args["center"])
    return snippets, args


def _project(call: Call) -> Entry:
    layer, center = call.args["layer"], call.args["center"]
    pooled = POOLED.get(call.loaded, call.snippets, cache=call.store, progress=call.progress)[:, layer]
    points = pooled if center == "none" else centred_rows(pooled, call.snippets, center)
    return Entry(arrays={"xy": project_2d(points, seed=call.args["seed"])})


PROJECTION: Recipe[np.ndarray] = Recipe(
    kind="projection", version=POOLED.version, compute=_project, read=lambda entry: entry.arrays["xy"],
    key_parts=picked("layer", "seed", "center"), defaults=dict(seed=0, center="none"), prepare=_check_center)
"""2-D UMAP of the pooled states at `layer` (centred as `center` says): (snippets, 2). Its version is
POOLED's: a change to the pooled states changes every projection."""
