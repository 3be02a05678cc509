"""Why a hit is a hit: the model's hits beside the lexical baseline's, where each method ranks the query's
own task in every language, and each hit's similarity to the query at every layer.

For one query (pasted code, its task known when it equals a corpus program after whitespace
normalisation, or when the caller says which task it is):

- hits per method over the same candidates (the search's language filter and cross-language rule): the
  model at the index's layer (exactly the index's search) and token TF-IDF (fitted on the selection side,
  as the evaluation fits it);
- same-task ranks: for each language that has the task, where each method puts that language's program
  of the task, among that language's programs (the query's own corpus copy left out) and among the
  search's candidates (its position in the hit list, were the list long enough). A rank is 1 + the number
  of candidates scoring strictly higher (ties count in the program's favour);
- per-layer similarity: the cosine of the query with each shown hit (and each same-task program) at every
  layer, centred at each layer the way the index centres (means fitted on the whole index, the query
  centred on its language's mean), so the index's layer reproduces the index's scores.

Pure: the all-layer pooled states of the corpus come in as an argument (neuro/results/clones.py reads
them from the cache); the query's all-layer states are one forward pass of the `CloneIndex`'s model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from neuro.analysis.clones.baselines import TfidfIndex
from neuro.analysis.clones.index import CloneIndex, Hit, SearchResult
from neuro.analysis.embeddings import DEFAULT_CENTERING, Centering, unit_rows
from neuro.choices import CenterChoice
from neuro.code.corpus import LANGS, Snippet, normalize_lang
from neuro.code.upload import Query
from neuro.instrument.states import StateArray

MODEL = "model"
TFIDF = "tfidf"
METHODS = (MODEL, TFIDF)
TFIDF_LABEL = "token TF-IDF"

UNKNOWN_TASK_MESSAGE = ("The query's task is unknown (it is no corpus program, and no task was given), so there are "
                        "no same-task ranks: pick an example from the corpus or name the task.")
TASK_NOT_IN_CORPUS_MESSAGE = "No corpus program has the task {task!r}, so there are no same-task ranks."
OWN_PROGRAM_MESSAGE = ("The query is the corpus program {id}: it is left out of the ranks within {lang}, and it is "
                       "its own nearest program wherever {lang} hits are allowed.")


def method_label(method: str, layer: int, concept: bool = True) -> str:
    return TFIDF_LABEL if method == TFIDF else f"{'concept layer' if concept else 'layer'} {layer}"


def normalized_code(code: str) -> str:
    """The code with every run of whitespace made one space (and none at the ends)."""
    return " ".join(code.split())


def corpus_match(code: str, snippets: Sequence[Snippet]) -> int | None:
    """The position of the first corpus program equal to `code` after whitespace normalisation, or None."""
    wanted = normalized_code(code)
    return next((i for i, s in enumerate(snippets) if normalized_code(s.code) == wanted), None)


def layer_similarities(pooled: StateArray, langs: Sequence[str], query_states: np.ndarray, query_lang: str | None,
                       center: CenterChoice = DEFAULT_CENTERING) -> np.ndarray:
    """(layers, programs): cosine of the query with each program at each layer, after centring both
    sides as an index of these programs centres them at that layer (means fitted on all of `pooled`, the
    query centred on its language's mean, or the corpus mean when its language has too few programs).
    `pooled` may be a 3-D array or layered (neuro.results.layered): it is read one layer at a time."""
    out = np.empty((pooled.shape[1], pooled.shape[0]), dtype=np.float32)
    for layer in range(pooled.shape[1]):
        states = np.asarray(pooled[:, layer], dtype=np.float32)
        centering = Centering.fit(states, langs, center)
        rows = centering.apply(states, langs)
        out[layer] = rows @ unit_rows(np.asarray(query_states[layer])[None], centering.mean_for(query_lang))[0]
    return out


def rank_of(scores: np.ndarray, target: int, candidates: np.ndarray) -> int:
    """1 + the number of candidates (a boolean mask) scoring strictly higher than `target`."""
    scores = np.asarray(scores)
    return 1 + int(np.count_nonzero(scores[np.asarray(candidates, dtype=bool)] > scores[target]))


def top_hits(scores: np.ndarray, snippets: Sequence[Snippet], candidates: np.ndarray, k: int) -> list[Hit]:
    """The k best candidates by score (ties in corpus order)."""
    rows = np.flatnonzero(candidates)
    if not len(rows) or k <= 0:
        return []
    best = rows[np.argsort(-np.asarray(scores)[rows], kind="stable")[:k]]
    return [Hit(snippets[i].id, snippets[i].lang, snippets[i].task, float(scores[i]), snippets[i].code) for i in best]


@dataclass(frozen=True)
class SameTaskRank:
    """Where one method puts the program of the query's task in one language."""

    method: str                        # MODEL or TFIDF
    lang: str
    id: str
    score: float                       # that method's similarity of the program to the query
    rank_in_language: int              # among that language's programs (the query's own copy left out)
    language_programs: int
    rank_among_candidates: int | None  # among the search's candidates; None when its language is filtered out
    candidates: int


def same_task_ranks(scores: dict[str, np.ndarray], snippets: Sequence[Snippet], task: str, candidates: np.ndarray,
                    own: int | None = None) -> list[SameTaskRank]:
    """For each language with a program of `task` (other than the query's own copy `own`) and each method:
    that program's rank within its language and among `candidates` (a boolean mask over `snippets`)."""
    langs = np.array([s.lang for s in snippets])
    candidates = np.asarray(candidates, dtype=bool)
    others: np.ndarray = np.ones(len(snippets), dtype=bool)
    if own is not None:
        others[own] = False
    order = {lang: i for i, lang in enumerate(LANGS)}
    targets = sorted((i for i, s in enumerate(snippets) if s.task == task and others[i]),
                     key=lambda i: (order.get(snippets[i].lang, len(order)), snippets[i].lang, i))
    rows = []
    for method, s in scores.items():
        for i in targets:
            in_language = others & (langs == snippets[i].lang)
            rows.append(SameTaskRank(method, snippets[i].lang, snippets[i].id, float(s[i]),
                                     rank_of(s, i, in_language), int(in_language.sum()),
                                     rank_of(s, i, candidates) if candidates[i] else None, int(candidates.sum())))
    return rows


@dataclass(frozen=True)
class LayerSimilarity:
    """Similarity to the query at every layer (centred as the index centres) of the shown hits and the
    same-task programs: `values[r, layer]` for row r."""

    ids: list[str]
    langs: list[str]
    tasks: list[str]
    same_task: list[bool]  # a program of the query's task (not the query's own copy)
    values: np.ndarray  # (rows, layers)
    layer: int          # the index's layer (the model's hits are ranked there)

    def of(self, id: str) -> np.ndarray:
        return self.values[self.ids.index(id)]

    def frame(self) -> pd.DataFrame:
        """Long form: one row per program and layer."""
        return pd.DataFrame([{"id": id, "lang": lang, "task": task, "same_task": same, "layer": layer,
                              "similarity": float(v)}
                             for id, lang, task, same, row in zip(self.ids, self.langs, self.tasks, self.same_task,
                                                                  self.values)
                             for layer, v in enumerate(row)])


@dataclass(frozen=True)
class QueryExplanation:
    """The model's and TF-IDF's hits for one query, the same-task ranks and the per-layer similarities."""

    query: Query
    layer: int
    concept: bool                 # whether `layer` is the concept layer (else chosen by the user)
    hits: dict[str, list[Hit]]    # MODEL, TFIDF -> ranked hits over the same candidates
    task: str | None
    task_source: str | None       # "given", "corpus program" or None (unknown)
    own_id: str | None            # the corpus program the query equals, if any
    ranks: list[SameTaskRank]
    similarity: LayerSimilarity
    candidates: int
    notes: tuple[str, ...] = ()

    def label(self, method: str) -> str:
        return method_label(method, self.layer, self.concept)

    def rank_frame(self) -> pd.DataFrame:
        """One row per language that has the task: its program and each method's ranks."""
        rows: dict[str, dict] = {}
        for r in self.ranks:
            row = rows.setdefault(r.id, {"language": r.lang, "program": r.id, "programs": r.language_programs})
            name = self.label(r.method)
            row[f"{name}: rank in language"] = r.rank_in_language
            row[f"{name}: rank among hits"] = r.rank_among_candidates
            row[f"{name}: similarity"] = round(r.score, 4)
        return pd.DataFrame(list(rows.values()))

    def describe(self) -> str:
        """What the ranks and layers show, in sentences, with the numbers (no judgement beyond them)."""
        if self.task is None:
            return UNKNOWN_TASK_MESSAGE
        if not self.ranks:
            return f"No other corpus program has the task {self.task!r}."
        parts = []
        for method in METHODS:
            mine = [r for r in self.ranks if r.method == method]
            firsts = sum(r.rank_in_language == 1 for r in mine)
            listing = ", ".join(f"{r.lang} at rank {r.rank_in_language} of {r.language_programs}" for r in mine)
            parts.append(f"{self.label(method)} finds {listing} (first in {firsts} of {len(mine)} languages)")
        text = f"Task {self.task}: " + "; ".join(parts) + "."
        same = self.similarity.values[np.asarray(self.similarity.same_task, dtype=bool)]
        if len(same):
            mean = same.mean(0)
            peak = int(np.argmax(mean))
            text += (f" Averaged over the same-task programs, the model's similarity to the query peaks at layer "
                     f"{peak} ({mean[peak]:.3f}); at layer {self.layer}, where its hits are ranked, it is "
                     f"{mean[self.layer]:.3f}.")
        return text

    def summary(self) -> dict:
        """The search's summary (the model's hits as `hits`) and the explanation."""
        def hits(method: str) -> list[dict]:
            return [{"rank": i + 1, **asdict(h), "score": round(h.score, 6)} for i, h in enumerate(self.hits[method])]

        return {**SearchResult(self.query, self.hits[MODEL], self.layer).summary(),
                "task": self.task, "task_source": self.task_source, "own_program": self.own_id,
                "candidates": self.candidates, "notes": list(self.notes), "description": self.describe(),
                "baseline": TFIDF_LABEL, "baseline_hits": hits(TFIDF),
                "same_task_ranks": [asdict(r) for r in self.ranks],
                "layer_similarity": {"layer": self.layer, "layers": int(self.similarity.values.shape[1]),
                                     "rows": [{"id": id, "lang": lang, "task": task, "same_task": same,
                                               "similarity": [round(float(v), 6) for v in row]}
                                              for id, lang, task, same, row in zip(
                                                  self.similarity.ids, self.similarity.langs, self.similarity.tasks,
                                                  self.similarity.same_task, self.similarity.values)]}}


def candidate_mask(snippets: Sequence[Snippet], index_languages: Sequence[str], languages: Sequence[str] | None,
                   query_lang: str | None, cross_language: bool) -> np.ndarray:
    """The search's candidates, as `CloneIndex.search` chooses them."""
    wanted = set(index_languages if languages is None else (normalize_lang(x) for x in languages))
    if cross_language:
        wanted.discard(query_lang)
    return np.array([s.lang in wanted for s in snippets], dtype=bool)


def explain_query(index: CloneIndex, code: str, pooled: StateArray, snippets: Sequence[Snippet], tfidf: TfidfIndex,
                  *, task: str | None = None, k: int = 10, languages: Sequence[str] | None = None,
                  lang: str | None = None, cross_language: bool = False, concept: bool = True) -> QueryExplanation:
    """Explain `index.search(code, ...)`: `pooled` is (programs, layers, hidden) of `snippets` (3-D or layered:
    read a layer at a time), the programs the
    index was built on, in the order it was given them; `tfidf` indexes the same programs. `task` says which
    task the query is (default: the task of the corpus program it equals, if any)."""
    same = len(pooled) == len(tfidf) == len(index.index) == len(snippets) and \
        [s.id for s in index.index.snippets] == [snippets[i].id for i in index.index.order]
    if not same:
        raise ValueError("the pooled states, the TF-IDF index and the clone index must hold the same programs")
    result = index.search(code, k=k, languages=languages, lang=lang, cross_language=cross_language)
    query = result.query
    candidates = candidate_mask(snippets, index.index.languages, languages, query.lang, cross_language)
    scores = {MODEL: index.index.scores(index.embed(query.code), query.lang), TFIDF: tfidf.scores(query.code)}
    hits = {MODEL: result.hits, TFIDF: top_hits(scores[TFIDF], snippets, candidates, k)}

    own = corpus_match(code, snippets)
    notes = []
    source = None
    if task is not None:
        source = "given"
        if not any(s.task == task for s in snippets):
            notes.append(TASK_NOT_IN_CORPUS_MESSAGE.format(task=task))
    elif own is not None:
        task, source = snippets[own].task, "corpus program"
    else:
        notes.append(UNKNOWN_TASK_MESSAGE)
    if own is not None:
        notes.append(OWN_PROGRAM_MESSAGE.format(id=snippets[own].id, lang=snippets[own].lang))
    ranks = same_task_ranks(scores, snippets, task, candidates, own) if task is not None else []

    layers = layer_similarities(pooled, [s.lang for s in snippets], index.embed_all_layers(query.code), query.lang,
                                index.index.centering.how)
    position = {s.id: i for i, s in enumerate(snippets)}
    rows = list(dict.fromkeys([*(position[h.id] for m in METHODS for h in hits[m]),
                               *(position[r.id] for r in ranks)]))
    similarity = LayerSimilarity([snippets[i].id for i in rows], [snippets[i].lang for i in rows],
                                 [snippets[i].task for i in rows],
                                 [snippets[i].task == task and i != own for i in rows],
                                 layers[:, rows].T.copy(), index.layer)
    return QueryExplanation(query, index.layer, concept, hits, task, source,
                            snippets[own].id if own is not None else None, ranks, similarity,
                            int(candidates.sum()), tuple(notes))
