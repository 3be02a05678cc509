"""One seeded selection / evaluation split of a corpus, shared by every analysis.

Whatever is *chosen* (language-specific and universal neurons, concept layers, centring means, the
neurons a fine-tuning run trains) comes from the selection side; whatever is *measured* (ablation
effects, clone MAP@R / Recall@1, held-out fine-tuning loss, transfer scores) comes from the evaluation
side, so no number is measured on the programs it was chosen from.

The unit is the task when the corpus has parallel programs (some task in more than one program): a
task is on one side in every language. A corpus without shared tasks splits by program, per language.
Units are ranked by sha256(seed:unit), so the split does not depend on corpus order, and changing an
evaluation program's code (or adding programs to an existing task) moves nothing across the split.

Near-duplicate units are one unit (neuro.code.near_duplicates): tasks whose summaries or code are
near-identical (the demo's five sorts), or programs of one language with near-identical code, stay on
one side together, named by their first member.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from neuro.code.corpus import Snippet
from neuro.code.near_duplicates import group_labels, near_duplicate_pairs

DEFAULT_EVAL_FRACTION = 0.3


@dataclass(frozen=True)
class SplitParams:
    """eval_fraction: share of units (tasks, else programs per language) kept for evaluation.
    near_duplicate: difflib ratio at or above which two tasks' summaries or code (or two programs' code)
    make one unit; 1.0 groups only identical texts."""

    eval_fraction: float = DEFAULT_EVAL_FRACTION
    seed: int = 0
    near_duplicate: float = 0.9

    def __post_init__(self):
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"the evaluation fraction must lie in (0, 1), got {self.eval_fraction}")
        if not 0.5 <= self.near_duplicate <= 1.0:
            raise ValueError(f"the near-duplicate ratio must lie in [0.5, 1], got {self.near_duplicate}")


@dataclass(frozen=True, eq=False)
class CorpusSplit:
    params: SplitParams
    unit: str                     # "task" or "program"
    selection: list[Snippet]
    evaluation: list[Snippet]
    merged: tuple[tuple[str, ...], ...] = ()  # near-duplicate units kept together (tasks, or program ids)

    def summary(self) -> dict:
        """JSON-ready description, reported by every analysis that uses the split."""
        tasks = lambda side: len({s.task for s in side})  # noqa: E731
        return {**asdict(self.params), "unit": self.unit,
                "selection_programs": len(self.selection), "evaluation_programs": len(self.evaluation),
                "selection_tasks": tasks(self.selection), "evaluation_tasks": tasks(self.evaluation),
                "near_duplicates_kept_together": [list(group) for group in self.merged]}

    def caption(self) -> str:
        return (f"selection: {len(self.selection)} programs, evaluation: {len(self.evaluation)} programs "
                f"(split by {self.unit}, {self.params.eval_fraction:.0%} evaluated, seed {self.params.seed})")


def _held_out(keys: Sequence[str], fraction: float, seed: int, unit_of: dict[str, str] | None = None) -> set[str]:
    """round(fraction x units) units ranked first by sha256(seed:unit); at least one on each side. A key's unit
    is itself or, for near-duplicates, the first member of its group (`unit_of`); every key of a held-out
    unit is held out."""
    keys = sorted(set(keys))
    unit_of = unit_of or {}
    units = sorted({unit_of.get(k, k) for k in keys})
    ranked = sorted(units, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    n = int(round(len(units) * fraction))
    if len(units) >= 2:
        n = min(max(n, 1), len(units) - 1)
    held = set(ranked[:n])
    return {k for k in keys if unit_of.get(k, k) in held}


MIN_SUMMARY_CHARS = 20   # "Sort a list of integers." is compared; "Add." is not
MIN_CODE_CHARS = 200     # a task's code, all its languages together: toy two-liners are never merged


def _near_duplicate_units(names: Sequence[str], texts: Sequence[tuple[Sequence[str], int]],
                          threshold: float) -> dict[str, str]:
    """name -> the first (sorted) name of its near-duplicate group, for names alike in any of the texts
    (each a list parallel to `names`, with its minimum length); names in no group are left out. A grouping
    that would leave fewer than two units (everything alike) is not applied."""
    pairs = [(i, j) for column, min_chars in texts for i, j, _ in near_duplicate_pairs(column, threshold, min_chars)]
    labels = group_labels(len(names), pairs)
    if len(names) >= 2 and len(set(labels)) < 2:
        return {}
    groups: dict[int, list[str]] = {}
    for name, label in zip(names, labels):
        groups.setdefault(label, []).append(name)
    return {name: min(members) for members in groups.values() if len(members) > 1 for name in members}


def _groups(unit_of: dict[str, str]) -> tuple[tuple[str, ...], ...]:
    members: dict[str, list[str]] = {}
    for name, first in unit_of.items():
        members.setdefault(first, []).append(name)
    return tuple(tuple(sorted(m)) for _, m in sorted(members.items()))


def split_corpus(snippets: Sequence[Snippet], params: SplitParams | None = None) -> CorpusSplit:
    """The corpus's selection and evaluation sides (see the module docstring)."""
    params = params or SplitParams()
    snippets = list(snippets)
    if len(snippets) < 2:
        raise ValueError("a selection / evaluation split needs at least two programs")
    tasks = [s.task for s in snippets if s.task]
    shared = len(tasks) == len(snippets) and len(set(tasks)) < len(tasks)
    if shared:
        members: dict[str, list[Snippet]] = {}
        for s in snippets:
            members.setdefault(s.task, []).append(s)
        names = sorted(members)
        summaries = [" ".join(sorted({s.summary.strip() for s in members[t]})) for t in names]
        codes = ["\n".join(s.code for s in sorted(members[t], key=lambda s: (s.lang, s.id))) for t in names]
        unit_of = _near_duplicate_units(names, [(summaries, MIN_SUMMARY_CHARS), (codes, MIN_CODE_CHARS)],
                                        params.near_duplicate)
        held = _held_out(tasks, params.eval_fraction, params.seed, unit_of)
        evaluated = [s.task in held for s in snippets]
        unit = "task"
    else:
        held, unit_of = set(), {}
        for lang in dict.fromkeys(s.lang for s in snippets):
            programs = sorted((s for s in snippets if s.lang == lang), key=lambda s: s.id)
            alike = _near_duplicate_units([s.id for s in programs], [([s.code for s in programs], MIN_CODE_CHARS)],
                                          params.near_duplicate)
            unit_of.update(alike)
            held |= _held_out([s.id for s in programs], params.eval_fraction, params.seed, alike)
        evaluated = [s.id in held for s in snippets]
        unit = "program"
    return CorpusSplit(params, unit, [s for s, e in zip(snippets, evaluated) if not e],
                       [s for s, e in zip(snippets, evaluated) if e], _groups(unit_of))
