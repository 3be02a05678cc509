"""Resumable corpus passes: a long pass over a corpus keeps its finished chunks in the cache and resumes
from them after a kill, a timeout, Ctrl-C or a cancelled page computation.

The corpus is cut into chunks of `chunk_programs()` programs in corpus order (the boundaries depend only
on the corpus and the chunk size, never on what was computed before). Each finished chunk is an
ordinary store entry, written atomically like every entry, under `chunks/<kind>/<result key>/`, keyed by
the result's key, the chunk's index and bounds and a hash of the chunk's programs. A rerun loads the
finished chunks (damaged ones are recomputed, as any entry) and computes the rest; once the result
itself is saved its chunks are deleted.

Two shapes of pass:
- `chunked_rows` / `iter_chunks`: each chunk's result stands alone (e.g. pooled states, one row per
  program); `iter_chunks` hands them over one at a time in order (a caller writes each chunk's rows
  where they go, neuro.results.layered, and holds one chunk), `chunked_rows` lists them.
- `chunked_sum`: the chunks' entries are summed (`add`) once, in corpus order, as they come (computed or
  loaded): each chunk is kept as its own entry, never a running total, so a chunk costs one write of its
  own size (a running total rewritten after every chunk costs the whole total each time: quadratic where
  the total holds per-program rows, e.g. the statistics' per-unit arrays).

A cache that cannot be written (read-only, full) only costs the resumability: the pass still returns its
result and the store logs why nothing was kept.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from neuro.code.corpus import Snippet, corpus_hash
from neuro.progress import Progress
from neuro.results.store import Entry, Store, make_key

log = logging.getLogger(__name__)

CHUNKS_DIR = "chunks"

DEFAULT_CHUNK_PROGRAMS = 64

ChunkCompute = Callable[[int, int, "Progress | None"], Entry]  # (lo, hi, progress of this chunk) -> entry


def chunk_programs() -> int:
    """Programs per chunk: $NEURO_CHUNK_PROGRAMS, else 64."""
    try:
        return max(1, int(os.environ.get("NEURO_CHUNK_PROGRAMS", DEFAULT_CHUNK_PROGRAMS)))
    except ValueError:
        return DEFAULT_CHUNK_PROGRAMS


def chunk_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """[lo, hi) of each chunk of `n` items in order."""
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def chunk_kind(kind: str, key: str) -> str:
    """The store kind that holds the chunks of one result (a folder of its own, deleted as a whole)."""
    return f"{CHUNKS_DIR}/{kind}/{key}"


def chunk_folder(store: Store, kind: str, key: str) -> Path:
    return store.root / chunk_kind(kind, key)


def drop_chunks(store: Store, kind: str, key: str) -> None:
    """Delete the finished chunks of a result (once the result itself is saved)."""
    folder = chunk_folder(store, kind, key)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()  # the kind's chunk folder, when no other result has chunks in it
    except OSError:
        pass


def _chunk_key(key: str, index: int, lo: int, hi: int, snippets: Sequence[Snippet]) -> str:
    return make_key("chunk", result=key, index=index, lo=lo, hi=hi, prefix=False, content=corpus_hash(snippets[lo:hi]))


def _shifted(progress: Progress | None, offset: int, total: int) -> Progress | None:
    """A chunk's progress (done of its own programs) as progress over the whole corpus."""
    if progress is None:
        return None
    return lambda done, _total: progress(offset + done, total)


def iter_steps(store: Store, kind: str, key: str, step_keys: Sequence[str], compute: Callable[[int], Entry], *,
               loaded: Callable[[int], None] | None = None, save: bool = True) -> Iterator[Entry]:
    """The entry of every step in order, one at a time: loaded when an earlier (interrupted) run finished
    it, else computed by `compute(index)` and kept. `step_keys` name each step's inputs (the store key of
    its chunk); `loaded(index)` is told about each step that came from the cache."""
    ckind = chunk_kind(kind, key)
    for index, ckey in enumerate(step_keys):
        entry = store.load(ckind, ckey)
        if entry is None:
            entry = compute(index)
            if save:
                store.try_save(ckind, ckey, entry)
        elif loaded:
            loaded(index)
        yield entry


def resumable_steps(store: Store, kind: str, key: str, step_keys: Sequence[str],
                    compute: Callable[[int], Entry], *, loaded: Callable[[int], None] | None = None,
                    save: bool = True) -> list[Entry]:
    """`iter_steps` as a list."""
    return list(iter_steps(store, kind, key, step_keys, compute, loaded=loaded, save=save))


def iter_chunks(store: Store, kind: str, key: str, snippets: Sequence[Snippet], compute: ChunkCompute, *,
                size: int | None = None, progress: Progress | None = None,
                save: bool = True) -> Iterator[tuple[int, int, Entry]]:
    """(lo, hi, entry) of every chunk in order, one at a time: loaded when finished before, else computed
    and saved."""
    size = size or chunk_programs()
    n = len(snippets)
    bounds = chunk_bounds(n, size)
    keys = [_chunk_key(key, index, lo, hi, snippets) for index, (lo, hi) in enumerate(bounds)]
    resumed = []

    def from_cache(index: int) -> None:
        resumed.append(bounds[index][1] - bounds[index][0])
        if progress:
            progress(bounds[index][1], n)

    steps = iter_steps(store, kind, key, keys, lambda i: compute(*bounds[i], _shifted(progress, bounds[i][0], n)),
                       loaded=from_cache, save=save)
    for (lo, hi), entry in zip(bounds, steps):
        yield lo, hi, entry
    if resumed:
        log.info("%s: %d of %d programs came from finished chunks of an interrupted run", kind, sum(resumed), n)


def chunked_rows(store: Store, kind: str, key: str, snippets: Sequence[Snippet], compute: ChunkCompute, *,
                 size: int | None = None, progress: Progress | None = None, save: bool = True) -> list[Entry]:
    """The entries of every chunk in order: loaded when finished before, else computed and saved."""
    return [entry for _, _, entry in iter_chunks(store, kind, key, snippets, compute, size=size, progress=progress,
                                                 save=save)]


def chunked_sum(store: Store, kind: str, key: str, snippets: Sequence[Snippet], compute: ChunkCompute,
                add: Callable[[Entry, Entry], Entry], *, size: int | None = None, max_chunks: int | None = None,
                progress: Progress | None = None, save: bool = True) -> Entry:
    """The sum (`add`) of every chunk's entry, folded in corpus order (the same sum whichever chunks came
    from an interrupted run); each chunk is kept as its own entry until the result is saved, and only the
    total so far and one chunk are held.

    `max_chunks` caps the number of chunks (larger chunks on a large corpus) where each chunk has a cost
    that grows with the corpus (corpus statistics re-read the whole corpus's tokens and syntax)."""
    size = size or chunk_programs()
    if max_chunks:
        size = max(size, -(-len(snippets) // max_chunks))
    total: Entry | None = None
    for _, _, part in iter_chunks(store, kind, key, snippets, compute, size=size, progress=progress, save=save):
        total = part if total is None else add(total, part)
    assert total is not None, "a sum over no programs"  # nothing downstream could read a missing entry either
    return total
