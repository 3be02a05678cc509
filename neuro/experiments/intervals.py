"""Task-level confidence intervals for one run's evaluation numbers, and paired per-task differences between runs.

Every evaluation number of a fine-tuning or transfer run is a mean over evaluation programs: the held-out loss
change per language (the mean over programs of each program's change), and BLEU-4 / ROUGE-L per language
(CodeXGLUE's smoothed BLEU-4 is itself the mean of sentence scores, metrics.py, so the interval's estimate is
exactly the reported score; no corpus-level statistic has to be recomputed). Programs are resampled by their
*task* (neuro.analysis.uncertainty: the programs of one task, the same function in several languages, move
together), so a cross-language mean and a difference between runs keep their pairs.

Items are what a result keeps in `per_program`: objects with `id`, `lang` and `task` attributes (transfer's
`ProgramScores`, the `PairedItem`s below) or plain dicts with those keys (fine-tuning's per-program losses).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, overload

import numpy as np

from neuro.analysis.uncertainty import Interval, task_bootstrap, unit_sums


def item_field(item: Any, name: str) -> Any:
    """`name` ("id", "lang" or "task") of an evaluation item, typed or a dict."""
    return item[name] if isinstance(item, Mapping) else getattr(item, name)


@dataclass(frozen=True)
class PairedItem:
    """One program's value in run a minus run b, averaged over paired seeds (see `paired_items`)."""

    id: str
    lang: str
    task: str
    diff: float


def _columns(items: Sequence[Any], value: Callable[[Any], float], langs: Sequence[str]):
    """(items x languages) values, NaN outside each item's own language, and the items' tasks."""
    col = {lang: j for j, lang in enumerate(langs)}
    values = np.full((len(items), len(langs)), np.nan)
    for i, item in enumerate(items):
        if item_field(item, "lang") in col:
            values[i, col[item_field(item, "lang")]] = value(item)
    return values, [item_field(item, "task") for item in items]


def _language_means(sums: np.ndarray, counts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per-language means (..., languages) of the units `idx` (..., k)."""
    axis = idx.ndim - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[idx].sum(axis=axis) / counts[idx].sum(axis=axis)


def language_intervals(items: Sequence[Any], value: Callable[[Any], float], *, seed: int = 0,
                       **kwargs) -> dict[str, Interval]:
    """{language: interval of the mean of `value` over its programs}, evaluation tasks resampled."""
    langs = list(dict.fromkeys(item_field(item, "lang") for item in items))
    if not items:
        return {}
    values, tasks = _columns(items, value, langs)
    sums, counts, names = unit_sums(values, tasks)
    out = {}
    for j, lang in enumerate(langs):
        def column(idx: np.ndarray, j: int = j) -> np.ndarray:
            return _language_means(sums, counts, idx)[..., j]
        out[lang] = task_bootstrap(column, len(names), seed=seed, **kwargs)
    return out


def mean_of_languages_interval(items: Sequence[Any], value: Callable[[Any], float],
                               langs: Sequence[str], *, seed: int = 0, **kwargs) -> Interval:
    """Interval of the mean over `langs` of the per-language means (e.g. the zero-shot mean over the
    languages other than the source), evaluation tasks resampled; NaN when no program is in `langs`."""
    langs = [lang for lang in langs if any(item_field(item, "lang") == lang for item in items)]
    if not langs:
        return Interval(math.nan, math.nan, math.nan)
    values, tasks = _columns(items, value, langs)
    sums, counts, names = unit_sums(values, tasks)
    return task_bootstrap(lambda idx: _language_means(sums, counts, idx).mean(axis=-1), len(names), seed=seed,
                          **kwargs)


def paired_items(runs_a: Sequence[Sequence[Any]], runs_b: Sequence[Sequence[Any]],
                 value: Callable[[Any], float]) -> list[PairedItem]:
    """Per program, value(a) - value(b) averaged over the paired runs (seed i of a with seed i of b); only
    programs every run evaluated."""
    if len(runs_a) != len(runs_b) or not runs_a:
        raise ValueError(f"paired runs: {len(runs_a)} against {len(runs_b)}")
    maps = [({item_field(it, "id"): it for it in a}, {item_field(it, "id"): it for it in b})
            for a, b in zip(runs_a, runs_b)]
    common = [pid for pid in maps[0][0] if all(pid in a and pid in b for a, b in maps)]
    out = []
    for pid in common:
        diff = float(np.mean([value(a[pid]) - value(b[pid]) for a, b in maps]))
        first = maps[0][0][pid]
        out.append(PairedItem(pid, item_field(first, "lang"), item_field(first, "task"), diff))
    return out


@overload
def interval_summary(interval: Interval) -> dict: ...


@overload
def interval_summary(interval: Interval | None) -> dict | None: ...


def interval_summary(interval: Interval | None) -> dict | None:
    """JSON for a result: the interval's fields, NaN as None."""
    if interval is None:
        return None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in interval.summary().items()}


def interval_from_summary(data: Mapping[str, Any] | None) -> Interval | None:
    """The interval `interval_summary` wrote (None for None; a null number is NaN again; unknown keys ignored)."""
    if data is None:
        return None
    known = {f.name: f.type for f in fields(Interval)}
    values: dict[str, Any] = {k: (math.nan if v is None and known[k] == "float" else v) for k, v in data.items()
                              if k in known}
    return Interval(**values)
