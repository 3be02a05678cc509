"""Zero-shot cross-language clone detection with concept-layer embeddings.

A program's embedding is the mean over its tokens of one block's output (default: the concept layer,
see neuro/analysis/layers.py), from a forward pass that stops at that block. Similarity is cosine after
centring (neuro/analysis/embeddings.py): by default each program minus the mean of its own language's
programs, which removes the per-language direction that pooled states carry at every layer. On the
demo model this more than doubles cross-language MAP@R (HumanEval-X, concept layer: 0.256 with the
corpus mean -> 0.588); "corpus" (one shared mean) and "none" stay available.

Search is a normalized matrix-vector product over the corpus with an exact top-k (argpartition):
at this scale (10^2..10^5 programs) brute force is exact and fast (8 ms median for 100 000 x 512 on
an idle 2-core CPU, 38 ms under heavy load, nearly all of it the product itself: see
bench/bench_clones.py), and rows are grouped by language so a language filter only touches the rows
it keeps. scikit-learn's NearestNeighbors(metric="cosine", brute) computes the same thing about 10-20x
slower per query here and has no filter; FAISS (IndexFlatIP) would be the same exact product, an extra
dependency with no gain until approximate indexes are needed at millions of rows.

Evaluation (MAP@R, Recall@1; Musgrave et al., 2020): each program is a query; relevant = the programs
of the same task. Cross-language: candidates are the programs in the other languages; all-language:
every other program; per language pair (a, b): queries in a, candidates in b.

No number is measured on the programs it was chosen from (neuro/code/split.py): the concept layer comes from
the layer report on the selection side (its alignment measured after this same centring, so the rule picks
the layer where centred retrieval peaks), the centring means are fitted on the selection side's
embeddings, and the TF-IDF baseline's vocabulary and idf too; queries and candidates are the
evaluation side's programs only. Search may index the whole corpus: its centring means come from the
index, never from the query.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from neuro.analysis.embeddings import DEFAULT_CENTERING, MIN_LANGUAGE_ROWS, Centering, unit_rows
from neuro.choices import CenterChoice
from neuro.code.corpus import LANGS, Snippet, normalize_lang
from neuro.code.split import CorpusSplit, SplitParams, split_corpus
from neuro.code.upload import TOKENS_MESSAGE, Query, prepare_query
from neuro.instrument.states import layer_states
from neuro.instrument.tokens import encode
from neuro.model.loading import LoadedModel

NO_LANGUAGE_MEAN_MESSAGE = ("The corpus has fewer than {min} {lang} programs, so the query is centred on the corpus "
                            "mean rather than its language's mean.")


def embed_code(loaded: LoadedModel, code: str, layer: int, max_length: int = 512) -> np.ndarray:
    """(hidden,) embedding of one program at `layer` (the forward stops there)."""
    probe = Snippet("query", "python", "query", code)  # the language plays no part in the forward pass
    return layer_states(loaded, [probe], upto_layer=layer, max_length=max_length).pooled[0, layer]


@dataclass(frozen=True)
class Hit:
    id: str
    lang: str
    task: str
    score: float  # cosine similarity in [-1, 1]
    code: str


class VectorIndex:
    """Exact cosine top-k over unit rows; rows are stored grouped by language so a language filter
    multiplies only the rows it keeps."""

    def __init__(self, embeddings: np.ndarray, snippets: Sequence[Snippet], center: CenterChoice = DEFAULT_CENTERING):
        if len(embeddings) != len(snippets) or not len(snippets):
            raise ValueError("an index needs one embedding per snippet, and at least one snippet")
        rank = {lang: i for i, lang in enumerate([*LANGS, *sorted({s.lang for s in snippets} - set(LANGS))])}
        order = sorted(range(len(snippets)), key=lambda i: rank[snippets[i].lang])
        self.order = np.asarray(order, dtype=np.int64)  # row r of the index is snippet order[r] as given
        self.snippets = [snippets[i] for i in order]
        langs = [s.lang for s in self.snippets]
        embeddings = np.asarray(embeddings, dtype=np.float32)[order]
        self.centering = Centering.fit(embeddings, langs, center)
        self.vectors = np.ascontiguousarray(self.centering.apply(embeddings, langs))
        self.blocks: dict[str, slice] = {}
        for i, s in enumerate(self.snippets):
            start = self.blocks[s.lang].start if s.lang in self.blocks else i
            self.blocks[s.lang] = slice(start, i + 1)

    def __len__(self) -> int:
        return len(self.snippets)

    @property
    def languages(self) -> list[str]:
        return list(self.blocks)

    def centred_on_language(self, lang: str | None) -> bool:
        """Whether a query in `lang` gets its own language's mean (else the corpus mean, or none)."""
        return self.centering.how != "language" or lang in self.centering.language_means

    def query_vector(self, vector: np.ndarray, lang: str | None = None) -> np.ndarray:
        """`vector` (a raw embedding of a program in `lang`) centred as the index centres it, unit length."""
        return unit_rows(np.asarray(vector, dtype=np.float32)[None], self.centering.mean_for(lang))[0]

    def scores(self, vector: np.ndarray, lang: str | None = None) -> np.ndarray:
        """Cosine of `vector` with every row, in the order the snippets were given (not the index's)."""
        out: np.ndarray = np.empty(len(self.snippets), dtype=np.float32)
        out[self.order] = self.vectors @ self.query_vector(vector, lang)
        return out

    def search_vector(self, vector: np.ndarray, k: int = 10, languages: Sequence[str] | None = None,
                      lang: str | None = None) -> list[Hit]:
        """The k rows most similar to `vector`, a raw embedding of a program in `lang` (centred and
        normalized here: with language centring, on that language's mean when the corpus has one)."""
        query = self.query_vector(vector, lang)
        spans = self._spans(languages)
        if not spans or k <= 0:
            return []
        scores = np.concatenate([self.vectors[a:b] @ query for a, b in spans]) if len(spans) > 1 \
            else self.vectors[spans[0][0]:spans[0][1]] @ query
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        ends = np.cumsum([b - a for a, b in spans])
        hits = []
        for j in top:
            span = int(np.searchsorted(ends, j, side="right"))
            s = self.snippets[spans[span][0] + j - (ends[span - 1] if span else 0)]
            hits.append(Hit(s.id, s.lang, s.task, float(scores[j]), s.code))
        return hits

    def _spans(self, languages: Sequence[str] | None) -> list[tuple[int, int]]:
        """The kept languages' row ranges, adjacent ones merged (all languages: one range)."""
        spans: list[tuple[int, int]] = []
        for lang, block in self.blocks.items():
            if languages is not None and lang not in languages:
                continue
            if spans and spans[-1][1] == block.start:
                spans[-1] = (spans[-1][0], block.stop)
            else:
                spans.append((block.start, block.stop))
        return spans


@dataclass(frozen=True)
class SearchResult:
    """Ranked hits and the checked query (its language, truncation and warnings). Iterates over hits."""

    query: Query
    hits: list[Hit]
    layer: int

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, i: int) -> Hit:
        return self.hits[i]

    def summary(self) -> dict:
        q = self.query
        return {"layer": self.layer, "lang": q.lang, "detected_lang": q.detected_lang,
                "confidence": round(q.confidence, 4), "lang_overridden": q.overridden, "truncated": q.truncated,
                "looks_like_code": q.looks_like_code, "low_confidence": q.low_confidence, "notices": list(q.notices),
                "hits": [{"rank": i + 1, **asdict(h), "score": round(h.score, 6)} for i, h in enumerate(self.hits)]}


@dataclass
class CloneIndex:
    """A corpus embedded at one layer of one model: paste code, get its nearest programs."""

    loaded: LoadedModel
    layer: int
    index: VectorIndex
    max_length: int = 512
    _recent: dict[object, np.ndarray] = field(default_factory=dict, repr=False)

    def _remembered(self, key: object, compute) -> np.ndarray:
        """`compute()` once per key among the last 32: a page rerun with unchanged code costs no pass."""
        value = self._recent.get(key)
        if value is None:
            value = compute()
            if len(self._recent) >= 32:
                self._recent.pop(next(iter(self._recent)), None)
            self._recent[key] = value
        return value

    def embed(self, code: str) -> np.ndarray:
        """The query's embedding at the index's layer (sliced from its all-layer states when those are
        already known, else from a pass that stops at the layer)."""
        every = self._recent.get(("all layers", code))
        if every is not None:
            return every[self.layer]
        return self._remembered(code, lambda: embed_code(self.loaded, code, self.layer, self.max_length))

    def embed_all_layers(self, code: str) -> np.ndarray:
        """(layers, hidden): the query's pooled states at every layer, from one full forward pass."""
        probe = Snippet("query", "python", "query", code)  # the language plays no part in the forward pass
        return self._remembered(("all layers", code),
                                lambda: layer_states(self.loaded, [probe], max_length=self.max_length).pooled[0])

    def search(self, code: str, k: int = 10, languages: Sequence[str] | None = None, lang: str | None = None,
               cross_language: bool = False) -> SearchResult:
        """Top-k programs for `code`. The language is detected unless `lang` is given; `languages`
        restricts the hits (None: all); `cross_language` drops hits in the query's own language."""
        query = prepare_query(code, lang)
        tokens = len(encode(self.loaded, query.code, 1 << 30).ids)
        if tokens > self.max_length:
            query = Query(**{**asdict(query), "notices": (*query.notices, TOKENS_MESSAGE.format(
                limit=self.max_length, tokens=tokens))})
        if not self.index.centred_on_language(query.lang):
            query = Query(**{**asdict(query), "notices": (*query.notices, NO_LANGUAGE_MEAN_MESSAGE.format(
                min=MIN_LANGUAGE_ROWS, lang=query.lang))})
        wanted = list(self.index.languages) if languages is None else [normalize_lang(x) for x in languages]
        if cross_language:
            wanted = [x for x in wanted if x != query.lang]
        hits = self.index.search_vector(self.embed(query.code), k, wanted, lang=query.lang)
        return SearchResult(query, hits, self.layer)


def resolve_split(snippets: Sequence[Snippet], split: CorpusSplit | SplitParams | None = None) -> CorpusSplit:
    """The corpus's selection / evaluation split: a `CorpusSplit`'s parameters (or the given `SplitParams`,
    or the defaults) applied to `snippets`."""
    params = split.params if isinstance(split, CorpusSplit) else split or SplitParams()
    return split_corpus(snippets, params)

