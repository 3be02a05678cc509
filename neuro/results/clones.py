"""Cached clone evaluations (recipe `CLONE_EVAL`) and the clone index, from the cached pooled states."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from neuro.analysis.clones.baselines import TfidfIndex, tfidf_vectors
from neuro.analysis.clones.explain import QueryExplanation, explain_query
from neuro.analysis.clones.index import CloneIndex, VectorIndex, resolve_split
from neuro.analysis.clones.intervals import bootstrap_settings, metric_intervals, paired_differences
from neuro.analysis.clones.metrics import CloneEvaluation, retrieval
from neuro.analysis.embeddings import DEFAULT_CENTERING, Centering, check_centering
from neuro.choices import CenterChoice
from neuro.code.comments import without_comments
from neuro.code.corpus import Snippet
from neuro.code.split import CorpusSplit, SplitParams
from neuro.model.loading import LoadedModel
from neuro.progress import Progress
from neuro.results.embeddings import LAYER_EMBEDDINGS, POOLED
from neuro.results.layered import Layered
from neuro.results.layers import LAYER_REPORT, concept_layers, default_concept_layer
from neuro.results.recipe import Cache, Call, Recipe
from neuro.results.store import Entry


def _cached_concept_layers(loaded: LoadedModel, selection: Sequence[Snippet], cache: Cache,
                           center: CenterChoice = DEFAULT_CENTERING) -> list[int]:
    """The concept layers (alignment measured after `center`'s centring) if a layer report on the selection
    side is already cached (an explicit layer should not cost one)."""
    report = (LAYER_REPORT.get(loaded, selection, cache=cache, compute=False)
              or LAYER_REPORT.get(loaded, selection, cache=cache, contribution=False, compute=False))
    return report.concept_layers_for(center) if report else []


@dataclass(frozen=True)
class SplitEmbeddings:
    """A corpus's all-layer pooled states (one cached pass over the whole corpus, shared with search and
    the Embeddings view) and its split: centring is fitted on the selection rows, scores use the
    evaluation rows only."""

    split: CorpusSplit
    pooled: Layered               # (programs, layers, hidden), corpus order; `pooled[:, layer]` reads one layer
    selection_rows: np.ndarray
    evaluation_rows: np.ndarray
    selection: list[Snippet]      # as embedded (without comments where asked)
    evaluation: list[Snippet]

    def centering(self, x: np.ndarray, center: CenterChoice = DEFAULT_CENTERING) -> Centering:
        """The means subtracted before cosine, fitted on the selection rows of `x` (programs, hidden)."""
        return Centering.fit(x[self.selection_rows], [s.lang for s in self.selection], center)

    def evaluated(self, x: np.ndarray, center: CenterChoice = DEFAULT_CENTERING) -> np.ndarray:
        """Unit rows of the evaluation programs of `x`, centred with the selection side's means."""
        return self.centering(x, center).apply(x[self.evaluation_rows], [s.lang for s in self.evaluation])


def split_embeddings(loaded: LoadedModel, snippets: Sequence[Snippet], *,
                     split: CorpusSplit | SplitParams | None = None, strip: bool = False, max_length: int = 512,
                     cache: Cache = None, progress: Progress | None = None) -> SplitEmbeddings:
    """Pooled states of the corpus (without comments when `strip`) and which rows are on which side."""
    split = resolve_split(snippets, split)
    evaluated = set(split.evaluation)
    on_eval = np.array([s in evaluated for s in snippets])
    corpus = without_comments(snippets) if strip else list(snippets)
    pooled = POOLED.get(loaded, corpus, max_length=max_length, cache=cache, progress=progress)
    sel_rows, eval_rows = np.flatnonzero(~on_eval), np.flatnonzero(on_eval)
    return SplitEmbeddings(split, pooled, sel_rows, eval_rows, [corpus[i] for i in sel_rows],
                           [corpus[i] for i in eval_rows])


def _resolve_request(loaded: LoadedModel, snippets: Sequence[Snippet], args: dict) -> tuple[Sequence[Snippet], dict]:
    check_centering(args["center"])
    return snippets, dict(args, split=resolve_split(snippets, args["split"]))


def _evaluate_clones(call: Call) -> Entry:
    """MAP@R and Recall@1 at `layer` (default: the concept layer), first layer, last layer, mean of
    layers and token TF-IDF, plus every layer (the sweep): all from one cached full pass. Each with its
    task-level bootstrap interval, and the paired differences chosen layer minus first / last layer / TF-IDF
    and mean of layers minus chosen layer (neuro/analysis/clones/intervals.py).

    Chosen on the selection side of the split: the concept layer (layer report), the centring means at
    each layer and TF-IDF's vocabulary and idf. Measured on the evaluation side: every query and every
    candidate is an evaluation program. With `strip` the programs are evaluated without comments and
    docstrings; the concept layer is still the one found on the selection side as given. The all-layer
    states are read a layer at a time (one layer's matrix in RAM, however large the corpus)."""
    loaded, snippets, a = call.loaded, call.snippets, call.args
    layer, split, center = a["layer"], a["split"], a["center"]
    if len({s.task for s in snippets}) == len(snippets):
        raise ValueError("no two programs share a task: clone retrieval needs a parallel corpus")
    if len({s.task for s in split.evaluation}) == len(split.evaluation):
        raise ValueError(f"no two evaluation programs share a task ({split.caption()}): clone retrieval needs "
                         "parallel programs on the evaluation side; evaluate a larger share or a larger corpus")
    if layer is None:  # chosen by alignment after the centring this evaluation scores with
        concept = concept_layers(loaded, split.selection, call.store, center=center)
    else:
        concept = _cached_concept_layers(loaded, split.selection, call.store, center)
    chosen = concept[len(concept) // 2] if layer is None else int(layer)
    if not 0 <= chosen < loaded.n_layers:
        raise ValueError(f"layer must lie in 0..{loaded.n_layers - 1}")
    sides = split_embeddings(loaded, snippets, split=split, strip=a["strip"], max_length=a["max_length"],
                             cache=call.store, progress=call.progress)
    pooled, evaluation = sides.pooled, sides.evaluation
    last = loaded.n_layers - 1

    def embedded(x: np.ndarray) -> np.ndarray:
        return sides.evaluated(x, center)

    methods = [("concept layer" if layer is None or chosen in concept else "chosen layer", chosen,
                lambda: embedded(pooled[:, chosen])),
               ("first layer", 0, lambda: embedded(pooled[:, 0])),
               ("last layer", last, lambda: embedded(pooled[:, last])),
               ("mean of layers", -1, lambda: embedded(pooled.mean(1))),  # summed a layer at a time
               ("token TF-IDF", -1, lambda: tfidf_vectors(evaluation, fit_on=sides.selection))]
    boot = bootstrap_settings()
    frames, per_query = [], []
    for name, at, vectors in methods:
        frame, queries = retrieval(vectors(), evaluation)
        for table in (frame, queries):
            table.insert(0, "layer", at)
            table.insert(0, "method", name)
        frames.append(frame)
        per_query.append(queries)
    queries = pd.concat(per_query, ignore_index=True)
    intervals = metric_intervals(queries, **boot)
    main = methods[0][0]
    differences = paired_differences(queries, [(main, "first layer"), (main, "last layer"), ("mean of layers", main),
                                               (main, "token TF-IDF")], **boot)
    sweep = []
    for at in range(loaded.n_layers):
        table, layer_queries = retrieval(embedded(pooled[:, at]), evaluation)
        layer_queries.insert(0, "layer", at)
        ci = metric_intervals(layer_queries, by=("layer",), **boot).set_index(["setting", "metric"])
        for row in table[table.query_lang.eq("all")].itertuples():
            sweep.append({"layer": at, "setting": row.setting, "map_at_r": row.map_at_r,
                          "recall_at_1": row.recall_at_1,
                          **{f"{metric}_{end}": float(ci.loc[(row.setting, metric), end])
                             for metric in ("map_at_r", "recall_at_1") for end in ("low", "high")}})
    meta = {"model": loaded.identity, "programs": len(snippets), "evaluated_programs": len(evaluation),
            "evaluated_tasks": len({s.task for s in evaluation}),
            "languages": list(dict.fromkeys(s.lang for s in evaluation)), "n_layers": loaded.n_layers,
            "center": center, "comments_stripped": a["strip"], "max_length": a["max_length"],
            "split": split.summary(),
            "bootstrap": {"unit": "task", "tasks": len({s.task for s in evaluation}), **boot,
                          "how": "each query's AP@R / hit@1 is one value; the queries of a task are resampled "
                                 "together; a difference is the mean of per-query differences (paired)"}}
    return Entry(tables={"scores": pd.concat(frames, ignore_index=True), "sweep": pd.DataFrame(sweep),
                         "intervals": intervals, "differences": differences, "queries": queries},
                 meta={"layer": chosen, "concept_layers": concept, "meta": meta})


def _clone_eval_key(args: dict) -> dict:
    return dict(layer=args["layer"], center=args["center"], strip=args["strip"], max_length=args["max_length"],
                split=asdict(args["split"].params))


CLONE_EVAL: Recipe[CloneEvaluation] = Recipe(
    # 3: measured on the evaluation side of the split, chosen on the selection side; 4: task-bootstrap intervals
    # and paired differences, concept layers chosen by alignment after the same centring
    kind="clone_eval", version=4,
    compute=_evaluate_clones, read=lambda entry: CloneEvaluation(
        entry.tables["scores"], entry.tables["sweep"], int(entry.meta["layer"]),
        [int(x) for x in entry.meta["concept_layers"]], dict(entry.meta["meta"]), entry.tables["intervals"],
        entry.tables["differences"], entry.tables["queries"]),
    key_parts=_clone_eval_key, prepare=_resolve_request, inputs={"pooled": POOLED},
    defaults=dict(layer=None, split=None, center=DEFAULT_CENTERING, strip=False, max_length=512))
"""Cross-language clone retrieval of a parallel corpus, chosen on the selection side of `split` (default:
`SplitParams()`) and measured on its evaluation side, at `layer` (None: the concept layer) beside the
baselines, plus the sweep over every layer; `center` says what is subtracted before cosine, `strip`
evaluates the programs without comments."""


def build_index(loaded: LoadedModel, snippets: Sequence[Snippet], layer: int | None = None, *,
                split: CorpusSplit | SplitParams | None = None, center: CenterChoice = DEFAULT_CENTERING,
                max_length: int = 512, cache: Cache = None, progress: Progress | None = None) -> CloneIndex:
    """Embed the whole corpus at `layer` (default: the concept layer chosen on the selection side of
    `split`, computed and cached if needed, its alignment measured after `center`). The centring means are
    the index's (the corpus's), never a query's."""
    if layer is None:
        layer = default_concept_layer(loaded, resolve_split(snippets, split).selection, cache, center=center)
    layer = int(layer)
    emb = LAYER_EMBEDDINGS.get(loaded, snippets, layer=layer, max_length=max_length, cache=cache, progress=progress)
    return CloneIndex(loaded, layer, VectorIndex(emb, snippets, center=center), max_length)


def baseline_index(snippets: Sequence[Snippet], split: CorpusSplit | SplitParams | None = None) -> TfidfIndex:
    """TF-IDF over the whole corpus, its vocabulary and idf fitted on the selection side of `split` (as the
    evaluation fits it)."""
    return TfidfIndex(snippets, fit_on=resolve_split(snippets, split).selection)


def explanation_cached(index: CloneIndex, snippets: Sequence[Snippet], cache: Cache = None) -> bool:
    """Whether explaining a search costs no pass over the corpus (its all-layer pooled states are cached)."""
    return POOLED.get(index.loaded, snippets, max_length=index.max_length, cache=cache, compute=False) is not None


def explain_search(index: CloneIndex, snippets: Sequence[Snippet], code: str, *, task: str | None = None, k: int = 10,
                   languages: Sequence[str] | None = None, lang: str | None = None, cross_language: bool = False,
                   split: CorpusSplit | SplitParams | None = None, baseline: TfidfIndex | None = None,
                   concept: bool = True, cache: Cache = None, progress: Progress | None = None) -> QueryExplanation:
    """`index.search(code, ...)` explained (neuro/analysis/clones/explain.py): the TF-IDF baseline's hits
    over the same candidates, the same-task ranks per language, and every hit's similarity at every layer.
    `snippets` are the programs the index was built on, in the same order; their all-layer pooled states
    come from the cache (one pass over the corpus when missing); `baseline` (default: `baseline_index`)
    can be kept between calls."""
    pooled = POOLED.get(index.loaded, snippets, max_length=index.max_length, cache=cache, progress=progress)
    return explain_query(index, code, pooled, snippets, baseline or baseline_index(snippets, split), task=task, k=k,
                         languages=languages, lang=lang, cross_language=cross_language, concept=concept)
