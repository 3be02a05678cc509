"""Capture overhead, measured side by side in one run on a random-weight Llama.

(a) plain forward, (b) forward with statistics capture, (c) plain activation-only forward+backward,
(d) forward+backward with PLS accumulators. Prints the ratios b/a and d/c (targets 1.10 and 1.20)
and the peak memory of (d) for a corpus of N and 4N batches (it must not grow with the corpus).

    python bench/bench_capture.py [--layers 8 --hidden 512 --intermediate 1536 --batch 8 --seq 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuro.capture import StatisticsHooks, hooked, sample_losses  # noqa: E402
from neuro.models import prepare  # noqa: E402


class _NoTokenizer:
    pad_token_id = 0
    eos_token = None


def build(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.heads, max_position_embeddings=max(2048, args.seq))
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = LlamaForCausalLM(cfg).to(args.device, dtype)
    return prepare(model, _NoTokenizer(), source="bench-llama", fingerprint="bench")


def make_batches(args, n):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(1, args.vocab, (args.batch, args.seq), generator=g) for _ in range(n)]


def step(loaded, ids, mode: str, hooks: StatisticsHooks | None):
    """One batch of work for modes a/b (forward) or c/d (forward+backward)."""
    ids = ids.to(loaded.device)
    mask = torch.ones_like(ids)
    if hooks is not None:
        hooks.set_batch(mask)
    model = loaded.model
    if mode in "ab":
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            sample_losses(logits, ids, mask)
        return
    inputs = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=inputs, attention_mask=mask, use_cache=False).logits
    sample_losses(logits, ids, mask).sum().backward()


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(loaded, batches, mode, device):
    gradients = mode == "d"
    hooks = StatisticsHooks(loaded, gradients=gradients) if mode in "bd" else None
    register = hooks.register if hooks else (lambda handles: None)
    with hooked(register):
        sync(device)
        start = time.perf_counter()
        for ids in batches:
            step(loaded, ids, mode, hooks)
        sync(device)
    return time.perf_counter() - start


def peak_memory_child(args) -> None:
    """Run mode (d) over `--child` batches and print the peak memory (RSS on CPU, allocator on GPU)."""
    loaded = build(args)
    batches = make_batches(args, args.child)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    timed(loaded, batches, "d", args.device)
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_bytes": peak}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batches", type=int, default=3, help="batches per timed repetition")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return peak_memory_child(args)

    loaded = build(args)
    batches = make_batches(args, args.batches)
    for mode in "abcd":  # warm-up
        timed(loaded, batches[:1], mode, args.device)
    times = {m: [] for m in "abcd"}
    for _ in range(args.reps):  # interleaved so drift affects every mode alike
        for mode in "abcd":
            times[mode].append(timed(loaded, batches, mode, args.device))
    med = {m: statistics.median(v) for m, v in times.items()}
    tokens = args.batches * args.batch * args.seq

    base = [sys.executable, __file__] + [a for a in sys.argv[1:] if a != "--json"]
    peaks = {}
    for n in (args.batches, 4 * args.batches):
        out = subprocess.run(base + ["--child", str(n)], capture_output=True, text=True, check=True)
        peaks[n] = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]

    result = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}",
        "config": {k: getattr(args, k) for k in ("layers", "hidden", "intermediate", "batch", "seq")},
        "tokens_per_s": {m: round(tokens / med[m]) for m in "abcd"},
        "ratio_stats_over_forward": round(med["b"] / med["a"], 3),
        "ratio_pls_over_backward": round(med["d"] / med["c"], 3),
        "peak_mb_pls": {f"{n}_batches": round(v / 2**20) for n, v in peaks.items()},
        "peak_growth": round(peaks[4 * args.batches] / peaks[args.batches], 3),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    names = {"a": "plain forward", "b": "forward + statistics", "c": "forward+backward (activation-only)",
             "d": "forward+backward + PLS"}
    print(f"device {result['device']}, config {result['config']}")
    for m in "abcd":
        print(f"  ({m}) {names[m]:<38} {result['tokens_per_s'][m]:>9,} tokens/s")
    print(f"  (b)/(a) = {result['ratio_stats_over_forward']:.3f}   target <= 1.10")
    print(f"  (d)/(c) = {result['ratio_pls_over_backward']:.3f}   target <= 1.20")
    print(f"  peak memory of (d): {result['peak_mb_pls']} MB, growth x{result['peak_growth']} for 4x the corpus")


if __name__ == "__main__":
    main()
