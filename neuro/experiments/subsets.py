"""A quick run's evaluation subset: N of the M evaluation-side programs, deterministic and stratified.

Why: evaluating (or summarizing) every evaluation program before and after training dominates a short run
(a 5-step transfer spent ~19 minutes summarizing 100 programs twice). A subset keeps each language's share
of the evaluation side (largest remainders, at least one program per language when N allows) and, within a
language, takes programs by a stable hash of their task, so the same tasks are chosen in every language
(parallel programs stay together and the task bootstrap still resamples whole tasks). The choice depends only
on the programs' languages and tasks: the same corpus, split and N give the same subset in every process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def _task_rank(task: str) -> str:
    return hashlib.sha1(task.encode("utf-8")).hexdigest()


def _allocate(counts: dict[str, int], n: int) -> dict[str, int]:
    """n split over the strata in proportion to their sizes (largest remainders; ties by name), each stratum
    at least one when n covers every stratum, never more than it holds."""
    total = sum(counts.values())
    floor = 1 if n >= len(counts) else 0
    share = {k: max(floor, min(c, n * c // total)) for k, c in counts.items()}
    remainders = sorted(counts, key=lambda k: (-(n * counts[k] % total), k))
    while sum(share.values()) < n:
        grown = False
        for k in remainders:
            if share[k] < counts[k] and sum(share.values()) < n:
                share[k] += 1
                grown = True
        if not grown:
            break
    while sum(share.values()) > n:  # the floor of one overshot: take back from the largest shares
        k = max(share, key=lambda k: (share[k], k))
        share[k] -= 1
    return share


def _lang(item: Any) -> str:
    return item.lang


def _task(item: Any) -> str:
    return item.task


def stratified_subset(items: Sequence[T], n: int, *, lang: Callable[[T], str] = _lang,
                      task: Callable[[T], str] = _task) -> list[T]:
    """`n` of `items` (all of them when n <= 0 or n >= len(items)), in their given order: each language's
    share kept, tasks taken in a fixed hash order within each language (see the module doc)."""
    if n <= 0 or n >= len(items):
        return list(items)
    by_lang: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_lang.setdefault(lang(item), []).append(i)
    share = _allocate({k: len(v) for k, v in by_lang.items()}, n)
    keep: set[int] = set()
    for k, idx in by_lang.items():
        ranked = sorted(idx, key=lambda i: (_task_rank(task(items[i])), i))
        keep.update(ranked[:share[k]])
    return [item for i, item in enumerate(items) if i in keep]


def evaluated_text(n: int | None, m: int | None) -> str | None:
    """'evaluated on N of M programs' (None when unknown, e.g. a job from before subsets existed)."""
    if n is None:
        return None
    return f"evaluated on {n} of {m if m is not None else n} programs"
