"""Cross-device check: statistics of a model split over two devices equal one device's.

A random Llama (8 blocks by default) is saved, then loaded twice: whole on the first device, and with an
accelerate device map that puts the first half of its blocks there and the second half on `--second`
("cpu" beside a GPU; "disk" offload on a CPU-only machine, where accelerate moves each offloaded block's
weights in for its forward). The capture (PLS with gradients, syntax profile, top-k, per-program scores)
of both must agree; the largest relative difference per array is printed.

    python bench/bench_cross_device.py --json                 # GPU: half on cuda:0, half on the CPU
    python bench/bench_cross_device.py --second disk --json   # CPU only: half offloaded to disk
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARRAYS = ("act_abs_sum", "active_count", "pls_sum", "attribution_sum", "type_sum", "top_values", "unit_pls")


def main() -> None:
    import numpy as np
    import torch
    import transformers as T

    from neuro.code.corpus import load_corpus
    from neuro.instrument.statistics import capture_statistics
    from neuro.model.loading import prepare
    from neuro.paths import DEMO_MODEL_DIR

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--second", choices=["cpu", "disk"], default=None,
                   help="where the second half of the blocks goes (default: cpu with a GPU, else disk)")
    p.add_argument("--programs", type=int, default=40)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    first = "cuda:0" if torch.cuda.is_available() else "cpu"
    second = args.second or ("cpu" if first != "cpu" else "disk")
    dtype = torch.float32  # both runs in fp32 so the comparison measures placement, not precision
    tokenizer = T.AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    config = T.LlamaConfig(hidden_size=args.hidden, intermediate_size=3 * args.hidden, num_hidden_layers=args.layers,
                           num_attention_heads=8, num_key_value_heads=4, vocab_size=len(tokenizer))
    snippets = load_corpus(None)[: args.programs]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        T.AutoModelForCausalLM.from_config(config, dtype=dtype).save_pretrained(Path(tmp) / "m")
        whole = prepare(T.AutoModelForCausalLM.from_pretrained(Path(tmp) / "m", dtype=dtype).to(first), tokenizer,
                        source="whole", fingerprint="cross-device")
        half = args.layers // 2
        device_map = {"model.embed_tokens": first, "model.rotary_emb": first, "model.norm": second,
                      "lm_head": second if second != "disk" else first,
                      **{f"model.layers.{i}": first if i < half else second for i in range(args.layers)}}
        split = prepare(T.AutoModelForCausalLM.from_pretrained(Path(tmp) / "m", dtype=dtype, device_map=device_map,
                                                               offload_folder=str(Path(tmp) / "offload")),
                        tokenizer, source="split", fingerprint="cross-device")
        kwargs = dict(gradients=True, syntax=True, top_k=8, batch_tokens=2048)
        timings = {}
        results = {}
        for name, loaded in (("one device", whole), ("split", split)):
            start = time.perf_counter()
            results[name] = capture_statistics(loaded, snippets, **kwargs)
            timings[name] = round(time.perf_counter() - start, 2)
    a, b = results["one device"], results["split"]
    diffs = {}
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        finite = np.isfinite(x) & np.isfinite(y)
        scale = np.maximum(np.abs(x[finite]).max(), 1e-12)
        diffs[name] = float(np.abs(x[finite] - y[finite]).max() / scale)
    same_tokens = bool((a.tokens == b.tokens).all() and (a.samples == b.samples).all())
    ok = same_tokens and max(diffs.values()) < 1e-4 and bool((a.top_ids == b.top_ids).mean() > 0.99)
    out = {"first": first, "second": second, "layers": args.layers, "hidden": args.hidden,
           "programs": len(snippets), "max_relative_difference": diffs, "same_token_counts": same_tokens,
           "top_ids_agreement": float((a.top_ids == b.top_ids).mean()), "seconds": timings, "equal": ok}
    print(json.dumps(out, indent=1) if args.json else out)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
