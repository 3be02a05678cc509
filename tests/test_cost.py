"""The cost model: rates measured from a real pass, estimates that scale with the work, a rough guess before
any measurement, and a store that survives a corrupt file."""

import time

import pytest
from conftest import SNIPPETS

from neuro import cost
from neuro.instrument.statistics import capture_statistics


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_real_pass_makes_the_estimate_measured_and_linear_in_programs(tiny_llama, tmp_path):
    before = cost.estimate("backward", tiny_llama, len(SNIPPETS), root=tmp_path)
    assert before.basis == "rough guess from the model's size" and not before.measured
    started = time.monotonic()
    with cost.Meter("backward", tiny_llama, len(SNIPPETS), root=tmp_path) as meter:
        capture_statistics(tiny_llama, SNIPPETS, progress=meter.wrap())
    wall = time.monotonic() - started
    one = cost.estimate("backward", tiny_llama, len(SNIPPETS), root=tmp_path)
    assert one.basis == "measured on this machine, 1 run"
    # a measured rate, not the guess (how the rate is computed from the reports: the fake-clock tests below; a
    # stopwatch bound here failed on a loaded machine, where programs' times vary)
    assert 0 < one.seconds < 10 * wall and one.seconds != before.seconds
    assert cost.estimate("backward", tiny_llama, 3 * len(SNIPPETS), root=tmp_path).seconds == pytest.approx(
        3 * one.seconds)
    assert cost.estimate("backward", tiny_llama, len(SNIPPETS), passes=4, root=tmp_path).seconds == pytest.approx(
        4 * one.seconds)
    # another pass kind, or the same weights on another device, has no measurement yet
    assert not cost.estimate("forward", tiny_llama, 7, root=tmp_path).measured


def test_the_rate_counts_only_work_done_after_the_first_report(tiny_llama, tmp_path):
    """A resumed pass reports 60 of 100 programs at once (finished chunks in the cache), then runs 40 in 20 s:
    0.5 s a program, not the 0.2 s that counting the cached 60 would give."""
    clock = Clock()
    with cost.Meter("forward", tiny_llama, 100, root=tmp_path, clock=clock) as meter:
        report = meter.wrap()
        report(60, 100)
        clock.now += 20
        report(100, 100)
    assert cost.rate("forward", cost.model_key(tiny_llama), tmp_path) == (pytest.approx(0.5), 1)
    # a pass that reports nothing (a cache hit) and a pass that fails record nothing
    with cost.Meter("backward", tiny_llama, 100, root=tmp_path, clock=clock):
        clock.now += 5
    with pytest.raises(KeyboardInterrupt), cost.Meter("backward", tiny_llama, 100, root=tmp_path, clock=clock) as m:
        m.wrap()(0, 10)
        clock.now += 5
        m.wrap()(5, 10)
        raise KeyboardInterrupt
    assert cost.rate("backward", cost.model_key(tiny_llama), tmp_path) is None


def test_the_running_mean_follows_recent_runs(tiny_llama, tmp_path):
    key = cost.model_key(tiny_llama)
    cost.record("forward", key, 10, 10.0, root=tmp_path)  # 1 s a program
    cost.record("forward", key, 10, 30.0, root=tmp_path)  # 3 s a program
    assert cost.rate("forward", key, tmp_path) == (pytest.approx(2.0), 2)


def test_the_store_survives_a_corrupt_file(tiny_llama, tmp_path):
    path = cost.store_path(tmp_path)
    path.write_bytes(b"\x00{not json")
    assert not cost.estimate("forward", tiny_llama, 7, root=tmp_path).measured
    cost.record("forward", cost.model_key(tiny_llama), 7, 7.0, root=tmp_path)
    assert cost.estimate("forward", tiny_llama, 7, root=tmp_path).seconds == pytest.approx(7.0)
    path.write_text('{"x": [1, 2]}')  # valid JSON of the wrong shape
    assert not cost.estimate("forward", tiny_llama, 7, root=tmp_path).measured
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_the_rough_guess_grows_with_model_size_and_tokens():
    small = cost.rough_seconds("forward", 10_000_000, 100)
    assert cost.rough_seconds("forward", 20_000_000, 100) == pytest.approx(2 * small)
    assert cost.rough_seconds("forward", 10_000_000, 100, tokens=100 * 512) == pytest.approx(2 * small)
    assert cost.rough_seconds("backward", 10_000_000, 100) > small
    assert cost.rough_seconds("forward", 10_000_000, 100, device="cuda") < small / 100


def test_estimate_text_names_passes_programs_and_basis():
    text = cost.Estimate(90.0, "measured on this machine, 2 runs", passes=3, programs=100).text()
    assert text == "3 passes over 100 programs · about 1 min 30 s (measured on this machine, 2 runs)"
    assert cost.Estimate(21.0, "rough guess", 1, 5).long and not cost.Estimate(19.0, "x").long


def test_the_ablation_pass_count_is_the_plans_sets_plus_the_unablated_pass():
    """What the Ablation tab promises (neuro.jobs.analyses.ablation_passes) against the sets the pass plans."""
    import numpy as np

    from neuro.instrument.ablation import plan_ablation
    from neuro.jobs.analyses import ablation_passes

    rng = np.random.default_rng(0)
    groups = {"python": {0: np.array([1, 2])}, "go": {1: np.array([3])}, "universal": {0: np.array([5])}}
    scores = {name: rng.random((2, 16)) for name in groups}
    conditions = plan_ablation(groups, 16, scores=scores, draws=3, uniform_draws=2, top_mean={1: np.array([7])})
    counts = {"python": 2, "go": 1, "java": 0, "universal": 1}
    assert ablation_passes(counts, 3, 2) == 1 + len(conditions)


def test_a_meter_to_exit_counts_the_work_after_the_last_report(tiny_llama, tmp_path):
    """Permutations after the statistics pass: 10 s of reported pass, then 30 s more: 40 s for 10 programs."""
    clock = Clock()
    with cost.Meter("statistics", tiny_llama, 10, root=tmp_path, clock=clock, to_exit=True) as meter:
        report = meter.wrap()
        report(0, 10)
        clock.now += 10
        report(10, 10)
        clock.now += 30
    assert cost.rate("statistics", cost.model_key(tiny_llama), tmp_path) == (pytest.approx(4.0), 1)


def test_tokens_are_guessed_from_characters_and_cut_like_the_passes_cut():
    from neuro.code.corpus import Snippet

    programs = [Snippet("a", "python", "a", "x" * 300), Snippet("b", "python", "b", "y" * 30_000)]
    assert cost.tokens_in(programs, max_length=512) == int(300 / cost.CHARS_PER_TOKEN) + 512
