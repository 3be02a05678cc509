"""Held-out next-token loss per language beside a unigram baseline."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tools.demo_model.hardware import pick_threads
from tools.demo_model.settings import LANGS, log, write_json
from tools.demo_model.tokens import check_offsets


def val_windows(stream: np.ndarray, ctx: int, max_windows: int | None = None) -> np.ndarray:
    """Non-overlapping windows of ``ctx + 1`` tokens (stride ``ctx``): every target counted once."""
    n = (len(stream) - 1) // ctx
    if max_windows is not None:
        n = min(n, max_windows)
    return np.stack([stream[i * ctx:i * ctx + ctx + 1] for i in range(n)]).astype(np.int64)


def window_nll(model, windows: np.ndarray, device: str, batch: int = 16) -> np.ndarray:
    """Summed next-token cross-entropy (nats) of each window: the per-window values a paired interval
    between two models resamples."""
    import torch
    import torch.nn.functional as F

    out = []
    with torch.inference_mode():
        for i in range(0, len(windows), batch):
            x = torch.from_numpy(windows[i:i + batch]).to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = model(input_ids=x[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                   reduction="none")
            out.append(loss.reshape(x.shape[0], -1).sum(dim=1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def model_nll(model, windows: np.ndarray, device: str, batch: int = 16) -> tuple[float, int]:
    """Summed next-token cross-entropy (nats) and the number of predicted tokens."""
    return float(window_nll(model, windows, device, batch).sum()), int(windows[:, 1:].size)


def unigram_nll(counts: np.ndarray, windows: np.ndarray) -> tuple[float, int]:
    """Summed cross-entropy of an add-one-smoothed unigram model on the same targets."""
    logp = np.log((counts + 1.0) / (counts.sum() + len(counts)))
    targets = windows[:, 1:].reshape(-1)
    return float(-logp[targets].sum()), int(targets.size)


class ValidationLoss(NamedTuple):
    """One language's validation stream scored by a model."""

    windows: np.ndarray  # (windows, ctx + 1) token ids
    window_nats: np.ndarray  # summed nats of each window's ctx predicted tokens
    tokens: int  # predicted tokens in all
    bytes_per_token: float  # of the whole stream, for bits per byte

    @property
    def total(self) -> float:
        return float(self.window_nats.sum())


def validation_nll(model, work: Path, ctx: int, max_windows: int | None,
                   device: str = "cpu") -> dict[str, ValidationLoss]:
    """Per language, the builder's validation stream scored by the model."""
    token_stats = json.loads((work / "token_stats.json").read_text())
    out = {}
    for lang in LANGS:
        stream = np.memmap(work / "tokens" / f"val_{lang}.bin", dtype=np.uint16, mode="r")
        windows = val_windows(stream, ctx, max_windows)
        out[lang] = ValidationLoss(windows, window_nll(model, windows, device), int(windows[:, 1:].size),
                                   token_stats["val_bytes"][lang] / token_stats["val_tokens"][lang])
    return out


def evaluate(args: argparse.Namespace) -> dict:
    """Per-language validation loss of the shipped model beside the unigram baseline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work, folder = Path(args.work_dir), Path(args.out_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(args.threads or pick_threads(os.cpu_count() or 1, 0))
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    plain = AutoModelForCausalLM.from_pretrained(folder)
    counts = np.load(work / "tokens" / "train_counts.npy")
    rows = {}
    for lang, scored in validation_nll(model, work, args.ctx, args.eval_windows, device).items():
        m_sum, n, bytes_per_token = scored.total, scored.tokens, scored.bytes_per_token
        u_sum, _ = unigram_nll(counts, scored.windows)
        rows[lang] = {"tokens": n, "model_nats": round(m_sum / n, 4), "unigram_nats": round(u_sum / n, 4),
                      "gap_nats": round((u_sum - m_sum) / n, 4),
                      "model_bits_per_byte": round(m_sum / n / math.log(2) / bytes_per_token, 4)}
        log.info("%s %s", lang, rows[lang])
    weights = folder / "model.safetensors"
    metrics = {
        "ctx": args.ctx, "languages": rows,
        "passes_2_nat_bar": all(r["gap_nats"] >= 2.0 for r in rows.values()),
        "weights_mb": round(weights.stat().st_size / 1e6, 2),
        "plain_load_dtype": str(next(plain.parameters()).dtype),
        "offsets_check": check_offsets(tok),
    }
    write_json(work / "eval_metrics.json", metrics)
    return metrics
