"""One `Recipe` per kind of cached result, and the one code path that loads or computes it.

A recipe says how a result is keyed (its kind and version, the model's identity, the corpus's hash, its
own key parts and the versions of the recipes it is computed from), how it is computed (an `Entry` of
arrays, tables and meta) and how an entry is read back as the typed result. `Recipe.get` loads the result
or computes it; a computed result is kept with `try_save` (a cache that cannot be written costs only the
keeping), the finished chunks of its resumable passes (neuro.results.resume) are then dropped, and the
model's card is remembered so that a copied cache can be browsed without the weights (neuro.model.cards).

Every recipe is listed in neuro.results.registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast, overload

import numpy as np

from neuro.code.corpus import Snippet, corpus_hash
from neuro.model.cards import remember_model
from neuro.model.loading import LoadedModel
from neuro.progress import Progress
from neuro.results.layered import LayerWriter
from neuro.results.resume import ChunkCompute, chunked_rows, chunked_sum, drop_chunks, iter_chunks, resumable_steps
from neuro.results.store import Entry, Store, make_key

if TYPE_CHECKING:
    from neuro.model.reference import ModelRef

R = TypeVar("R")

Cache = Store | str | os.PathLike | None  # an open store, the folder of one, or None: the default cache


def open_store(cache: Cache = None, **options) -> Store:
    """The store of a cache folder (None: cache/ or $NEURO_CACHE) with `options` (`shipped=None`: without the
    shipped layer); an open store is returned as is, so one computation's nested results share its
    `last_write_error`."""
    return cache if isinstance(cache, Store) else Store(cache, **options)


def picked(*names: str) -> Callable[[dict], dict]:
    """Key parts that are the named arguments as they are."""
    return lambda args: {name: args[name] for name in names}


@dataclass(frozen=True)
class Call:
    """One request for a result: what a recipe's `compute` and `reuse` receive. Its resumable passes keep
    their chunks under the result's own kind and key, so they are dropped once the result is kept."""

    recipe: Recipe
    loaded: LoadedModel
    snippets: list[Snippet]
    args: dict[str, Any]
    store: Store
    key: str
    progress: Progress | None
    save: bool

    def chunked_rows(self, compute: ChunkCompute, *, progress: Progress | None) -> list[Entry]:
        """neuro.results.resume.chunked_rows for this result."""
        return chunked_rows(self.store, self.recipe.kind, self.key, self.snippets, compute, progress=progress,
                            save=self.save)

    def chunks(self, compute: ChunkCompute, *, progress: Progress | None) -> Iterator[tuple[int, int, Entry]]:
        """neuro.results.resume.iter_chunks for this result: (lo, hi, entry) of each chunk, one at a time."""
        return iter_chunks(self.store, self.recipe.kind, self.key, self.snippets, compute, progress=progress,
                           save=self.save)

    def layer_writer(self, rows: int, layers: int, cols: int, name: str, dtype=np.float32) -> LayerWriter:
        """A writer of a (rows, layers, cols) array staged one file per layer beside this result's entries
        (in RAM where the cache cannot be written)."""
        return LayerWriter(rows, layers, cols, dtype=dtype, name=name, folder=self.store.staging(self.recipe.kind))

    def chunked_sum(self, compute: ChunkCompute, add: Callable[[Entry, Entry], Entry], *,
                    max_chunks: int | None = None) -> Entry:
        """neuro.results.resume.chunked_sum for this result."""
        return chunked_sum(self.store, self.recipe.kind, self.key, self.snippets, compute, add,
                           max_chunks=max_chunks, progress=self.progress, save=self.save)

    def steps(self, step_keys: Sequence[str], compute: Callable[[int], Entry], *,
              loaded: Callable[[int], None] | None = None) -> list[Entry]:
        """neuro.results.resume.resumable_steps for this result."""
        return resumable_steps(self.store, self.recipe.kind, self.key, step_keys, compute, loaded=loaded,
                               save=self.save)


@dataclass(frozen=True, eq=False)
class Recipe(Generic[R]):
    """How one kind of cached result is keyed, computed and read back.

    kind: the cache folder (and part of every key: renaming it orphans the entries).
    version: bump it whenever the result's content or meaning changes; the old entries are then missed.
    compute: the result as an Entry, from a `Call` (its `args` are `defaults` updated with the caller's).
    read: the typed result from an entry (a loaded one or the one just computed).
    key_parts: the key parts from the args, beyond model, corpus and versions (args that only say how to
        compute, e.g. a capture function, are left out).
    defaults: the args a caller may leave out.
    prepare: (loaded, snippets, args) -> (snippets, args): checks and normalises a request before the
        cache is read (e.g. a split means its selection side), so a bad request fails before any work.
    reuse: the result taken from another cached result when that has it (e.g. one layer sliced from the
        all-layer states), or None; tried before this recipe's own entry, and counted as a hit.
    inputs: recipes this one is computed from, under the key part names that hold their versions, so
        bumping one of them misses this one's entries too.
    """

    kind: str
    version: int
    compute: Callable[[Call], Entry]
    read: Callable[[Entry], R]
    key_parts: Callable[[dict], dict] = field(default=lambda args: {})
    defaults: Mapping[str, Any] = field(default_factory=dict)
    prepare: Callable[[LoadedModel, Sequence[Snippet], dict], tuple[Sequence[Snippet], dict]] | None = None
    reuse: Callable[[Call], R | None] | None = None
    inputs: Mapping[str, Recipe] = field(default_factory=dict)

    @overload
    def get(self, loaded: LoadedModel, snippets: Sequence[Snippet], *, cache: Cache = None,
            compute: Literal[True] = True, save: bool = True, progress: Progress | None = None, **args) -> R: ...

    @overload
    def get(self, loaded: LoadedModel | ModelRef, snippets: Sequence[Snippet], *, cache: Cache = None,
            compute: Literal[False], save: bool = True, progress: Progress | None = None, **args) -> R | None: ...

    @overload
    def get(self, loaded: LoadedModel, snippets: Sequence[Snippet], *, cache: Cache = None, compute: bool,
            save: bool = True, progress: Progress | None = None, **args) -> R | None: ...

    def get(self, loaded: LoadedModel | ModelRef, snippets: Sequence[Snippet], *, cache: Cache = None,
            compute: bool = True, save: bool = True, progress: Progress | None = None, **args) -> R | None:
        """The result: from the cache, else computed and kept (`save=False`: not kept, e.g. on the other
        ranks of a data-parallel run). With `compute=False`, None when it is not cached (never runs the
        model; `loaded` may then be a ModelRef)."""
        found = self._resolve(loaded, snippets, cache, compute, save, progress, args)
        return None if found is None else found[0]

    def fetch(self, loaded: LoadedModel, snippets: Sequence[Snippet], *, cache: Cache = None, save: bool = True,
              progress: Progress | None = None, **args) -> tuple[R, bool]:
        """(result, cache_hit): `get` for a caller that reports whether the result was computed."""
        found = self._resolve(loaded, snippets, cache, True, save, progress, args)
        assert found is not None  # computed when not cached
        return found

    def key(self, loaded: LoadedModel | ModelRef, snippets: Sequence[Snippet], **args) -> str:
        """The cache key of the result these arguments ask for."""
        return self._call(loaded, snippets, None, None, True, args).key

    def _call(self, loaded: LoadedModel | ModelRef, snippets: Sequence[Snippet], cache: Cache,
              progress: Progress | None, save: bool, args: dict) -> Call:
        # a ModelRef stands in for the model only where nothing is computed: `prepare`, the key and `reuse`
        # read its identity and sizes, which a ModelRef has (the checker cannot see that compute=False)
        model = cast(LoadedModel, loaded)
        args = {**self.defaults, **args}
        if self.prepare is not None:
            snippets, args = self.prepare(model, snippets, args)
        snippets = list(snippets)
        key = make_key(self.kind, model=loaded.identity, corpus=corpus_hash(snippets), version=self.version,
                       **self.key_parts(args), **{name: r.version for name, r in self.inputs.items()})
        return Call(self, model, snippets, args, open_store(cache), key, progress, save)

    def _resolve(self, loaded: LoadedModel | ModelRef, snippets: Sequence[Snippet], cache: Cache, compute: bool,
                 save: bool, progress: Progress | None, args: dict) -> tuple[R, bool] | None:
        call = self._call(loaded, snippets, cache, progress, save, args)
        if self.reuse is not None and (found := self.reuse(call)) is not None:
            return found, True
        entry = call.store.load(self.kind, call.key)
        if entry is not None:
            return self.read(entry), True
        if not compute:
            return None
        entry = self.compute(call)
        if save and call.store.try_save(self.kind, call.key, entry) is not None:
            drop_chunks(call.store, self.kind, call.key)
            remember_model(call.loaded, call.store.root)
        return self.read(entry), False
