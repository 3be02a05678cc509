"""What an ablation shows, with its uncertainty: effects in nats with task-bootstrap intervals, p-values
against controls matched on importance and uniform ones, and the universal set's evenness over languages.

From an `AblationResult` (each evaluation program's loss, unablated and under every ablated set):

- effect: a language group's mean loss change on its own language (the universal group: the mean over
  languages of each language's mean change), with a 95 % interval from resampling evaluation tasks
  (the same function in several languages moves together; programs where no task is shared).
- selectivity: own-language change minus the mean change of the other languages, with its interval.
- controls: the same statistic for each control draw (matched: same layer and score decile; uniform:
  same layer), their mean and sd, and the Monte Carlo p-value the draws can support,
  (1 + draws at least as extreme) / (1 + draws): two-sided for groups chosen by PLS or activation
  probability (whose sign is not known in advance), one-sided "greater" for attribution-chosen groups
  (attribution predicts a loss rise). Holm-corrected across the language groups (the universal group is
  a family of its own). The own effect tests importance beyond the matched controls' (the selected
  neurons are the top of their decile, so it need not mean language); selectivity against the draws'
  selectivity (`p_selectivity`) compares it with neurons of like importance; a large effect spread at random
  over languages still beats near-silent controls there, so the test of language specificity is
  `p_labels`: the group's selectivity against the evaluation programs' language labels permuted within
  tasks (no extra forward pass), Holm-corrected across languages.
- evenness (universal): min over languages / mean over languages of the loss rise, with an interval,
  beside the top-mean control's (the same number of neurons per layer with the highest mean score that
  are neither universal nor specific) and the paired difference. Meaningful where the mean rise is > 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import pandas as pd

from neuro.analysis.uncertainty import (
    DEFAULT_RESAMPLES,
    Interval,
    holm,
    monte_carlo_p,
    ratio_of_sums,
    task_bootstrap,
    unit_sums,
)
from neuro.instrument.ablation import AblationResult

UNIVERSAL = "universal"


def alternative_for(selected_by: str) -> str:
    """The direction a group's effect is predicted in: attribution predicts a loss rise; PLS (|a * g|) and
    activation probability say nothing about the sign."""
    return "greater" if selected_by == "attribution" else "two-sided"


@dataclass(frozen=True)
class ControlComparison:
    """One kind of control for one group: its draws' statistic (mean, sd), the p-value they support and the
    Holm-corrected one."""

    kind: str
    draws: int
    mean: float
    sd: float
    p: float
    p_holm: float
    alternative: str
    selectivity_mean: float = math.nan
    p_selectivity: float = math.nan       # the group's selectivity against the draws' selectivity
    p_selectivity_holm: float = math.nan

    @property
    def p_floor(self) -> float:
        """The smallest p-value these draws can give."""
        return (2.0 if self.alternative == "two-sided" else 1.0) / (1 + self.draws) if self.draws else math.nan

    def summary(self) -> dict:
        return {"draws": self.draws, "mean": self.mean, "sd": self.sd, "p": self.p, "p_holm": self.p_holm,
                "p_floor": self.p_floor, "alternative": self.alternative, "selectivity_mean": self.selectivity_mean,
                "p_selectivity": self.p_selectivity, "p_selectivity_holm": self.p_selectivity_holm}


@dataclass(frozen=True)
class GroupEffect:
    group: str
    neurons: int
    statistic: str                      # what `effect` and the controls measure
    effect: Interval
    selectivity: Interval | None
    controls: dict[str, ControlComparison]
    by_language: dict[str, float]
    evenness: Interval | None = None
    p_labels: float = math.nan          # selectivity against language labels permuted within tasks
    p_labels_holm: float = math.nan
    label_permutations: int = 0

    def summary(self) -> dict:
        return {"neurons": self.neurons, "statistic": self.statistic, "effect": self.effect.summary(),
                "selectivity": self.selectivity.summary() if self.selectivity else None,
                "selectivity_label_permutation": {"p": self.p_labels, "p_holm": self.p_labels_holm,
                                                  "permutations": self.label_permutations},
                "evenness": self.evenness.summary() if self.evenness else None,
                "by_language": self.by_language, "controls": {k: c.summary() for k, c in self.controls.items()}}


@dataclass(frozen=True)
class TopMeanControl:
    """The universal set's importance-matched control, ablated once, and the universal set's evenness minus its."""

    neurons: int
    effect: Interval
    evenness: Interval
    evenness_difference: Interval      # universal minus this control, paired over the same tasks
    by_language: dict[str, float]

    def summary(self) -> dict:
        return {"neurons": self.neurons, "effect": self.effect.summary(), "evenness": self.evenness.summary(),
                "evenness_difference": self.evenness_difference.summary(), "by_language": self.by_language}


@dataclass(frozen=True)
class AblationEffects:
    groups: dict[str, GroupEffect]
    unit: str
    units: int
    alternative: str
    draws: dict[str, int]
    resamples: int
    top_mean: TopMeanControl | None = None
    languages: list[str] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """One row per group: effect [CI], selectivity [CI], each control's mean and p (raw, Holm), evenness."""
        rows = {}
        for name, g in self.groups.items():
            row = {"neurons": g.neurons, "effect": g.effect.estimate, "effect_low": g.effect.low,
                   "effect_high": g.effect.high,
                   "selectivity": g.selectivity.estimate if g.selectivity else math.nan,
                   "selectivity_low": g.selectivity.low if g.selectivity else math.nan,
                   "selectivity_high": g.selectivity.high if g.selectivity else math.nan,
                   "p_labels": g.p_labels, "p_labels_holm": g.p_labels_holm}
            for kind, c in g.controls.items():
                row |= {f"{kind}_mean": c.mean, f"{kind}_sd": c.sd, f"{kind}_draws": c.draws,
                        f"p_{kind}": c.p, f"p_{kind}_holm": c.p_holm, f"p_{kind}_selectivity": c.p_selectivity}
            if g.evenness is not None:
                row |= {"evenness": g.evenness.estimate, "evenness_low": g.evenness.low,
                        "evenness_high": g.evenness.high}
            rows[name] = row
        return pd.DataFrame.from_dict(rows, orient="index")

    def summary(self) -> dict:
        return {"unit": self.unit, "units": self.units, "alternative": self.alternative, "draws": self.draws,
                "resamples": self.resamples, "groups": {k: g.summary() for k, g in self.groups.items()},
                "top_mean_control": self.top_mean.summary() if self.top_mean else None}

    def text(self) -> str:
        """A plain table: per group effect [CI], control means, p-values (with draws), selectivity [CI]."""
        kinds = [k for k, n in self.draws.items() if n]
        lines = [f"effects in nats, 95 % intervals over {self.units} evaluation {self.unit}s; p-values "
                 f"{self.alternative}, " + ", ".join(f"{k}: {self.draws[k]} draws" for k in kinds)
                 + " (Holm across languages in brackets)"]
        for name, g in self.groups.items():
            parts = [f"{name:<11} {g.neurons:>4} neurons  effect {g.effect.text(4)}"]
            for kind in kinds:
                c = g.controls[kind]
                parts.append(f"{kind} {c.mean:+.4f} p={c.p:.3g} ({c.p_holm:.3g})")
            if g.selectivity is not None:
                parts.append(f"selectivity {g.selectivity.text(4)} p labels={g.p_labels:.3g} ({g.p_labels_holm:.3g}, "
                             f"{g.label_permutations} permutations)")
            if g.evenness is not None:
                parts.append(f"evenness {g.evenness.text(2)}")
            lines.append("  ".join(parts))
        if self.top_mean is not None:
            t = self.top_mean
            lines.append(f"universal's top-mean control ({t.neurons} neurons): effect {t.effect.text(4)}  "
                         f"evenness {t.evenness.text(2)}; universal minus control {t.evenness_difference.text(2)}")
        return "\n".join(lines)


class _Boot(TypedDict):
    """The resampling arguments every interval of one ablation shares."""

    unit: str
    n_resamples: int
    seed: int


class _Resampler:
    """Per-language mean changes of any set of conditions for a resample of units (vectorized)."""

    def __init__(self, result: AblationResult, rows: list[int]):
        langs = result.programs["lang"].to_numpy()
        self.languages = result.languages
        n, k = len(langs), len(self.languages)
        values = np.full((n, len(rows) * k), np.nan)
        for r, row in enumerate(rows):
            change = result.changes(row)
            for j, lang in enumerate(self.languages):
                mask = langs == lang
                values[mask, r * k + j] = change[mask]
        self.sums, self.counts, names = unit_sums(values, list(result.programs["unit"]))
        self.units, self.k = len(names), k

    def means(self, idx: np.ndarray, r: int = 0) -> np.ndarray:
        """(..., languages) mean change of condition `r` of this resampler."""
        return ratio_of_sums(self.sums, self.counts, idx)[..., r * self.k:(r + 1) * self.k]

    def per_condition(self, idx: np.ndarray) -> np.ndarray:
        """(..., conditions, languages) mean change of every condition."""
        means = ratio_of_sums(self.sums, self.counts, idx)
        return means.reshape(means.shape[:-1] + (-1, self.k))


def _evenness(means: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return means.min(axis=-1) / means.mean(axis=-1)


def _statistic(means: np.ndarray, languages: list[str], group: str) -> np.ndarray:
    """A group's own-language change (the universal group: the mean over languages)."""
    if group in languages:
        return means[..., languages.index(group)]
    return means.mean(axis=-1)


def _selectivity(means: np.ndarray, languages: list[str], group: str) -> np.ndarray:
    j = languages.index(group)
    return means[..., j] - np.delete(means, j, axis=-1).mean(axis=-1)


def label_permutations(langs: np.ndarray, units: np.ndarray, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """(permutations, programs) language labels shuffled within each unit (a task's programs swap languages;
    where every unit is one program, across all programs)."""
    out = np.empty((permutations, len(langs)), dtype=langs.dtype)
    codes = np.unique(units, return_inverse=True)[1].reshape(-1)
    if len(np.unique(codes)) == len(codes):
        for i in range(permutations):
            out[i] = rng.permutation(langs)
        return out
    members = [np.flatnonzero(codes == c) for c in np.unique(codes)]
    for i in range(permutations):
        row = langs.copy()
        for idx in members:
            row[idx] = langs[rng.permutation(idx)]
        out[i] = row
    return out


def _selectivity_of_labels(change: np.ndarray, labels: np.ndarray, languages: list[str], group: str) -> np.ndarray:
    """Selectivity of one ablation's per-program changes under each row of `labels` (permutations, programs)."""
    means = np.stack([np.where(labels == lang, change, 0.0).sum(-1) / np.maximum((labels == lang).sum(-1), 1)
                      for lang in languages], axis=-1)
    return _selectivity(means, languages, group)


LABEL_PERMUTATIONS = 999


def ablation_effects(result: AblationResult, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     permutations: int = LABEL_PERMUTATIONS) -> AblationEffects:
    """Effects, intervals and p-values of an ablation (see the module docstring)."""
    alternative = alternative_for(result.selected_by)
    languages = result.languages
    all_units = np.arange(len(dict.fromkeys(result.programs["unit"])))
    kinds = ("matched", "uniform")
    raw: dict[str, dict[str, tuple]] = {k: {} for k in kinds}
    partial = {}
    boot = _Boot(unit=result.unit, n_resamples=n_resamples, seed=seed)
    langs = result.programs["lang"].to_numpy().astype(str)
    labels = label_permutations(langs, result.programs["unit"].to_numpy().astype(str), permutations,
                                np.random.default_rng(seed)) if permutations and len(languages) > 1 else None
    p_labels = {}
    for group, row in zip(result.groups, result.rows("selected")):
        res = _Resampler(result, [int(row)])
        own = task_bootstrap(lambda idx: _statistic(res.means(idx), languages, group), res.units, **boot)
        sel = task_bootstrap(lambda idx: _selectivity(res.means(idx), languages, group), res.units, **boot) \
            if group in languages and len(languages) > 1 else None
        even = task_bootstrap(lambda idx: _evenness(res.means(idx)), res.units, **boot) if group == UNIVERSAL else None
        for kind in kinds:
            draws = result.rows(kind, group)
            means = _Resampler(result, [int(r) for r in draws]).per_condition(all_units) if len(draws) \
                else np.zeros((0, len(languages)))
            values = _statistic(means, languages, group)
            sels = _selectivity(means, languages, group) if sel is not None else np.array([])
            p = monte_carlo_p(own.estimate, values, alternative) if len(values) else math.nan
            p_sel = monte_carlo_p(sel.estimate, sels, alternative) if sel is not None and len(sels) else math.nan
            raw[kind][group] = (values, p, sels, p_sel)
        if sel is not None and labels is not None:
            null = _selectivity_of_labels(result.changes(int(row)), labels, languages, group)
            p_labels[group] = monte_carlo_p(sel.estimate, null, alternative)
        by_lang = dict(zip(languages, res.means(all_units).tolist()))
        partial[group] = (int(result.sizes[group]), own, sel, even, by_lang)
    adjusted = {kind: holm({g: v[1] for g, v in raw[kind].items() if g != UNIVERSAL}) for kind in kinds}
    adjusted_sel = {kind: holm({g: v[3] for g, v in raw[kind].items() if g != UNIVERSAL}) for kind in kinds}
    adjusted_labels = holm(p_labels)
    groups = {}
    for group, (size, own, sel, even, by_lang) in partial.items():
        controls = {}
        for kind in kinds:
            values, p, sels, p_sel = raw[kind][group]
            controls[kind] = ControlComparison(
                kind, len(values), float(values.mean()) if len(values) else math.nan,
                float(values.std(ddof=1)) if len(values) > 1 else math.nan, p,
                adjusted[kind].get(group, p), alternative, float(sels.mean()) if len(sels) else math.nan,
                p_sel, adjusted_sel[kind].get(group, p_sel))
        statistic = "own-language loss change" if group in languages else "mean loss change over languages"
        groups[group] = GroupEffect(group, size, statistic, own, sel, controls, by_lang, even,
                                    p_labels.get(group, math.nan), adjusted_labels.get(group, math.nan),
                                    permutations if group in p_labels else 0)
    top = None
    top_rows = result.rows("top_mean", UNIVERSAL)
    if len(top_rows) and UNIVERSAL in result.groups:
        both = _Resampler(result, [int(result.rows("selected", UNIVERSAL)[0]), int(top_rows[0])])
        effect = task_bootstrap(lambda idx: both.means(idx, 1).mean(axis=-1), both.units, **boot)
        even = task_bootstrap(lambda idx: _evenness(both.means(idx, 1)), both.units, **boot)
        diff = task_bootstrap(lambda idx: _evenness(both.means(idx, 0)) - _evenness(both.means(idx, 1)),
                              both.units, **boot)
        size = int((result.neurons["condition"] == int(top_rows[0])).sum())
        top = TopMeanControl(size, effect, even, diff, dict(zip(languages, both.means(all_units, 1).tolist())))
    return AblationEffects(groups, result.unit, len(all_units), alternative,
                           {k: result.draws(k) for k in kinds}, n_resamples, top, languages)
