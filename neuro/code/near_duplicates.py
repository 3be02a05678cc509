"""Near-duplicate texts grouped together, so a split never puts one copy on each side.

Five sorting tasks whose summaries say "Sort a list of integers in ascending order" with one word changed,
or two HumanEval problems whose first docstring sentences are the same, would otherwise let a summary (or
a neuron, or a concept layer) chosen on one side be measured on its near-copy on the other.

Two texts are near-duplicates when difflib's similarity ratio is at least the threshold (0.9 by
default: the five sorts' summaries score 0.92-0.96, the next most alike pair of the demo corpus 0.69).
Texts shorter than `min_chars` are not compared: in a two-line function one changed operator leaves a
ratio above 0.9, and templated toy programs would all collapse into one unit.
Only pairs whose cosine over hashed character 4-gram counts reaches `PREFILTER` are compared with difflib
(the cosine in sparse row blocks), so a corpus of thousands of tasks needs neither n^2 difflib calls nor an
n x n dense matrix. Results are remembered per set of texts: a page that splits the same corpus again pays
nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import sparse

PREFILTER = 0.4  # idf-weighted 4-gram cosine below which two texts are not compared (ratio >= 0.9 pairs: 0.68+)
BLOCK = 2048
BUCKETS = 1 << 20


def _gram_vectors(texts: Sequence[str]) -> sparse.csr_matrix:
    """Rows: texts; columns: character 4-grams hashed into BUCKETS; values: presence x idf (grams every text
    shares, such as indentation or `public class`, weigh little), rows scaled to unit norm."""
    rows, cols = [], []
    for i, text in enumerate(texts):
        b = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint64)
        if len(b) < 4:
            b = np.concatenate([b, np.zeros(4 - len(b), dtype=np.uint64)])
        grams = (b[:-3] << 24) | (b[1:-2] << 16) | (b[2:-1] << 8) | b[3:]
        buckets = np.unique((grams * np.uint64(2654435761)) % np.uint64(BUCKETS))
        rows.append(np.full(len(buckets), i))
        cols.append(buckets.astype(np.int64))
    cols_all = np.concatenate(cols)
    present = sparse.csr_matrix((np.ones(len(cols_all)), (np.concatenate(rows), cols_all)), shape=(len(texts), BUCKETS))
    df = np.bincount(cols_all, minlength=BUCKETS)
    weighted = present.multiply(np.log((1 + len(texts)) / (1 + df)) + 1).tocsr()
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    return sparse.diags(1 / np.maximum(norms, 1e-12)) @ weighted


def _candidate_pairs(texts: Sequence[str]) -> list[tuple[int, int]]:
    present = [i for i, t in enumerate(texts) if t.strip()]
    if len(present) < 2:
        return []
    vectors = _gram_vectors([texts[i] for i in present])
    pairs = []
    for start in range(0, len(present), BLOCK):
        block = (vectors[start:start + BLOCK] @ vectors.T).toarray()
        rows, cols = np.nonzero(block >= PREFILTER)
        for r, c in zip(rows.tolist(), cols.tolist()):
            if start + r < c:
                pairs.append((present[start + r], present[c]))
    return pairs


def near_duplicate_pairs(texts: Sequence[str], threshold: float, min_chars: int = 1) -> list[tuple[int, int, float]]:
    """(i, j, ratio) for every pair i < j of texts of at least `min_chars` characters (after stripping) with
    difflib ratio >= threshold."""
    kept = tuple(t if len(t.strip()) >= min_chars else "" for t in texts)
    return list(_pairs(kept, float(threshold)))


@lru_cache(maxsize=16)
def _pairs(texts: tuple[str, ...], threshold: float) -> tuple[tuple[int, int, float], ...]:
    out = []
    for i, j in _candidate_pairs(texts):
        matcher = difflib.SequenceMatcher(None, texts[i], texts[j])  # autojunk: long code in ~0.1 s
        if matcher.real_quick_ratio() >= threshold and matcher.quick_ratio() >= threshold \
                and (ratio := matcher.ratio()) >= threshold:
            out.append((i, j, ratio))
    return tuple(out)


def group_labels(n: int, pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Connected components of the pairs over items 0..n-1 (union-find): each item's group, numbered by its
    first item."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [root(i) for i in range(n)]
