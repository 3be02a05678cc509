"""Neuron-guided fine-tuning versus its controls at equal steps: trainable parameters, optimizer state,
peak memory, time per step, and the held-out loss of the target and the other languages.

Each method runs as its own job process, one after the other, so each peak-memory figure belongs to
one run alone (CPU: sampled process RSS; GPU: allocated memory). Usage:

    python bench/bench_finetune.py                       # demo model and corpus, target python
    python bench/bench_finetune.py --model DIR --corpus PATH --target go --steps 100 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuro.analysis.selectivity import SelectionParams  # noqa: E402
from neuro.code.corpus import load_corpus  # noqa: E402
from neuro.code.split import split_corpus  # noqa: E402
from neuro.experiments.finetune import plan_finetune, results_table, select_finetune_neurons  # noqa: E402
from neuro.jobs.folders import find_job  # noqa: E402
from neuro.jobs.kinds import FINETUNE, finished_results  # noqa: E402
from neuro.jobs.runner import start_job  # noqa: E402
from neuro.model.loading import load_model  # noqa: E402
from neuro.paths import DEMO_MODEL_DIR  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEMO_MODEL_DIR))
    p.add_argument("--corpus", default=None, help="default: the demo corpus")
    p.add_argument("--target", default="python")
    p.add_argument("--methods", default="neurons,random,full,lora")
    p.add_argument("--neuron-set", default="specific")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3, help="neurons, random, LoRA")
    p.add_argument("--lr-full", type=float, default=1e-4)
    p.add_argument("--batch-tokens", type=int, default=2048)
    p.add_argument("--top-fraction", type=float, default=0.01)
    p.add_argument("--device", default=None)
    p.add_argument("--cache", default=None, help="cache folder (jobs go to <cache>/jobs)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    loaded = load_model(args.model, device=args.device)
    snippets = load_corpus(args.corpus)
    split = split_corpus(snippets)  # neurons chosen on the selection side, losses measured on the other
    selection = select_finetune_neurons(loaded, split, SelectionParams(top_fraction=args.top_fraction),
                                        store=args.cache)
    root = Path(args.cache) / "jobs" if args.cache else None
    infos = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        config = plan_finetune(loaded, selection, args.target, method=method, neuron_set=args.neuron_set, split=split,
                               steps=args.steps, lr=args.lr_full if method == "full" else args.lr,
                               batch_tokens=args.batch_tokens, device=args.device)
        info = start_job(FINETUNE, config, loaded, snippets, root=root)
        print(f"{method}: job {info.id}", file=sys.stderr, flush=True)
        while (info := find_job(info.path)).active:
            time.sleep(1.0)
        if info.state != "finished":
            print(f"{method}: {info.state} {info.error or ''}\n{(info.path / 'log.txt').read_text()[-3000:]}",
                  file=sys.stderr)
        infos.append(info)
    results = finished_results(infos, FINETUNE)
    table = results_table(results)
    if table.empty:
        return 1
    table["state_mb"] = [(r.trainable_params + r.optimizer_state) * 4 / 2 ** 20 for r in results.values()]
    per_language = {r.method: r.heldout_delta for r in results.values()}
    columns = ["method", "neurons", "lora_rank", "trainable_params", "trainable_%", "optimizer_state", "state_mb",
               "peak_memory_mb", "memory_overhead_mb", "s_per_step", "target_loss_before", "target_loss_after",
               "target_delta", "others_delta_mean"]
    if args.json:
        print(json.dumps({"model": loaded.identity, "target": args.target, "steps": args.steps,
                          "rows": table[columns].to_dict(orient="records"), "heldout_delta": per_language},
                         indent=1, default=str))
    else:
        print(f"model {loaded.source} ({loaded.identity}), target {args.target}, {args.steps} steps, "
              f"device {loaded.device}")
        print(table[columns].round(4).to_string(index=False))
        print("\nheld-out loss change per language (after - before):")
        import pandas as pd
        print(pd.DataFrame(per_language).T.round(4).to_string())
        print("\nstate_mb: fp32 bytes of the trainable parameters' gradients plus AdamW moments "
              "(trainable + optimizer_state elements); peak/overhead: measured during training.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
