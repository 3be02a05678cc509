"""What the training tasks share: batches, one training loop (resumable from its checkpoints), memory
checks and measurement, LoRA on named modules, checkpoints. Which programs a task trains on and which it
is evaluated on comes from the corpus-wide selection / evaluation split (neuro/split.py).

The tasks themselves live in `finetune.py` (neuron-guided fine-tuning for code generation) and
`transfer.py` (concept-layer-guided summarization transfer); both run as jobs (see neuro/jobs.py).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..capture import length_batches
from ..jobs import TRAIN_STATE
from ..models import LoadedModel, load_model

# --------------------------------------------------------------------------- data


@dataclass
class Batch:
    """Right-padded ids, attention mask and the positions whose next token is a training target.

    targets[:, t] = 1 when token t+1 is predicted (all real tokens for language modelling, the summary
    tokens only for summarization)."""

    ids: torch.Tensor
    mask: torch.Tensor
    targets: torch.Tensor

    @property
    def tokens(self) -> int:
        return int(self.targets.sum())


def make_batches(sequences: Sequence[tuple[list[int], list[int]]], pad_id: int, device, batch_tokens: int,
                 max_batch: int = 64) -> list[Batch]:
    """Batches of similar length from (ids, target flags) pairs; flag i marks ids[i] as a target."""
    out = []
    for group in length_batches([len(ids) for ids, _ in sequences], batch_tokens, max_batch):
        longest = max(len(sequences[i][0]) for i in group)
        ids = torch.full((len(group), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), longest), dtype=torch.long)
        flags = torch.zeros((len(group), longest), dtype=torch.float32)
        for row, i in enumerate(group):
            seq, flag = sequences[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            flags[row, : len(seq)] = torch.tensor(flag, dtype=torch.float32)
        out.append(Batch(ids.to(device), mask.to(device), flags[:, 1:].to(device)))
    return out


def batch_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over the batch's target tokens (each token weighs the same)."""
    logits = model(input_ids=batch.ids, attention_mask=batch.mask, use_cache=False).logits
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch.ids[:, 1:].flatten(), reduction="none")
    weights = batch.targets.flatten()
    return (ce * weights).sum() / weights.sum().clamp(min=1)


# --------------------------------------------------------------------------- memory

def _rss() -> int:
    import psutil
    return psutil.Process().memory_info().rss


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak on a GPU, sampled process RSS on a CPU.

    `baseline` is the level when the block began, so `peak - baseline` is what the block itself added
    (activations, gradients, optimizer state)."""

    def __init__(self, device: torch.device, interval: float = 0.01):
        self.cuda = torch.device(device).type == "cuda"
        self.device = torch.device(device)
        self.interval = interval
        self.baseline = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = self.peak = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline = self.peak = _rss()
            self._thread = threading.Thread(target=self._sample, daemon=True, name="peak-memory")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss())

    def summary(self) -> dict:
        mb = 1 << 20
        return {"memory_kind": "cuda allocated" if self.cuda else "process RSS",
                "peak_memory_mb": round(self.peak / mb, 1), "baseline_memory_mb": round(self.baseline / mb, 1),
                "memory_overhead_mb": round((self.peak - self.baseline) / mb, 1)}


def available_memory(device: str | torch.device | None = None) -> int:
    """Bytes a new job process could use: free memory of the GPU, or available RAM."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    import psutil
    return int(psutil.virtual_memory().available)


def _dtype_bytes(dtype: str | torch.dtype | None, device: str) -> int:
    if dtype is None:
        return 2 if str(device).startswith("cuda") else 4
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return torch.empty((), dtype=dtype).element_size()


def estimate_training_bytes(loaded: LoadedModel, trainable: int, batch_tokens: int, *, full: bool,
                            dtype: str | None = None, device: str | None = None) -> int:
    """A deliberately simple upper-side estimate of a job's peak memory, for refusing what cannot fit.

    weights (a fresh copy in the job) + gradients and AdamW's two moments of the trainable parameters
    (fp32 for small adapters, the weights' dtype for full fine-tuning) + activations kept for backward
    (about 16 x hidden + 4 x intermediate values per token and layer) + fp32 logits and their gradient;
    times 1.2 for allocator slack.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    width = _dtype_bytes(dtype, device)
    cfg = loaded.config
    hidden = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0))
    params = sum(p.numel() for p in loaded.model.parameters())
    state = trainable * 3 * (width if full else 4)
    activations = batch_tokens * loaded.n_layers * (16 * hidden + 4 * loaded.n_neurons) * width
    logits = batch_tokens * int(cfg.vocab_size) * 4 * 3
    return int(1.2 * (params * width + state + activations + logits))


def memory_reason(needed: int, budget: int | None, device: str | None) -> str | None:
    """A refusal when `needed` bytes exceed `budget` (default: what is available now)."""
    budget = available_memory(device) if budget is None else budget
    if needed > budget:
        gib = 1 << 30
        return (f"the model does not fit: the job needs about {needed / gib:.2f} GiB and "
                f"{budget / gib:.2f} GiB are available; use a smaller batch, a GPU, or a smaller model")
    return None


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


# --------------------------------------------------------------------------- training loop

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


def optimizer_state_size(optimizer: torch.optim.Optimizer) -> int:
    """Elements of every tensor the optimizer keeps (moments; scalar step counters excluded)."""
    return int(sum(v.numel() for state in optimizer.state.values() for v in state.values()
                   if torch.is_tensor(v) and v.dim() > 0))


def train(model: nn.Module, params: Sequence[nn.Parameter], batches: Sequence[Batch], *, steps: int, lr: float,
          ctx, seed: int = 0, clip: float = 1.0, checkpoint=None, checkpoint_every: int = 0,
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


# --------------------------------------------------------------------------- models and modules

def load_job_model(params: dict, loaded: LoadedModel | None = None) -> LoadedModel:
    """The model a job trains: the one handed in (CLI foreground) or a fresh private copy."""
    if loaded is not None:
        return loaded
    return load_model(params["model"], dtype=params.get("dtype"), device=params.get("device"),
                      trust_remote_code=bool(params.get("trust_remote_code")))


def get_module(root: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D (GPT-2 family): a linear layer whose weight is stored (in, out)."""
    return type(module).__name__ == "Conv1D"


def linear_modules(loaded: LoadedModel, layers: Sequence[int], within: str | None = None) -> list[str]:
    """Full names of the linear layers (nn.Linear or Conv1D) inside the given blocks, optionally only
    under `within` (e.g. the FFN: `mlp`)."""
    names = []
    for layer in sorted(set(layers)):
        prefix = f"{loaded.adapter.blocks}.{layer}." + (f"{within}." if within else "")
        for name, module in loaded.model.named_modules():
            if name.startswith(prefix) and (isinstance(module, nn.Linear) or is_conv1d(module)):
                names.append(name)
    return names


def lora_size(loaded: LoadedModel, targets: Sequence[str], rank: int) -> int:
    """Trainable parameters of rank-`rank` LoRA on these modules: rank x (in + out) each."""
    total = 0
    for name in targets:
        weight = get_module(loaded.model, name).weight
        total += rank * (weight.shape[0] + weight.shape[1])
    return total


def apply_lora(loaded: LoadedModel, targets: Sequence[str], rank: int):
    """Inject LoRA (peft) into exactly the named modules; the base model is modified in place.

    alpha = rank (scaling 1), no dropout. Returns the PeftModel (for saving and merging)."""
    from peft import LoraConfig, get_peft_model

    if not targets:
        raise ValueError("LoRA needs at least one target module")
    fan_in_fan_out = any(is_conv1d(get_module(loaded.model, n)) for n in targets)
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none", target_modules=list(targets),
                        fan_in_fan_out=fan_in_fan_out)
    return get_peft_model(loaded.model, config)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# --------------------------------------------------------------------------- checkpoints

def save_tensors(folder: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(folder / "weights.safetensors"))
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, default=str))


def load_tensors(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    return load_file(str(folder / "weights.safetensors")), json.loads((folder / "meta.json").read_text())


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved weights (a subset of the model's, by name) into `model`; unknown names are an error,
    so a checkpoint of another model never half-loads silently."""
    unexpected = model.load_state_dict(tensors, strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"the checkpoint holds weights this model lacks: {', '.join(unexpected[:5])}")


def load_pretrained_weights(model: nn.Module, folder: Path) -> None:
    """Load a `save_pretrained` folder's safetensors files (one or sharded) into `model` in place."""
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    for file in files:
        load_weights(model, load_file(str(file)))


def merged_lora(loaded: LoadedModel, tensors: dict[str, torch.Tensor], targets: Sequence[str], rank: int) -> nn.Module:
    """`loaded`'s model with saved LoRA weights merged in (peft removed): what an export writes."""
    from peft import set_peft_model_state_dict

    peft_model = apply_lora(loaded, targets, rank)
    set_peft_model_state_dict(peft_model, tensors)
    return peft_model.merge_and_unload()
