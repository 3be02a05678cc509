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
from neuro.results.recipe import Call, Recipe, picked
from neuro.results.store import Entry


def _pooled_pass(call: Call, name: str, layer: int | None = None) -> Entry:
    """Pooled states as array `name`: every layer (snippets, layers, hidden), or with `layer` that layer
    only (snippets, hidden), from a pass that stops after it.

    The pass is resumable (neuro.results.resume): each finished chunk of programs is kept in the cache until
    the whole result is saved, so a killed or cancelled pass resumes from its chunks."""
    def rows(part: Sequence[Snippet], part_progress: Progress | None) -> np.ndarray:
        pooled = pooled_states(call.loaded, part, upto_layer=layer, max_length=call.args["max_length"],
                               progress=part_progress)
        return pooled if layer is None else pooled[:, layer]

    def chunk(lo: int, hi: int, chunk_progress: Progress | None) -> Entry:
        return Entry(arrays={name: rows(call.snippets[lo:hi], chunk_progress)})

    parts = call.chunked_rows(chunk, progress=call.progress) if call.snippets else []
    result = np.concatenate([p.arrays[name] for p in parts]) if parts else rows(call.snippets, call.progress)
    return Entry(arrays={name: result})


POOLED: Recipe[np.ndarray] = Recipe(
    kind="pooled_states", version=2, compute=lambda call: _pooled_pass(call, "pooled"),
    read=lambda entry: entry.arrays["pooled"], key_parts=picked("max_length"), defaults=dict(max_length=512))
"""Mean-pooled block outputs of every snippet at every layer: (snippets, layers, hidden). One pass over
the corpus shared by the Embeddings and Clones pages, clone evaluation and search."""


def _check_layer(loaded: LoadedModel, snippets: Sequence[Snippet], args: dict) -> tuple[Sequence[Snippet], dict]:
    if not 0 <= args["layer"] < loaded.n_layers:
        raise ValueError(f"layer must lie in 0..{loaded.n_layers - 1}")
    return snippets, args


def _sliced_from_pooled(call: Call) -> np.ndarray | None:
    """One layer of the all-layer states when those are cached (no second pass)."""
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
