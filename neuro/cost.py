"""What a computation will cost, said before it starts: passes over programs times a rate measured on this
machine for this model, or, before any measurement, a rough guess from the model's size.

Rates are seconds per program per pass kind ("forward", "backward" = forward + backward, "layer_scores",
"projection"), kept per model identity and device in `<cache>/costs.json` (atomic writes; a corrupt or
unreadable file counts as empty). `Meter` records them from the progress reports a pass already makes.
Duck-typed on the model (identity, device, parameters) so it sits at the bottom of the package stack.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neuro import atomic
from neuro.paths import cache_dir
from neuro.progress import Progress, duration

# FLOPs per parameter per token of each pass kind (2: a forward matmul; the statistics capture's backward, hooks,
# syntax alignment and top-k examples measured at about 6x a forward on the demo model; training's backward to
# the weights and optimizer step 3x; the lens reads every layer through the output head)
FLOPS_PER_PARAMETER = {"forward": 2.0, "backward": 12.0, "statistics": 12.0, "layer_scores": 3.0, "lens": 4.0,
                       "train": 6.0, "projection": 0.0, "generation": 0.0}
# work a pass kind does per program beside the model (the chance level's permutations and the universal neurons'
# split halves on the CPU, after the statistics pass)
OVERHEAD_PER_PROGRAM_S = {"statistics": 1.0}
# sustained rates for the rough guess: the design notes' laptop ran the demo's forwards at about 4e10 FLOP/s, a
# 2-core machine shared with other work at 5e9 (bench/bench_cost.py); a GPU far below its peak
CPU_FLOPS, GPU_FLOPS = 2e10, 3e13
CHARS_PER_TOKEN = 3.0  # code tokenizers: about 3 (an 8k vocabulary) to 4 (Llama-3's 128k); fewer = more tokens
# generation is bound by one small step per new token: at least this long a token on each kind of device
GENERATION_STEP_S = {"cpu": 0.08, "other": 0.02}
GENERATED_TOKENS = 64
GUESS_TOKENS_PER_PROGRAM = 256
# UMAP: a fit costs about this much on a 2-core CPU whatever the model (plus a little per program)
PROJECTION_GUESS_S, PROJECTION_GUESS_PER_PROGRAM_S = 8.0, 0.02
RECENT = 5  # the stored rate is a running mean over about this many recent runs
CACHED_WITHIN_S = 0.5  # see Meter.wrap
LONG_S = 20.0  # in-page work estimated longer than this runs as a background job (or offers to)

_lock = threading.Lock()


@dataclass(frozen=True)
class Estimate:
    """Seconds a computation should take and what that number rests on."""

    seconds: float
    basis: str  # "measured on this machine, N runs" | "rough guess from the model's size"
    passes: int = 1
    programs: int = 0
    what: str = ""  # says the work instead of "N passes over M programs"

    @property
    def measured(self) -> bool:
        return self.basis.startswith("measured")

    @property
    def long(self) -> bool:
        return self.seconds > LONG_S

    def text(self) -> str:
        """'3 forward passes over 100 programs · about 21 s (measured on this machine, 2 runs)'."""
        what = self.what or (f"{self.passes:,} pass{'es' if self.passes != 1 else ''} over {self.programs:,} "
                             f"program{'s' if self.programs != 1 else ''}")
        return f"{what} · about {duration(self.seconds)} ({self.basis})"


def store_path(root: str | os.PathLike | None = None) -> Path:
    return Path(root) / "costs.json" if root is not None else cache_dir() / "costs.json"


def model_key(model) -> str:
    """A model's identity plus the kind of device it runs on (the same weights run at other rates elsewhere)."""
    return f"{model.identity}|{device_kind(model)}"


def device_kind(model) -> str:
    device = str(getattr(getattr(model, "device", "cpu"), "type", getattr(model, "device", "cpu")))
    return "cpu" if device == "meta" else device  # a browse-only model would run where it is opened


def parameter_count(model) -> int:
    inner = getattr(model, "model", model)
    return int(sum(p.numel() for p in inner.parameters()))


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, data, indent=1)


def rate(kind: str, key: str, root: str | os.PathLike | None = None) -> tuple[float, int] | None:
    """(seconds per program, runs) measured for `kind` on model `key`, None before any measurement."""
    entry = _read(store_path(root)).get(key, {}).get(kind)
    try:
        seconds, runs = float(entry["seconds_per_program"]), int(entry["runs"])
    except (TypeError, KeyError, ValueError):
        return None
    return (seconds, runs) if seconds >= 0 and runs > 0 else None


def record(kind: str, key: str, programs: float, seconds: float, root: str | os.PathLike | None = None) -> None:
    """Add one measurement: `seconds` for `programs` programs of a `kind` pass on model `key`."""
    if programs <= 0 or seconds <= 0:
        return
    path = store_path(root)
    with _lock:
        data = _read(path)
        entry = data.setdefault(key, {}).get(kind)
        value = seconds / programs
        try:
            old, runs = float(entry["seconds_per_program"]), int(entry["runs"])
            value = old + (value - old) / min(runs + 1, RECENT)
        except (TypeError, KeyError, ValueError):
            runs = 0
        data[key][kind] = {"seconds_per_program": value, "runs": runs + 1, "updated": time.time()}
        try:
            _write(path, data)
        except OSError:  # a read-only cache: estimates stay rough guesses
            pass


def rough_seconds(kind: str, parameters: int, programs: int, device: str = "cpu", tokens: int | None = None) -> float:
    """The guess before any measurement: parameters x tokens x FLOPs per parameter / a conservative rate."""
    if kind == "projection":
        return PROJECTION_GUESS_S + PROJECTION_GUESS_PER_PROGRAM_S * programs
    if kind == "generation":
        step = max(2.0 * parameters / (CPU_FLOPS if device == "cpu" else GPU_FLOPS),
                   GENERATION_STEP_S["cpu" if device == "cpu" else "other"])
        return programs * (tokens if tokens is not None else GENERATED_TOKENS) * step
    tokens = tokens if tokens is not None else programs * GUESS_TOKENS_PER_PROGRAM
    flops = FLOPS_PER_PARAMETER.get(kind, 6.0) * parameters * tokens
    return flops / (CPU_FLOPS if device == "cpu" else GPU_FLOPS) + OVERHEAD_PER_PROGRAM_S.get(kind, 0.0) * programs


def tokens_in(snippets, max_length: int = 512) -> int:
    """About how many tokens the programs are (from their characters), each cut at `max_length` as passes cut."""
    return int(sum(min(len(s.code) / CHARS_PER_TOKEN, max_length) for s in snippets))


def estimate(kind: str, model, programs: int, passes: int = 1, tokens: int | None = None,
             root: str | os.PathLike | None = None) -> Estimate:
    """How long `passes` passes of `kind` over `programs` programs should take on `model` here.
    `tokens`: the programs' token count, for the rough guess (default: 256 a program)."""
    measured = rate(kind, model_key(model), root)
    if measured is not None:
        seconds, runs = measured
        return Estimate(seconds * programs * passes, f"measured on this machine, {runs} run{'s' * (runs != 1)}",
                        passes, programs)
    guess = rough_seconds(kind, parameter_count(model), programs, device_kind(model), tokens)
    return Estimate(guess * passes, "rough guess from the model's size", passes, programs)


class Meter:
    """Measures a pass's rate from its progress reports and records it when the pass ends normally.

    `with Meter("forward", model, programs) as meter: run(progress=meter.wrap(progress))`. `to_exit`: the
    measurement ends when the block does, not at the last report. `programs` is
    the work of the whole call in programs (passes x programs for several passes); the rate counts only
    what ran after the first report, so work found in the cache at the start is not counted as fast
    work. A call that reports nothing (a cache hit) records nothing.
    """

    def __init__(self, kind: str, model, programs: float, root: str | os.PathLike | None = None,
                 clock: Callable[[], float] = time.monotonic, to_exit: bool = False):
        self.kind, self.key, self.programs, self.root, self.clock = kind, model_key(model), programs, root, clock
        self.to_exit = to_exit  # the work goes on after the last report (e.g. permutations after a pass)
        self.start: tuple[float, float] | None = None  # (time, fraction done) where the measurement starts
        self.last: tuple[float, float] | None = None
        self.entered = clock()

    def wrap(self, progress: Progress | None = None) -> Progress:
        def report(done: int, total: int) -> None:
            fraction = min(1.0, done / total) if total else 1.0
            now = self.clock()
            if self.start is None:
                # a first report of work already done, right away, is work found in the cache: measure from it;
                # otherwise the work since the meter was entered counts
                cached = fraction > 0 and now - self.entered < CACHED_WITHIN_S
                self.start = (now, fraction) if cached or fraction == 0 else (self.entered, 0.0)
            self.last = (now, fraction)
            if progress is not None:
                progress(done, total)
        return report

    def measured(self) -> tuple[float, float] | None:
        """(programs, seconds) measured so far, None when nothing ran."""
        if self.start is None or self.last is None or self.last[1] <= self.start[1]:
            return None
        return (self.last[1] - self.start[1]) * self.programs, self.last[0] - self.start[0]

    def __enter__(self) -> Meter:
        self.entered = self.clock()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self.to_exit and self.start is not None:
            self.last = (self.clock(), 1.0)
        if exc_type is None and (measured := self.measured()) is not None:
            record(self.kind, self.key, *measured, root=self.root)


def training_estimate(model, *, steps: int, batch_tokens: int, eval_programs: int, eval_kind: str = "forward",
                      eval_passes: int = 2, runs: int = 1) -> Estimate:
    """A training job: `steps` steps of `batch_tokens` tokens (a rough guess from the model's size until training
    rates are measured), plus `eval_passes` passes of `eval_kind` over the evaluation programs (before and
    after), times `runs` jobs."""
    device = device_kind(model)
    train = rough_seconds("train", parameter_count(model), 0, device, tokens=steps * batch_tokens)
    evaluate = estimate(eval_kind, model, eval_programs, passes=eval_passes)
    pass_word = "generation" if eval_kind == "generation" else "forward"
    what = (f"{runs} run{'s' * (runs != 1)} of {steps:,} training steps x {batch_tokens:,} tokens and "
            f"{eval_passes} {pass_word} passes over {eval_programs:,} evaluation programs")
    basis = ("training: rough guess from the model's size; evaluation: " + evaluate.basis)
    return Estimate(runs * (train + evaluate.seconds), basis, runs * eval_passes, eval_programs, what)
