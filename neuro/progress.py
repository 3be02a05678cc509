"""The progress callback every long computation accepts: `progress(done, total)` in units of work (programs
forwarded, layers probed), called as the work advances. Pages draw it as a bar, the CLI prints it on
stderr; raising from it cancels the computation (resumable passes keep what they finished).

`Eta` turns those calls into what a person wants to read: what is running, how far it is, and about how
long is left. The rate is measured from the first report on, so work that came from the cache at the
start (finished chunks of an interrupted run) does not make the estimate optimistic.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Progress = Callable[[int, int], None]

MIN_ELAPSED_S = 1.0  # no estimate before this much measured work: the first steps are too noisy


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def seconds_left(done: int, total: int, since: float, done_then: int, now: float) -> float | None:
    """Time left at the rate measured since (`since`, `done_then`); None until there is enough to measure."""
    if done >= total:
        return 0.0
    if now - since < MIN_ELAPSED_S or done <= done_then:
        return None
    return (total - done) * (now - since) / (done - done_then)


class Eta:
    """Label, progress and time left of one computation, from its `progress(done, total)` calls."""

    def __init__(self, label: str, clock: Callable[[], float] = time.monotonic):
        self.label, self.clock = label, clock
        self.started = clock()
        self.first: tuple[float, int] | None = None  # (time, done) of the first report

    def seconds_left(self, done: int, total: int) -> float | None:
        now = self.clock()
        if self.first is None:
            self.first = (now, done)
            return None
        return seconds_left(done, total, *self.first, now)

    def text(self, done: int, total: int) -> str:
        left = self.seconds_left(done, total)
        parts = [f"{self.label}: {done:,}/{total:,}", f"{duration(self.clock() - self.started)} elapsed"]
        if done >= total:
            parts[-1] = f"done in {duration(self.clock() - self.started)}"
        elif left is not None:
            parts.append(f"about {duration(left)} left")
        return " · ".join(parts)


def reporter(label: str, show: Callable[[float, str], None], clock: Callable[[], float] = time.monotonic) -> Progress:
    """A progress callback that calls `show(fraction done, text)` with the label, counts and time left."""
    eta = Eta(label, clock)

    def report(done: int, total: int) -> None:
        show(min(1.0, done / total) if total else 1.0, eta.text(done, total))
    return report
