"""Memory before training: what a run needs (weights, gradients, optimizer state, activations) against
what the device has, so a run that cannot fit is refused with the figures instead of dying midway.
"""

from __future__ import annotations

import threading

import torch

from neuro.model.loading import LoadedModel


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
            assert self._thread is not None  # started by __enter__ off CUDA
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

    weights (counted once: a job that trains the loaded model compares this with `job_budget`, which
    adds back the weights already resident) + gradients and AdamW's two moments of the trainable parameters
    (fp32 for small adapters, the weights' dtype for full fine-tuning) + activations kept for backward
    (about 16 x hidden + 4 x intermediate values per token and layer) + fp32 logits and their gradient;
    times 1.2 for allocator slack.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    width = _dtype_bytes(dtype, device)
    cfg = loaded.config
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0))
    params = sum(p.numel() for p in loaded.model.parameters())
    state = trainable * 3 * (width if full else 4)
    activations = batch_tokens * loaded.n_layers * (16 * hidden + 4 * loaded.n_neurons) * width
    logits = batch_tokens * int(cfg.vocab_size) * 4 * 3
    return int(1.2 * (params * width + state + activations + logits))


def resident_bytes(loaded: LoadedModel, device: str | torch.device | None = None) -> int:
    """Bytes the loaded model's parameters and buffers hold in `device`'s memory (that GPU, or RAM for the
    CPU): what `available_memory` no longer counts now that the model is loaded."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tensors = [*loaded.model.parameters(), *loaded.model.buffers()]

    def there(t: torch.Tensor) -> bool:
        if t.device.type != dev.type:
            return False
        if dev.type != "cuda":
            return True
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return t.device.index in (None, index)
    return int(sum(t.numel() * t.element_size() for t in tensors if there(t)))


def job_budget(loaded: LoadedModel, device: str | None = None, *, reuses_loaded: bool) -> int:
    """The memory a job may plan for: what is available now, plus, for a job that trains `loaded` itself
    (a foreground run, no copy of its own), the bytes its weights already hold there. The estimate counts
    the weights once; a job that loads its own copy (a worker process beside a model kept loaded, as the
    app's) needs them twice, once already resident and once in the estimate."""
    return available_memory(device) + (resident_bytes(loaded, device) if reuses_loaded else 0)


def memory_reason(needed: int, budget: int | None, device: str | None) -> str | None:
    """A refusal when `needed` bytes exceed `budget` (default: what is available now; see `job_budget` for a
    job that trains the model already loaded)."""
    budget = available_memory(device) if budget is None else budget
    if needed > budget:
        gib = 1 << 30
        return (f"the model does not fit: the job needs about {needed / gib:.2f} GiB and "
                f"{budget / gib:.2f} GiB are available; use a smaller batch, a GPU, or a smaller model")
    return None


def optimizer_state_size(optimizer: torch.optim.Optimizer) -> int:
    """Elements of every tensor the optimizer keeps (moments; scalar step counters excluded)."""
    return int(sum(v.numel() for state in optimizer.state.values() for v in state.values()
                   if torch.is_tensor(v) and v.dim() > 0))
