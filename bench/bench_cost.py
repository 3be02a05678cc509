"""How close the pages' cost estimates come to the time the work takes (neuro.cost), on the embedded demo.

For each pass kind: the rough guess made before any measurement beside the first run's time, then the estimate
measured from that run beside a second run's time (the ratio a user sees: 1.0 = exact, 2.0 = twice as long
promised as taken). Rates go to a temporary store, never to the cache.

    python bench/bench_cost.py [--programs 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuro import cost  # noqa: E402
from neuro.code.corpus import load_corpus  # noqa: E402
from neuro.instrument.ablation import program_loss_pass  # noqa: E402
from neuro.instrument.statistics import capture_statistics  # noqa: E402
from neuro.model.loading import load_model  # noqa: E402
from neuro.paths import DEMO_MODEL_DIR  # noqa: E402


def _timed(kind: str, loaded, programs, run, root) -> float:
    started = time.perf_counter()
    with cost.Meter(kind, loaded, len(programs), root=root) as meter:
        run(meter.wrap())
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=60)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    loaded = load_model(str(DEMO_MODEL_DIR))
    programs = load_corpus(None)[:args.programs]
    tokens = cost.tokens_in(programs)

    def forward(progress):
        run = program_loss_pass(loaded, programs)
        progress(0, 1)
        run()
        progress(1, 1)

    def backward(progress):
        capture_statistics(loaded, programs, progress=progress)

    rows = {}
    with tempfile.TemporaryDirectory() as root:
        for kind, run in (("forward", forward), ("backward", backward)):
            guess = cost.estimate(kind, loaded, len(programs), tokens=tokens, root=root)
            first = _timed(kind, loaded, programs, run, root)
            measured = cost.estimate(kind, loaded, len(programs), tokens=tokens, root=root)
            second = _timed(kind, loaded, programs, run, root)
            rows[kind] = {"programs": len(programs), "rough_guess_s": round(guess.seconds, 2),
                          "first_run_s": round(first, 2), "guess_over_actual": round(guess.seconds / first, 2),
                          "measured_estimate_s": round(measured.seconds, 2), "second_run_s": round(second, 2),
                          "measured_over_actual": round(measured.seconds / second, 2)}
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for kind, row in rows.items():
            print(f"{kind:9s} {row['programs']} programs: rough guess {row['rough_guess_s']} s vs "
                  f"{row['first_run_s']} s taken (x{row['guess_over_actual']}); measured estimate "
                  f"{row['measured_estimate_s']} s vs {row['second_run_s']} s (x{row['measured_over_actual']})")
    return rows


if __name__ == "__main__":
    main()
