"""The Intervene tab's cost on the demo model: `intervene_tokens` (two forward passes of one program, with and
without an intervention, loss and top-1 per token) beside one plain forward of the same program, timed side by
side; and the hook's overhead, a forward inside `intervened` vs a plain one.

    python bench/bench_intervene.py [--repeats 20] [--tokens 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuro.analysis.token_effects import intervene_tokens  # noqa: E402
from neuro.code.corpus import load_corpus  # noqa: E402
from neuro.instrument.intervention import Intervention, intervened  # noqa: E402
from neuro.instrument.tokens import encode  # noqa: E402
from neuro.model.loading import load_model  # noqa: E402
from neuro.paths import DEMO_CORPUS_FILE, DEMO_MODEL_DIR  # noqa: E402


def _times(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, run in turn (round robin), so a busy machine slows all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=200, help="program length in tokens (cut)")
    args = parser.parse_args()
    loaded = load_model(str(DEMO_MODEL_DIR))
    code = max((s.code for s in load_corpus(DEMO_CORPUS_FILE) if s.lang == "python"), key=len)
    ids = torch.tensor([encode(loaded, code, args.tokens).ids])
    neurons = [(layer, n) for layer in range(loaded.n_layers) for n in range(0, loaded.n_neurons, 97)]
    scale = Intervention(neurons, "scale", 4.0)

    def plain():
        with torch.inference_mode():
            loaded.model(input_ids=ids, use_cache=False)

    def hooked():
        with intervened(loaded, scale), torch.inference_mode():
            loaded.model(input_ids=ids, use_cache=False)

    text = loaded.tokenizer.decode(ids[0], skip_special_tokens=True)
    t = _times({"plain": plain, "hooked": hooked, "view": lambda: intervene_tokens(loaded, text, [scale])},
               args.repeats)
    t_plain, t_hooked, t_view = t["plain"], t["hooked"], t["view"]
    print(json.dumps({"tokens": int(ids.shape[1]), "neurons": len(neurons), "plain_forward_s": t_plain,
                      "intervened_forward_s": t_hooked, "hook_overhead_ratio": t_hooked / t_plain,
                      "intervene_tokens_s": t_view, "intervene_tokens_vs_forward": t_view / t_plain}, indent=1))


if __name__ == "__main__":
    main()
