"""Uncertainty for every evaluation number: task-level bootstrap intervals, Monte Carlo p-values, Holm's
correction and the spread over seeds.

One module so every analysis states its uncertainty the same way:

- `task_bootstrap` resamples whole *units* (tasks on a parallel corpus, else programs) with replacement,
  through scipy.stats.bootstrap, so programs of one task (the same function in five languages, or the
  queries of one clone group) move together and a paired difference keeps its pairs.
- `monte_carlo_p` is the p-value a set of random draws can support: (1 + draws at least as extreme) /
  (1 + draws), never below 1 / (1 + draws).
- `holm` corrects a family of p-values (e.g. one per language) for multiple comparisons.
- `Spread` summarises repeated runs (seeds): mean, sd and a t interval of the mean.

Findings call a difference whose interval covers 0 "indistinguishable on this corpus" (`Interval.covers_zero`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

Values = Sequence[float] | np.ndarray  # one value per item: a list or a 1-D array (2-D: a column per value)

DEFAULT_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap (or t) confidence interval.

    units: how many independent units the interval resampled (e.g. 20 evaluation tasks) and `unit` what
    they were; resamples: bootstrap replicates (0 for a t interval)."""

    estimate: float
    low: float
    high: float
    confidence: float = CONFIDENCE
    units: int = 0
    unit: str = "task"
    resamples: int = 0

    @property
    def covers_zero(self) -> bool:
        """The interval does not exclude 0 (a difference is indistinguishable from none on this corpus)."""
        return not (self.low > 0 or self.high < 0)

    def summary(self) -> dict:
        return asdict(self)

    def text(self, digits: int = 3) -> str:
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def task_bootstrap(statistic: Callable[[np.ndarray], np.ndarray], n_units: int, *, unit: str = "task",
                   n_resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0,
                   method: str = "percentile") -> Interval:
    """Percentile (or BCa) interval of `statistic` over units resampled with replacement.

    statistic(idx) takes an integer array of unit indices of shape (..., k) (k units drawn, repeats
    allowed) and returns the statistic for each row, shape (...): it is called once with all units
    (the estimate) and, vectorized, with the resamples. A resample where the statistic is undefined
    (NaN, e.g. a language with no program drawn) is left out of the interval.
    """
    from scipy.stats import bootstrap  # here: scipy.stats takes ~1 s to import

    if n_units < 1:
        raise ValueError("a bootstrap needs at least one unit")
    units = np.arange(n_units)
    estimate = float(np.asarray(statistic(units)))
    if n_units < 2:
        return Interval(estimate, math.nan, math.nan, confidence, n_units, unit, 0)

    def vectorized(idx, axis=-1):
        idx = np.moveaxis(np.asarray(idx), axis, -1).astype(np.int64)
        return np.asarray(statistic(idx), dtype=np.float64)

    rng = np.random.default_rng(seed)
    if method == "percentile":  # drawn here so resamples where the statistic is undefined can be left out
        draws = vectorized(rng.integers(0, n_units, size=(n_resamples, n_units)))
        draws = draws[np.isfinite(draws)]
        if not len(draws):
            return Interval(estimate, math.nan, math.nan, confidence, n_units, unit, 0)
        tail = (1 - confidence) / 2
        low, high = np.quantile(draws, [tail, 1 - tail])
        return Interval(estimate, float(low), float(high), confidence, n_units, unit, int(len(draws)))
    result = bootstrap((units,), vectorized, vectorized=True, n_resamples=n_resamples, confidence_level=confidence,
                       method=method, rng=rng)
    ci = result.confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high), confidence, n_units, unit, n_resamples)


def grouped_mean_bootstrap(values: Values, units: Sequence, *, unit: str = "task", **kwargs) -> Interval:
    """Interval of the mean of `values` (one per item, e.g. a query's average precision) when the items of
    one unit (`units`, e.g. each item's task) are resampled together. The estimate is the plain mean."""
    sums, counts, names = unit_sums(values, units)
    return task_bootstrap(lambda idx: ratio_of_sums(sums, counts, idx), len(names), unit=unit, **kwargs)


def unit_sums(values: Values, units: Sequence) -> tuple[np.ndarray, np.ndarray, list]:
    """Per unit (in first-seen order): the sum of its items' values (one column per value column) and its
    item count. values: (items,) or (items, columns)."""
    array = np.asarray(values, dtype=np.float64)
    names = list(dict.fromkeys(units))
    index = {u: i for i, u in enumerate(names)}
    codes = np.array([index[u] for u in units], dtype=np.int64)
    shape = (len(names),) + array.shape[1:]
    sums, counts = np.zeros(shape), np.zeros(shape)
    np.add.at(sums, codes, np.nan_to_num(array))
    np.add.at(counts, codes, np.isfinite(array).astype(np.float64))
    return sums, counts, names


def ratio_of_sums(sums: np.ndarray, counts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean of the items of the units `idx` (..., k): sum of their sums over sum of their counts (NaN if none),
    one value per column of `sums` when it has columns."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[idx].sum(axis=idx.ndim - 1) / counts[idx].sum(axis=idx.ndim - 1)


def monte_carlo_p(observed: float, draws: Values, alternative: str = "greater") -> float:
    """The p-value of `observed` against random draws under the null: (1 + draws at least as extreme) /
    (1 + draws). "greater" / "less" are one-sided; "two-sided" doubles the smaller tail (capped at 1).

    Its smallest possible value is 1 / (1 + draws): 5 draws cannot support p < 1/6."""
    array = np.asarray(draws, dtype=np.float64)
    array = array[np.isfinite(array)]
    if not len(array) or not np.isfinite(observed):
        return math.nan
    n = len(array)
    upper = (1 + int((array >= observed).sum())) / (1 + n)
    lower = (1 + int((array <= observed).sum())) / (1 + n)
    if alternative == "greater":
        return upper
    if alternative == "less":
        return lower
    if alternative == "two-sided":
        return min(1.0, 2 * min(upper, lower))
    raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values for one family (NaN entries are left out of the family and stay NaN)."""
    finite = sorted(((p, k) for k, p in pvalues.items() if np.isfinite(p)), key=lambda x: x[0])
    m = len(finite)
    adjusted, running = {}, 0.0
    for rank, (p, key) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[key] = running
    return {k: adjusted.get(k, math.nan) for k in pvalues}


@dataclass(frozen=True)
class Spread:
    """Repeated runs of one measurement (e.g. one value per seed): mean, sample sd and a t interval of the mean."""

    values: tuple[float, ...]
    mean: float
    sd: float
    interval: Interval

    @classmethod
    def of(cls, values: Values, confidence: float = CONFIDENCE, unit: str = "seed") -> Spread:
        from scipy.stats import t

        v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
        if not len(v):
            return cls(tuple(float(x) for x in values), math.nan, math.nan,
                       Interval(math.nan, math.nan, math.nan, confidence, 0, unit))
        mean = float(v.mean())
        sd = float(v.std(ddof=1)) if len(v) > 1 else math.nan
        if len(v) > 1 and sd > 0:
            half = float(t.ppf((1 + confidence) / 2, len(v) - 1)) * sd / math.sqrt(len(v))
            low, high = mean - half, mean + half
        elif len(v) > 1:
            low = high = mean
        else:
            low = high = math.nan
        return cls(tuple(float(x) for x in values), mean, sd, Interval(mean, low, high, confidence, len(v), unit))

    def summary(self) -> dict:
        return {"values": list(self.values), "mean": self.mean, "sd": self.sd, "n": self.interval.units,
                "ci": [self.interval.low, self.interval.high], "confidence": self.interval.confidence}

    def text(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f} (n={self.interval.units})"
