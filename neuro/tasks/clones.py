"""Zero-shot cross-language clone detection with concept-layer embeddings.

A program's embedding is the mean over its tokens of one block's output (default: the concept layer,
see neuro/layers.py), from a forward pass that stops at that block. Similarity is cosine after
centring (neuro/embeddings.py): by default each program minus the mean of its own language's
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

No number is measured on the programs it was chosen from (neuro/split.py): the concept layer comes from
the layer report on the selection side, the centring means are fitted on the selection side's
embeddings, and the TF-IDF baseline's vocabulary and idf too; queries and candidates are the
evaluation side's programs only. Search may index the whole corpus: its centring means come from the
index, never from the query.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from ..capture import Progress, encode, layer_states
from ..corpus import LANGS, Snippet, corpus_hash, normalize_lang
from ..embeddings import (DEFAULT_CENTERING, MIN_LANGUAGE_ROWS, POOLED_KIND, POOLED_VERSION, Centering, cached_pooled,
                          check_centering, pooled_key, resumable_pooled, unit_rows)
from ..models import LoadedModel
from ..browse import remember_model
from ..split import CorpusSplit, SplitParams, split_corpus
from ..store import Entry, Store, make_key
from ..syntax import detect_language

EMBED_KIND = "clone_embeddings"
EVAL_KIND = "clone_eval"
EVAL_VERSION = 3  # 3: measured on the evaluation side of the split, chosen on the selection side

MAX_CODE_CHARS = 20_000      # pasted code beyond this is cut (the model sees max_length tokens anyway)
NOT_CODE_ERROR_SHARE = 0.15  # "not code": more than this share of bytes fails to parse in every language
LOW_CONFIDENCE = 0.4         # below this detection confidence the language is called uncertain

EMPTY_MESSAGE = "No code to search: paste a function or upload a source file."
TRUNCATED_MESSAGE = "The code has {chars:,} characters; only the first {limit:,} are used."
TOKENS_MESSAGE = "Only the first {limit:,} of its {tokens:,} tokens are embedded."
NOT_CODE_MESSAGE = ("This does not look like C++, Java, Python, Go or JavaScript (at least {share:.0%} of it fails "
                    "to parse in every language): the hits may mean little.")
LOW_CONFIDENCE_MESSAGE = ("The language is uncertain (detected {lang} at {confidence:.0%} confidence); choose it if "
                          "it is wrong.")
BINARY_MESSAGE = "{name} looks like a binary file (it contains NUL bytes), not source code."
UNDECODABLE_MESSAGE = ("{name} is not UTF-8 text (byte 0x{byte:02x} at offset {offset:,} cannot be decoded); "
                       "save it as UTF-8 and upload it again.")
EMPTY_FILE_MESSAGE = "{name} is empty."
NO_LANGUAGE_MEAN_MESSAGE = ("The corpus has fewer than {min} {lang} programs, so the query is centred on the corpus "
                            "mean rather than its language's mean.")


class CloneInputError(ValueError):
    """Input that cannot be searched at all (empty code); the message says what to do."""


# --------------------------------------------------------------------------- input checks

@dataclass(frozen=True)
class Upload:
    """An uploaded file decoded to text, or why it could not be (`text` is None then)."""

    text: str | None
    encoding: str | None
    error: str | None = None


_BOMS = [(b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")]


def decode_upload(data: bytes, name: str = "The file") -> Upload:
    """UTF-8 (or UTF-16/32 with a byte-order mark) text of an upload; binary and other encodings are
    reported, not guessed, so a wrong decoding never silently becomes the query."""
    if not data:
        return Upload(None, None, EMPTY_FILE_MESSAGE.format(name=name))
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return Upload(data.decode(encoding), encoding)
            except UnicodeDecodeError as err:
                return Upload(None, None, UNDECODABLE_MESSAGE.format(name=name, byte=data[err.start],
                                                                      offset=err.start))
    if b"\x00" in data:
        return Upload(None, None, BINARY_MESSAGE.format(name=name))
    try:
        return Upload(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError as err:
        return Upload(None, None, UNDECODABLE_MESSAGE.format(name=name, byte=data[err.start], offset=err.start))


@dataclass(frozen=True)
class Query:
    """Checked query code: what is searched, its language, and what the user should be told."""

    code: str
    lang: str
    detected_lang: str
    confidence: float
    overridden: bool = False
    truncated: bool = False
    original_chars: int = 0
    looks_like_code: bool = True
    notices: tuple[str, ...] = ()

    @property
    def low_confidence(self) -> bool:
        return not self.overridden and self.confidence < LOW_CONFIDENCE


def prepare_query(code: str, lang: str | None = None, max_chars: int = MAX_CODE_CHARS) -> Query:
    """Truncate, detect the language (unless given) and flag text that does not look like code.

    Raises CloneInputError for empty code and CorpusError (a ValueError) for an unknown language name.
    """
    if code is None or not code.strip():
        raise CloneInputError(EMPTY_MESSAGE)
    notices = []
    original = len(code)
    truncated = original > max_chars
    if truncated:
        code = code[:max_chars]
        notices.append(TRUNCATED_MESSAGE.format(chars=original, limit=max_chars))
    detection = detect_language(code)
    worst_best = min(detection.error_rates.values())
    looks_like_code = worst_best <= NOT_CODE_ERROR_SHARE
    if not looks_like_code:
        notices.append(NOT_CODE_MESSAGE.format(share=worst_best))
    chosen = normalize_lang(lang) if lang else detection.lang
    query = Query(code, chosen, detection.lang, float(detection.confidence), lang is not None, truncated, original,
                  looks_like_code)
    if query.low_confidence and looks_like_code:
        notices.append(LOW_CONFIDENCE_MESSAGE.format(lang=detection.lang, confidence=detection.confidence))
    return Query(**{**asdict(query), "notices": tuple(notices)})


# --------------------------------------------------------------------------- embeddings

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


def embed_code(loaded: LoadedModel, code: str, layer: int, max_length: int = 512) -> np.ndarray:
    """(hidden,) embedding of one program at `layer` (the forward stops there)."""
    probe = Snippet("query", "python", "query", code)  # the language plays no part in the forward pass
    return layer_states(loaded, [probe], upto_layer=layer, max_length=max_length).pooled[0, layer]


# --------------------------------------------------------------------------- the index

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

    def __init__(self, embeddings: np.ndarray, snippets: Sequence[Snippet], center: str = DEFAULT_CENTERING):
        if len(embeddings) != len(snippets) or not len(snippets):
            raise ValueError("an index needs one embedding per snippet, and at least one snippet")
        rank = {lang: i for i, lang in enumerate([*LANGS, *sorted({s.lang for s in snippets} - set(LANGS))])}
        order = sorted(range(len(snippets)), key=lambda i: rank[snippets[i].lang])
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

    def search_vector(self, vector: np.ndarray, k: int = 10, languages: Sequence[str] | None = None,
                      lang: str | None = None) -> list[Hit]:
        """The k rows most similar to `vector`, a raw embedding of a program in `lang` (centred and
        normalized here: with language centring, on that language's mean when the corpus has one)."""
        query = unit_rows(np.asarray(vector, dtype=np.float32)[None], self.centering.mean_for(lang))[0]
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
    _recent: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def embed(self, code: str) -> np.ndarray:
        """The query's embedding; the last few are kept, so a page rerun with unchanged code costs no pass."""
        vector = self._recent.get(code)
        if vector is None:
            vector = embed_code(self.loaded, code, self.layer, self.max_length)
            if len(self._recent) >= 32:
                self._recent.pop(next(iter(self._recent)), None)
            self._recent[code] = vector
        return vector

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


def build_index(loaded: LoadedModel, snippets: Sequence[Snippet], layer: int | None = None, *,
                split: CorpusSplit | SplitParams | None = None, center: str = DEFAULT_CENTERING,
                max_length: int = 512, store: Store | None = None, progress: Progress | None = None) -> CloneIndex:
    """Embed the whole corpus at `layer` (default: the concept layer chosen on the selection side of
    `split`, computed and cached if needed). The centring means are the index's (the corpus's), never
    a query's."""
    from ..layers import default_concept_layer

    store = store or Store()
    if layer is None:
        layer = default_concept_layer(loaded, resolve_split(snippets, split).selection, store)
    layer = int(layer)
    emb = layer_embeddings(loaded, snippets, layer, max_length=max_length, store=store, progress=progress)
    return CloneIndex(loaded, layer, VectorIndex(emb, snippets, center=center), max_length)


# --------------------------------------------------------------------------- metrics

def _ranked(sims: np.ndarray) -> np.ndarray:
    """Candidate order per query row, best first (ties keep corpus order)."""
    return np.argsort(-sims, axis=1, kind="stable")


def view_scores(order: np.ndarray, relevant: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query, AP@R and hit@1 restricted to `candidates` (bool, queries x corpus), given the ranking
    `order` of all candidates; nan where a query has no relevant candidate.

    AP@R = (1/R) sum_{i<=R} P@i * rel_i over the first R candidates, R = the number of relevant ones.
    """
    cand = np.take_along_axis(candidates, order, 1)
    rel = np.take_along_axis(relevant & candidates, order, 1)
    r = rel.sum(1)
    seen = np.cumsum(cand, 1)                      # candidate rank of each position
    precision = np.cumsum(rel, 1) / np.maximum(seen, 1)
    within = cand & (seen <= r[:, None])
    ap = (precision * (rel & within)).sum(1) / np.maximum(r, 1)
    first = np.argmax(cand, 1)
    hit1 = rel[np.arange(len(rel)), first].astype(float)
    missing = r == 0
    ap[missing], hit1[missing] = np.nan, np.nan
    return ap, hit1


def map_at_r(sims: np.ndarray, relevant: np.ndarray, candidates: np.ndarray | None = None) -> float:
    """MAP@R of a similarity matrix (queries x corpus); queries without relevant items are skipped."""
    candidates = np.ones_like(relevant, dtype=bool) if candidates is None else candidates
    return float(np.nanmean(view_scores(_ranked(sims), relevant, candidates)[0]))


def recall_at_1(sims: np.ndarray, relevant: np.ndarray, candidates: np.ndarray | None = None) -> float:
    """Share of queries whose most similar candidate is relevant."""
    candidates = np.ones_like(relevant, dtype=bool) if candidates is None else candidates
    return float(np.nanmean(view_scores(_ranked(sims), relevant, candidates)[1]))


def _similarities(vectors, rows: np.ndarray) -> np.ndarray:
    """Cosine similarities of `rows` to every row of unit `vectors` (dense array or sparse matrix)."""
    sims = vectors[rows] @ vectors.T
    return np.asarray(sims.toarray() if hasattr(sims, "toarray") else sims, dtype=np.float32)


def retrieval_table(vectors, snippets: Sequence[Snippet], chunk: int = 512) -> pd.DataFrame:
    """Cross-language, all-language and per-pair MAP@R / Recall@1 of unit `vectors` (one per snippet).

    Rows: setting ("cross-language" | "all-language" | "pair"), query_lang ("all" = every query),
    candidate_lang ("others", "all" or a language), map_at_r, recall_at_1, queries.
    """
    n = len(snippets)
    langs = np.array([s.lang for s in snippets])
    tasks = np.array([s.task for s in snippets])
    names = list(dict.fromkeys(langs.tolist()))
    views = {"cross": np.empty(n), "all": np.empty(n)}
    hits = {"cross": np.empty(n), "all": np.empty(n)}
    for b in names:
        views[b], hits[b] = np.full(n, np.nan), np.full(n, np.nan)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        sims = _similarities(vectors, rows)
        sims[np.arange(len(rows)), rows] = -np.inf          # a query never retrieves itself
        order = _ranked(sims)
        relevant = tasks[rows, None] == tasks[None, :]
        not_self = np.ones_like(relevant)
        not_self[np.arange(len(rows)), rows] = False
        other_lang = langs[rows, None] != langs[None, :]
        for name, cand in (("cross", other_lang), ("all", not_self)):
            views[name][rows], hits[name][rows] = view_scores(order, relevant, cand)
        for b in names:
            cand = other_lang & (langs == b)[None, :]
            views[b][rows], hits[b][rows] = view_scores(order, relevant, cand)

    out = []

    def add(setting, qlang, clang, mask, key):
        ap, h = views[key][mask], hits[key][mask]
        ok = ~np.isnan(ap)
        if ok.any():
            out.append({"setting": setting, "query_lang": qlang, "candidate_lang": clang,
                        "map_at_r": float(ap[ok].mean()), "recall_at_1": float(h[ok].mean()), "queries": int(ok.sum())})

    everyone = np.ones(n, dtype=bool)
    for setting, key, clang in (("cross-language", "cross", "others"), ("all-language", "all", "all")):
        add(setting, "all", clang, everyone, key)
        for a in names:
            add(setting, a, clang, langs == a, key)
    for a in names:
        for b in names:
            if a != b:
                add("pair", a, b, langs == a, b)
    return pd.DataFrame(out, columns=["setting", "query_lang", "candidate_lang", "map_at_r", "recall_at_1",
                                      "queries"])


# --------------------------------------------------------------------------- TF-IDF baseline

_SUBWORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+|[^\s\w]")


def code_tokens(code: str) -> list[str]:
    """Lower-cased identifier pieces (camelCase and snake_case split), numbers and punctuation, so
    `hasCloseElements`, `has_close_elements` and `HasCloseElements` share their tokens."""
    return [t.lower() for t in _SUBWORD.findall(code)]


def tfidf_vectors(snippets: Sequence[Snippet], fit_on: Sequence[Snippet] | None = None):
    """Unit-normalized sparse TF-IDF rows (sublinear tf) of the snippets' code tokens, with the vocabulary
    and idf fitted on `fit_on` (the selection side; default: the snippets themselves). Tokens unseen
    there are dropped, as a fitted model would drop them."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer=code_tokens, sublinear_tf=True, norm="l2")
    if fit_on is None:
        return vectorizer.fit_transform([s.code for s in snippets]).tocsr()
    vectorizer.fit([s.code for s in fit_on])
    return vectorizer.transform([s.code for s in snippets]).tocsr()


# --------------------------------------------------------------------------- code without prose

def _prose_ranges(node, lang: str, out: list[tuple[int, int]]) -> None:
    if "comment" in node.type:
        out.append((node.start_byte, node.end_byte))
        return
    if lang == "python" and node.type == "expression_statement" and node.named_child_count == 1 \
            and node.named_children[0].type == "string":
        out.append((node.start_byte, node.end_byte))  # a docstring (or a bare string statement)
        return
    for child in node.children:
        _prose_ranges(child, lang, out)


def strip_comments(code: str, lang: str) -> str:
    """The code without comments and Python docstrings (tree-sitter), blank lines and trailing spaces dropped.

    Parallel corpora such as HumanEval-X carry the same English docstring in every language, which
    lets any lexical method match clones by their prose; evaluating on stripped code asks whether the
    model matches the programs themselves.
    """
    from ..syntax import parse

    data = code.encode("utf-8")
    ranges: list[tuple[int, int]] = []
    _prose_ranges(parse(code, lang).root_node, lang, ranges)
    kept, end = [], 0
    for a, b in sorted(ranges):
        kept.append(data[end:a])
        end = max(end, b)
    kept.append(data[end:])
    text = b"".join(kept).decode("utf-8", "replace")
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip()) + "\n"


def without_comments(snippets: Sequence[Snippet]) -> list[Snippet]:
    """The corpus with `strip_comments` applied to every program (ids and tasks unchanged)."""
    return [replace(s, code=strip_comments(s.code, s.lang)) for s in snippets]


# --------------------------------------------------------------------------- the evaluation

SETTINGS = ("cross-language", "all-language")


@dataclass
class CloneEvaluation:
    """Retrieval quality of the chosen layer beside the baselines, and the layer sweep.

    scores: method, layer (-1 where none), + the columns of `retrieval_table`.
    sweep: layer, setting, map_at_r, recall_at_1 (overall, every layer).
    """

    scores: pd.DataFrame
    sweep: pd.DataFrame
    layer: int
    concept_layers: list[int]
    meta: dict = field(default_factory=dict)

    def overall(self) -> pd.DataFrame:
        """One row per method: MAP@R and Recall@1 in each setting (the headline table)."""
        rows = self.scores[self.scores.query_lang.eq("all") & self.scores.setting.isin(SETTINGS)]
        out = []
        for (method, layer), group in rows.groupby(["method", "layer"], sort=False):
            row = {"method": method, "layer": "all" if method == "mean of layers" else "" if layer < 0 else str(layer)}
            for r in group.itertuples():
                row[f"{r.setting} MAP@R"], row[f"{r.setting} Recall@1"] = r.map_at_r, r.recall_at_1
            out.append(row)
        return pd.DataFrame(out)

    def pair_matrix(self, method: str | None = None, metric: str = "map_at_r") -> pd.DataFrame:
        """Query language x candidate language for one method (default: the first, the chosen layer)."""
        method = method or str(self.scores.method.iloc[0])
        sub = self.scores[(self.scores.method == method) & (self.scores.setting == "pair")]
        return sub.pivot(index="query_lang", columns="candidate_lang", values=metric)

    def summary(self) -> dict:
        overall = self.overall()
        return {"layer": self.layer, "concept_layers": self.concept_layers, **self.meta,
                "overall": overall.round(4).to_dict(orient="records"),
                "scores": self.scores.round(4).to_dict(orient="records"),
                "sweep": self.sweep.round(4).to_dict(orient="records")}


def _cached_concept_layers(loaded: LoadedModel, selection: Sequence[Snippet], store: Store) -> list[int]:
    """The concept layers if a layer report on the selection side is already cached (an explicit layer
    should not cost one)."""
    from ..layers import cached_layer_report

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
    from ..layers import concept_layers

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
