"""Training loop: model config, schedule, batches (with an optional parallel-program share), checkpoints."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from neuro import atomic
from tools.demo_model.evaluation import model_nll, val_windows
from tools.demo_model.hardware import device_name, pick_threads
from tools.demo_model.settings import LANGS, log, write_json


def model_config(vocab_size: int, layers: int = 8, hidden: int = 256, intermediate: int = 1024,
                 heads: int = 8, kv_heads: int = 4, max_positions: int = 2048):
    """LlamaConfig of the demo model."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       max_position_embeddings=max_positions, rope_theta=10000.0, rms_norm_eps=1e-5,
                       tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, pad_token_id=2)


def lr_at(progress: float, peak: float, warmup: float, final_frac: float = 0.1) -> float:
    """Linear warmup over the first ``warmup`` share of training, then cosine decay to ``final_frac``."""
    if progress < warmup:
        return peak * progress / warmup
    t = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def sample_batch(stream: np.ndarray, batch: int, ctx: int, rng: np.random.Generator):
    """Random windows of ``ctx + 1`` tokens as an int64 tensor."""
    import torch

    starts = rng.integers(0, len(stream) - ctx - 1, size=batch)
    return torch.from_numpy(np.stack([stream[s:s + ctx + 1] for s in starts]).astype(np.int64))


def mixed_batch(stream: np.ndarray, parallel: np.ndarray | None, share: float, batch: int, ctx: int,
                rng: np.random.Generator):
    """Random windows where each row comes from the parallel stream with probability ``share``.

    With no parallel stream (or share 0) this is exactly ``sample_batch``, so the plain recipe's
    random draws are unchanged.
    """
    import torch

    if parallel is None or share <= 0:
        return sample_batch(stream, batch, ctx, rng)
    rows = []
    for from_parallel in rng.random(batch) < share:
        src = parallel if from_parallel else stream
        s = int(rng.integers(0, len(src) - ctx - 1))
        rows.append(src[s:s + ctx + 1])
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def train(args: argparse.Namespace) -> dict:
    """Train from ``tokens/train.bin`` with a time and token budget; checkpoints and resumes."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    work = Path(args.work_dir)
    logfile = work / "train.log"
    logging.getLogger().addHandler(logging.FileHandler(logfile))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cpus = os.cpu_count() or 1
    if device == "cpu":
        torch.set_num_threads(args.threads or pick_threads(cpus, 0))
    batch = args.batch_size or (64 if device == "cuda" else 8)
    tok = AutoTokenizer.from_pretrained(work / "tokenizer")
    torch.manual_seed(args.seed)
    cfg = model_config(len(tok), layers=args.layers, hidden=args.hidden, intermediate=args.intermediate,
                       heads=args.heads, kv_heads=args.kv_heads)
    model = LlamaForCausalLM(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device == "cuda")
    stream = np.memmap(work / "tokens" / "train.bin", dtype=np.uint16, mode="r")
    parallel = None
    if args.parallel_share > 0:
        parallel = np.memmap(work / "tokens" / f"parallel_{args.parallel_layout}.bin", dtype=np.uint16, mode="r")
        log.info("parallel programs (%s) in %.0f %% of rows", args.parallel_layout, 100 * args.parallel_share)
    vals = {lang: val_windows(np.memmap(work / "tokens" / f"val_{lang}.bin", dtype=np.uint16, mode="r"),
                              args.ctx, args.quick_eval_windows) for lang in LANGS}
    ckpt_path = work / "checkpoint.pt"
    state = {"step": 0, "elapsed": 0.0, "tokens": 0, "history": []}
    if ckpt_path.exists() and not args.fresh:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        state = ckpt["state"]
        log.info("resumed at step %d (%.1f min, %d tokens)", state["step"], state["elapsed"] / 60, state["tokens"])
    rng = np.random.default_rng(args.seed + state["step"])
    max_s, max_tokens = args.max_minutes * 60, args.max_tokens
    tokens_per_step = batch * args.ctx
    log.info("device %s, %d params, batch %d x %d, budget %.0f min / %d tokens", device, n_params, batch,
             args.ctx, args.max_minutes, max_tokens)

    def progress() -> float:
        return max(state["elapsed"] / max_s, state["tokens"] / max_tokens)

    def save_checkpoint() -> None:
        with atomic.replacing(ckpt_path) as tmp:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state}, tmp)

    def quick_eval() -> dict:
        model.eval()
        out = {}
        for lang, windows in vals.items():
            total, count = model_nll(model, windows, device)
            out[lang] = round(total / count, 4)
        model.train()
        return out

    model.train()
    out = Path(args.out_dir)
    last_ckpt = last_snapshot = time.time()
    run_start, start_elapsed = time.time(), state["elapsed"]
    window_loss, window_n, window_t = 0.0, 0, time.time()
    while progress() < 1.0:
        lr = lr_at(progress(), args.lr, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        x = mixed_batch(stream, parallel, args.parallel_share, batch, args.ctx, rng).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        state["step"] += 1
        state["tokens"] += tokens_per_step
        state["elapsed"] = start_elapsed + time.time() - run_start
        window_loss += loss.item()
        window_n += 1
        if state["step"] % args.log_every == 0:
            rate = window_n * tokens_per_step / (time.time() - window_t)
            rec = {"step": state["step"], "tokens": state["tokens"], "minutes": round(state["elapsed"] / 60, 2),
                   "lr": round(lr, 6), "loss": round(window_loss / window_n, 4), "tok_per_s": round(rate),
                   "threads": torch.get_num_threads()}
            if device == "cpu" and not args.threads:
                torch.set_num_threads(pick_threads(cpus, torch.get_num_threads()))
            if state["step"] % args.eval_every == 0:
                rec["val"] = quick_eval()
            state["history"].append(rec)
            log.info(json.dumps(rec))
            window_loss, window_n, window_t = 0.0, 0, time.time()
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            save_checkpoint()
            last_ckpt = time.time()
        if args.snapshot_minutes and time.time() - last_snapshot > args.snapshot_minutes * 60:
            save_model(model, tok, out, args.max_shard_mb)  # a run cut off later still leaves a model
            last_snapshot = time.time()
            log.info("snapshot at step %d (%d tokens) saved to %s", state["step"], state["tokens"], out)
    save_checkpoint()
    final_val = quick_eval()
    save_model(model, tok, out, args.max_shard_mb)
    threads = sorted({h["threads"] for h in state["history"] if "threads" in h}) or [torch.get_num_threads()]
    metrics = {"device": device, "device_name": device_name(device), "threads": "/".join(map(str, threads)),
               "params": n_params, "steps": state["step"], "tokens_seen": state["tokens"],
               "wall_minutes": round(state["elapsed"] / 60, 2), "batch_size": batch, "ctx": args.ctx,
               "lr": args.lr, "warmup": args.warmup, "weight_decay": args.weight_decay,
               "max_minutes": args.max_minutes, "max_tokens": max_tokens,
               "parallel_layout": args.parallel_layout if args.parallel_share > 0 else None,
               "parallel_share": args.parallel_share,
               "final_quick_val": final_val, "history": state["history"]}
    write_json(work / "train_metrics.json", metrics)
    log.info("done: %d steps, %d tokens, %.1f min", state["step"], state["tokens"], state["elapsed"] / 60)
    return metrics


def save_model(model, tokenizer, out: Path, max_shard_mb: float | None = None) -> None:
    """Save bfloat16 safetensors weights (config says float32, so plain loading gives fp32) and tokenizer.

    The folder is written beside ``out`` and swapped in by two renames, so a run killed while saving leaves the
    previous model (in ``<out>.old`` if killed between the renames; the next save moves it back first);
    ``max_shard_mb`` splits the weights into files of at most that many MB (one file by default)."""
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    staging, old = out.with_name(out.name + ".next"), out.with_name(out.name + ".old")
    if old.exists() and not out.exists():
        old.rename(out)
    for stale in (staging, old):
        if stale.exists():
            shutil.rmtree(stale)
    half = type(model)(model.config)
    half.load_state_dict(model.state_dict())
    half.to(torch.bfloat16)
    shard = {"max_shard_size": f"{max_shard_mb:g}MB"} if max_shard_mb else {}
    half.save_pretrained(staging, safe_serialization=True, **shard)
    cfg_path = staging / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    tokenizer.save_pretrained(staging)
    for card_file in ("README.md", "metrics.json"):  # written by `card`, which a retrain does not rerun
        if (out / card_file).is_file():
            shutil.copy2(out / card_file, staging / card_file)
    if out.exists():
        out.rename(old)
    staging.rename(out)
    if old.exists():
        shutil.rmtree(old)
