"""Time of a chance level (200 label permutations, within tasks) and of the universal-neuron tests (20 split
halves) on the embedded model's selection side, from its per-program scores in the cache (run
`python -m neuro neurons --cache DIR` once first; nothing is captured here). Prints seconds and the size of the
per-program arrays (float32: 4 bytes a value). Usage: python bench/bench_chance.py [--cache DIR]"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuro.analysis.selectivity import SelectionParams, chance_level, unit_groups  # noqa: E402
from neuro.analysis.universality import universality  # noqa: E402
from neuro.code.corpus import load_corpus  # noqa: E402
from neuro.code.split import split_corpus  # noqa: E402
from neuro.model.loading import load_model  # noqa: E402
from neuro.paths import DEMO_CORPUS_FILE, DEMO_MODEL_DIR  # noqa: E402
from neuro.results.statistics import statistics_with_units  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    loaded = load_model(str(DEMO_MODEL_DIR))
    selection = split_corpus(load_corpus(str(DEMO_CORPUS_FILE))).selection
    stats = statistics_with_units(loaded, selection, cache=args.cache, save=False)
    groups = unit_groups(stats, selection)
    print(f"units {len(stats.unit_lang)}, neurons {stats.n_layers} x {stats.n_neurons}, unit_pls "
          f"{stats.unit_pls.dtype} {stats.unit_pls.nbytes / 2**20:.1f} MiB, stratified {groups is not None}")
    start = time.perf_counter()
    level = chance_level(stats, "pls", SelectionParams(), 200, groups=groups)
    print(f"chance_level, 200 permutations: {time.perf_counter() - start:.2f} s; Holm p {level.p_holm()}")
    start = time.perf_counter()
    report = universality(stats, "pls", SelectionParams(), groups=groups, halvings=20)
    print(f"universality, 20 halvings: {time.perf_counter() - start:.2f} s; {report.text()}")


if __name__ == "__main__":
    main()
