"""What the training tasks share: batches, one training loop (resumable from its checkpoints), memory
checks and measurement, LoRA on named modules, checkpoints. Which programs a task trains on and which it
is evaluated on comes from the corpus-wide selection / evaluation split (neuro/code/split.py).

The tasks themselves live in `finetune.py` (neuron-guided fine-tuning for code generation) and
`transfer.py` (concept-layer-guided summarization transfer); both run as jobs (see neuro/jobs/kinds.py).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neuro.model.loading import LoadedModel, load_model
from neuro.training.batches import Batch, batch_loss
from neuro.training.checkpoints import TRAIN_STATE
from neuro.training.context import TaskContext
from neuro.training.memory import PeakMemory, optimizer_state_size
from neuro.training.records import Record


def common_reasons(steps, lr, batch_tokens: int | None = None, weights_loaded: bool = True) -> list[str]:
    reasons = [] if weights_loaded else [
        "the model was opened from its cached card without weights (cached results only): load its folder or "
        "hub id to train"]
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        reasons.append(f"steps must be a whole number >= 1, got {steps!r}")
    try:
        lr_ok = math.isfinite(float(lr)) and float(lr) > 0
    except (TypeError, ValueError):
        lr_ok = False
    if not lr_ok:
        reasons.append(f"the learning rate must be a positive finite number, got {lr!r}")
    if batch_tokens is not None and batch_tokens < 16:
        reasons.append(f"batch tokens must be >= 16, got {batch_tokens}")
    return reasons


@dataclass
class TrainReport:
    steps: int
    losses: list[float]
    seconds: float
    trainable: int
    optimizer_state: int  # elements held by the optimizer (AdamW: two per trainable parameter)
    memory: dict

    def summary(self) -> dict:
        return {"steps": self.steps, "seconds": round(self.seconds, 2),
                "seconds_per_step": round(self.seconds / max(self.steps, 1), 3),
                "train_loss_first": self.losses[0] if self.losses else None,
                "train_loss_last": float(np.mean(self.losses[-5:])) if self.losses else None,
                "trainable_params": self.trainable, "optimizer_state": self.optimizer_state, **self.memory}


@dataclass(frozen=True, kw_only=True)
class TrainSummary(Record):
    """What every training job's result says about its training: `TrainReport.summary()`, typed. The
    base of each training kind's result, so result.json stays flat as it always was; the defaults let
    results of older jobs (written before a field existed) still load."""

    steps: int
    trainable_params: int
    optimizer_state: int
    seconds: float | None = None
    seconds_per_step: float | None = None
    train_loss_first: float | None = None
    train_loss_last: float | None = None
    memory_kind: str | None = None
    peak_memory_mb: float | None = None
    baseline_memory_mb: float | None = None
    memory_overhead_mb: float | None = None
    losses: list[float] = field(default_factory=list, metadata={"saved": False})  # every step's (metrics.json)


def train(model: nn.Module, params: Sequence[nn.Parameter], batches: Sequence[Batch], *, steps: int, lr: float,
          ctx: TaskContext, seed: int = 0, clip: float = 1.0, checkpoint=None, checkpoint_every: int = 0,
          resume: Path | None = None, device: torch.device | None = None) -> TrainReport:
    """AdamW on `params` only, `steps` batches drawn from a seeded shuffle (reshuffled each epoch).

    Reports each step's loss as a metric and checks for a cancel before each step. With `checkpoint`,
    calls `checkpoint(write)` every `checkpoint_every` steps (0: never) and after the last step;
    `write(folder)` saves what resuming needs besides the weights, which the caller adds. `resume`: a
    folder so written (with the caller's weights already loaded): training continues at its step with
    the same optimizer state and batch order, as if it had never stopped.
    """
    params = list(params)
    if not params:
        raise ValueError("nothing to train")
    if not batches:
        raise ValueError("no training batches")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    saved = load_training_state(resume, optimizer, rng) if resume is not None else {}
    order: list[int] = saved.get("order", [])
    losses: list[float] = saved.get("losses", [])
    device = device or params[0].device
    start = time.time() - saved.get("seconds", 0.0)

    def save(step: int) -> None:
        state = {"step": step, "steps": steps, "losses": losses, "order": [int(i) for i in order],
                 "rng": rng.bit_generator.state, "seconds": time.time() - start,
                 "optimizer_state": optimizer_state_size(optimizer)}
        checkpoint(lambda folder: save_training_state(folder, state, optimizer if step < steps else None))

    with PeakMemory(device) as memory:
        for step in range(saved.get("step", 0), steps):
            ctx.check()
            if not order:
                order = list(rng.permutation(len(batches)))
            batch = batches[order.pop()]
            loss = batch_loss(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {float(loss)} at step {step + 1}; lower the learning rate")
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            ctx.metric(step=step + 1, loss=losses[-1], tokens=batch.tokens)
            ctx.progress(step + 1, steps, "training")
            due = step + 1 == steps or (checkpoint_every and (step + 1) % checkpoint_every == 0)
            if checkpoint is not None and due:
                save(step + 1)
    # resumed after the last step: the optimizer was not reloaded, its size is in the checkpoint
    state = optimizer_state_size(optimizer) or saved.get("optimizer_state", 0)
    return TrainReport(steps, losses, time.time() - start, sum(p.numel() for p in params), state, memory.summary())


def save_training_state(folder: Path, state: dict, optimizer: torch.optim.Optimizer | None) -> None:
    """train()'s part of a checkpoint: step, losses, batch order and RNG as JSON; the optimizer state and
    torch RNG (unused by training today: models run in eval mode, so no dropout) while steps remain."""
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                   folder / "optimizer.pt")
    (folder / TRAIN_STATE).write_text(json.dumps(state))


def load_training_state(folder: Path, optimizer: torch.optim.Optimizer, rng: np.random.Generator) -> dict:
    """Restore what `save_training_state` wrote into `optimizer` and `rng`; returns the saved state."""
    state = json.loads((Path(folder) / TRAIN_STATE).read_text())
    rng.bit_generator.state = state["rng"]
    if state["step"] < state["steps"]:
        saved = torch.load(Path(folder) / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] and len(saved["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return state


def load_job_model(config, loaded: LoadedModel | None = None) -> LoadedModel:
    """The model a job trains: the one handed in (CLI foreground) or a fresh private copy of the one its
    config names (`model`, `dtype`, `device`, `trust_remote_code`)."""
    if loaded is not None:
        return loaded
    return load_model(config.model, dtype=config.dtype, device=config.device,
                      trust_remote_code=bool(config.trust_remote_code))
