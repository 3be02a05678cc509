"""Clone retrieval's uncertainty: task-level bootstrap intervals of MAP@R / Recall@1 on similarity structures
whose answer is known, and paired differences between methods."""

import numpy as np
import pandas as pd
import pytest

from neuro.analysis.clones.intervals import INDISTINGUISHABLE, metric_intervals, paired_differences
from neuro.analysis.clones.metrics import map_at_r, query_scores, retrieval_table
from neuro.code.corpus import Snippet

LANGS = ("python", "go", "java", "cpp")


def _corpus(tasks: int) -> list[Snippet]:
    return [Snippet(f"t{t}/{lang}", lang, f"t{t}", "") for t in range(tasks) for lang in LANGS]


def _vectors(snippets, signal: float, seed: int, dim: int = 64) -> np.ndarray:
    """Unit rows: `signal` x the task's direction + noise (signal 0: no clone structure at all)."""
    rng = np.random.default_rng(seed)
    tasks = sorted({s.task for s in snippets})
    direction = dict(zip(tasks, rng.normal(size=(len(tasks), dim))))
    x = np.stack([signal * direction[s.task] + rng.normal(size=dim) for s in snippets])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _with_method(queries, method, layer=-1):
    queries = queries.copy()
    queries.insert(0, "layer", layer)
    queries.insert(0, "method", method)
    return queries


def _cross(intervals, metric="map_at_r"):
    row = intervals[(intervals.setting == "cross-language") & (intervals.metric == metric)]
    assert len(row) == 1
    return row.iloc[0]


def test_query_scores_average_to_the_table():
    snippets = _corpus(12)
    x = _vectors(snippets, 1.0, seed=0)
    queries = query_scores(x, snippets)
    table = retrieval_table(x, snippets).set_index(["setting", "query_lang"])
    for setting in ("cross-language", "all-language"):
        rows = queries[queries.setting == setting]
        assert len(rows) == len(snippets)
        assert rows.ap.mean() == pytest.approx(table.loc[(setting, "all"), "map_at_r"])
        assert rows.hit.mean() == pytest.approx(table.loc[(setting, "all"), "recall_at_1"])


def test_perfect_retrieval_gives_one_with_a_point_interval():
    snippets = _corpus(10)
    x = _vectors(snippets, 1e4, seed=1)  # every program sits on its task's direction
    intervals = metric_intervals(_with_method(query_scores(x, snippets), "perfect"))
    for metric in ("map_at_r", "recall_at_1"):
        row = _cross(intervals, metric)
        assert (row.estimate, row.low, row.high) == (1.0, 1.0, 1.0)
        assert row.tasks == 10 and row.resamples > 0


def _chance_map(snippets, draws=200, seed=3):
    """MAP@R of random rankings (Monte Carlo over random vectors): what no clone signal gives."""
    rng = np.random.default_rng(seed)
    tasks = np.array([s.task for s in snippets])
    langs = np.array([s.lang for s in snippets])
    relevant = tasks[:, None] == tasks[None, :]
    candidates = langs[:, None] != langs[None, :]
    values = []
    for _ in range(draws):
        sims = rng.random((len(snippets), len(snippets)))
        values.append(map_at_r(sims, relevant, candidates))
    return float(np.mean(values))


def test_a_planted_clone_signal_excludes_chance_and_no_signal_covers_it():
    snippets = _corpus(30)
    chance = _chance_map(snippets)
    assert 0.01 < chance < 0.06  # 3 relevant among 90 candidates
    planted = _cross(metric_intervals(_with_method(query_scores(_vectors(snippets, 0.35, seed=4), snippets), "m")))
    assert chance < planted.low < planted.estimate < planted.high < 1.0
    noise = _cross(metric_intervals(_with_method(query_scores(_vectors(snippets, 0.0, seed=5), snippets), "m")))
    assert noise.low <= chance <= noise.high
    assert noise.high - noise.low > 0


def test_grouping_by_task_widens_the_interval_when_a_tasks_queries_agree():
    """Queries of one task move together: with every query of a task scoring alike, resampling tasks (the
    truth: 30 independent units) gives a wider interval than resampling 120 queries would."""
    snippets = _corpus(30)
    queries = _with_method(query_scores(_vectors(snippets, 0.35, seed=4), snippets), "m")
    per_task = queries.groupby(["setting", "task"]).ap.transform("mean")
    queries = queries.assign(ap=per_task)
    grouped = _cross(metric_intervals(queries))
    ungrouped = _cross(metric_intervals(queries.assign(task=queries["query"])))
    assert grouped.tasks == 30 and ungrouped.tasks == 120
    assert grouped.high - grouped.low > 1.5 * (ungrouped.high - ungrouped.low)


def test_paired_difference_of_a_method_with_itself_is_exactly_zero():
    snippets = _corpus(15)
    queries = query_scores(_vectors(snippets, 0.3, seed=6), snippets)
    both = pd.concat([_with_method(queries, "a"), _with_method(queries, "b")], ignore_index=True)
    diff = paired_differences(both, [("a", "b"), ("a", "a")])
    assert len(diff) == 8  # 2 comparisons x 2 settings x 2 metrics
    assert (diff.estimate == 0).all() and (diff.low == 0).all() and (diff.high == 0).all()
    assert diff.covers_zero.all() and (diff.verdict == INDISTINGUISHABLE).all()


def test_paired_difference_of_a_real_gap():
    snippets = _corpus(30)
    strong = _with_method(query_scores(_vectors(snippets, 0.5, seed=7), snippets), "strong")
    weak = _with_method(query_scores(_vectors(snippets, 0.0, seed=8), snippets), "weak")
    diff = paired_differences(pd.concat([strong, weak], ignore_index=True), [("strong", "weak"), ("weak", "strong")])
    up = diff[(diff.first == "strong") & (diff.setting == "cross-language") & (diff.metric == "map_at_r")].iloc[0]
    down = diff[(diff.first == "weak") & (diff.setting == "cross-language") & (diff.metric == "map_at_r")].iloc[0]
    # the estimate is the difference of the two MAP@R, each from its own table
    expected = (retrieval_table(_vectors(snippets, 0.5, seed=7), snippets).map_at_r.iloc[0]
                - retrieval_table(_vectors(snippets, 0.0, seed=8), snippets).map_at_r.iloc[0])
    assert up.estimate == pytest.approx(expected)
    assert 0 < up.low < up.estimate < up.high and not up.covers_zero and up.verdict == "strong higher"
    assert down.estimate == pytest.approx(-up.estimate) and down.verdict == "strong higher"
