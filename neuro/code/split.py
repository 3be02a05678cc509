"""One seeded selection / evaluation split of a corpus, shared by every analysis.

Whatever is *chosen* (language-specific and universal neurons, concept layers, centring means, the
neurons a fine-tuning run trains) comes from the selection side; whatever is *measured* (ablation
effects, clone MAP@R / Recall@1, held-out fine-tuning loss, transfer scores) comes from the evaluation
side, so no number is measured on the programs it was chosen from.

The unit is the task when the corpus has parallel programs (some task in more than one program): a
task is on one side in every language. A corpus without shared tasks splits by program, per language.
Units are ranked by sha256(seed:unit), so the split does not depend on corpus order, and changing an
evaluation program's code (or adding programs to an existing task) moves nothing across the split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from neuro.code.corpus import Snippet

DEFAULT_EVAL_FRACTION = 0.3


@dataclass(frozen=True)
class SplitParams:
    """eval_fraction: share of units (tasks, else programs per language) kept for evaluation."""

    eval_fraction: float = DEFAULT_EVAL_FRACTION
    seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"the evaluation fraction must lie in (0, 1), got {self.eval_fraction}")


@dataclass(frozen=True, eq=False)
class CorpusSplit:
    params: SplitParams
    unit: str                     # "task" or "program"
    selection: list[Snippet]
    evaluation: list[Snippet]

    def summary(self) -> dict:
        """JSON-ready description, reported by every analysis that uses the split."""
        tasks = lambda side: len({s.task for s in side})  # noqa: E731
        return {**asdict(self.params), "unit": self.unit,
                "selection_programs": len(self.selection), "evaluation_programs": len(self.evaluation),
                "selection_tasks": tasks(self.selection), "evaluation_tasks": tasks(self.evaluation)}

    def caption(self) -> str:
        return (f"selection: {len(self.selection)} programs, evaluation: {len(self.evaluation)} programs "
                f"(split by {self.unit}, {self.params.eval_fraction:.0%} evaluated, seed {self.params.seed})")


def _held_out(keys: Sequence[str], fraction: float, seed: int) -> set[str]:
    """round(fraction x units) units ranked first by sha256(seed:key); at least one on each side."""
    keys = sorted(set(keys))
    ranked = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    n = int(round(len(keys) * fraction))
    if len(keys) >= 2:
        n = min(max(n, 1), len(keys) - 1)
    return set(ranked[:n])


def split_corpus(snippets: Sequence[Snippet], params: SplitParams | None = None) -> CorpusSplit:
    """The corpus's selection and evaluation sides (see the module docstring)."""
    params = params or SplitParams()
    snippets = list(snippets)
    if len(snippets) < 2:
        raise ValueError("a selection / evaluation split needs at least two programs")
    tasks = [s.task for s in snippets if s.task]
    shared = len(tasks) == len(snippets) and len(set(tasks)) < len(tasks)
    if shared:
        held = _held_out(tasks, params.eval_fraction, params.seed)
        evaluated = [s.task in held for s in snippets]
        unit = "task"
    else:
        held = set()
        for lang in dict.fromkeys(s.lang for s in snippets):
            held |= _held_out([s.id for s in snippets if s.lang == lang], params.eval_fraction, params.seed)
        evaluated = [s.id in held for s in snippets]
        unit = "program"
    return CorpusSplit(params, unit, [s for s, e in zip(snippets, evaluated) if not e],
                       [s for s, e in zip(snippets, evaluated) if e])
