"""Per-layer scores: language-specific syntax versus language-agnostic semantics, and concept layers.

For each block l, from hidden states captured in one pass (pooled per program, and sampled tokens):
(a) language-identification probe accuracy on pooled states (cross-validated logistic regression);
(b) cross-language alignment of parallel programs (same task, other language): retrieval accuracy@1,
    MRR, and linear CKA, averaged over language pairs;
(c) syntax probe accuracy: token states -> tree-sitter node type (pooled over languages and per language);
(d) contribution: the change of mean next-token loss when the block's FFN is silenced.
Concept layers: where (b) peaks while (a) has fallen from its early-layer high (see `choose_concept_layers`).

The probes are cross-validated by program (`probe_folds`): the folds are groups of programs, and on a
parallel corpus groups of tasks, so no program's tokens (and no task's programs in other languages) are on
both sides of a fold; a token-level split lets a probe score by recognising the program.

(b) is measured after the centring clone search applies (neuro/analysis/embeddings.py; by default each
program minus its language's mean, the means fitted on these programs, which are the selection side), so
the layer the rule picks is the layer where *centred* cosine retrieval peaks, the quantity clone search
uses. The alignment under every centring is kept (`LayerReport.alignment`) with the concept layers each
would give (`LayerReport.concept_layers_for`). CKA centres each language's rows itself, so it is the same
under every centring.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from neuro.analysis.embeddings import CENTERINGS, DEFAULT_CENTERING, Centering
from neuro.choices import CenterChoice
from neuro.code.corpus import Snippet
from neuro.code.syntax import align_tokens
from neuro.instrument.ablation import ablated, language_losses
from neuro.instrument.states import DEFAULT_MAX_TOKENS, LayerStates, StateArray, layer_states, token_sample
from neuro.instrument.tokens import encode, truncation
from neuro.model.loading import LoadedModel
from neuro.progress import Progress

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


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
    # sklearn is imported where a probe is fitted: reading cached layer scores (the Overview) skips its ~0.4 s
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, solver="newton-cg", max_iter=300))


def probe_groups(snippets: Sequence[Snippet]) -> np.ndarray:
    """Cross-validation group of each program: its task on a parallel corpus (every program has a task and
    some task has several programs: the same function in several languages), else the program itself."""
    tasks = [s.task for s in snippets]
    if all(tasks) and len(set(tasks)) < len(tasks):
        return np.asarray(tasks, dtype=object)
    return np.arange(len(snippets))


def probe_folds(labels: Sequence | np.ndarray, groups: Sequence | np.ndarray | None = None, folds: int = 5,
                seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs for a probe: with `groups` (one per sample, e.g. the program or task a token
    comes from) a group never has samples on both sides (sklearn's StratifiedGroupKFold: group k-fold that
    also keeps each label's share similar across folds); without, stratified k-fold over samples. At most
    as many folds as the rarest label has samples and as there are groups; folds whose training side has a
    single label are left out. Empty when no fold can be formed."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y: np.ndarray = np.asarray(labels)
    counts = Counter(y.tolist())
    k = min(folds, min(counts.values())) if counts else 0
    g: np.ndarray | None = None
    if groups is not None:
        g = np.asarray(groups)
        if len(g) != len(y):
            raise ValueError("one group per sample")
        k = min(k, len(set(g.tolist())))
    if len(counts) < 2 or k < 2:
        return []
    x = np.zeros((len(y), 1))
    if g is None:
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y)
    else:
        splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x, y, g)
    return [(train, test) for train, test in splits if len(test) and len(set(y[train].tolist())) >= 2]


def probe_accuracy(features: np.ndarray, labels: Sequence | np.ndarray, folds: int = 5, seed: int = 0,
                   groups: Sequence | np.ndarray | None = None) -> float:
    """Cross-validated accuracy of a standardized logistic-regression probe (nan if too few labels), over
    `probe_folds` (by `groups` when given: a group's samples are never on both sides)."""
    splits = probe_folds(labels, groups, folds, seed)
    if not splits:
        return float("nan")
    from sklearn.model_selection import cross_val_score

    return float(cross_val_score(make_probe(), features, np.asarray(labels), cv=splits).mean())


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


def centred(pooled: np.ndarray, langs: Sequence[str], how: CenterChoice = DEFAULT_CENTERING) -> np.ndarray:
    """Rows minus what clone search subtracts before cosine (`Centering`, fitted on these rows), not
    rescaled (cosine rescales; CKA must not)."""
    centering = Centering.fit(pooled, langs, how)
    out = np.array(pooled, dtype=np.result_type(np.asarray(pooled).dtype, np.float32))
    labels = np.asarray(langs)
    for lang in dict.fromkeys(labels.tolist()):
        mean = centering.mean_for(lang)
        if mean is not None:
            out[labels == lang] -= mean
    return out


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


@dataclass(frozen=True)
class ConceptChoice:
    layers: list[int]
    rule: str


def choose_concept_layers(lang_id: Sequence[float], alignment: Sequence[float], near_peak: float = 0.9,
                          drop: float = 0.02, center: CenterChoice | None = None) -> ConceptChoice:
    """Concept layers: layers whose cross-language alignment is within `near_peak` of its range from
    the peak, preferring those where language-ID accuracy has fallen at least `drop` below its
    early-layer high (max over the first half). Falls back to alignment alone when it never falls.
    `center` names the centring the alignment was measured after (for the rule's text)."""
    a = np.asarray(lang_id, dtype=float)
    b = np.asarray(alignment, dtype=float)
    n = len(b)
    lo, hi = float(np.nanmin(b)), float(np.nanmax(b))
    near = [int(i) for i in np.flatnonzero(b >= lo + near_peak * (hi - lo))] if hi > lo else [int(np.nanargmax(b))]
    early_high = float(np.nanmax(a[: max(1, n // 2)]))
    fallen = [i for i in near if a[i] <= early_high - drop]
    how = "" if center is None else f", measured after centring as clone search does: {CENTERINGS[center]}"
    rule = (f"Concept layers = layers whose cross-language alignment (MRR{how}) is within "
            f"{100 * (1 - near_peak):.0f} % of its range below the peak (layer {int(np.nanargmax(b))}), among those "
            f"where language-ID accuracy has fallen at least {drop:.2f} below its early-layer high ({early_high:.3f}).")
    if fallen:
        return ConceptChoice(fallen, rule)
    return ConceptChoice(near, rule + " Language ID never falls that far near the peak here, so the choice "
                                      "rests on alignment alone.")


@dataclass
class LayerReport:
    """Every per-layer score, the language-pair alignment per layer, and the chosen concept layers."""

    scores: pd.DataFrame                      # one row per layer (alignment after meta["center"]'s centring)
    pairs: pd.DataFrame                       # layer, query_lang, candidate_lang, accuracy, mrr, cka, n
    concept_layers: list[int]
    rule: str
    meta: dict = field(default_factory=dict)
    alignment: pd.DataFrame = field(default_factory=pd.DataFrame)  # layer, center, align_acc, align_mrr

    def concept_layers_for(self, center: str = DEFAULT_CENTERING) -> list[int]:
        """The concept layers the rule picks when alignment is measured after `center`'s centring (the
        centring clone search will use); a user's override whatever the centring."""
        if self.meta.get("overridden"):
            return list(self.concept_layers)
        by_center = self.meta.get("concept_layers_by_center") or {}
        return [int(x) for x in by_center.get(center, self.concept_layers)]

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
                "layers": self.scores.round(4).to_dict(orient="records"),
                "alignment_by_center": self.alignment.round(4).to_dict(orient="records")}


def concept_stability(choices: Mapping[int, Sequence[int]]) -> dict:
    """How stable the concept layers are across corpus splits: `choices` maps each split seed to the layers
    chosen on its selection side. Per layer, in how many splits (and what share) it is chosen; the middle
    layer (the one clone search embeds at) per split and its counts; the distinct choices; and the mean
    Jaccard overlap of the choices over pairs of splits (1: every split chose the same layers)."""
    n = len(choices)
    sets = [set(int(x) for x in layers) for layers in choices.values()]
    counts = Counter(layer for chosen in sets for layer in chosen)
    middles = {int(seed): sorted(int(x) for x in layers)[len(layers) // 2]
               for seed, layers in choices.items() if layers}
    pairs = list(combinations(sets, 2))
    jaccard = float(np.mean([len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs])) if pairs else float("nan")
    distinct = Counter(tuple(sorted(chosen)) for chosen in sets)
    return {"splits": n, "chosen_in": {int(k): int(v) for k, v in sorted(counts.items())},
            "share": {int(k): round(v / n, 4) for k, v in sorted(counts.items())},
            "in_every_split": sorted(int(k) for k, v in counts.items() if v == n),
            "middle_layer": middles, "middle_layer_counts": {int(k): int(v) for k, v in
                                                              sorted(Counter(middles.values()).items())},
            "distinct_choices": [{"layers": list(k), "splits": int(v)} for k, v in distinct.most_common()],
            "mean_pairwise_jaccard": jaccard}


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
                 max_tokens: int | None = DEFAULT_MAX_TOKENS, concept_override: Sequence[int] | None = None,
                 center: CenterChoice = DEFAULT_CENTERING, progress: Progress | None = None,
                 states: LayerStates[StateArray] | None = None,
                 losses: Sequence[dict[str, float]] | None = None) -> LayerReport:
    """Compute every per-layer score on a (preferably parallel) corpus: pass the selection side of the
    corpus split (neuro/code/split.py), since the concept layers chosen here are then evaluated elsewhere.

    The syntax probe reads at most `max_tokens` sampled token states per layer (`token_sample`: a reservoir
    of the `tokens_per_snippet` sampled per program, whatever the corpus size; None: all of them).

    `states` (from `layer_states` with `token_sample`'s positions for the same `tokens_per_snippet`, `seed`,
    `max_length` and `max_tokens`) and `losses` (`contribution_losses` with nothing, then each layer,
    silenced) may come from a resumable pass; otherwise they are computed here. Its arrays may be 3-D or
    layered (anything that reads one layer as `a[:, layer]`): the scores are computed a layer at a time.
    `progress` counts program forwards and probed layers. `center`: the centring the alignment scores (and so
    the concept layers) are measured after, as clone search centres (the means fitted on these programs); the
    alignment and concept layers under every centring are kept too. The probes' folds are groups of programs
    (of tasks on a parallel corpus: `probe_groups`)."""
    if center not in CENTERINGS:
        raise ValueError(f"centring must be one of {', '.join(CENTERINGS)}, not {center!r}")
    sample = contribution_sample(snippets, contribution_limit) if contribution else []
    total = len(snippets) + loaded.n_layers + (loaded.n_layers + 1) * len(sample)
    if states is None:
        picks = token_sample(loaded, snippets, tokens_per_snippet=tokens_per_snippet, seed=seed,
                             max_length=max_length, max_tokens=max_tokens)
        states = layer_states(loaded, snippets, tokens_per_snippet=tokens_per_snippet, seed=seed, picks=picks,
                              max_length=max_length, progress=progress and (lambda d, _t: progress(d, total)))
    done = len(snippets)
    if progress:
        progress(done, total)
    langs = [s.lang for s in snippets]
    token_states, token_index = states.tokens, states.token_index
    types, token_langs = _syntax_labels(loaded, snippets, token_index, max_length) \
        if token_states is not None and token_index is not None and len(token_index) else (np.array([]), np.array([]))
    groups = probe_groups(snippets)
    token_groups = groups[token_index[:, 0]] if len(types) and token_index is not None else np.array([])
    rows, pair_rows, align_rows = [], [], []
    for layer in range(loaded.n_layers):
        pooled = states.pooled[:, layer]
        row = {"layer": layer, "lang_id_acc": probe_accuracy(pooled, langs, seed=seed, groups=groups)}
        for how in CENTERINGS:
            aligned = alignment_by_pair(centred(pooled, langs, how), snippets)
            align_rows.append({"layer": layer, "center": how,
                               "align_acc": float(np.mean([p.accuracy for p in aligned.values()])) if aligned
                               else float("nan"),
                               "align_mrr": float(np.mean([p.mrr for p in aligned.values()])) if aligned
                               else float("nan")})
            if how == center:
                pairs = aligned
        for (a, b), p in pairs.items():
            pair_rows.append({"layer": layer, "query_lang": a, "candidate_lang": b, "accuracy": p.accuracy,
                              "mrr": p.mrr, "cka": p.cka, "n": p.n})
        row["align_acc"] = float(np.mean([p.accuracy for p in pairs.values()])) if pairs else float("nan")
        row["align_mrr"] = float(np.mean([p.mrr for p in pairs.values()])) if pairs else float("nan")
        row["align_cka"] = float(np.mean([p.cka for p in pairs.values()])) if pairs else float("nan")
        if len(types) and token_states is not None:
            keep, tokens = types != "", token_states[:, layer]
            row["syntax_acc"] = probe_accuracy(tokens[keep], types[keep], folds=3, seed=seed,
                                               groups=token_groups[keep])
            for lang in dict.fromkeys(langs):
                sel = keep & (token_langs == lang)
                row[f"syntax_acc_{lang}"] = probe_accuracy(tokens[sel], types[sel], folds=3, seed=seed,
                                                           groups=token_groups[sel])
            del tokens
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
    alignment = pd.DataFrame(align_rows, columns=["layer", "center", "align_acc", "align_mrr"])
    if scores["align_mrr"].isna().all():  # no language pair shares two tasks: nothing to align
        middle = loaded.n_layers // 2
        choices = {how: ConceptChoice([middle], f"No language pair shares two tasks in these {len(snippets)} "
                                                f"programs, so cross-language alignment cannot be measured: the middle "
                                                f"layer ({middle}) stands in for the concept layer.")
                   for how in CENTERINGS}
    else:
        choices = {how: choose_concept_layers(scores["lang_id_acc"].to_numpy(),
                                              alignment[alignment.center == how].align_mrr.to_numpy(), center=how)
                   for how in CENTERINGS}
    choice = choices[center]
    concept, rule = choice.layers, choice.rule
    if concept_override:
        concept, rule = sorted(int(x) for x in concept_override), "Chosen by the user (override)."
    unit = "task" if groups.dtype == object else "program"
    meta = {"snippets": len(snippets), "tokens_sampled": int(len(types)), "suggested_concept_layers": choice.layers,
            "n_layers": loaded.n_layers, "truncated_programs": truncation(loaded, snippets, max_length).summary(),
            "center": center, "concept_layers_by_center": {how: c.layers for how, c in choices.items()},
            "overridden": bool(concept_override),
            "probe_folds": f"grouped by {unit}: no {unit}'s programs or tokens on both sides of a fold "
                           "(StratifiedGroupKFold)"}
    return LayerReport(scores, pd.DataFrame(pair_rows), concept, rule, meta, alignment)
