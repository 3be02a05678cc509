"""TODO docstring (neuro.results.clones)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from neuro.analysis.clones.baselines import tfidf_vectors
from neuro.analysis.clones.index import CloneIndex, VectorIndex, resolve_split
from neuro.analysis.clones.metrics import CloneEvaluation, retrieval_table
from neuro.analysis.embeddings import DEFAULT_CENTERING, Centering, check_centering
from neuro.code.comments import without_comments
from neuro.code.corpus import Snippet, corpus_hash
from neuro.code.split import CorpusSplit, SplitParams
from neuro.model.cards import remember_model
from neuro.model.loading import LoadedModel
from neuro.progress import Progress
from neuro.results.embeddings import POOLED_KIND, POOLED_VERSION, cached_pooled, pooled_key, resumable_pooled
from neuro.results.store import Entry, Store, make_key

EMBED_KIND = "clone_embeddings"

EVAL_KIND = "clone_eval"

EVAL_VERSION = 3  # 3: measured on the evaluation side of the split, chosen on the selection side

def _cached_concept_layers(loaded: LoadedModel, selection: Sequence[Snippet], store: Store) -> list[int]:
    """The concept layers if a layer report on the selection side is already cached (an explicit layer
    should not cost one)."""
    from neuro.results.layers import cached_layer_report

    report = (cached_layer_report(loaded, selection, store=store, compute=False)
              or cached_layer_report(loaded, selection, store=store, contribution=False, compute=False))
    return report.concept_layers if report else []

@dataclass(frozen=True)
class SplitEmbeddings:
    """A corpus's all-layer pooled states (one cached pass over the whole corpus, shared with search and
    the Embeddings view) and its split: centring is fitted on the selection rows, scores use the
    evaluation rows only."""

    split: CorpusSplit
    pooled: np.ndarray            # (programs, layers, hidden), corpus order
    selection_rows: np.ndarray
    evaluation_rows: np.ndarray
    selection: list[Snippet]      # as embedded (without comments where asked)
    evaluation: list[Snippet]

    def centering(self, x: np.ndarray, center: str = DEFAULT_CENTERING) -> Centering:
        """The means subtracted before cosine, fitted on the selection rows of `x` (programs, hidden)."""
        return Centering.fit(x[self.selection_rows], [s.lang for s in self.selection], center)

    def evaluated(self, x: np.ndarray, center: str = DEFAULT_CENTERING) -> np.ndarray:
        """Unit rows of the evaluation programs of `x`, centred with the selection side's means."""
        return self.centering(x, center).apply(x[self.evaluation_rows], [s.lang for s in self.evaluation])

def split_embeddings(loaded: LoadedModel, snippets: Sequence[Snippet], *,
                     split: CorpusSplit | SplitParams | None = None, strip: bool = False, max_length: int = 512,
                     store: Store | None = None, progress: Progress | None = None) -> SplitEmbeddings:
    """Pooled states of the corpus (without comments when `strip`) and which rows are on which side."""
    split = resolve_split(snippets, split)
    evaluated = set(split.evaluation)
    on_eval = np.array([s in evaluated for s in snippets])
    corpus = without_comments(snippets) if strip else list(snippets)
    pooled = all_layer_embeddings(loaded, corpus, max_length=max_length, store=store, progress=progress)
    sel_rows, eval_rows = np.flatnonzero(~on_eval), np.flatnonzero(on_eval)
    return SplitEmbeddings(split, pooled, sel_rows, eval_rows, [corpus[i] for i in sel_rows],
                           [corpus[i] for i in eval_rows])

def evaluate_clones(loaded: LoadedModel, snippets: Sequence[Snippet], layer: int | None = None, *,
                    split: CorpusSplit | SplitParams | None = None, center: str = DEFAULT_CENTERING,
                    strip: bool = False, max_length: int = 512, store: Store | None = None,
                    progress: Progress | None = None) -> CloneEvaluation:
    """MAP@R and Recall@1 at `layer` (default: the concept layer), first layer, last layer, mean of
    layers and token TF-IDF, plus every layer (the sweep): all from one cached full pass.

    Chosen on the selection side of `split` (default: `SplitParams()`): the concept layer (layer report),
    the centring means at each layer and TF-IDF's vocabulary and idf. Measured on the evaluation side:
    every query and every candidate is an evaluation program.

    `strip` evaluates the programs without comments and docstrings (`strip_comments`); the concept
    layer is still the one found on the selection side as given.
    """
    from neuro.results.layers import concept_layers

    if len({s.task for s in snippets}) == len(snippets):
        raise ValueError("no two programs share a task: clone retrieval needs a parallel corpus")
    check_centering(center)
    store = store or Store()
    split = resolve_split(snippets, split)
    if len({s.task for s in split.evaluation}) == len(split.evaluation):
        raise ValueError(f"no two evaluation programs share a task ({split.caption()}): clone retrieval needs "
                         "parallel programs on the evaluation side; evaluate a larger share or a larger corpus")
    if layer is None:
        concept = concept_layers(loaded, split.selection, store)
    else:
        concept = _cached_concept_layers(loaded, split.selection, store)
    chosen = concept[len(concept) // 2] if layer is None else int(layer)
    if not 0 <= chosen < loaded.n_layers:
        raise ValueError(f"layer must lie in 0..{loaded.n_layers - 1}")
    sides = split_embeddings(loaded, snippets, split=split, strip=strip, max_length=max_length, store=store,
                             progress=progress)
    pooled, evaluation = sides.pooled, sides.evaluation
    last = loaded.n_layers - 1

    def embedded(x: np.ndarray) -> np.ndarray:
        return sides.evaluated(x, center)

    methods = [("concept layer" if layer is None or chosen in concept else "chosen layer", chosen,
                lambda: embedded(pooled[:, chosen])),
               ("first layer", 0, lambda: embedded(pooled[:, 0])),
               ("last layer", last, lambda: embedded(pooled[:, last])),
               ("mean of layers", -1, lambda: embedded(pooled.mean(1))),
               ("token TF-IDF", -1, lambda: tfidf_vectors(evaluation, fit_on=sides.selection))]
    frames = []
    for name, at, vectors in methods:
        frame = retrieval_table(vectors(), evaluation)
        frame.insert(0, "layer", at)
        frame.insert(0, "method", name)
        frames.append(frame)
    sweep = []
    for at in range(loaded.n_layers):
        table = retrieval_table(embedded(pooled[:, at]), evaluation)
        for row in table[table.query_lang.eq("all")].itertuples():
            sweep.append({"layer": at, "setting": row.setting, "map_at_r": row.map_at_r,
                          "recall_at_1": row.recall_at_1})
    meta = {"model": loaded.identity, "programs": len(snippets), "evaluated_programs": len(evaluation),
            "evaluated_tasks": len({s.task for s in evaluation}),
            "languages": list(dict.fromkeys(s.lang for s in evaluation)), "n_layers": loaded.n_layers,
            "center": center, "comments_stripped": strip, "max_length": max_length, "split": split.summary()}
    return CloneEvaluation(pd.concat(frames, ignore_index=True), pd.DataFrame(sweep), chosen, concept, meta)

def cached_evaluation(loaded: LoadedModel, snippets: Sequence[Snippet], layer: int | None = None, *,
                      split: CorpusSplit | SplitParams | None = None, center: str = DEFAULT_CENTERING,
                      strip: bool = False, max_length: int = 512, store: Store | None = None,
                      progress: Progress | None = None, compute: bool = True) -> CloneEvaluation | None:
    """`evaluate_clones` through the cache (None when not cached and `compute` is False)."""
    check_centering(center)
    store = store or Store()
    split = resolve_split(snippets, split)
    key = make_key(EVAL_KIND, model=loaded.identity, corpus=corpus_hash(snippets), layer=layer, center=center,
                   strip=strip, max_length=max_length, split=asdict(split.params), version=EVAL_VERSION,
                   pooled=POOLED_VERSION)
    entry = store.load(EVAL_KIND, key)
    if entry is None:
        if not compute:
            return None
        result = evaluate_clones(loaded, snippets, layer, split=split, center=center, strip=strip,
                                 max_length=max_length, store=store, progress=progress)
        entry = Entry(tables={"scores": result.scores, "sweep": result.sweep},
                      meta={"layer": result.layer, "concept_layers": result.concept_layers, "meta": result.meta})
        store.try_save(EVAL_KIND, key, entry)
        remember_model(loaded, store.root)
    return CloneEvaluation(entry.tables["scores"], entry.tables["sweep"], int(entry.meta["layer"]),
                           [int(x) for x in entry.meta["concept_layers"]], dict(entry.meta["meta"]))


def all_layer_embeddings(loaded: LoadedModel, snippets: Sequence[Snippet], *, max_length: int = 512,
                         store: Store | None = None, progress: Progress | None = None) -> np.ndarray:
    """(snippets, layers, hidden) mean-pooled block outputs: one full pass, cached and shared with the
    Embeddings view (neuro/embeddings.py)."""
    return cached_pooled(loaded, snippets, max_length=max_length, store=store or Store(), progress=progress)


def layer_embeddings(loaded: LoadedModel, snippets: Sequence[Snippet], layer: int, *, max_length: int = 512,
                     store: Store | None = None, progress: Progress | None = None) -> np.ndarray:
    """(snippets, hidden) embeddings at one block, cached: sliced from the all-layer entry when it
    exists, else from a pass that stops after `layer` (a middle layer costs only the blocks below)."""
    if not 0 <= layer < loaded.n_layers:
        raise ValueError(f"layer must lie in 0..{loaded.n_layers - 1}")
    store = store or Store()
    full = store.load(POOLED_KIND, pooled_key(loaded, snippets, max_length))
    if full is not None:
        return full.arrays["pooled"][:, layer]
    key = make_key(EMBED_KIND, model=loaded.identity, corpus=corpus_hash(snippets), layer=layer, max_length=max_length,
                   version=POOLED_VERSION)
    return resumable_pooled(loaded, snippets, EMBED_KIND, key, layer=layer, name="embeddings", max_length=max_length,
                            store=store, progress=progress)


def build_index(loaded: LoadedModel, snippets: Sequence[Snippet], layer: int | None = None, *,
                split: CorpusSplit | SplitParams | None = None, center: str = DEFAULT_CENTERING,
                max_length: int = 512, store: Store | None = None, progress: Progress | None = None) -> CloneIndex:
    """Embed the whole corpus at `layer` (default: the concept layer chosen on the selection side of
    `split`, computed and cached if needed). The centring means are the index's (the corpus's), never
    a query's."""
    from neuro.results.layers import default_concept_layer

    store = store or Store()
    if layer is None:
        layer = default_concept_layer(loaded, resolve_split(snippets, split).selection, store)
    layer = int(layer)
    emb = layer_embeddings(loaded, snippets, layer, max_length=max_length, store=store, progress=progress)
    return CloneIndex(loaded, layer, VectorIndex(emb, snippets, center=center), max_length)
