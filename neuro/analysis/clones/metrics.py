"""Retrieval metrics of clone detection (MAP@R, Recall@1) per setting and language pair: the same task in
another language is the relevant hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from neuro.code.corpus import Snippet


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


def _per_query(vectors, snippets: Sequence[Snippet], chunk: int = 512) -> tuple[dict, dict, list[str], np.ndarray]:
    """Per query and candidate view ("cross", "all", or a candidate language): AP@R and hit@1 arrays."""
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
    return views, hits, names, langs


def _table(views: dict, hits: dict, names: list[str], langs: np.ndarray) -> pd.DataFrame:
    out = []

    def add(setting, qlang, clang, mask, key):
        ap, h = views[key][mask], hits[key][mask]
        ok = ~np.isnan(ap)
        if ok.any():
            out.append({"setting": setting, "query_lang": qlang, "candidate_lang": clang,
                        "map_at_r": float(ap[ok].mean()), "recall_at_1": float(h[ok].mean()), "queries": int(ok.sum())})

    everyone: np.ndarray = np.ones(len(langs), dtype=bool)
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


def retrieval_table(vectors, snippets: Sequence[Snippet], chunk: int = 512) -> pd.DataFrame:
    """Cross-language, all-language and per-pair MAP@R / Recall@1 of unit `vectors` (one per snippet).

    Rows: setting ("cross-language" | "all-language" | "pair"), query_lang ("all" = every query),
    candidate_lang ("others", "all" or a language), map_at_r, recall_at_1, queries.
    """
    return _table(*_per_query(vectors, snippets, chunk))


def retrieval(vectors, snippets: Sequence[Snippet], chunk: int = 512) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`retrieval_table` and, from the same ranking, each query's own scores in the two headline settings
    (`query_scores`' frame): what a task-level bootstrap resamples."""
    views, hits, names, langs = _per_query(vectors, snippets, chunk)
    rows = []
    for setting, key in (("cross-language", "cross"), ("all-language", "all")):
        rows.append(pd.DataFrame({"setting": setting, "query": [s.id for s in snippets], "lang": langs,
                                  "task": [s.task for s in snippets], "ap": views[key], "hit": hits[key]}))
    return _table(views, hits, names, langs), pd.concat(rows, ignore_index=True)


def query_scores(vectors, snippets: Sequence[Snippet], chunk: int = 512) -> pd.DataFrame:
    """One row per query and headline setting ("cross-language", "all-language"): setting, query (id), lang,
    task, ap (its AP@R) and hit (its hit@1); nan where the query has no relevant candidate. Their means are
    the table's MAP@R and Recall@1."""
    return retrieval(vectors, snippets, chunk)[1]


SETTINGS = ("cross-language", "all-language")


@dataclass
class CloneEvaluation:
    """Retrieval quality of the chosen layer beside the baselines, and the layer sweep, with task-level
    bootstrap intervals (neuro/analysis/clones/intervals.py).

    scores: method, layer (-1 where none), + the columns of `retrieval_table`.
    sweep: layer, setting, map_at_r, recall_at_1 (overall, every layer), and each one's CI
        (map_at_r_low, map_at_r_high, recall_at_1_low, recall_at_1_high).
    intervals: method, layer, setting, metric, estimate, low, high, confidence, tasks, resamples.
    differences: comparison, first, second, setting, metric, estimate, low, high, ..., covers_zero, verdict
        (paired: per-query differences, tasks resampled).
    queries: method, layer + `query_scores`' columns (each query's AP@R and hit@1 per method).
    """

    scores: pd.DataFrame
    sweep: pd.DataFrame
    layer: int
    concept_layers: list[int]
    meta: dict = field(default_factory=dict)
    intervals: pd.DataFrame = field(default_factory=pd.DataFrame)
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)
    queries: pd.DataFrame = field(default_factory=pd.DataFrame)

    @staticmethod
    def _layer_label(method: str, layer: int) -> str:
        return "all" if method == "mean of layers" else "" if layer < 0 else str(layer)

    def overall(self, ci: bool = False) -> pd.DataFrame:
        """One row per method: MAP@R and Recall@1 in each setting (the headline table); with `ci`, each one's
        interval as a "... CI" column [low, high]."""
        rows = self.scores[self.scores.query_lang.eq("all") & self.scores.setting.isin(SETTINGS)]
        out = []
        for (method, layer), group in rows.groupby(["method", "layer"], sort=False):
            row = {"method": method, "layer": self._layer_label(method, layer)}
            for r in group.itertuples():
                row[f"{r.setting} MAP@R"], row[f"{r.setting} Recall@1"] = r.map_at_r, r.recall_at_1
                if ci:
                    for metric, label in (("map_at_r", "MAP@R"), ("recall_at_1", "Recall@1")):
                        iv = self.interval(method, r.setting, metric)
                        row[f"{r.setting} {label} CI"] = None if iv is None else [round(iv[0], 4), round(iv[1], 4)]
            out.append(row)
        return pd.DataFrame(out)

    def interval(self, method: str, setting: str, metric: str) -> tuple[float, float] | None:
        """(low, high) of one method's metric in one setting, if the evaluation carries intervals."""
        if self.intervals.empty:
            return None
        hit = self.intervals[(self.intervals.method == method) & (self.intervals.setting == setting)
                             & (self.intervals.metric == metric)]
        return None if hit.empty else (float(hit.low.iloc[0]), float(hit.high.iloc[0]))

    def headline(self, setting: str = "cross-language") -> pd.DataFrame:
        """One row per method in `setting`: MAP@R and Recall@1 as "estimate [low, high]" text."""
        from neuro.analysis.clones.intervals import LABELS, ci_text

        out = []
        for (method, layer), group in self.intervals[self.intervals.setting == setting].groupby(
                ["method", "layer"], sort=False):
            row = {"method": method, "layer": self._layer_label(method, layer)}
            for r in group.itertuples():
                row[LABELS[r.metric]] = ci_text(r.estimate, r.low, r.high)
            out.append(row)
        return pd.DataFrame(out)

    def difference_table(self) -> pd.DataFrame:
        """comparison, setting, metric, "difference [low, high]", verdict."""
        from neuro.analysis.clones.intervals import LABELS, ci_text

        if self.differences.empty:
            return pd.DataFrame(columns=["comparison", "setting", "metric", "difference [95% CI]", "verdict"])
        d = self.differences
        return pd.DataFrame({"comparison": d.comparison, "setting": d.setting, "metric": d.metric.map(LABELS),
                             "difference [95% CI]": [ci_text(e, lo, hi, signed=True)
                                                     for e, lo, hi in zip(d.estimate, d.low, d.high)],
                             "verdict": d.verdict})

    def pair_matrix(self, method: str | None = None, metric: str = "map_at_r") -> pd.DataFrame:
        """Query language x candidate language for one method (default: the first, the chosen layer)."""
        method = method or str(self.scores.method.iloc[0])
        sub = self.scores[(self.scores.method == method) & (self.scores.setting == "pair")]
        return sub.pivot(index="query_lang", columns="candidate_lang", values=metric)

    def summary(self) -> dict:
        overall = self.overall(ci=True)
        return {"layer": self.layer, "concept_layers": self.concept_layers, **self.meta,
                "overall": overall.round(4).to_dict(orient="records"),
                "intervals": self.intervals.round(4).to_dict(orient="records"),
                "differences": self.differences.round(4).to_dict(orient="records"),
                "scores": self.scores.round(4).to_dict(orient="records"),
                "sweep": self.sweep.round(4).to_dict(orient="records")}
