"""The uncertainty helpers against ground truth: a simulated effect covered at the nominal rate, Holm's
correction on a hand-worked family, Monte Carlo p-values uniform under the null and bounded by their draws."""

import math

import numpy as np
import pytest

from neuro.analysis.uncertainty import Spread, grouped_mean_bootstrap, holm, monte_carlo_p, task_bootstrap


def test_the_task_bootstrap_covers_a_known_mean_at_about_its_nominal_rate():
    """Programs share a task effect (correlated within a task): resampling tasks keeps the coverage near 95 %,
    where resampling programs would be too narrow."""
    rng = np.random.default_rng(0)
    tasks = np.repeat(np.arange(20), 5)
    runs, hits, naive_hits = 200, 0, 0
    for r in range(runs):
        values = 0.5 + rng.normal(0, 1, 20)[tasks] + rng.normal(0, 0.5, 100)
        hits += grouped_mean_bootstrap(values, tasks, seed=r, n_resamples=1000).low <= 0.5 <= \
            grouped_mean_bootstrap(values, tasks, seed=r, n_resamples=1000).high
        per_program = grouped_mean_bootstrap(values, np.arange(100), seed=r, n_resamples=1000)
        naive_hits += per_program.low <= 0.5 <= per_program.high
    assert 0.88 <= hits / runs <= 0.99
    assert naive_hits / runs < 0.8  # the programs-as-units interval ignores the shared task effect


def test_a_paired_difference_keeps_its_pairs():
    """Two methods scored on the same queries: the task effect cancels in the difference, so its interval is
    far narrower than either method's and excludes 0 for a small, consistent gain."""
    rng = np.random.default_rng(1)
    tasks = np.repeat(np.arange(30), 4)
    base = rng.normal(0, 1, 30)[tasks]
    a, b = base + rng.normal(0, 0.05, 120), base + 0.1 + rng.normal(0, 0.05, 120)
    diff = grouped_mean_bootstrap(b - a, tasks)
    alone = grouped_mean_bootstrap(b, tasks)
    assert not diff.covers_zero and diff.low > 0
    assert diff.high - diff.low < (alone.high - alone.low) / 5


def test_bca_and_undefined_resamples():
    values = np.arange(10.0)
    bca = grouped_mean_bootstrap(values, np.arange(10), method="BCa", n_resamples=500)
    assert bca.low < 4.5 < bca.high and bca.estimate == pytest.approx(4.5)
    # a statistic undefined on some resamples (here: when unit 0 is not drawn) drops them, not the interval
    stat = lambda idx: np.where((idx == 0).any(axis=-1), idx.mean(axis=-1), np.nan)  # noqa: E731
    iv = task_bootstrap(stat, 5, n_resamples=400)
    assert 0 < iv.resamples < 400 and np.isfinite(iv.low)
    one = task_bootstrap(lambda idx: idx.mean(axis=-1) * 0 + 1.0, 1)
    assert one.estimate == 1.0 and math.isnan(one.low)


def test_holm_on_a_hand_worked_family():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    out = holm({"a": 0.2, "b": math.nan})
    assert out["a"] == 0.2 and math.isnan(out["b"])
    assert holm({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}


def test_monte_carlo_p_is_bounded_by_its_draws_and_uniform_under_the_null():
    assert monte_carlo_p(100.0, np.zeros(5)) == pytest.approx(1 / 6)
    assert monte_carlo_p(100.0, np.zeros(99)) == pytest.approx(0.01)
    assert monte_carlo_p(-100.0, np.zeros(5), "two-sided") == pytest.approx(2 / 6)
    assert monte_carlo_p(0.0, np.zeros(5), "less") == 1.0
    rng = np.random.default_rng(2)
    ps = np.array([monte_carlo_p(rng.normal(), rng.normal(size=99)) for _ in range(2000)])
    assert abs((ps <= 0.05).mean() - 0.05) < 0.02 and abs((ps <= 0.5).mean() - 0.5) < 0.05
    with pytest.raises(ValueError):
        monte_carlo_p(0.0, [1.0], "both")


def test_spread_over_seeds():
    s = Spread.of([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.sd == 1.0
    # t(0.975, 2) = 4.303: half-width 4.303 x 1 / sqrt(3)
    assert s.interval.high - s.mean == pytest.approx(4.3027 / math.sqrt(3), rel=1e-3)
    assert math.isnan(Spread.of([1.0]).sd)
