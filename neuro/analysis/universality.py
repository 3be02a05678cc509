"""Universal neurons tested for what they claim: stable across halves of the corpus, and more than "the most
important neurons overall".

A label permutation cannot test universality (relabelled languages are exchangeable, so every candidate
stays high in every pseudo-language and the null sits at the rule's cap). What can be tested:

- split-half stability: each language's programs are split into two disjoint halves (by task on a parallel
  corpus, so one task's programs sit in one half), the same rule selects on each half, and the Jaccard of
  the two halves' universal sets stands beside the Jaccard of as many top neurons by mean score over the
  languages (the "just important" baseline), over several random halvings;
- an importance-matched control (`universal_control`): per layer, as many neurons as the universal set
  holds there, the highest by mean score over the languages that are neither universal nor specific; its
  own stability, and how many universal neurons are also among the top neurons by mean score;
- the count as a function of the top fraction, beside the cap the rule allows.

Pure numpy on a `CorpusStats` with per-unit scores (neuro.instrument.statistics.unit_plan).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from neuro.analysis.selectivity import (
    LapeParams,
    NeuronSelection,
    SelectionParams,
    _check_scores,
    _in_top,
    labelled_scores,
    normalized_pls,
    select_lape_scores,
    select_pls_scores,
    selection_rule,
    top_count,
    unit_values,
)
from neuro.analysis.uncertainty import Spread
from neuro.choices import SelectionMethod
from neuro.instrument.ablation import top_mean_control, top_mean_mask
from neuro.instrument.statistics import CorpusStats

HALVINGS = 20
FRACTIONS = (0.0025, 0.005, 0.01, 0.02, 0.05)


def _rule_scores(scores: np.ndarray, method: str, params) -> np.ndarray:
    """The scores the rule ranks by (PLS / attribution after its normalisation; LAPE's probabilities)."""
    return normalized_pls(scores, params.normalize) if method == "pls" else scores


def _select(scores: np.ndarray, languages: list[str], method: str, params) -> NeuronSelection:
    if method == "pls":
        return select_pls_scores(normalized_pls(scores, params.normalize), languages, params)
    return select_lape_scores(scores, languages, params)


def _mean_score(selection: NeuronSelection, stats_or_scores: CorpusStats | np.ndarray | None) -> np.ndarray:
    """Mean over languages of the scores the selection ranked by, flat over (layer, neuron)."""
    if stats_or_scores is None:
        return selection.frame[selection.value_columns].to_numpy(dtype=np.float64).mean(axis=1)
    if isinstance(stats_or_scores, CorpusStats):
        params = selection.params
        name = params.score if isinstance(params, SelectionParams) else "probability"
        scores = _rule_scores(stats_or_scores.score(name), selection.method, selection.params)
    else:
        scores = np.asarray(stats_or_scores, dtype=np.float64)
    scores = _check_scores(scores, list(selection.languages))
    if scores.shape[1:] != (selection.n_layers, selection.n_neurons):
        raise ValueError(f"scores of shape {scores.shape} for a selection of {selection.n_layers} x "
                         f"{selection.n_neurons} neurons")
    return scores.reshape(len(selection.languages), -1).mean(axis=0)


def universal_control(selection: NeuronSelection,
                      stats_or_scores: CorpusStats | np.ndarray | None = None) -> dict[int, np.ndarray]:
    """The importance-matched control of a selection's universal neurons: per layer, as many neurons as the
    universal set has there, the highest by mean score over the languages among those neither universal nor
    specific. {layer: sorted neuron indices}, like `NeuronSelection.neurons_for`.

    stats_or_scores: the statistics the selection was made on (their score, normalised as the selection's
    params say) or a (languages, layers, neurons) array already on the rule's scale; None: the selection's own
    table (the same scores)."""
    return top_mean_control(selection, _mean_score(selection, stats_or_scores))


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else math.nan


def half_labels(unit_lang: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """(2, units) language labels of the units in each half (-1: in the other half). With `groups` (a task
    code per unit) whole tasks go to one half, half of the tasks each; else each language's units are split
    in two."""
    unit_lang = np.asarray(unit_lang, dtype=np.int64)
    first: np.ndarray = np.zeros(len(unit_lang), dtype=bool)
    if groups is not None:
        tasks = np.unique(groups)
        chosen = rng.permutation(tasks)[: len(tasks) // 2]
        first = np.isin(groups, chosen)
    else:
        for lang in np.unique(unit_lang):
            rows = rng.permutation(np.flatnonzero(unit_lang == lang))
            first[rows[: len(rows) // 2]] = True
    return np.stack([np.where(first, unit_lang, -1), np.where(first, -1, unit_lang)])


@dataclass(frozen=True)
class UniversalityReport:
    """What the universal neurons of a selection are, beyond a count.

    count: universal neurons on all programs; top_by_mean_overlap: how many of them are also among the
    `count` top neurons by mean score over the languages; control_per_layer: the matched control's size per
    layer (= the universal set's). Split-half Jaccards, one per halving (NaN where both halves select none):
    `universal`, `top_by_mean` (as many top neurons by mean score as each half's universal count: the
    "just important" baseline) and `control` (each half's matched control). neuron_stability: per universal
    neuron "layer:neuron", the share of the 2 x halvings halves that select it as universal. by_fraction: the
    count per top fraction beside the cap (round(fraction x neurons)) it may reach. halves_by: "task" (a
    parallel corpus: whole tasks per half) or "unit" (each language's units split in two).
    """

    method: str
    score: str
    params: dict
    total: int
    count: int
    top_by_mean_overlap: int
    control_per_layer: dict
    halvings: int
    halves_by: str
    seed: int
    universal: list = field(default_factory=list)
    top_by_mean: list = field(default_factory=list)
    control: list = field(default_factory=list)
    half_counts: list = field(default_factory=list)
    neuron_stability: dict = field(default_factory=dict)
    by_fraction: list = field(default_factory=list)

    def spread(self, name: str) -> Spread:
        """Mean, sd and t interval of one series of split-half Jaccards ("universal", "top_by_mean", "control")."""
        return Spread.of(getattr(self, name), unit="halving")

    def summary(self) -> dict:
        out = asdict(self)
        out["stability"] = {name: self.spread(name).summary() for name in ("universal", "top_by_mean", "control")}
        return out

    @classmethod
    def from_summary(cls, data: dict) -> UniversalityReport:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})

    def text(self) -> str:
        u, b, c = (self.spread(n) for n in ("universal", "top_by_mean", "control"))
        return (f"{self.count} universal; {self.top_by_mean_overlap} of them also among the top {self.count} by mean "
                f"score; split-half Jaccard over {self.halvings} halvings (by {self.halves_by}): universal "
                f"{u.text(2)}, top-by-mean {b.text(2)}, matched control {c.text(2)}")


def universality(stats: CorpusStats, method: SelectionMethod = "pls",
                 params: SelectionParams | LapeParams | None = None, *, groups: np.ndarray | None = None,
                 halvings: int = HALVINGS, seed: int = 0, fractions: Sequence[float] = FRACTIONS) -> UniversalityReport:
    """Split-half stability, the importance-matched control and the count by top fraction of a rule's
    universal neurons (see the module docstring). groups: a task code per unit (neuro.analysis.selectivity.
    unit_groups) to halve by task; None halves each language's units."""
    if halvings < 1:
        raise ValueError(f"halvings must be >= 1, got {halvings}")
    languages = list(stats.languages)
    name, params, _rule = selection_rule(method, params, len(languages))
    full_scores = stats.score(name)
    full = _select(full_scores, languages, method, params)
    universal_mask = full._cls_mask("universal")
    count = int(universal_mask.sum())
    mean = _mean_score(full, _rule_scores(full_scores, method, params))
    overlap = int((universal_mask & _in_top(mean, count)).sum()) if count else 0
    control = top_mean_mask(full, mean)
    layer: np.ndarray = np.arange(full.total) // full.n_neurons
    control_per_layer = {str(int(k)): int(v) for k, v in zip(*np.unique(layer[control], return_counts=True))}

    values, weights = unit_values(stats, name)
    unit_lang = stats.unit_lang
    assert unit_lang is not None, "unit_values raised for statistics without units"
    rng = np.random.default_rng(seed)
    jac_u, jac_top, jac_ctrl, half_counts = [], [], [], []
    hits: np.ndarray = np.zeros(full.total, dtype=np.int64)
    for _ in range(halvings):
        labels = half_labels(unit_lang, groups, rng)
        sets = []
        for scores in labelled_scores(values, weights, labels, len(languages), (stats.n_layers, stats.n_neurons)):
            half = _select(scores, languages, method, params)
            u = half._cls_mask("universal")
            half_mean = _mean_score(half, None)
            sets.append((u, _in_top(half_mean, int(u.sum())) if u.any() else np.zeros_like(u),
                         top_mean_mask(half, half_mean)))
            hits += u
        (ua, ta, ca), (ub, tb, cb) = sets
        jac_u.append(_jaccard(ua, ub))
        jac_top.append(_jaccard(ta, tb))
        jac_ctrl.append(_jaccard(ca, cb))
        half_counts.append([int(ua.sum()), int(ub.sum())])
    stability = {f"{int(i) // full.n_neurons}:{int(i) % full.n_neurons}": float(hits[i] / (2 * halvings))
                 for i in np.flatnonzero(universal_mask)}

    by_fraction = []
    for fraction in fractions:
        sel = _select(full_scores, languages, method, replace(params, top_fraction=float(fraction)))
        by_fraction.append({"top_fraction": float(fraction), "universal": sel.counts_by_language()["universal"],
                            "cap": top_count(full.total, float(fraction))})
    return UniversalityReport(method, name, asdict(params), full.total, count, overlap, control_per_layer, halvings,
                              "task" if groups is not None else "unit", seed, jac_u, jac_top, jac_ctrl, half_counts,
                              stability, by_fraction)
