"""Neuron selection from corpus statistics: language-specific and universal neurons, LAPE, language relations.

Everything here is pure numpy/pandas on a `CorpusStats` (no model): selection for a whole model
(Llama-3.1-8B: 32 x 14336 neurons) is vectorized and runs in well under a second, so views can
recompute it when the user moves a slider instead of caching every parameter combination.

Two methods return the same typed result, `NeuronSelection`:

- "pls" (the paper, Yin et al.): PLS(n, L) = mean over samples of language L of |a * dLoss/da|.
  A neuron is *specific* to its top language when (1) its max PLS is at least the candidate threshold
  (a quantile of all neurons' max PLS, default the 90th percentile, since the paper does not publish
  its value), (2) its top PLS is at least `ratio` x its second (default 1.5), and (3) it ranks in the
  top `top_fraction` (default 1 %) of all neurons by max PLS. It is *universal* when its min PLS over
  languages is at least the same threshold, it ranks in the top `top_fraction` of all neurons by that
  min, and it is not specific.
- "lape" (Tang et al., 2024, "Language-Specific Neurons"): entropy of the activation probability
  normalized over languages; see `select_lape` for the exact variant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import dendrogram, linkage
from scipy.spatial.distance import squareform

from neuro.choices import NORMALIZATIONS, NeuronClass, Normalization, Score, SelectionMethod, choices
from neuro.instrument.statistics import CorpusStats
from neuro.params import check, param

CLASSES = choices(NeuronClass)

_SPECIFIC, _UNIVERSAL, _OTHER = 0, 1, 2

SCORES = choices(Score)


@dataclass(frozen=True)
class SelectionParams:
    """PLS selection parameters (the design's three numbers; part of any cache key or UI caption).

    candidate_quantile: the candidate threshold is this quantile of all neurons' max-over-languages
        PLS (the paper does not publish its value; 0.90 = the 90th percentile).
    ratio: the top language's PLS must be at least `ratio` x the second language's.
    top_fraction: the neuron must rank in this top share of ALL neurons by max PLS (for universal
        neurons: by min PLS).
    normalize: "none" compares raw PLS, as the paper defines it. PLS scales with how hard a language is
        for the model (larger loss, larger gradients) and differs several-fold between layers (the first
        layer's is largest in small models), so one hard language or one layer can claim every
        selection. "language" divides each language's PLS by its mean over all neurons;
        "language_layer" (default) by its mean over each layer's neurons, so selection reflects
        specialization rather than scale.
    score: "pls" (the paper) ranks by the token mean of |a * dL/da|; "attribution" by -(1/T) sum_t
        a_t * dL/da_t, the first-order estimate of the change in a program's mean loss when the neuron
        is zeroed (signs kept: a neuron whose removal lowers a language's loss scores negative there).
        PLS's absolute value credits such neurons too, so PLS-selected neurons need not hurt their
        language when ablated. See neuro.instrument.statistics.CorpusStats for the exact sums.
    """

    candidate_quantile: float = param(
        0.90, low=0.0, high=1.0, shown=(0.5, 0.999), step=0.005, label="Candidate threshold quantile",
        help="candidate threshold = this quantile of all neurons' max PLS; the paper does not publish its "
             "threshold, so the default is the 90th percentile")
    ratio: float = param(1.5, low=1.0, shown=(1.0, 5.0), step=0.1, label="Specificity ratio (top / second)",
                         help="specificity ratio: the top language's PLS over the second's")
    top_fraction: float = param(0.01, low=0.0, exclusive_low=True, high=1.0, shown=(0.001, 0.10), step=0.001,
                                fmt="%.3f", label="Top fraction by max PLS",
                                help="top share of all neurons by max PLS (a larger fraction selects more neurons)")
    normalize: Normalization = "language_layer"
    score: Score = "pls"

    def __post_init__(self):
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        check(self)


@dataclass(frozen=True)
class LapeParams:
    """LAPE parameters, named after Tang et al.'s code (`identify.py`) with its defaults.

    top_fraction: share of ALL neurons kept, the lowest-entropy ones (their `top_rate`).
    filter_quantile: a neuron is eligible only when some language's activation probability exceeds
        this quantile of all (neuron, language) activation probabilities (their `filter_rate`).
    activation_quantile: a kept neuron is assigned to every language whose activation probability
        exceeds this quantile of all (neuron, language) probabilities (their `activation_bar_ratio`).
    """

    top_fraction: float = param(0.01, low=0.0, exclusive_low=True, high=1.0, shown=(0.001, 0.10), step=0.001,
                                fmt="%.3f", label="Top fraction (lowest entropy)",
                                help="share of all neurons kept, the lowest-entropy ones")
    filter_quantile: float = param(0.95, low=0.0, high=1.0, shown=(0.5, 0.999), step=0.005,
                                   label="Eligibility quantile",
                                   help="eligible when some language's activation probability exceeds this "
                                        "quantile of all (neuron, language) probabilities")
    activation_quantile: float = param(0.95, low=0.0, high=1.0, shown=(0.5, 0.999), step=0.005,
                                       label="Activation bar quantile",
                                       help="a kept neuron belongs to every language whose activation probability "
                                            "exceeds this quantile of all (neuron, language) probabilities")

    def __post_init__(self):
        check(self)


@dataclass(frozen=True, eq=False)
class NeuronSelection:
    """One row per neuron of the model, classified "specific" / "universal" / "other".

    frame columns: layer, neuron, <value>_<lang> per language (value = "pls" or "prob"), max_<value>,
    min_<value>, top_lang, second_lang, ratio (top / second; inf when second is 0 and top > 0, 1 when
    both are 0), cls, langs (comma-separated languages the neuron is specific to; "" otherwise),
    method; LAPE adds entropy. `threshold` is the candidate threshold (PLS) or the activation bar (LAPE).
    """

    method: SelectionMethod
    languages: list[str]
    n_layers: int
    n_neurons: int
    threshold: float
    params: SelectionParams | LapeParams
    frame: pd.DataFrame = field(repr=False)
    extra: dict = field(default_factory=dict)

    @property
    def value_name(self) -> str:
        return "pls" if self.method == "pls" else "prob"

    @property
    def score_label(self) -> str:
        """The score the value columns hold, for titles and axes (the columns keep one name per method)."""
        if self.method != "pls":
            return "activation probability"
        return "attribution" if getattr(self.params, "score", "pls") == "attribution" else "PLS"

    @property
    def score_note(self) -> str:
        """What the score's values mean, signs included: said beside every chart of them."""
        if self.method != "pls":
            return "Share of a language's tokens on which the neuron is active (0 to 1)."
        scale = {"none": "raw", "language": "divided by each language's mean magnitude",
                 "language_layer": "divided by each language's mean magnitude in the layer"}[self._pls_params.normalize]
        if self.score_label == "attribution":
            return ("Attribution: the first-order estimate of how much zeroing the neuron would raise the mean "
                    f"next-token loss ({scale}). Positive: the neuron helps that language (zeroing it hurts); "
                    "negative: zeroing it would lower the loss.")
        return f"PLS: mean |activation x gradient| ({scale}); never negative."

    @property
    def _pls_params(self) -> SelectionParams:
        """The params of a "pls" selection (every constructor pairs the method with its params' type)."""
        assert isinstance(self.params, SelectionParams), "a 'pls' selection has SelectionParams"
        return self.params

    @property
    def value_columns(self) -> list[str]:
        return [f"{self.value_name}_{lang}" for lang in self.languages]

    @property
    def total(self) -> int:
        return self.n_layers * self.n_neurons

    def selected(self) -> pd.DataFrame:
        """Specific and universal rows."""
        return self.frame[~self._cls_mask("other")]

    def _cls_mask(self, name: str) -> np.ndarray:
        cls = self.frame["cls"].cat
        return cls.codes.to_numpy() == list(cls.categories).index(name)

    def _membership(self, lang: str) -> np.ndarray:
        """Boolean per row: specific to `lang` (a LAPE neuron may be specific to several languages)."""
        if lang not in self.languages:
            raise ValueError(f"unknown language {lang!r}; known: {self.languages}")
        langs = self.frame["langs"].cat
        hit = np.array([lang in c.split(",") for c in langs.categories], dtype=bool)
        codes = langs.codes.to_numpy()
        return (codes >= 0) & hit[np.maximum(codes, 0)] & self._cls_mask("specific")

    def _mask(self, key: str) -> np.ndarray:
        if key == "universal":
            return self._cls_mask("universal")
        return self._membership(key)

    def counts_by_language(self) -> dict[str, int]:
        """Specific neurons per language, then "universal". A LAPE neuron counts in each of its languages."""
        counts = {lang: int(self._membership(lang).sum()) for lang in self.languages}
        counts["universal"] = int(self._cls_mask("universal").sum())
        return counts

    def counts_by_layer(self) -> pd.DataFrame:
        """Layers x (languages + "universal"): where the selected neurons sit."""
        layer = self.frame["layer"].to_numpy()
        columns = {key: np.bincount(layer[self._mask(key)], minlength=self.n_layers)
                   for key in [*self.languages, "universal"]}
        return pd.DataFrame(columns, index=pd.RangeIndex(self.n_layers, name="layer"))

    def share(self) -> dict[str, float]:
        """Fraction of all neurons in each class (compare: paper reports specific < 0.7 %, universal < 0.9 %)."""
        return {c: float(self._cls_mask(c).sum()) / self.total for c in CLASSES}

    def neurons_for(self, lang: str, as_pairs: bool = False) -> dict[int, np.ndarray] | list[tuple[int, int]]:
        """Neurons specific to `lang` ("universal" for the universal set).

        Default: {layer: sorted neuron indices} for the layers that have any (what ablation and
        neuron-guided fine-tuning consume); `as_pairs`: a list of (layer, neuron).
        """
        rows = self.frame.loc[self._mask(lang), ["layer", "neuron"]].to_numpy()
        if as_pairs:
            return [(int(a), int(b)) for a, b in rows]
        return {int(layer): np.sort(rows[rows[:, 0] == layer, 1]) for layer in np.unique(rows[:, 0])}

    def universal_neurons(self, as_pairs: bool = False) -> dict[int, np.ndarray] | list[tuple[int, int]]:
        return self.neurons_for("universal", as_pairs=as_pairs)

    def specific_index(self, lang: str) -> np.ndarray:
        """Flat indices (layer * n_neurons + neuron) of the neurons specific to `lang`."""
        return np.flatnonzero(self._mask(lang))

    def summary(self) -> dict:
        """JSON-ready summary for the CLI and captions."""
        return {"method": self.method, "languages": list(self.languages), "threshold": float(self.threshold),
                "params": asdict(self.params), "n_layers": self.n_layers, "n_neurons": self.n_neurons,
                "counts": self.counts_by_language(), "share": self.share(),
                **{k: v for k, v in self.extra.items() if isinstance(v, (int, float, str))}}


def _check_scores(scores: np.ndarray, languages: list[str]) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 3:
        raise ValueError(f"scores must be (languages, layers, neurons), got shape {scores.shape}")
    if scores.shape[0] != len(languages):
        raise ValueError(f"{scores.shape[0]} score rows for {len(languages)} languages")
    if len(languages) < 2:
        raise ValueError("neuron selection compares languages: it needs statistics for at least two")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    return scores


def _flat_scores(scores: np.ndarray, languages: list[str]) -> tuple[np.ndarray, int, int]:
    """Checked scores as (languages, layers x neurons), with the number of layers and of neurons."""
    scores = _check_scores(scores, languages)
    _, n_layers, n_neurons = scores.shape
    return scores.reshape(len(languages), -1), n_layers, n_neurons


def _top_two(flat: np.ndarray):
    """Per column of (languages, M): index and value of the largest and second largest (first on ties)."""
    cols = np.arange(flat.shape[1])
    top_i = flat.argmax(axis=0)
    top = flat[top_i, cols]
    rest = flat.copy()
    rest[top_i, cols] = -np.inf
    second_i = rest.argmax(axis=0)
    second = flat[second_i, cols]
    ratio = np.ones_like(top)
    np.divide(top, second, out=ratio, where=second > 0)
    ratio[(second <= 0) & (top > 0)] = np.inf
    return top_i, second_i, top, second, ratio


def _in_top(values: np.ndarray, k: int) -> np.ndarray:
    """Exactly the k largest values (ties at the cut broken by position), in O(n) with a partition."""
    if k >= values.size:
        return np.ones(values.size, dtype=bool)
    kth = np.partition(values, values.size - k)[values.size - k]
    keep = values > kth
    ties = np.flatnonzero(values == kth)[: k - int(keep.sum())]
    keep[ties] = True
    return keep


def top_count(total: int, fraction: float) -> int:
    """How many neurons the top `fraction` of `total` keeps: round(fraction * total), at least one."""
    return max(1, int(round(fraction * total)))


def _frame(method: str, value: str, languages: list[str], flat: np.ndarray, n_neurons: int, top_two: tuple,
           cls: np.ndarray, lang_bits: np.ndarray, extra_columns: dict | None = None) -> pd.DataFrame:
    """The per-neuron table, built from whole arrays (categoricals for strings: no per-row Python)."""
    m = flat.shape[1]
    layer, neuron = np.divmod(np.arange(m, dtype=np.int64), n_neurons)
    top_i, second_i, top, _second, ratio = top_two
    columns: dict = {"layer": layer.astype(np.int32), "neuron": neuron.astype(np.int32)}
    for i, lang in enumerate(languages):
        columns[f"{value}_{lang}"] = flat[i]
    columns[f"max_{value}"] = top
    columns[f"min_{value}"] = flat.min(axis=0)
    columns["top_lang"] = pd.Categorical.from_codes(top_i, languages)
    columns["second_lang"] = pd.Categorical.from_codes(second_i, languages)
    columns["ratio"] = ratio
    columns.update(extra_columns or {})
    columns["cls"] = pd.Categorical.from_codes(cls, list(CLASSES))
    # langs: the bit set of languages a neuron is specific to, named "a,b" through its few unique values
    # (distinct bit sets give distinct names, so the names are valid categories).
    uniq, inverse = np.unique(lang_bits, return_inverse=True)
    names = [",".join(lang for i, lang in enumerate(languages) if int(b) >> i & 1) for b in uniq]
    columns["langs"] = pd.Categorical.from_codes(inverse.reshape(-1), names)
    columns["method"] = pd.Categorical.from_codes(np.zeros(m, dtype=np.int8), [method])
    return pd.DataFrame(columns)


def select_pls_scores(pls: np.ndarray, languages: list[str], params: SelectionParams | None = None) -> NeuronSelection:
    """PLS selection on a raw (languages, layers, neurons) array; see the module docstring for the rules.

    Ties: the top-fraction cut keeps exactly round(top_fraction x neurons) neurons, ties broken by
    position; a neuron whose max (min) PLS is 0 is never specific (universal), whatever the threshold.
    """
    params = params or SelectionParams()
    languages = list(languages)
    flat, n_layers, n_neurons = _flat_scores(pls, languages)
    top_two = _top_two(flat)
    cls, bits, threshold, k = _pls_classes(flat, params, top_two)
    frame = _frame("pls", "pls", languages, flat, n_neurons, top_two, cls, bits)
    return NeuronSelection("pls", languages, n_layers, n_neurons, threshold, params, frame,
                           extra={"top_count": k})


def _pls_classes(flat: np.ndarray, params: SelectionParams, top_two: tuple | None = None):
    """(class per neuron, language bits of the specific ones, candidate threshold, top count) of PLS selection
    on checked (languages, neurons) scores: the rule alone, without the per-neuron table (a permutation null
    runs it hundreds of times)."""
    m = flat.shape[1]
    top_i, _second_i, top, _second, ratio = top_two or _top_two(flat)
    low = flat.min(axis=0)
    threshold = float(np.quantile(top, params.candidate_quantile))
    k = top_count(m, params.top_fraction)

    specific = (top >= threshold) & (top > 0) & (ratio >= params.ratio) & _in_top(top, k)
    universal = (low >= threshold) & (low > 0) & _in_top(low, k) & ~specific

    cls = np.full(m, _OTHER, dtype=np.int8)
    cls[universal] = _UNIVERSAL
    cls[specific] = _SPECIFIC
    bits = np.where(specific, np.left_shift(1, top_i), 0).astype(np.int64)
    return cls, bits, threshold, k


def normalized_pls(pls: np.ndarray, how: Normalization) -> np.ndarray:
    """Scores (languages, layers, neurons) divided by their mean magnitude per language or per
    (language, layer) (for PLS, which is never negative, simply its mean)."""
    if how == "none":
        return pls
    axes = (1, 2) if how == "language" else (2,)
    mean = np.abs(pls).mean(axis=axes, keepdims=True)
    return pls / np.where(mean > 0, mean, 1.0)


def select_pls(stats: CorpusStats, params: SelectionParams | None = None) -> NeuronSelection:
    """Language-specific and universal neurons by PLS (the paper's method; see SelectionParams.normalize)."""
    params = params or SelectionParams()
    return select_pls_scores(normalized_pls(stats.score(params.score), params.normalize), stats.languages, params)


def lape_entropy(prob: np.ndarray) -> np.ndarray:
    """Entropy over languages of the activation probability normalized to a distribution (axis 0).

    A neuron never active in any language has entropy 0 here (as in Tang et al.'s code, which sets
    the NaN distribution to 0); the eligibility filter keeps such neurons out of the selection.
    """
    total = prob.sum(axis=0, keepdims=True)
    dist = np.divide(prob, total, out=np.zeros_like(prob), where=total > 0)
    logs = np.log(dist, out=np.zeros_like(dist), where=dist > 0)
    return -(dist * logs).sum(axis=0)


def select_lape_scores(prob: np.ndarray, languages: list[str], params: LapeParams | None = None) -> NeuronSelection:
    """LAPE (Tang et al., 2024), following their `identify.py`:

    1. p(n, L): activation probability (share of language L's tokens with act_fn(gate) > 0).
    2. H(n): entropy of p(n, .) / sum_L p(n, L).
    3. Eligible: some language has p(n, L) > q_filter, the `filter_quantile` (0.95) quantile of all
       (neuron, language) probabilities flattened together.
    4. Keep the round(top_fraction x neurons) eligible neurons of lowest entropy (ties by position;
       fewer when fewer are eligible).
    5. A kept neuron is specific to every language L with p(n, L) > bar, the `activation_quantile`
       (0.95) quantile of the same flattened probabilities (`threshold` of the result).

    Classes: a kept neuron assigned to some but not all languages is "specific" (`langs` lists them,
    `top_lang` is its most active one); one above the bar in every language is "universal" (Tang has
    no such class; with low entropy it is rare); everything else is "other".
    """
    params = params or LapeParams()
    languages = list(languages)
    flat, n_layers, n_neurons = _flat_scores(prob, languages)
    cls, bits, bar, k, extra = _lape_classes(flat, params)
    frame = _frame("lape", "prob", languages, flat, n_neurons, _top_two(flat), cls, bits,
                   extra_columns={"entropy": extra.pop("entropy")})
    return NeuronSelection("lape", languages, n_layers, n_neurons, bar, params, frame, extra={**extra, "top_count": k})


def _lape_classes(flat: np.ndarray, params: LapeParams):
    """(class per neuron, language bits of the specific ones, activation bar, top count, extra) of LAPE on
    checked (languages, neurons) probabilities, without the per-neuron table."""
    n_langs, m = flat.shape
    entropy = lape_entropy(flat)
    filter_value, bar = (float(q) for q in np.quantile(flat, [params.filter_quantile, params.activation_quantile]))
    eligible = (flat > filter_value).any(axis=0)

    k = top_count(m, params.top_fraction)
    kept = _in_top(np.where(eligible, -entropy, -np.inf), k) & eligible

    above = (flat > bar) & kept
    n_above = above.sum(axis=0)
    bits = (above.astype(np.int64) << np.arange(n_langs, dtype=np.int64)[:, None]).sum(axis=0)
    cls = np.full(m, _OTHER, dtype=np.int8)
    cls[(n_above > 0) & (n_above < n_langs)] = _SPECIFIC
    cls[n_above == n_langs] = _UNIVERSAL
    bits[cls != _SPECIFIC] = 0
    return cls, bits, bar, k, {"entropy": entropy, "filter_value": filter_value, "eligible": int(eligible.sum())}


def select_lape(stats: CorpusStats, params: LapeParams | None = None) -> NeuronSelection:
    """Language-specific neurons by LAPE on activation probabilities (no gradients needed)."""
    return select_lape_scores(stats.activation_probability(), stats.languages, params)


def select_neurons(stats: CorpusStats, method: SelectionMethod = "pls",
                   params: SelectionParams | LapeParams | None = None) -> NeuronSelection:
    """Dispatch by method name ("pls" or "lape")."""
    if method == "pls":
        if params is not None and not isinstance(params, SelectionParams):
            raise TypeError("method 'pls' takes SelectionParams")
        return select_pls(stats, params)
    if method == "lape":
        if params is not None and not isinstance(params, LapeParams):
            raise TypeError("method 'lape' takes LapeParams")
        return select_lape(stats, params)
    raise ValueError(f"unknown selection method {method!r}; use 'pls' or 'lape'")


PERMUTATIONS = 200  # default permutations of a chance level: p-values resolve down to 1/201


SelectionRule = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""scores (languages, layers, neurons) -> (class per neuron, language bits of the specific ones)."""


def selection_rule(method: SelectionMethod, params: SelectionParams | LapeParams | None,
                   n_langs: int) -> tuple[str, SelectionParams | LapeParams, SelectionRule]:
    """(the per-unit score the rule reads, params, rule) where rule(scores (languages, layers, neurons)) gives
    (class per neuron, language bits of the specific ones): the selection without its per-neuron table."""
    if method == "pls":
        params = params or SelectionParams()
        if not isinstance(params, SelectionParams):
            raise TypeError("method 'pls' takes SelectionParams")
        return params.score, params, lambda scores: _pls_classes(
            normalized_pls(scores, params.normalize).reshape(n_langs, -1), params)[:2]
    if method == "lape":
        params = params or LapeParams()
        if not isinstance(params, LapeParams):
            raise TypeError("method 'lape' takes LapeParams")
        return "probability", params, lambda scores: _lape_classes(scores.reshape(n_langs, -1), params)[:2]
    raise ValueError(f"unknown selection method {method!r}; use 'pls' or 'lape'")


def class_counts(cls: np.ndarray, bits: np.ndarray, languages: list[str]) -> dict[str, int]:
    """`counts_by_language` from a rule's classes and language bits."""
    specific = cls == _SPECIFIC
    counts = {lang: int((specific & (bits >> i & 1).astype(bool)).sum()) for i, lang in enumerate(languages)}
    counts["universal"] = int((cls == _UNIVERSAL).sum())
    return counts


def unit_values(stats: CorpusStats, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(per-unit sums as (units, layers x neurons), in their stored dtype (float32: no float64 copy of a
    corpus-sized array), per-unit weights (programs, or tokens for "probability"))."""
    values, weights = stats.unit_values(name)
    return values.reshape(len(values), -1), np.asarray(weights, dtype=np.float64)


def labelled_scores(values: np.ndarray, weights: np.ndarray, labels: np.ndarray, n_langs: int,
                    shape: tuple[int, int]):
    """Per-language scores for each row of `labels` ((rows, units) language index per unit, -1: left out):
    yields one (languages, layers, neurons) float64 array per row, the sums over each language's units
    (one float32 matrix product per batch of rows) divided by their weights."""
    labels = np.atleast_2d(labels)
    n_units, m = values.shape
    batch = max(1, (1 << 24) // max(1, n_langs * m))  # ~64 MB of float32 products at a time
    rows = np.arange(n_langs)
    for lo in range(0, len(labels), batch):
        part = labels[lo: lo + batch]
        onehot = (part[:, None, :] == rows[None, :, None])  # (batch, languages, units)
        sums = (onehot.reshape(-1, n_units).astype(values.dtype) @ values).reshape(len(part), n_langs, m)
        counts = onehot.astype(np.float64) @ weights  # (batch, languages)
        for b in range(len(part)):
            yield (sums[b].astype(np.float64) / np.maximum(counts[b], 1)[:, None]).reshape(n_langs, *shape)


def permuted_labels(unit_lang: np.ndarray, groups: np.ndarray | None, n: int,
                    rng: np.random.Generator) -> np.ndarray:
    """`n` permutations of the units' language labels, (n, units): within each group (a task: every label
    multiset of a group is kept) when `groups` (an integer code per unit) is given, else among all units."""
    unit_lang = np.asarray(unit_lang, dtype=np.int64)
    groups = np.zeros(len(unit_lang), dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    if groups.shape != unit_lang.shape:
        raise ValueError(f"{len(groups)} groups for {len(unit_lang)} units")
    # sorting group + a uniform draw lists each row's units group by group, in random order within a group;
    # the units listed group by group in index order then take those units' labels
    order = np.argsort(groups[None, :] + rng.random((n, len(unit_lang))), axis=1)
    out: np.ndarray = np.empty((n, len(unit_lang)), dtype=np.int64)
    out[:, np.argsort(groups, kind="stable")] = unit_lang[order]
    return out


def unit_groups(stats: CorpusStats, snippets) -> np.ndarray | None:
    """The task of each unit as an integer code, when a stratified permutation applies: every unit is one
    program (not a block, see neuro.instrument.statistics.unit_plan) and some task has programs in two
    languages (a parallel corpus). None otherwise (labels are then permuted among all units)."""
    from neuro.instrument.statistics import unit_plan

    stored = stats.unit_lang
    if stored is None or not stats.has_units() or stats.meta.get("units") != "program":
        return None
    unit_of, unit_lang = unit_plan(snippets, stats.languages, stats.n_layers, stats.n_neurons)
    if len(unit_lang) != len(stored) or not np.array_equal(unit_lang, stored):
        return None
    task = [""] * len(unit_lang)
    for i, u in enumerate(unit_of):
        if u >= 0:
            task[u] = snippets[i].task
    names = {t: j for j, t in enumerate(dict.fromkeys(task))}
    codes = np.array([names[t] for t in task], dtype=np.int64)
    shared = any(len(set(unit_lang[codes == j])) > 1 for j in range(len(names)))
    return codes if shared else None


@dataclass(frozen=True)
class ChanceLevel:
    """What a selection rule gives when the language labels carry no information, per language.

    The units (programs, or blocks of one language's programs) keep their scores and their number per
    language; only the labels are shuffled among them, `permutations` times: within each task when
    `stratified` (a parallel corpus: `strata` tasks, each keeping its own languages), else among all units.
    counts: one row per permutation, one column per language. observed: the real counts. p per language:
    (1 + permutations selecting at least the observed count) / (1 + permutations), Holm-corrected over the
    languages. The universal count has no row here: relabelled languages are exchangeable, so the null of a
    count of neurons high in every language sits at the rule's cap (neuro.analysis.universality tests it).
    """

    method: SelectionMethod
    score: str
    permutations: int
    units: int
    counts: pd.DataFrame
    observed: dict = field(default_factory=dict)
    stratified: bool = False
    strata: int = 1
    seed: int = 0

    @property
    def languages(self) -> list[str]:
        return [c for c in self.counts.columns if c != "universal"]

    @property
    def permutation(self) -> str:
        return f"within each of {self.strata} tasks" if self.stratified else "among all units"

    @property
    def p_floor(self) -> float:
        """The smallest p-value these permutations can support."""
        return 1.0 / (1 + self.permutations)

    def mean(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.counts[self.languages].mean().items()}

    def max(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.counts[self.languages].max().items()}

    def p_values(self) -> dict[str, float]:
        from neuro.analysis.uncertainty import monte_carlo_p

        return {lang: monte_carlo_p(self.observed[lang], self.counts[lang].to_numpy(), "greater")
                if lang in self.observed else math.nan for lang in self.languages}

    def p_holm(self) -> dict[str, float]:
        from neuro.analysis.uncertainty import holm

        return holm(self.p_values())

    def above_chance(self, alpha: float = 0.05) -> dict[str, bool]:
        """Per language: its Holm-corrected p is below `alpha`."""
        return {lang: bool(p < alpha) for lang, p in self.p_holm().items()}

    def summary(self) -> dict:
        return {"method": self.method, "score": self.score, "permutations": self.permutations, "units": self.units,
                "stratified": self.stratified, "strata": self.strata, "permutation": self.permutation,
                "seed": self.seed, "p_floor": self.p_floor, "observed": {k: int(v) for k, v in self.observed.items()},
                "mean": self.mean(), "max": self.max(), "p": self.p_values(), "p_holm": self.p_holm()}


def chance_level(stats: CorpusStats, method: SelectionMethod = "pls",
                 params: SelectionParams | LapeParams | None = None, permutations: int = PERMUTATIONS,
                 seed: int = 0, groups: np.ndarray | None = None) -> ChanceLevel:
    """Counts of language-specific neurons under `permutations` random relabellings of the units' languages,
    within each group of `groups` (a task code per unit, `unit_groups`) when given, and the real counts."""
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    languages = list(stats.languages)
    name, params, rule = selection_rule(method, params, len(languages))
    values, weights = unit_values(stats, name)
    unit_lang = stats.unit_lang
    assert unit_lang is not None, "unit_values raised for statistics without units"
    shape = (stats.n_layers, stats.n_neurons)
    labels = permuted_labels(unit_lang, groups, permutations, np.random.default_rng(seed))
    rows = []
    for scores in labelled_scores(values, weights, labels, len(languages), shape):
        counts = class_counts(*rule(_check_scores(scores, languages)), languages)
        rows.append({lang: counts[lang] for lang in languages})
    observed = select_neurons(stats, method, params).counts_by_language()
    strata = len(np.unique(groups)) if groups is not None else 1
    return ChanceLevel(method, name, permutations, len(unit_lang), pd.DataFrame(rows, columns=languages),
                       {lang: observed[lang] for lang in languages}, groups is not None, strata, seed)


def overlap(a: NeuronSelection, b: NeuronSelection) -> pd.DataFrame:
    """Per language, agreement of two selections' specific sets: |A & B|, |A|, |B|, Jaccard.

    Jaccard is NaN when both sets are empty. Both selections must describe the same model shape.
    """
    if (a.n_layers, a.n_neurons) != (b.n_layers, b.n_neurons):
        raise ValueError("the two selections describe models of different shapes")
    rows = []
    for lang in [x for x in a.languages if x in b.languages]:
        sa, sb = a._membership(lang), b._membership(lang)
        inter, union = int((sa & sb).sum()), int((sa | sb).sum())
        rows.append({"language": lang, "intersection": inter, "a": int(sa.sum()), "b": int(sb.sum()),
                     "jaccard": inter / union if union else math.nan})
    return pd.DataFrame(rows, columns=["language", "intersection", "a", "b", "jaccard"]).set_index("language")


def language_vectors(stats: CorpusStats, candidates_only: bool = False,
                     params: SelectionParams | None = None) -> np.ndarray:
    """PLS per language flattened over (layer, neuron): (languages, neurons); optionally only candidates.

    Candidates (max PLS >= the candidate threshold) drop the mass of near-silent neurons that make all
    languages look alike.
    """
    params = params or SelectionParams()
    pls = _check_scores(normalized_pls(stats.pls(), params.normalize), list(stats.languages))
    flat = pls.reshape(pls.shape[0], -1)
    if candidates_only:
        top = flat.max(axis=0)
        flat = flat[:, top >= np.quantile(top, params.candidate_quantile)]
    return flat


def similarity_matrix(vectors: np.ndarray, languages: list[str], method: str = "cosine") -> pd.DataFrame:
    """Languages x languages similarity of per-language vectors: cosine or Spearman rank correlation.

    A constant (e.g. all-zero) vector has no defined similarity: its off-diagonal entries are 0.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if method == "cosine":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
        sim = unit @ unit.T
    elif method == "spearman":
        from scipy.stats import rankdata  # here, not at the top: scipy.stats takes ~1 s to import (the Overview's path)

        ranks = rankdata(vectors, axis=1)
        centred = ranks - ranks.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        unit = np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 0)
        sim = unit @ unit.T
    else:
        raise ValueError(f"unknown similarity {method!r}; use 'cosine' or 'spearman'")
    sim = np.clip((sim + sim.T) / 2, -1.0, 1.0)
    np.fill_diagonal(sim, 1.0)
    return pd.DataFrame(sim, index=list(languages), columns=list(languages))


def language_similarity(stats: CorpusStats, method: str = "cosine", candidates_only: bool = False,
                        params: SelectionParams | None = None) -> pd.DataFrame:
    """How alike the languages' PLS profiles are (languages x languages)."""
    return similarity_matrix(language_vectors(stats, candidates_only, params), list(stats.languages), method)


@dataclass(frozen=True, eq=False)
class LanguageTree:
    """Average-linkage clustering of languages on 1 - similarity, ready to draw.

    linkage: scipy's (languages - 1, 4) matrix; leaves: languages in dendrogram order; icoord/dcoord:
    scipy's dendrogram line coordinates (leaf i sits at x = 5 + 10 i, y = merge distance).
    """

    languages: list[str]
    linkage: np.ndarray
    leaves: list[str]
    icoord: list[list[float]]
    dcoord: list[list[float]]

    def segments(self) -> pd.DataFrame:
        """Line segments (x, y, x2, y2) of the dendrogram, for an Altair `mark_rule`."""
        rows = []
        for xs, ys in zip(self.icoord, self.dcoord, strict=True):
            for j in range(3):
                rows.append({"x": xs[j], "y": ys[j], "x2": xs[j + 1], "y2": ys[j + 1]})
        return pd.DataFrame(rows, columns=["x", "y", "x2", "y2"])

    def leaf_positions(self) -> pd.DataFrame:
        """Where to write each language's name under the tree."""
        return pd.DataFrame({"language": self.leaves, "x": [5.0 + 10.0 * i for i in range(len(self.leaves))],
                             "y": 0.0})


def cluster_languages(similarity: pd.DataFrame) -> LanguageTree:
    """Agglomerative clustering (average linkage) on distance = 1 - similarity."""
    languages = list(similarity.index)
    if len(languages) < 2:
        raise ValueError("clustering needs at least two languages")
    dist = 1.0 - similarity.loc[languages, languages].to_numpy(dtype=np.float64)
    dist = np.clip((dist + dist.T) / 2, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    z = linkage(squareform(dist, checks=False), method="average")
    tree = dendrogram(z, labels=languages, no_plot=True)
    return LanguageTree(languages, z, list(tree["ivl"]), [list(map(float, x)) for x in tree["icoord"]],
                        [list(map(float, y)) for y in tree["dcoord"]])


@dataclass(frozen=True, eq=False)
class LanguageRelations:
    similarity: pd.DataFrame
    tree: LanguageTree
    method: str
    candidates_only: bool


def language_relations(stats: CorpusStats, method: str = "cosine", candidates_only: bool = False,
                       params: SelectionParams | None = None) -> LanguageRelations:
    """Similarity matrix and dendrogram of the languages' PLS profiles in one call."""
    sim = language_similarity(stats, method, candidates_only, params)
    return LanguageRelations(sim, cluster_languages(sim), method, candidates_only)
