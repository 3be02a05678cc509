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


def retrieval_table(vectors, snippets: Sequence[Snippet], chunk: int = 512) -> pd.DataFrame:
    """Cross-language, all-language and per-pair MAP@R / Recall@1 of unit `vectors` (one per snippet).

    Rows: setting ("cross-language" | "all-language" | "pair"), query_lang ("all" = every query),
    candidate_lang ("others", "all" or a language), map_at_r, recall_at_1, queries.
    """
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

    out = []

    def add(setting, qlang, clang, mask, key):
        ap, h = views[key][mask], hits[key][mask]
        ok = ~np.isnan(ap)
        if ok.any():
            out.append({"setting": setting, "query_lang": qlang, "candidate_lang": clang,
                        "map_at_r": float(ap[ok].mean()), "recall_at_1": float(h[ok].mean()), "queries": int(ok.sum())})

    everyone = np.ones(n, dtype=bool)
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


SETTINGS = ("cross-language", "all-language")


@dataclass
class CloneEvaluation:
    """Retrieval quality of the chosen layer beside the baselines, and the layer sweep.

    scores: method, layer (-1 where none), + the columns of `retrieval_table`.
    sweep: layer, setting, map_at_r, recall_at_1 (overall, every layer).
    """

    scores: pd.DataFrame
    sweep: pd.DataFrame
    layer: int
    concept_layers: list[int]
    meta: dict = field(default_factory=dict)

    def overall(self) -> pd.DataFrame:
        """One row per method: MAP@R and Recall@1 in each setting (the headline table)."""
        rows = self.scores[self.scores.query_lang.eq("all") & self.scores.setting.isin(SETTINGS)]
        out = []
        for (method, layer), group in rows.groupby(["method", "layer"], sort=False):
            row = {"method": method, "layer": "all" if method == "mean of layers" else "" if layer < 0 else str(layer)}
            for r in group.itertuples():
                row[f"{r.setting} MAP@R"], row[f"{r.setting} Recall@1"] = r.map_at_r, r.recall_at_1
            out.append(row)
        return pd.DataFrame(out)

    def pair_matrix(self, method: str | None = None, metric: str = "map_at_r") -> pd.DataFrame:
        """Query language x candidate language for one method (default: the first, the chosen layer)."""
        method = method or str(self.scores.method.iloc[0])
        sub = self.scores[(self.scores.method == method) & (self.scores.setting == "pair")]
        return sub.pivot(index="query_lang", columns="candidate_lang", values=metric)

    def summary(self) -> dict:
        overall = self.overall()
        return {"layer": self.layer, "concept_layers": self.concept_layers, **self.meta,
                "overall": overall.round(4).to_dict(orient="records"),
                "scores": self.scores.round(4).to_dict(orient="records"),
                "sweep": self.sweep.round(4).to_dict(orient="records")}
