"""Per-layer scores: language-specific syntax versus language-agnostic semantics, and concept layers.

For each block l, from hidden states captured in one pass (pooled per program, and sampled tokens):
(a) language-identification probe accuracy on pooled states (cross-validated logistic regression);
(b) cross-language alignment of parallel programs (same task, other language): retrieval accuracy@1,
    MRR, and linear CKA, averaged over language pairs;
(c) syntax probe accuracy: token states -> tree-sitter node type (pooled over languages and per language);
(d) contribution: the change of mean next-token loss when the block's FFN is silenced.
Concept layers: where (b) peaks while (a) has fallen from its early-layer high (see `choose_concept_layers`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .capture import LayerStates, Progress, encode, layer_states
from .corpus import Snippet, corpus_hash
from .intervene import ablated, language_losses
from .models import LoadedModel
from .browse import remember_model
from .resume import chunked_rows, drop_chunks, resumable_steps
from .store import Entry, Store, make_key
from .syntax import align_tokens

LAYERS_KIND = "layer_scores"


# --------------------------------------------------------------------------- individual scores

def make_probe() -> Pipeline:
    """Standardized, L2-regularized (C=1) multinomial logistic regression, fitted by Newton-CG.

    Hidden states are strongly collinear: standardizing fixes each feature's scale but not their
    correlation, and the standardized covariance of early-layer token states spans eigenvalues from ~40
    down to ~1e-5 (a few dozen directions carry almost all the variance). Along the flat directions only
    the weak L2 term (1/(C n)) curves the objective, and the labels do depend on them, so L-BFGS (first
    order, 10 remembered steps) crawls: ~430 iterations for the syntax probe on the demo model, ~1,450
    when the same states are lifted to 2,048 dimensions, where max_iter=300 stopped it with a
    ConvergenceWarning. Newton-CG takes exact Hessian-vector products (its inner conjugate gradients absorb
    the conditioning) and reaches the same optimum in ~15-20 iterations, in no more time.
    """
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, solver="newton-cg", max_iter=300))


def probe_accuracy(features: np.ndarray, labels: Sequence, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a standardized logistic-regression probe (nan if too few labels)."""
    labels = np.asarray(labels)
    counts = Counter(labels.tolist())
    folds = min(folds, min(counts.values())) if counts else 0
    if len(counts) < 2 or folds < 2:
        return float("nan")
    probe = make_probe()
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, features, labels, cv=cv).mean())


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al., 2019) between two row-aligned representations."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    cross = np.linalg.norm(x.T @ y) ** 2
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / denom) if denom > 0 else float("nan")


@dataclass(frozen=True)
class PairAlignment:
    accuracy: float  # share of queries whose parallel program is the nearest candidate
    mrr: float
    cka: float
    n: int


def pair_alignment(queries: np.ndarray, candidates: np.ndarray) -> PairAlignment:
    """Row i of `queries` and of `candidates` are the same task in two languages."""
    sims = _unit(queries) @ _unit(candidates).T
    correct = np.diag(sims)
    ranks = 1 + (sims > correct[:, None]).sum(1)
    return PairAlignment(float((ranks == 1).mean()), float((1.0 / ranks).mean()), linear_cka(queries, candidates),
                         len(queries))


def alignment_by_pair(pooled: np.ndarray, snippets: Sequence[Snippet]) -> dict[tuple[str, str], PairAlignment]:
    """Cross-language alignment for every ordered language pair with at least 2 shared tasks."""
    index = {(s.lang, s.task): i for i, s in enumerate(snippets)}
    langs = list(dict.fromkeys(s.lang for s in snippets))
    out = {}
    for a, b in combinations(langs, 2):
        tasks = sorted({t for (lang, t) in index if lang == a} & {t for (lang, t) in index if lang == b})
        if len(tasks) < 2:
            continue
        qa = pooled[[index[(a, t)] for t in tasks]]
        qb = pooled[[index[(b, t)] for t in tasks]]
        out[(a, b)] = pair_alignment(qa, qb)
        out[(b, a)] = pair_alignment(qb, qa)
    return out


# --------------------------------------------------------------------------- the rule

@dataclass(frozen=True)
class ConceptChoice:
    layers: list[int]
    rule: str


def choose_concept_layers(lang_id: Sequence[float], alignment: Sequence[float], near_peak: float = 0.9,
                          drop: float = 0.02) -> ConceptChoice:
    """Concept layers: layers whose cross-language alignment is within `near_peak` of its range from
    the peak, preferring those where language-ID accuracy has fallen at least `drop` below its
    early-layer high (max over the first half). Falls back to alignment alone when it never falls."""
    a = np.asarray(lang_id, dtype=float)
    b = np.asarray(alignment, dtype=float)
    n = len(b)
    lo, hi = np.nanmin(b), np.nanmax(b)
    near = [int(i) for i in np.flatnonzero(b >= lo + near_peak * (hi - lo))] if hi > lo else [int(np.nanargmax(b))]
    early_high = np.nanmax(a[: max(1, n // 2)])
    fallen = [i for i in near if a[i] <= early_high - drop]
    rule = (f"Concept layers = layers whose cross-language alignment (MRR) is within {100 * (1 - near_peak):.0f} % "
            f"of its range below the peak (layer {int(np.nanargmax(b))}), among those where language-ID accuracy "
            f"has fallen at least {drop:.2f} below its early-layer high ({early_high:.3f}).")
    if fallen:
        return ConceptChoice(fallen, rule)
    return ConceptChoice(near, rule + " Language ID never falls that far near the peak here, so the choice "
                                      "rests on alignment alone.")


# --------------------------------------------------------------------------- the report

@dataclass
class LayerReport:
    """Every per-layer score, the language-pair alignment per layer, and the chosen concept layers."""

    scores: pd.DataFrame                      # one row per layer
    pairs: pd.DataFrame                       # layer, query_lang, candidate_lang, accuracy, mrr, cka, n
    concept_layers: list[int]
    rule: str
    meta: dict = field(default_factory=dict)

    def pair_matrix(self, layer: int, metric: str = "mrr") -> pd.DataFrame:
        sub = self.pairs[self.pairs.layer == layer]
        return sub.pivot(index="query_lang", columns="candidate_lang", values=metric)

    def normalized(self) -> pd.DataFrame:
        """Long frame (layer, score, value) with each score min-max scaled to [0, 1] across layers."""
        cols = [c for c in self.scores.columns if c != "layer"]
        frame = self.scores.melt(id_vars="layer", value_vars=cols, var_name="score", value_name="raw")
        span = frame.groupby("score")["raw"].transform(lambda v: (v.max() - v.min()) or 1.0)
        frame["value"] = (frame["raw"] - frame.groupby("score")["raw"].transform("min")) / span
        return frame

    def summary(self) -> dict:
        return {"concept_layers": self.concept_layers, "rule": self.rule, **self.meta,
                "layers": self.scores.round(4).to_dict(orient="records")}


def _syntax_labels(loaded: LoadedModel, snippets: Sequence[Snippet], index: np.ndarray, max_length: int,
                   max_types: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Node type (top `max_types` types, else dropped) and language of each sampled token."""
    by_snippet: dict[int, list[str | None]] = {}
    for i in np.unique(index[:, 0]):
        s = snippets[int(i)]
        by_snippet[int(i)] = [n.type for n in align_tokens(s.code, s.lang, encode(loaded, s.code, max_length).offsets)]
    types = np.array([by_snippet[int(i)][int(p)] or "" for i, p in index], dtype=object)
    common = {t for t, _ in Counter(t for t in types if t).most_common(max_types)}
    types = np.where(np.isin(types, list(common)), types, "")
    langs = np.array([snippets[int(i)].lang for i in index[:, 0]], dtype=object)
    return types, langs


def contribution_sample(snippets: Sequence[Snippet], limit: int) -> list[Snippet]:
    """The programs (at most `limit`, spread evenly in corpus order) the FFN contributions are measured on."""
    return list(snippets)[:: max(1, len(snippets) // limit)][:limit]


def contribution_losses(loaded: LoadedModel, sample: Sequence[Snippet], layer: int | None,
                        max_length: int = 512) -> dict[str, float]:
    """Mean next-token loss per language with block `layer`'s FFN silenced (None: nothing silenced)."""
    if layer is None:
        return language_losses(loaded, sample, max_length=max_length)
    with ablated(loaded, {layer: range(loaded.n_neurons)}):
        return language_losses(loaded, sample, max_length=max_length)


def layer_report(loaded: LoadedModel, snippets: Sequence[Snippet], *, tokens_per_snippet: int = 12,
                 contribution: bool = True, contribution_limit: int = 200, max_length: int = 512, seed: int = 0,
                 concept_override: Sequence[int] | None = None, progress: Progress | None = None,
                 states: LayerStates | None = None, losses: Sequence[dict[str, float]] | None = None) -> LayerReport:
    """Compute every per-layer score on a (preferably parallel) corpus: pass the selection side of the
    corpus split (neuro/split.py), since the concept layers chosen here are then evaluated elsewhere.

    `states` (from `layer_states` with the same `tokens_per_snippet`, `seed` and `max_length`) and
    `losses` (`contribution_losses` with nothing, then each layer, silenced) may come from a resumable
    pass; otherwise they are computed here. `progress` counts program forwards and probed layers."""
    sample = contribution_sample(snippets, contribution_limit) if contribution else []
    total = len(snippets) + loaded.n_layers + (loaded.n_layers + 1) * len(sample)
    if states is None:
        states = layer_states(loaded, snippets, tokens_per_snippet=tokens_per_snippet, seed=seed,
                              max_length=max_length, progress=progress and (lambda d, _t: progress(d, total)))
    done = len(snippets)
    if progress:
        progress(done, total)
    langs = [s.lang for s in snippets]
    types, token_langs = _syntax_labels(loaded, snippets, states.token_index, max_length) \
        if states.tokens is not None and len(states.token_index) else (np.array([]), np.array([]))
    rows, pair_rows = [], []
    for layer in range(loaded.n_layers):
        pooled = states.pooled[:, layer]
        row = {"layer": layer, "lang_id_acc": probe_accuracy(pooled, langs, seed=seed)}
        pairs = alignment_by_pair(pooled, snippets)
        for (a, b), p in pairs.items():
            pair_rows.append({"layer": layer, "query_lang": a, "candidate_lang": b, "accuracy": p.accuracy,
                              "mrr": p.mrr, "cka": p.cka, "n": p.n})
        row["align_acc"] = float(np.mean([p.accuracy for p in pairs.values()])) if pairs else float("nan")
        row["align_mrr"] = float(np.mean([p.mrr for p in pairs.values()])) if pairs else float("nan")
        row["align_cka"] = float(np.mean([p.cka for p in pairs.values()])) if pairs else float("nan")
        if len(types):
            keep = types != ""
            row["syntax_acc"] = probe_accuracy(states.tokens[keep, layer], types[keep], folds=3, seed=seed)
            for lang in dict.fromkeys(langs):
                sel = keep & (token_langs == lang)
                row[f"syntax_acc_{lang}"] = probe_accuracy(states.tokens[sel, layer], types[sel], folds=3, seed=seed)
        rows.append(row)
        done += 1
        if progress:
            progress(done, total)
    scores = pd.DataFrame(rows)
    if contribution:
        if losses is None:
            losses = []
            for layer in [None, *range(loaded.n_layers)]:
                losses.append(contribution_losses(loaded, sample, layer, max_length))
                done += len(sample)
                if progress:
                    progress(done, total)
        base = losses[0]
        scores["contribution"] = [float(np.mean([after[k] - base[k] for k in base])) for after in losses[1:]]
    if scores["align_mrr"].isna().all():  # no language pair shares two tasks: nothing to align
        middle = loaded.n_layers // 2
        choice = ConceptChoice([middle], f"No language pair shares two tasks in these {len(snippets)} programs, so "
                                         f"cross-language alignment cannot be measured: the middle layer ({middle}) "
                                         "stands in for the concept layer.")
    else:
        choice = choose_concept_layers(scores["lang_id_acc"].to_numpy(), scores["align_mrr"].to_numpy())
    concept, rule = choice.layers, choice.rule
    if concept_override:
        concept, rule = sorted(int(x) for x in concept_override), "Chosen by the user (override)."
    meta = {"snippets": len(snippets), "tokens_sampled": int(len(types)), "suggested_concept_layers": choice.layers,
            "n_layers": loaded.n_layers}
    return LayerReport(scores, pd.DataFrame(pair_rows), concept, rule, meta)


LAYERS_VERSION = 2  # 2: token positions sampled per program (resumable in chunks)


def _resumable_states(loaded: LoadedModel, snippets: Sequence[Snippet], key: str, store: Store, *,
                      tokens_per_snippet: int, seed: int, max_length: int, progress: Progress | None) -> LayerStates:
    """`layer_states` in chunks of programs kept in the cache (neuro.resume) until the report is saved."""
    def chunk(lo: int, hi: int, chunk_progress: Progress | None) -> Entry:
        part = layer_states(loaded, snippets[lo:hi], tokens_per_snippet=tokens_per_snippet, seed=seed,
                            max_length=max_length, progress=chunk_progress)
        arrays = {"pooled": part.pooled}
        if part.tokens is not None:
            arrays.update(tokens=part.tokens, token_index=part.token_index + np.array([lo, 0]))
        return Entry(arrays=arrays)

    parts = [p.arrays for p in chunked_rows(store, LAYERS_KIND, key, snippets, chunk, progress=progress)]
    if not tokens_per_snippet:
        return LayerStates(np.concatenate([p["pooled"] for p in parts]), None, None)
    return LayerStates(*(np.concatenate([p[name] for p in parts]) for name in ("pooled", "tokens", "token_index")))


def _resumable_losses(loaded: LoadedModel, sample: Sequence[Snippet], key: str, store: Store, *, max_length: int,
                      progress: Progress | None) -> list[dict[str, float]]:
    """`contribution_losses` for nothing and then each layer silenced, each kept in the cache when done."""
    layers = [None, *range(loaded.n_layers)]
    steps = [make_key("contribution", result=key, silenced=layer, sample=corpus_hash(sample)) for layer in layers]

    def step(index: int) -> Entry:
        entry = Entry(meta={"losses": contribution_losses(loaded, sample, layers[index], max_length)})
        if progress:
            progress(index + 1, len(layers))
        return entry

    entries = resumable_steps(store, LAYERS_KIND, key, steps, step,
                              loaded=progress and (lambda index: progress(index + 1, len(layers))))
    return [e.meta["losses"] for e in entries]


def cached_layer_report(loaded: LoadedModel, snippets: Sequence[Snippet], *, store: Store | None = None,
                        progress: Progress | None = None, compute: bool = True, **params) -> LayerReport | None:
    """`layer_report` through the cache (None when not cached and `compute` is False). `snippets`: the
    selection side of the corpus split, or a `CorpusSplit` (its selection side is used).

    Its passes over the model (the states of every program, one loss pass per silenced layer) are
    resumable: a killed or cancelled computation keeps its finished chunks and the next one resumes."""
    from .embeddings import POOLED_VERSION

    snippets = list(getattr(snippets, "selection", snippets))
    store = store or Store()
    key = make_key(LAYERS_KIND, model=loaded.identity, corpus=corpus_hash(snippets), pooled=POOLED_VERSION,
                   version=LAYERS_VERSION, **params)
    entry = store.load(LAYERS_KIND, key)
    if entry is None:
        if not compute:
            return None
        options = dict(tokens_per_snippet=12, contribution=True, contribution_limit=200, max_length=512, seed=0)
        options.update(params)
        sample = contribution_sample(snippets, options["contribution_limit"]) if options["contribution"] else []
        n, n_layers = len(snippets), loaded.n_layers
        total = n + n_layers + (n_layers + 1) * len(sample)
        states = _resumable_states(loaded, snippets, key, store, tokens_per_snippet=options["tokens_per_snippet"],
                                   seed=options["seed"], max_length=options["max_length"],
                                   progress=progress and (lambda d, _t: progress(d, total)))
        passes = (n_layers + 1) * len(sample)  # then the loss passes, then the probes (one per layer)
        losses = _resumable_losses(loaded, sample, key, store, max_length=options["max_length"],
                                   progress=progress and (lambda d, _t: progress(n + d * len(sample), total))
                                   ) if sample else None
        probes = progress and (lambda d, _t: progress(passes + d, total) if d > n else None)
        report = layer_report(loaded, snippets, progress=probes, states=states, losses=losses, **params)
        entry = Entry(tables={"scores": report.scores, "pairs": report.pairs},
                      meta={"concept_layers": report.concept_layers, "rule": report.rule, "meta": report.meta})
        if store.try_save(LAYERS_KIND, key, entry) is not None:
            drop_chunks(store, LAYERS_KIND, key)
            remember_model(loaded, store.root)
    return LayerReport(entry.tables["scores"], entry.tables["pairs"], list(entry.meta["concept_layers"]),
                       entry.meta["rule"], entry.meta["meta"])


def concept_layers(loaded: LoadedModel, snippets: Sequence[Snippet], store: Store | None = None) -> list[int]:
    """The concept layers of a model on a corpus (cached): the default layers for clone detection
    embeddings and for concept-layer-guided adaptation. `snippets`: the selection side of the corpus
    split, or a `CorpusSplit` (its selection side is used), never the programs the layers are evaluated on."""
    snippets = getattr(snippets, "selection", snippets)
    full = cached_layer_report(loaded, snippets, store=store, compute=False)  # the page's report, if any
    return (full or cached_layer_report(loaded, snippets, store=store, contribution=False)).concept_layers


def default_concept_layer(loaded: LoadedModel, snippets: Sequence[Snippet], store: Store | None = None) -> int:
    """One layer for embeddings: the middle of the concept layers (chosen on the selection side)."""
    layers = concept_layers(loaded, snippets, store)
    return layers[len(layers) // 2]
