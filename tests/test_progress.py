"""Progress text: counts, elapsed time and an estimate of the time left that a resumed start does not
distort."""

from neuro.progress import Eta, duration, reporter


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_time_left_follows_the_measured_rate():
    clock = Clock()
    eta = Eta("statistics", clock)
    assert "left" not in eta.text(0, 100)  # nothing measured yet
    clock.now += 10
    assert eta.text(20, 100) == "statistics: 20/100 · 10 s elapsed · about 40 s left"
    clock.now += 10
    assert eta.text(40, 100).endswith("about 30 s left")
    clock.now += 30
    assert eta.text(100, 100) == "statistics: 100/100 · done in 50 s"


def test_work_loaded_from_the_cache_does_not_make_the_estimate_optimistic():
    """A resumed pass reports 60 of 100 at once (finished chunks), then computes 10 in 10 s: 30 s are left,
    not the 4.3 s a rate counted from zero would claim."""
    clock = Clock()
    eta = Eta("layers", clock)
    eta.text(60, 100)
    clock.now += 10
    assert eta.text(70, 100).endswith("about 30 s left")


def test_reporter_gives_fraction_and_text():
    clock, shown = Clock(), []
    report = reporter("pooled states", lambda f, t: shown.append((f, t)), clock)
    report(0, 8)
    clock.now += 2
    report(4, 8)
    assert shown[-1] == (0.5, "pooled states: 4/8 · 2 s elapsed · about 2 s left")
    report(0, 0)
    assert shown[-1][0] == 1.0
    assert duration(75) == "1 min 15 s" and duration(7260) == "2 h 01 min"
