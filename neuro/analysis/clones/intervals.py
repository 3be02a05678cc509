"""Uncertainty of clone retrieval: a task-level bootstrap of MAP@R and Recall@1, and paired differences
between methods.

Each evaluation query contributes one value (its AP@R, or its hit@1); MAP@R and Recall@1 are their means.
The queries of one task (the same function in every language) are not independent, so the bootstrap
resamples tasks with all their queries (`neuro.analysis.uncertainty.grouped_mean_bootstrap`). A
difference between two methods is the mean of per-query differences, resampled the same way, so the pairs
stay paired; a difference whose interval covers 0 is "indistinguishable on this corpus".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from neuro.analysis.uncertainty import CONFIDENCE, DEFAULT_RESAMPLES, Interval, grouped_mean_bootstrap

METRICS = {"map_at_r": "ap", "recall_at_1": "hit"}  # metric -> the per-query column it averages
LABELS = {"map_at_r": "MAP@R", "recall_at_1": "Recall@1"}
INDISTINGUISHABLE = "indistinguishable on this corpus"


def bootstrap_settings(n_resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> dict:
    return {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}


def interval(values: Sequence[float], tasks: Sequence, **bootstrap) -> Interval:
    """Mean of per-query `values` with its CI, the queries of a task resampled together."""
    return grouped_mean_bootstrap(np.asarray(values, dtype=np.float64), list(tasks), unit="task", **bootstrap)


def _fields(iv: Interval) -> dict:
    return {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "confidence": iv.confidence,
            "tasks": iv.units, "resamples": iv.resamples}


def metric_intervals(queries: pd.DataFrame, by: Sequence[str] = ("method", "layer"), **bootstrap) -> pd.DataFrame:
    """One row per group of `by`, setting and metric: estimate (= the table's MAP@R or Recall@1), low, high,
    confidence, tasks (units resampled), resamples. `queries`: `query_scores` rows with the `by` columns."""
    rows = []
    for keys, group in queries.groupby([*by, "setting"], sort=False):
        for metric, column in METRICS.items():
            iv = interval(group[column], group.task, **bootstrap)
            rows.append({**dict(zip([*by, "setting"], keys)), "metric": metric, **_fields(iv)})
    return pd.DataFrame(rows, columns=[*by, "setting", "metric", "estimate", "low", "high", "confidence", "tasks",
                                       "resamples"])


def verdict(iv: Interval, first: str, second: str) -> str:
    if iv.covers_zero:
        return INDISTINGUISHABLE
    return f"{first} higher" if iv.estimate > 0 else f"{second} higher"


def paired_differences(queries: pd.DataFrame, comparisons: Sequence[tuple[str, str]], **bootstrap) -> pd.DataFrame:
    """For each (first, second) pair of methods, per setting and metric: the mean of per-query differences
    first - second with its task-bootstrap CI, whether the CI covers 0, and the verdict. `queries`:
    `query_scores` rows with a `method` column (one row per method, setting and query)."""
    rows = []
    for first, second in comparisons:
        a = queries[queries.method == first].set_index(["setting", "query"])
        b = queries[queries.method == second].set_index(["setting", "query"])
        joined = a.merge(b[list(METRICS.values())], left_index=True, right_index=True, how="inner",
                         suffixes=("", "_second"))  # not join: its rsuffix is deprecated in pandas 3
        for setting, group in joined.groupby(level="setting", sort=False):
            for metric, column in METRICS.items():
                iv = interval(group[column] - group[f"{column}_second"], group.task, **bootstrap)
                rows.append({"comparison": f"{first} minus {second}", "first": first, "second": second,
                             "setting": setting, "metric": metric, **_fields(iv), "covers_zero": iv.covers_zero,
                             "verdict": verdict(iv, first, second)})
    return pd.DataFrame(rows, columns=["comparison", "first", "second", "setting", "metric", "estimate", "low",
                                       "high", "confidence", "tasks", "resamples", "covers_zero", "verdict"])


def ci_text(estimate: float, low: float, high: float, digits: int = 3, signed: bool = False) -> str:
    """"0.530 [0.420, 0.650]" (signed: "-0.008 [-0.051, +0.039]")."""
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{f.format(estimate)} [{f.format(low)}, {f.format(high)}]"
