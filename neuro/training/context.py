"""What a task sees of the job that runs it: progress, metrics, a log, and cancellation.

Experiments and the training loop are handed a context and never import `neuro.jobs`: the job folder's
`JobContext` (neuro/jobs/folders.py) implements this interface in a worker, `NullContext` in-process
(notebooks, tests). Checkpoints reach a task as a `checkpoint(write)` callable and a `resume` folder
(see `train`), not through the context.
"""

from __future__ import annotations

from typing import Protocol


class JobCancelled(Exception):
    """Raised by `TaskContext.check` when a cancel was requested; the task stops where it is."""


class TaskContext(Protocol):
    def progress(self, done: int, total: int, phase: str = "") -> None:
        """Progress of the current phase."""

    def metric(self, **values) -> None:
        """One metric point, e.g. step=3, loss=2.1."""

    def log(self, message: str) -> None:
        """One line of the job's log."""

    def check(self) -> None:
        """Raise JobCancelled when a cancel was requested (call between steps)."""


class NullContext:
    """A TaskContext for running task code in-process: reports nothing, is never cancelled."""

    def progress(self, done: int, total: int, phase: str = "") -> None:
        pass

    def metric(self, **values) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def check(self) -> None:
        pass


def declare_phases(ctx, phases) -> None:
    """Tell `ctx` the phases a task will report, in order, with their weights (expected model passes), when
    it can use them (a job's context turns them into the whole job's progress); others ignore them."""
    plan = getattr(ctx, "phases", None)
    if callable(plan):
        plan([(name, float(weight)) for name, weight in phases])
