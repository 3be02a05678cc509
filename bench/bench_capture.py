"""Capture throughput and overhead, side by side in one run, on a random-weight model of a given shape.

(a) plain forward, (b) forward with statistics capture, (c) activation-only forward+backward,
(d) forward+backward with PLS accumulators: tokens/s of each, the ratios b/a and d/c, the peak memory
of (c) and (d) and its growth over a 4x longer corpus (it must not grow); (e) pooled embeddings with
early exit after a middle layer vs the full depth (neuro.instrument.statistics.pooled_states); and with
`--humaneval-x DIR` the whole corpus's PLS statistics end to end (neuro.instrument.statistics.capture_statistics,
then the app's default neuro.results.statistics.STATS with syntax profile and top-k examples).

Presets (`--config`): `tiny` (8 layers, hidden 512, for CPUs), and the published shapes of
`llama-3.1-8b` and `qwen2.5-coder-32b`, built directly on the device with random weights: bfloat16
on a GPU, float32 on a CPU. `--layers N` (and the other shape options) override a preset, e.g. to
smoke-test a preset's layer shape on a CPU:

    python bench/bench_capture.py                                                  # tiny, CPU
    python bench/bench_capture.py --config llama-3.1-8b --layers 1 --batch 1 --seq 128
    python bench/bench_capture.py --config llama-3.1-8b --humaneval-x ../shared/data/humaneval-x  # GPU

Random-weight models have no tokenizer of their own: text (early exit, HumanEval-X) is encoded with
the demo model's tokenizer (neuro/assets/demo_model), ids clamped to the preset's vocabulary, or with
a character-level stand-in where the demo model is absent. The output says which.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuro.code.corpus import Snippet  # noqa: E402
from neuro.instrument.hooks import hooked
from neuro.instrument.losses import model_sample_losses, model_token_losses  # noqa: E402
from neuro.instrument.states import pooled_states
from neuro.instrument.statistics import StatisticsHooks, capture_statistics
from neuro.model.loading import LoadedModel, prepare  # noqa: E402

# --------------------------------------------------------------------------- presets

# Published configs (config.json of meta-llama/Llama-3.1-8B and Qwen/Qwen2.5-Coder-32B); only what
# shapes the compute matters here. "arch" picks the transformers config class.
PRESETS: dict[str, dict] = {
    "tiny": dict(arch="llama", hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                 num_attention_heads=8, num_key_value_heads=8, vocab_size=8192, max_position_embeddings=2048),
    "llama-3.1-8b": dict(
        arch="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=8192)),
    "qwen2.5-coder-32b": dict(
        arch="qwen2", hidden_size=5120, intermediate_size=27648, num_hidden_layers=64, num_attention_heads=40,
        num_key_value_heads=8, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6,
        tie_word_embeddings=False, use_sliding_window=False,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
}

# Run shape per preset (batch x seq tokens per batch, batches per timed repetition, repetitions).
# qwen2.5-coder-32b: 65.5 GB of bf16 weights leave ~75 GB of an H200 for activations; an
# activation-only forward+backward keeps ~25-30 MB per token (64 layers, 152k-entry logits), so
# 2 x 512 tokens per batch (~30 GB) leaves a wide margin.
RUN_DEFAULTS: dict[str, dict] = {
    "tiny": dict(batch=8, seq=256, batches=3, reps=5, hx_batch_tokens=4096),
    "llama-3.1-8b": dict(batch=8, seq=512, batches=3, reps=5, hx_batch_tokens=4096),
    "qwen2.5-coder-32b": dict(batch=2, seq=512, batches=2, reps=3, hx_batch_tokens=1024),
}

GPU_TARGETS = {"stats_over_forward": 1.05, "pls_over_backward": 1.05, "pls_peak_memory_over_backward": 1.15,
               "humaneval_x_pls_seconds": 20.0}


def preset_config(name: str, *, layers: int | None = None, hidden: int | None = None,
                  intermediate: int | None = None, heads: int | None = None, kv_heads: int | None = None,
                  vocab: int | None = None, seq: int | None = None):
    """The transformers config of a preset, with optional shape overrides (e.g. fewer layers)."""
    from transformers import LlamaConfig, Qwen2Config

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    spec = dict(PRESETS[name])
    arch = spec.pop("arch")
    for key, value in (("num_hidden_layers", layers), ("hidden_size", hidden), ("intermediate_size", intermediate),
                       ("num_attention_heads", heads), ("num_key_value_heads", kv_heads), ("vocab_size", vocab)):
        if value is not None:
            spec[key] = value
    if heads is not None and kv_heads is None:
        spec["num_key_value_heads"] = min(spec["num_key_value_heads"], heads)
    if seq is not None:
        spec["max_position_embeddings"] = max(spec["max_position_embeddings"], seq)
    return {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch](**spec)


def _no_init_weights():
    """transformers' switch that skips its (slow, on CPUs) weight initialisation; a no-op where absent."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: its init runs, then randomize() overwrites it
        return contextlib.nullcontext()
    return no_init_weights()


_BLOCK = 1_000_003  # prime: no weight row length divides it, so tiled rows differ


@torch.no_grad()
def randomize(model: torch.nn.Module, std: float = 0.02, seed: int = 0) -> None:
    """Random weights fast: matrices get a tiled block of N(0, std) values (a memory copy, not an RNG
    call per element: 1.3B float32 values take 0.7 s instead of 30 s of transformers' init on a CPU),
    norm weights 1, biases 0. Speed does not depend on the values; only non-finite ones would matter."""
    block = torch.randn(_BLOCK, generator=torch.Generator().manual_seed(seed)) * std
    blocks: dict = {}
    for name, param in model.named_parameters():
        if param.ndim < 2:
            param.fill_(1.0 if "norm" in name else 0.0)
            continue
        key = (param.device, param.dtype)
        if key not in blocks:
            blocks[key] = block.to(param.device, param.dtype)
        src, flat, n = blocks[key], param.view(-1), param.numel()
        whole = n // _BLOCK
        if whole:
            flat[: whole * _BLOCK].view(whole, _BLOCK).copy_(src.expand(whole, _BLOCK))
        flat[whole * _BLOCK:].copy_(src[: n - whole * _BLOCK])


def build_model(config, device: str, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A random-weight causal LM built directly on `device` (no CPU copy of a 32B model's weights)."""
    from transformers import AutoModelForCausalLM

    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    with torch.device(device), _no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if device != "meta":
        randomize(model, std=getattr(config, "initializer_range", 0.02) or 0.02)
    return model


# --------------------------------------------------------------------------- tokenizer for text

class ClampedTokenizer:
    """A tokenizer whose ids are clamped to a model's vocabulary (the demo tokenizer on a preset)."""

    def __init__(self, tokenizer, vocab_size: int):
        self._tokenizer, self._last = tokenizer, vocab_size - 1

    def __call__(self, *args, **kwargs):
        enc = self._tokenizer(*args, **kwargs)
        enc["input_ids"] = [min(i, self._last) for i in enc["input_ids"]]
        return enc

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


class CharTokenizer:
    """Stand-in when the demo tokenizer is absent: one token per character, ids 3.. (0 BOS, 1 EOS, 2 PAD)."""

    bos_token_id, eos_token_id, pad_token_id = 0, 1, 2
    eos_token, pad_token = "</s>", "<pad>"

    def __init__(self, vocab_size: int):
        self._span = vocab_size - 3

    def __call__(self, text: str, add_special_tokens: bool = False, return_offsets_mapping: bool = False,
                 truncation: bool = False, max_length: int | None = None):
        if truncation and max_length is not None:
            text = text[:max_length]
        return {"input_ids": [3 + ord(ch) % self._span for ch in text],
                "offset_mapping": [(i, i + 1) for i in range(len(text))]}


def bench_tokenizer(vocab_size: int) -> tuple[object, str]:
    from neuro.paths import DEMO_MODEL_DIR

    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
        return (ClampedTokenizer(tok, vocab_size),
                f"demo model's tokenizer ({len(tok)} ids), ids clamped to the vocabulary of {vocab_size}")
    except Exception as err:  # noqa: BLE001 - any failure to load falls back to the stand-in
        return CharTokenizer(vocab_size), f"character-level stand-in (demo tokenizer not loadable: {err})"


# --------------------------------------------------------------------------- modes a-d

def make_batches(batch: int, seq: int, vocab: int, n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, vocab, (batch, seq), generator=g) for _ in range(n)]


def step(loaded: LoadedModel, ids: torch.Tensor, mode: str, hooks: StatisticsHooks | None) -> None:
    """One batch of work for modes a/b (forward) or c/d (forward+backward)."""
    ids = ids.to(loaded.device)
    mask = torch.ones_like(ids)
    if hooks is not None:
        hooks.set_batch(mask)
    if mode in "ab":
        with torch.inference_mode():
            model_sample_losses(loaded, ids, mask)
    else:
        inputs = loaded.embeddings(ids).detach().requires_grad_(True)
        ce, _targets = model_token_losses(loaded, ids, mask, inputs_embeds=inputs)
        ce.sum().backward()
    if hooks is not None:
        hooks.commit()


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(loaded: LoadedModel, batches, mode: str) -> float:
    hooks = StatisticsHooks(loaded, gradients=mode == "d") if mode in "bd" else None
    register = hooks.register if hooks else (lambda handles: None)
    with hooked(register):
        sync(loaded.device)
        start = time.perf_counter()
        for ids in batches:
            step(loaded, ids, mode, hooks)
        sync(loaded.device)
    return time.perf_counter() - start


class PeakMemory:
    """Peak memory of a stretch of work: the CUDA allocator's on a GPU; on a CPU the resident set's high
    water mark (Linux: reset through /proc/self/clear_refs after returning freed heap to the system)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.supported = self.cuda or Path("/proc/self/clear_refs").exists()

    @staticmethod
    def _status(field: str) -> int:
        text = Path("/proc/self/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) * 1024

    def reset(self) -> int | None:
        """Start measuring; returns the memory resident now (weights and accumulators)."""
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        if not self.supported:
            return None
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return self._status("VmRSS")
        except OSError:
            self.supported = False
            return None

    def peak(self) -> int | None:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return self._status("VmHWM") if self.supported else None


def measured(loaded: LoadedModel, batches, mode: str, memory: PeakMemory) -> dict:
    base = memory.reset()
    seconds = timed(loaded, batches, mode)
    peak = memory.peak()
    return {"seconds": seconds, "peak": peak, "base": base}


# --------------------------------------------------------------------------- early exit, HumanEval-X

def synthetic_snippets(n: int, seq: int) -> list[Snippet]:
    """n Python programs, each longer than `seq` tokens (truncated to seq when encoded)."""
    out = []
    for i in range(n):
        code = "".join(f"def f_{i}_{j}(x, y):\n    return (x * {j + i} + y) // {j % 7 + 1}\n" for j in range(seq))
        out.append(Snippet(id=f"bench/{i}", lang="python", task=f"bench_{i}", code=code))
    return out


def early_exit(loaded: LoadedModel, batch: int, seq: int, batches: int, reps: int) -> dict:
    """Pooled hidden states stopping after a middle block vs through the full depth, same API."""
    layers = loaded.n_layers
    mid = max(0, layers // 2 - 1)
    snippets = synthetic_snippets(batch * batches, seq)
    run = functools.partial(pooled_states, loaded, snippets, max_length=seq, batch_tokens=batch * seq,
                            max_batch=batch)
    run(upto_layer=mid)  # warm-up
    run(upto_layer=None)
    times = {"early": [], "full": []}
    for _ in range(reps):
        for key, upto in (("early", mid), ("full", None)):
            sync(loaded.device)
            start = time.perf_counter()
            run(upto_layer=upto)
            sync(loaded.device)
            times[key].append(time.perf_counter() - start)
    early, full = statistics.median(times["early"]), statistics.median(times["full"])
    tokens = len(snippets) * seq
    return {"stop_after_layer": mid, "of_layers": layers, "snippets": len(snippets),
            "tokens_per_s_early": round(tokens / early), "tokens_per_s_full": round(tokens / full),
            "speedup": round(full / early, 3), "ideal_speedup": round(layers / (mid + 1), 3)}


def humaneval_x(loaded: LoadedModel, folder: str, limit: int, batch_tokens: int, memory: PeakMemory) -> dict:
    """Whole-corpus PLS statistics on HumanEval-X: the bare capture, then the app's default analysis."""
    from neuro.code.corpus import load_humaneval_x

    path = Path(folder)
    if not path.is_dir():
        return {"skipped": f"skipped, {path} not found"}
    snippets = load_humaneval_x(path)
    if limit:
        snippets = snippets[:limit]
    out: dict = {"programs": len(snippets), "batch_tokens": batch_tokens}
    capture = functools.partial(capture_statistics, batch_tokens=batch_tokens)
    try:
        memory.reset()
        start = time.perf_counter()
        stats = capture(loaded, snippets, gradients=True)
        sync(loaded.device)
        seconds = time.perf_counter() - start
        tokens = int(stats.tokens.sum())
        out.update(tokens=tokens, seconds_pls=round(seconds, 2), tokens_per_s_pls=round(tokens / seconds))
        if memory.supported:
            out["peak_mb_pls"] = round(memory.peak() / 2**20)
    except torch.cuda.OutOfMemoryError as err:
        return dict(out, error=f"out of GPU memory ({err}); lower --hx-batch-tokens")
    try:
        import tree_sitter  # noqa: F401 - the syntax profile needs it
    except ImportError:
        out["app_default"] = "skipped: tree_sitter is not installed (syntax profile)"
        return out
    from neuro.results.statistics import STATS

    with tempfile.TemporaryDirectory() as tmp:
        try:
            start = time.perf_counter()
            STATS.get(loaded, snippets, gradients=True, cache=tmp, capture=capture)
            sync(loaded.device)
            out["seconds_app_default"] = round(time.perf_counter() - start, 2)
        except torch.cuda.OutOfMemoryError as err:
            out["app_default"] = f"out of GPU memory ({err})"
    return out


# --------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny", choices=list(PRESETS), help="model shape preset")
    p.add_argument("--layers", type=int, help="override the preset's depth (e.g. 1 to smoke-test on a CPU)")
    p.add_argument("--hidden", type=int)
    p.add_argument("--intermediate", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--kv-heads", type=int)
    p.add_argument("--vocab", type=int)
    p.add_argument("--batch", type=int, help="sequences per batch (default: the preset's)")
    p.add_argument("--seq", type=int, help="tokens per sequence (default: the preset's)")
    p.add_argument("--batches", type=int, help="batches per timed repetition")
    p.add_argument("--reps", type=int, help="timed repetitions (interleaved over the modes; median)")
    p.add_argument("--no-early-exit", action="store_true", help="skip the early-exit embedding comparison")
    p.add_argument("--no-growth", action="store_true", help="skip the peak memory of (d) over 4x the batches")
    p.add_argument("--humaneval-x", metavar="DIR", help="also time whole-corpus PLS on HumanEval-X in DIR")
    p.add_argument("--hx-limit", type=int, default=0, help="only the first N HumanEval-X programs (0: all)")
    p.add_argument("--hx-batch-tokens", type=int, help="padded tokens per batch of the HumanEval-X capture")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", action="store_true", help="print the result as JSON only")
    p.add_argument("--json-out", metavar="PATH", help="also write the result as JSON to PATH")
    args = p.parse_args(argv)
    for key, value in RUN_DEFAULTS[args.config].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def run(args: argparse.Namespace, report=lambda result: None) -> dict:
    """The whole benchmark; `report(result)` is called after each section (partial results survive)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    config = preset_config(args.config, layers=args.layers, hidden=args.hidden, intermediate=args.intermediate,
                           heads=args.heads, kv_heads=args.kv_heads, vocab=args.vocab, seq=args.seq)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(config, args.device)
    sync(args.device)
    build_s = time.perf_counter() - start
    tokenizer, tokenizer_note = bench_tokenizer(config.vocab_size)
    loaded = prepare(model, tokenizer, source=f"bench-{args.config}", fingerprint="bench")
    cuda = args.device.startswith("cuda")
    n_params = sum(p.numel() for p in model.parameters())
    result: dict = {
        "device": torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()}",
        "preset": args.config,
        "config": {"model_type": config.model_type, "layers": config.num_hidden_layers,
                   "hidden": config.hidden_size, "intermediate": config.intermediate_size,
                   "heads": config.num_attention_heads, "kv_heads": config.num_key_value_heads,
                   "vocab": config.vocab_size, "params_b": round(n_params / 1e9, 3),
                   "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")},
        "run": {k: getattr(args, k) for k in ("batch", "seq", "batches", "reps")},
        "build_s": round(build_s, 1),
        "tokenizer": tokenizer_note,
    }

    batches = make_batches(args.batch, args.seq, config.vocab_size, args.batches)
    memory = PeakMemory(args.device)
    for mode in "abcd":  # warm-up
        timed(loaded, batches[:1], mode)
    mem = {mode: measured(loaded, batches, mode, memory) for mode in "cd"}
    times: dict[str, list[float]] = {m: [] for m in "abcd"}
    for _ in range(args.reps):  # interleaved so drift affects every mode alike
        for mode in "abcd":
            times[mode].append(timed(loaded, batches, mode))
    med = {m: statistics.median(v) for m, v in times.items()}
    tokens = args.batches * args.batch * args.seq
    result.update({
        "tokens_per_s": {m: round(tokens / med[m]) for m in "abcd"},
        "ratio_stats_over_forward": round(med["b"] / med["a"], 3),
        "ratio_pls_over_backward": round(med["d"] / med["c"], 3),
    })
    if memory.supported:
        mb = lambda v: round(v / 2**20)  # noqa: E731
        result["memory"] = {
            "kind": "CUDA allocator peak" if cuda else "resident set peak (VmHWM)",
            "resident_mb": mb(mem["c"]["base"]),
            "peak_mb_backward": mb(mem["c"]["peak"]), "peak_mb_pls": mb(mem["d"]["peak"]),
            "ratio_pls_over_backward": round(mem["d"]["peak"] / mem["c"]["peak"], 3),
            "working_mb_backward": mb(mem["c"]["peak"] - mem["c"]["base"]),
            "working_mb_pls": mb(mem["d"]["peak"] - mem["d"]["base"]),
        }
        if not args.no_growth:
            longer = measured(loaded, batches * 4, "d", memory)
            result["memory"]["peak_mb_pls_4x_batches"] = mb(longer["peak"])
            result["memory"]["growth_4x"] = round(longer["peak"] / mem["d"]["peak"], 3)
    else:
        result["memory"] = {"kind": "not measurable on this system"}
    report(result)

    if not args.no_early_exit:
        result["early_exit"] = early_exit(loaded, args.batch, args.seq, args.batches, args.reps)
        report(result)
    if args.humaneval_x:
        batch_tokens = args.hx_batch_tokens or RUN_DEFAULTS[args.config]["hx_batch_tokens"]
        result["humaneval_x"] = humaneval_x(loaded, args.humaneval_x, args.hx_limit, batch_tokens, memory)
        report(result)
    result["targets_gpu"] = GPU_TARGETS
    report(result)
    return result


def format_table(result: dict) -> str:
    names = {"a": "plain forward", "b": "forward + statistics", "c": "forward+backward (activation-only)",
             "d": "forward+backward + PLS"}
    cfg, run_ = result["config"], result["run"]
    lines = [f"device {result['device']}, preset {result['preset']}: {cfg}",
             f"batches of {run_['batch']} x {run_['seq']} tokens, {run_['batches']} per repetition, "
             f"median of {run_['reps']}; model built in {result['build_s']} s"]
    for m in "abcd":
        lines.append(f"  ({m}) {names[m]:<38} {result['tokens_per_s'][m]:>10,} tokens/s")
    t = GPU_TARGETS
    lines.append(f"  (b)/(a) time   = {result['ratio_stats_over_forward']:.3f}   GPU target <= "
                 f"{t['stats_over_forward']}")
    lines.append(f"  (d)/(c) time   = {result['ratio_pls_over_backward']:.3f}   GPU target <= {t['pls_over_backward']}")
    mem = result["memory"]
    if "peak_mb_pls" in mem:
        lines.append(f"  (d)/(c) memory = {mem['ratio_pls_over_backward']:.3f}   GPU target <= "
                     f"{t['pls_peak_memory_over_backward']}  ({mem['kind']}: (c) {mem['peak_mb_backward']:,} MB, "
                     f"(d) {mem['peak_mb_pls']:,} MB; resident before {mem['resident_mb']:,} MB, working "
                     f"(c) {mem['working_mb_backward']:,} / (d) {mem['working_mb_pls']:,} MB)")
        if "growth_4x" in mem:
            lines.append(f"  peak memory of (d) over 4x the batches: {mem['peak_mb_pls_4x_batches']:,} MB, "
                         f"growth x{mem['growth_4x']} (must stay ~1)")
    else:
        lines.append(f"  peak memory: {mem['kind']}")
    if "early_exit" in result:
        e = result["early_exit"]
        lines.append(f"  (e) pooled embeddings, early exit after layer {e['stop_after_layer']} of {e['of_layers']}: "
                     f"{e['tokens_per_s_early']:,} tokens/s vs {e['tokens_per_s_full']:,} full depth: speed-up "
                     f"x{e['speedup']} (ideal x{e['ideal_speedup']})")
    if "humaneval_x" in result:
        h = result["humaneval_x"]
        if "skipped" in h or "error" in h:
            lines.append(f"  HumanEval-X: {h.get('skipped') or h.get('error')}")
        else:
            peak = f", peak memory {h['peak_mb_pls']:,} MB" if "peak_mb_pls" in h else ""
            lines.append(f"  HumanEval-X PLS, {h['programs']} programs, {h['tokens']:,} tokens: {h['seconds_pls']} s "
                         f"({h['tokens_per_s_pls']:,} tokens/s{peak}; GPU target < "
                         f"{t['humaneval_x_pls_seconds']:.0f} s for llama-3.1-8b)")
            if "seconds_app_default" in h:
                lines.append(f"  HumanEval-X app default (PLS + syntax profile + top-16): {h['seconds_app_default']} s")
            else:
                lines.append(f"  HumanEval-X app default: {h['app_default']}")
    lines.append(f"  text encoded with the {result['tokenizer']}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)

    def report(result: dict) -> None:
        if args.json_out:
            path = Path(args.json_out)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1))

    result = run(args, report)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return result


if __name__ == "__main__":
    main()
