"""Neuron-guided fine-tuning for code generation, its baselines, evaluation and export.

Neuron-guided: only the parameters a chosen neuron set owns are trained. A neuron n of layer l owns
row n of the FFN input projections (gated FFNs: gate_proj and up_proj; others: the input projection and
its bias entry) and column n of the output projection (down_proj). `NeuronDeltas` holds trainable
deltas for exactly those rows and columns (k x hidden per projection for k neurons) and adds them in
forward hooks; the base weights stay frozen and untouched, and the optimizer only sees the deltas, so
gradients and AdamW state cost O(k x hidden) instead of O(intermediate x hidden). `merge_into` adds the
deltas into the weights for export (W_eff = W + scatter(delta)).

Baselines through the same job: "random" (the same number of random neurons per layer, disjoint from
the chosen set), "full" (every parameter) and "lora" (peft LoRA on the FFN projections of the layers
that hold the chosen neurons, its rank sized to a comparable trainable-parameter count).

No number is measured on the programs it was chosen from: with the corpus's selection / evaluation split
(neuro/code/split.py; `eval_fraction` and `split_seed` in the config), the neurons (and so the random
control's exclusion) come from statistics of the selection side only (`select_finetune_neurons`),
training uses the target language's selection-side programs, and the loss (and pass@k) before and after
is measured on the evaluation side.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from neuro.choices import FinetuneMethod, NeuronSetName, choices
from neuro.code.corpus import Snippet
from neuro.code.split import DEFAULT_EVAL_FRACTION, CorpusSplit, SplitParams, split_corpus
from neuro.experiments.intervals import interval_summary, language_intervals, mean_of_languages_interval
from neuro.experiments.seeds import DEFAULT_SEEDS, Run, SeedComparison, compare, new_comparison_id, seeded_batches
from neuro.experiments.subsets import evaluated_text, stratified_subset
from neuro.instrument.ablation import as_layer_map, count, random_like
from neuro.instrument.losses import model_sample_losses
from neuro.instrument.tokens import collate, encode, length_batches
from neuro.model.plan import batch_plan
from neuro.model.hook_sites import Attachment
from neuro.model.loading import LoadedModel
from neuro.params import param
from neuro.training.checkpoints import checkpoint_meta, load_pretrained_weights, load_tensors, save_tensors
from neuro.training.context import TaskContext, declare_phases
from neuro.training.loop import TrainSummary, common_reasons, train
from neuro.training.lora import (
    apply_lora,
    is_conv1d,
    linear_modules,
    lora_size,
    merged_lora,
    trainable_parameters,
)
from neuro.training.memory import estimate_training_bytes, memory_reason
from neuro.training.records import Record

METHODS = choices(FinetuneMethod)

NEURON_SETS = choices(NeuronSetName)


@dataclass(frozen=True)
class FfnParts:
    """The projections of one FFN that hold a neuron's parameters."""

    down: nn.Module
    gate: nn.Module | None = None    # gated: rows feed act()
    up: nn.Module | None = None      # gated: rows multiplied by act(gate)
    fused: nn.Module | None = None   # gated with one gate+up projection (Phi-3)
    input: nn.Module | None = None   # non-gated input projection


def ffn_parts(loaded: LoadedModel, layer: int) -> FfnParts:
    site = loaded.sites()[layer]
    return FfnParts(site.down, gate=site.gate, up=site.up, fused=site.gate_up, input=site.fc_in)


def _add_rows(module: nn.Module, rows, delta: torch.Tensor) -> None:
    """W[rows, :] += delta (k x in) for a linear layer; Conv1D stores W transposed."""
    w = module.weight.data
    if is_conv1d(module):
        w[:, rows] += delta.T.to(w.dtype)
    else:
        w[rows] += delta.to(w.dtype)


def _add_columns(module: nn.Module, columns, delta: torch.Tensor) -> None:
    """W[:, columns] += delta (out x k) for a linear layer; Conv1D stores W transposed."""
    w = module.weight.data
    if is_conv1d(module):
        w[columns] += delta.T.to(w.dtype)
    else:
        w[:, columns] += delta.to(w.dtype)


def owned_parameters(loaded: LoadedModel, layer: int) -> int:
    """Parameters one neuron of `layer` owns (what NeuronDeltas trains per neuron)."""
    hidden = loaded.embeddings.embedding_dim
    if loaded.adapter.gated:
        return 3 * hidden
    parts = ffn_parts(loaded, layer)
    return 2 * hidden + (1 if getattr(parts.input, "bias", None) is not None else 0)


class NeuronDeltas(nn.Module):
    """Trainable deltas for the rows and columns a neuron set owns, applied by hooks (see module doc).

    Per layer l with neuron indices idx (k of them), hidden size H:
      w_in[l]   (k, H)  rows of gate_proj (gated) or of the input projection (non-gated)
      w_up[l]   (k, H)  rows of up_proj (gated only)
      b_in[l]   (k,)    input-projection bias entries (non-gated, when the projection has a bias)
      w_down[l] (H, k)  columns of down_proj
    Hooks: the FFN input x is kept (mlp pre-hook); the pre-activation gets w_in x (+ b_in) (act
    pre-hook); gated: a[idx] += act(gate)[idx] * (w_up x) (down pre-hook, act output kept by an act
    hook), which equals using up_proj + w_up; the output gets w_down a[idx] (down hook).
    """

    def __init__(self, loaded: LoadedModel, neurons: Mapping[int, Sequence[int]]):
        super().__init__()
        layer_map = {layer: idx for layer, idx in as_layer_map(neurons).items() if len(idx)}
        width, n_layers = loaded.n_neurons, loaded.n_layers
        for layer, idx in layer_map.items():
            if not 0 <= layer < n_layers or idx.min() < 0 or idx.max() >= width:
                raise ValueError(f"neurons of layer {layer} are outside {n_layers} layers x {width} neurons")
        hidden = loaded.embeddings.embedding_dim
        device = loaded.device
        self.gated = loaded.adapter.gated
        self.layers = sorted(layer_map)
        self.w_in, self.w_up, self.b_in, self.w_down = (nn.ParameterDict() for _ in range(4))
        for layer in self.layers:
            k, key = len(layer_map[layer]), str(layer)
            self.register_buffer(f"idx_{layer}", torch.as_tensor(layer_map[layer], dtype=torch.long, device=device))
            zeros = lambda *shape: nn.Parameter(torch.zeros(*shape, device=device))  # noqa: E731
            self.w_in[key] = zeros(k, hidden)
            self.w_down[key] = zeros(hidden, k)
            if self.gated:
                self.w_up[key] = zeros(k, hidden)
            elif getattr(ffn_parts(loaded, layer).input, "bias", None) is not None:
                self.b_in[key] = zeros(k)

    def index(self, layer: int) -> torch.Tensor:
        return getattr(self, f"idx_{layer}")

    def neurons(self) -> dict[int, list[int]]:
        return {layer: self.index(layer).tolist() for layer in self.layers}

    def size(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @contextmanager
    def applied(self, loaded: LoadedModel):
        """Every forward pass inside sees W + deltas; hooks are removed on exit (the model's lock is held)."""
        points = loaded.hook_sites
        state: dict = {}
        pairs: list[Attachment] = []
        for layer in self.layers:
            key, idx = str(layer), self.index(layer)

            def keep_input(x, layer=layer):
                state[layer, "x"] = x

            def shift_pre(pre, key=key, idx=idx, layer=layer):
                x = state[layer, "x"]
                bias = self.b_in[key].to(x.dtype) if key in self.b_in else None
                add = F.linear(x, self.w_in[key].to(x.dtype), bias)
                return pre.index_add(pre.dim() - 1, idx, add.to(pre.dtype))

            def keep_act(out, layer=layer):
                state[layer, "act"] = out

            def shift_act(a, key=key, idx=idx, layer=layer):
                x = state[layer, "x"]
                gate = state[layer, "act"].index_select(a.dim() - 1, idx)
                add = gate * F.linear(x, self.w_up[key].to(x.dtype)).to(gate.dtype)
                return a.index_add(a.dim() - 1, idx, add.to(a.dtype))

            def keep_neurons(a, layer=layer):  # what the output projection reads (after shift_act)
                state[layer, "a"] = a

            def add_out(out, key=key, idx=idx, layer=layer):
                a = state.pop((layer, "a"))
                a = a.index_select(a.dim() - 1, idx)
                return out + F.linear(a, self.w_down[key].to(a.dtype)).to(out.dtype)

            pairs += [(points.ffn_input(layer), keep_input), (points.act_input(layer), shift_pre)]
            if self.gated:
                pairs += [(points.act_output(layer), keep_act), (points.neuron_input(layer), shift_act)]
            pairs += [(points.neuron_input(layer), keep_neurons), (points.neuron_output(layer), add_out)]

        try:
            with loaded.hooks(pairs):
                yield self
        finally:
            state.clear()

    @torch.no_grad()
    def merge_into(self, loaded: LoadedModel) -> None:
        """Add the deltas into the model's weights (the same model shape; e.g. a fresh copy for export)."""
        width = loaded.n_neurons
        for layer in self.layers:
            key, idx = str(layer), self.index(layer).cpu()
            parts = ffn_parts(loaded, layer)
            if parts.fused is not None:
                _add_rows(parts.fused, idx, self.w_in[key].cpu())
                _add_rows(parts.fused, idx + width, self.w_up[key].cpu())
            elif self.gated:
                _add_rows(parts.gate, idx, self.w_in[key].cpu())
                _add_rows(parts.up, idx, self.w_up[key].cpu())
            else:
                assert parts.input is not None, "a non-gated FFN has an input projection"
                _add_rows(parts.input, idx, self.w_in[key].cpu())
                if key in self.b_in:
                    parts.input.bias.data[idx] += self.b_in[key].cpu().to(parts.input.bias.dtype)
            _add_columns(parts.down, idx, self.w_down[key].cpu())

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {name: p for name, p in self.named_parameters()}

    def load_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(tensors[name].to(p.device, p.dtype))


@dataclass(frozen=True)
class FinetuneConfig(Record):
    """Everything a fine-tuning job needs (its spec.json params through `to_json`).

    neurons: {layer: indices}: what is trained (neurons, random) or what LoRA is sized and placed
    against (lora); ignored by full fine-tuning; chosen on the selection side of the split that
    `eval_fraction` and `split_seed` define (see `select_finetune_neurons`). lora_rank 0: sized to the
    neuron count. seed: everything random in this run (the random control's draw, which programs share a
    batch and the batches' order, LoRA's initialisation; see seeds.py). comparison: an id shared by the runs
    started together (methods x seeds), whose results are compared over seeds; seeds: that comparison's seeds.
    """

    model: str
    target: str
    method: FinetuneMethod = "neurons"
    neuron_set: NeuronSetName = "specific"
    neurons: dict[int, list[int]] = field(default_factory=dict)
    steps: int = param(100, low=0, high=1_000_000, label="Steps", help="optimizer steps")
    lr: float = param(1e-3, low=0.0, step=1e-4, fmt="%.1e", label="Learning rate",
                      help="1e-3 suits the neuron deltas and LoRA; full fine-tuning wants about 1e-4.")
    batch_tokens: int = param(2048, low=16, high=1 << 20, step=256, label="Tokens per batch",
                              help="padded tokens per training batch")
    max_length: int = 256
    eval_fraction: float = DEFAULT_EVAL_FRACTION
    split_seed: int = 0
    seed: int = 0
    seeds: list[int] = field(default_factory=list)
    comparison: str = ""
    lora_rank: int = param(0, low=0, label="LoRA rank", help="0: sized to the neuron-guided parameter count")
    pass_at_k: bool = False
    max_new_tokens: int = 256
    checkpoint_every: int = 0
    eval_programs: int = 0  # evaluate on this many evaluation-side programs (0: all; see subsets.py)
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False

    def to_json(self) -> dict:
        params = super().to_json()
        params["neurons"] = {str(k): [int(x) for x in v] for k, v in self.neurons.items()}  # JSON keys
        return params

    @classmethod
    def from_json(cls, params: Mapping) -> FinetuneConfig:
        neurons = {int(k): list(v) for k, v in (params.get("neurons") or {}).items()}
        return super().from_json({**params, "neurons": neurons})

    @property
    def n_neurons(self) -> int:
        return count(self.neurons) if self.neurons else 0

    def label(self) -> str:
        method = REGISTRY.get(self.method)
        what = method.label if method else self.method
        size = f", {self.n_neurons} neurons" if method and method.trains_neurons else ""
        return f"{self.target}: {what}{size}, {self.steps} steps, lr {self.lr:g}, seed {self.seed}"

    @property
    def split_params(self) -> SplitParams:
        return SplitParams(eval_fraction=self.eval_fraction, seed=self.split_seed)


def finetune_split(snippets: Sequence[Snippet], config: FinetuneConfig) -> CorpusSplit:
    """The corpus's selection / evaluation split this run uses (trains on one side, evaluates on the other)."""
    return split_corpus(snippets, config.split_params)


def select_finetune_neurons(loaded: LoadedModel, split: CorpusSplit, params=None, *, store=None,
                            max_length: int = 512, progress=None):
    """The NeuronSelection a run draws its neurons from: PLS statistics (gradients) of the split's
    SELECTION side only, so no evaluation-side program influences which neurons are trained (or which
    the random control avoids). `params`: SelectionParams (None: its defaults, e.g. the score)."""
    from neuro.analysis.selectivity import select_neurons
    from neuro.results.statistics import STATS

    stats = STATS.get(loaded, split.selection, max_length=max_length, cache=store, progress=progress)
    return select_neurons(stats, "pls", params)


def plan_finetune(loaded: LoadedModel, selection, target: str, *, method: FinetuneMethod = "neurons",
                  neuron_set: NeuronSetName = "specific", split: CorpusSplit | None = None,
                  **options) -> FinetuneConfig:
    """A config with the neuron set resolved: the target's specific neurons (plus universal ones), or
    for "random" as many random neurons per layer, none of them in that set.

    `selection` must come from the selection side of `split` (`select_finetune_neurons`); the config
    records that split's parameters, so the run trains and evaluates on the same sides."""
    if split is not None:
        options.update(eval_fraction=split.params.eval_fraction, split_seed=split.params.seed)
    neurons: dict[int, np.ndarray] = {}
    if target in selection.languages:
        neurons = as_layer_map(selection.neurons_for(target))
        if neuron_set == "specific+universal":
            both = {layer: list(v) for layer, v in neurons.items()}
            for layer, idx in selection.universal_neurons().items():
                both.setdefault(layer, []).extend(idx.tolist())
            neurons = as_layer_map(both)
    if method in REGISTRY:
        neurons = REGISTRY[method].planned_neurons(loaded, neurons, seed=options.get("seed", 0))
    kept = {int(layer): [int(x) for x in idx] for layer, idx in neurons.items() if len(idx)}
    return FinetuneConfig(model=loaded.source, target=target, method=method, neuron_set=neuron_set,
                          neurons=kept, **options)


def default_lr(method: FinetuneMethod) -> float:
    """1e-3 for the neuron deltas and LoRA; full fine-tuning wants about 1e-4."""
    return REGISTRY[method].default_lr


def plan_finetune_runs(loaded: LoadedModel, selection, target: str, methods: Sequence[FinetuneMethod],
                       seeds: Sequence[int] = DEFAULT_SEEDS, *, lr: float | Mapping[str, float] | None = None,
                       comparison: str | None = None, **options) -> list[FinetuneConfig]:
    """One config per (method, seed): runs = methods x seeds, each method with the same seeds (so seed s of
    the neuron-guided run and seed s of the random control share their data order), all under one
    comparison id. lr: one for all, one per method, or None (`default_lr`). Full fine-tuning changes the
    weights it trains: its runs come last (see `kept_weights`)."""
    from neuro.experiments.seeds import check_seeds

    seeds = check_seeds(seeds)
    if len(set(methods)) < len(methods):
        raise ValueError(f"a method is listed twice: {', '.join(methods)}")
    comparison = comparison or new_comparison_id()
    out = []
    for method in sorted(methods, key=lambda m: m in REGISTRY and REGISTRY[m].trains_weights):
        rate = lr.get(method, default_lr(method)) if isinstance(lr, Mapping) else (lr or default_lr(method))
        for seed in seeds:
            out.append(plan_finetune(loaded, selection, target, method=method, lr=rate, seed=seed, seeds=list(seeds),
                                     comparison=comparison, **options))
    return out


@contextmanager
def kept_weights(loaded: LoadedModel, keep: bool = True):
    """Run a block that changes the model's weights (full fine-tuning) and put them back afterwards (a CPU
    copy meanwhile), so the next run on this loaded copy starts from the same weights. keep=False: no copy
    (the last run)."""
    saved = {k: v.detach().to("cpu", copy=True) for k, v in loaded.model.state_dict().items()} if keep else None
    try:
        yield
    finally:
        if saved is not None:
            with torch.no_grad():
                for k, v in loaded.model.state_dict().items():
                    v.copy_(saved[k].to(v.device))


def _lora_targets(loaded: LoadedModel, config: FinetuneConfig) -> list[str]:
    return linear_modules(loaded, sorted(config.neurons), ffn_only=True)


def _neuron_param_count(loaded: LoadedModel, config: FinetuneConfig) -> int:
    return sum(len(idx) * owned_parameters(loaded, layer) for layer, idx in config.neurons.items())


def lora_rank_for(loaded: LoadedModel, config: FinetuneConfig) -> int:
    """The configured rank, or the rank whose trainable count is closest to the neuron-guided count."""
    if config.lora_rank:
        return int(config.lora_rank)
    per_rank = lora_size(loaded, _lora_targets(loaded, config), 1)
    return max(1, int(round(_neuron_param_count(loaded, config) / max(per_rank, 1))))


def trainable_count(loaded: LoadedModel, config: FinetuneConfig) -> int:
    """Parameters the job will train (computed without changing the model)."""
    return method_of(config.method).trainable_count(loaded, config)


def validate_finetune(config: FinetuneConfig, loaded: LoadedModel, snippets: Sequence[Snippet],
                      memory_budget: int | None = None) -> list[str]:
    """Every reason to refuse this run (empty: fine)."""
    reasons = []
    if config.method not in METHODS:
        reasons.append(f"unknown method {config.method!r}; use one of {', '.join(METHODS)}")
    if config.neuron_set not in NEURON_SETS:
        reasons.append(f"unknown neuron set {config.neuron_set!r}; use one of {', '.join(NEURON_SETS)}")
    width = loaded.n_neurons
    for layer, idx in config.neurons.items():
        if not 0 <= layer < loaded.n_layers or any(not 0 <= int(i) < width for i in idx):
            reasons.append(f"neurons of layer {layer} lie outside {loaded.n_layers} layers x {width} neurons")
            break
    method = REGISTRY.get(config.method)
    if method is not None and method.needs_neurons(config) and config.n_neurons == 0:
        reasons.append(f"no neurons selected: {config.target} has no {config.neuron_set} neurons with these "
                       "selection parameters (loosen them, e.g. a larger top fraction, or add universal neurons)")
    reasons += common_reasons(config.steps, config.lr, config.batch_tokens, loaded.weights_loaded)
    if config.eval_programs < 0:
        reasons.append(f"the number of programs to evaluate must be >= 0 (0: all), got {config.eval_programs}")
    if config.max_length < 8:
        reasons.append(f"max length must be >= 8 tokens, got {config.max_length}")
    split = None
    try:
        split = finetune_split(snippets, config)
    except ValueError as err:
        reasons.append(str(err))
    languages = sorted({s.lang for s in snippets})
    if config.target not in languages:
        reasons.append(f"the corpus has no {config.target} programs (it has: {', '.join(languages) or 'none'})")
    elif split is not None:
        if not any(s.lang == config.target for s in split.selection):
            reasons.append(f"empty training set: no {config.target} programs on the selection side of the split")
        if not any(s.lang == config.target for s in split.evaluation):
            reasons.append(f"the evaluation side of the split has no {config.target} programs; raise the "
                           "evaluated share or change the split seed")
    if not reasons:
        needed = estimate_training_bytes(loaded, trainable_count(loaded, config), config.batch_tokens,
                                         full=method_of(config.method).trains_weights, dtype=config.dtype,
                                         device=config.device)
        reason = memory_reason(needed, memory_budget, config.device)
        if reason:
            reasons.append(reason)
    return reasons


# --------------------------------------------------------------------------- one class per method
class Adaptation:
    """One run's trainable state: its parameters, how it is applied while the model trains and is evaluated,
    how it is saved and restored (checkpoints, resume), and how the model is handed back afterwards."""

    rank = 0  # LoRA's rank; 0 for the other methods
    deltas: NeuronDeltas | None = None  # the neuron methods' deltas, which live beside the frozen model

    def __init__(self, loaded: LoadedModel, config: FinetuneConfig, params: list[nn.Parameter]):
        self.loaded, self.config, self.method = loaded, config, config.method
        self.params = params

    def applied(self) -> AbstractContextManager:
        """The context inside which forward passes see the trained state (a no-op where it is in the model)."""
        return nullcontext()

    def remove(self) -> None:
        """Hand the model back as the method found it, so the next method of one run can train the same
        loaded copy: the deltas' hooks are already gone, LoRA's layers are taken out (the base layers,
        never changed, are back in place). Full fine-tuning changed the weights themselves: its parameters
        are only frozen again (a run with several methods trains it last)."""
        self.loaded.model.requires_grad_(False)

    def save(self, folder: Path, extra: dict | None = None) -> None:
        """The trainable state; `extra` (JSON) rides along in meta.json, e.g. what a resume need not redo."""
        raise NotImplementedError

    def load(self, folder: Path) -> None:
        """Restore the trainable state `save` wrote (resuming a job)."""
        raise NotImplementedError

    def _meta(self, extra: dict | None) -> dict:
        return {"method": self.method, "config": self.config.to_json(), **(extra or {})}


class NeuronAdaptation(Adaptation):
    """NeuronDeltas for the config's neurons, added by hooks while `applied`."""

    def __init__(self, loaded: LoadedModel, config: FinetuneConfig):
        self.deltas = deltas = NeuronDeltas(loaded, config.neurons)
        super().__init__(loaded, config, list(deltas.parameters()))

    def applied(self) -> AbstractContextManager:
        assert self.deltas is not None
        return self.deltas.applied(self.loaded)

    def save(self, folder: Path, extra: dict | None = None) -> None:
        assert self.deltas is not None
        save_tensors(folder, self.deltas.state_tensors(), self._meta(extra))

    def load(self, folder: Path) -> None:
        assert self.deltas is not None
        self.deltas.load_tensors(load_tensors(folder)[0])


class LoraAdaptation(Adaptation):
    """peft LoRA layers on the FFN projections of the layers that hold the config's neurons."""

    def __init__(self, loaded: LoadedModel, config: FinetuneConfig):
        self.rank = lora_rank_for(loaded, config)
        self.targets = _lora_targets(loaded, config)
        self.peft = apply_lora(loaded, self.targets, self.rank)
        super().__init__(loaded, config, trainable_parameters(loaded.model))

    def remove(self) -> None:
        self.peft.unload()
        super().remove()

    def save(self, folder: Path, extra: dict | None = None) -> None:
        from peft import get_peft_model_state_dict
        save_tensors(folder, get_peft_model_state_dict(self.peft), {**self._meta(extra), "rank": self.rank,
                                                                     "targets": self.targets})

    def load(self, folder: Path) -> None:
        from peft import set_peft_model_state_dict
        set_peft_model_state_dict(self.peft, load_tensors(folder)[0])


class FullAdaptation(Adaptation):
    """Every parameter of the model itself trains."""

    def __init__(self, loaded: LoadedModel, config: FinetuneConfig):
        loaded.model.requires_grad_(True)
        super().__init__(loaded, config, trainable_parameters(loaded.model))

    def save(self, folder: Path, extra: dict | None = None) -> None:
        (folder / "meta.json").write_text(json.dumps(self._meta(extra), indent=1))
        self.loaded.model.save_pretrained(folder / "model")

    def load(self, folder: Path) -> None:
        load_pretrained_weights(self.loaded.model, folder / "model")


class Method:
    """What sets one fine-tuning method apart (one subclass per `FinetuneMethod`, found in REGISTRY): which
    neurons it is given, what it trains and at what size, its default rate, and how its checkpoint is merged."""

    name: ClassVar[FinetuneMethod]
    label: ClassVar[str]
    trains_neurons: ClassVar[bool] = False  # trains the neuron set's own rows and columns: its size is the run's
    trains_weights: ClassVar[bool] = False  # changes the model's weights themselves (memory as full; runs last)
    default_lr: ClassVar[float] = 1e-3

    def planned_neurons(self, loaded: LoadedModel, chosen: dict[int, np.ndarray], seed: int) -> dict[int, np.ndarray]:
        """The neurons a run of this method is configured with, from the chosen set ({layer: indices})."""
        return chosen

    def needs_neurons(self, config: FinetuneConfig) -> bool:
        """Whether a run with no neurons must be refused."""
        return self.trains_neurons

    def trainable_count(self, loaded: LoadedModel, config: FinetuneConfig) -> int:
        """Parameters a run will train (computed without changing the model)."""
        raise NotImplementedError

    def adapt(self, loaded: LoadedModel, config: FinetuneConfig) -> Adaptation:
        """Make the model trainable the method's way; `Adaptation.remove` undoes it."""
        raise NotImplementedError

    def merge(self, base: LoadedModel, config: FinetuneConfig, checkpoint: Path) -> nn.Module:
        """`base` (a fresh copy of the job's model) with the checkpoint's trained state in its weights."""
        raise NotImplementedError


class NeuronsMethod(Method):
    """Neuron-guided: only the chosen neurons' rows and columns train (NeuronDeltas)."""

    name: ClassVar[FinetuneMethod] = "neurons"  # RandomMethod, its subclass, renames it
    label = "Neuron-guided"
    trains_neurons = True

    def trainable_count(self, loaded: LoadedModel, config: FinetuneConfig) -> int:
        return _neuron_param_count(loaded, config)

    def adapt(self, loaded: LoadedModel, config: FinetuneConfig) -> Adaptation:
        return NeuronAdaptation(loaded, config)

    def merge(self, base: LoadedModel, config: FinetuneConfig, checkpoint: Path) -> nn.Module:
        deltas = NeuronDeltas(base, config.neurons)
        deltas.load_tensors(load_tensors(checkpoint)[0])
        deltas.merge_into(base)
        return base.model


class RandomMethod(NeuronsMethod):
    """The control: as many random neurons per layer as were chosen, none of the chosen ones, trained the same way."""

    name = "random"
    label = "Random neurons (control)"

    def planned_neurons(self, loaded: LoadedModel, chosen: dict[int, np.ndarray], seed: int) -> dict[int, np.ndarray]:
        return random_like(chosen, loaded.n_neurons, seed=seed, exclude=chosen)


class FullMethod(Method):
    """Every parameter trains (its own, lower default rate)."""

    name = "full"
    label = "Full fine-tuning"
    trains_weights = True
    default_lr = 1e-4

    def trainable_count(self, loaded: LoadedModel, config: FinetuneConfig) -> int:
        return sum(p.numel() for p in loaded.model.parameters())

    def adapt(self, loaded: LoadedModel, config: FinetuneConfig) -> Adaptation:
        return FullAdaptation(loaded, config)

    def merge(self, base: LoadedModel, config: FinetuneConfig, checkpoint: Path) -> nn.Module:
        load_pretrained_weights(base.model, checkpoint / "model")
        return base.model


class LoraMethod(Method):
    """peft LoRA on the FFNs of the chosen neurons' layers, its rank sized to the neuron count unless set."""

    name = "lora"
    label = "LoRA (peft)"

    def needs_neurons(self, config: FinetuneConfig) -> bool:
        return not config.lora_rank  # the neurons size the rank

    def trainable_count(self, loaded: LoadedModel, config: FinetuneConfig) -> int:
        return lora_size(loaded, _lora_targets(loaded, config), lora_rank_for(loaded, config))

    def adapt(self, loaded: LoadedModel, config: FinetuneConfig) -> Adaptation:
        return LoraAdaptation(loaded, config)

    def merge(self, base: LoadedModel, config: FinetuneConfig, checkpoint: Path) -> nn.Module:
        tensors, meta = load_tensors(checkpoint)
        return merged_lora(base, tensors, meta["targets"], int(meta["rank"]))


REGISTRY: dict[FinetuneMethod, Method] = {m.name: m for m in (NeuronsMethod(), RandomMethod(), FullMethod(),
                                                              LoraMethod())}
assert tuple(REGISTRY) == METHODS, "one class per FinetuneMethod, in its order"

METHOD_LABELS = {name: m.label for name, m in REGISTRY.items()}


def method_of(name: FinetuneMethod) -> Method:
    """The class of a method name (a config read from JSON may still carry any string: refused here)."""
    method = REGISTRY.get(name)
    if method is None:
        raise ValueError(f"unknown method {name!r}; use one of {', '.join(METHODS)}")
    return method


def _Adaptation(loaded: LoadedModel, config: FinetuneConfig) -> Adaptation:
    """The config's method's trainable state (the name tests use; `method_of(...).adapt` elsewhere)."""
    return method_of(config.method).adapt(loaded, config)

def program_losses(loaded: LoadedModel, snippets: Sequence[Snippet], *, max_length: int = 512,
                   batch_tokens: int | None = None, max_batch: int = 32, progress=None) -> list[float]:
    """Each program's mean next-token cross-entropy, in the order given (what
    neuro.instrument.ablation.language_losses averages per language; kept per program for the task-level
    intervals). `progress(done, total)`: programs scored so far."""
    loaded.require_weights()
    encoded = [encode(loaded, s.code, max_length) for s in snippets]
    batch_tokens = batch_tokens or batch_plan(loaded, "forward", max_length).batch_tokens or max_length
    out = [math.nan] * len(snippets)
    with loaded.lock, torch.inference_mode():
        for batch in length_batches([len(e.ids) for e in encoded], batch_tokens, max_batch):
            ids, mask = collate([encoded[i] for i in batch], loaded.pad_id, loaded.device)
            for i, loss in zip(batch, model_sample_losses(loaded, ids, mask).tolist()):
                out[i] = loss
            if progress is not None:
                progress(sum(not math.isnan(x) for x in out), len(out))
    return out


def _language_means(snippets: Sequence[Snippet], losses: Sequence[float]) -> dict[str, float]:
    by_lang: dict[str, list[float]] = {}
    for s, loss in zip(snippets, losses):
        by_lang.setdefault(s.lang, []).append(loss)
    return {lang: float(np.mean(v)) for lang, v in by_lang.items()}


def lm_sequences(loaded: LoadedModel, snippets: Sequence[Snippet], max_length: int) -> list[tuple[list, list]]:
    """(ids, flags) for language modelling: every token after the first is a target."""
    out = []
    for s in snippets:
        ids = encode(loaded, s.code, max_length).ids
        out.append((ids, [1] * len(ids)))
    return out


def _sandbox() -> dict:
    from neuro.code.sandbox import sandbox_features
    return sandbox_features()


def _pass_at_k(loaded: LoadedModel, snippets: Sequence[Snippet], config: FinetuneConfig) -> dict | None:
    from neuro.analysis.generation import GenerationParams, evaluate_pass_at_k

    todo = [s for s in snippets if s.test]
    if not todo:
        return None
    result = evaluate_pass_at_k(loaded, todo, GenerationParams(max_new_tokens=config.max_new_tokens, seed=config.seed))
    return {lang: {str(k): v for k, v in by_k.items()} for lang, by_k in result.by_language.items()}


@dataclass(frozen=True, kw_only=True)
class FinetuneResult(TrainSummary):
    """A fine-tuning run's result (result.json). Losses are mean next-token cross-entropy per language on
    the evaluation side; *_delta = after - before. Fields past the first few default to None: jobs
    from before they existed lack them."""

    config: FinetuneConfig
    target: str
    method: FinetuneMethod
    heldout_before: dict[str, float]
    heldout_after: dict[str, float]
    heldout_delta: dict[str, float] = field(default_factory=dict)
    target_delta: float | None = None
    others_delta_mean: float | None = None
    neuron_set: NeuronSetName | None = None
    neurons: int | None = None  # trained neurons (neurons, random); 0 for lora and full
    neurons_per_layer: dict[str, int] = field(default_factory=dict)
    lora_rank: int | None = None
    model_params: int | None = None
    trainable_share: float = math.nan
    train_programs: int | None = None
    heldout_programs: int | None = None
    heldout_total: int | None = None  # evaluation-side programs before `config.eval_programs` took a subset
    split: dict | None = None  # CorpusSplit.summary(); None for jobs from before the shared split
    device: str | None = None
    seed: int | None = None
    # per evaluation program {"id", "lang", "task", "before", "after"} (mean loss of the program): the CIs'
    # and the paired per-task differences' input
    per_program: list[dict] = field(default_factory=list)
    # task-level bootstrap intervals (Interval.summary(); intervals.py) of each language's mean loss change,
    # of the target's, and of the other languages' mean
    heldout_delta_ci: dict[str, dict] = field(default_factory=dict)
    target_delta_ci: dict | None = None
    others_delta_ci: dict | None = None
    pass_at_k_before: dict | None = None  # {lang: {k: pass@k}}
    pass_at_k_after: dict | None = None
    sandbox: dict | None = None

    @classmethod
    def from_json(cls, data: Mapping) -> FinetuneResult:
        return super().from_json({**data, "config": FinetuneConfig.from_json(data["config"])})


def finetune(loaded: LoadedModel, snippets: Sequence[Snippet], config: FinetuneConfig, ctx: TaskContext,
             checkpoint=None, resume: Path | None = None) -> FinetuneResult:
    """Train `config.method` on the target language's selection-side programs; evaluate the loss per
    language (and pass@k) on the evaluation side before and after. `checkpoint(write)` saves a checkpoint
    folder that `write(folder)` fills (see tasks.train); `resume`: such a folder to continue from."""
    split = finetune_split(snippets, config)
    target_train = [s for s in split.selection if s.lang == config.target]
    heldout = stratified_subset(split.evaluation, config.eval_programs)
    target_heldout = [s for s in heldout if s.lang == config.target]
    ctx.log(f"{len(target_train)} {config.target} training programs; {len(heldout)} of {len(split.evaluation)} "
            f"evaluation programs in {len({s.lang for s in heldout})} languages ({split.caption()})")
    eval_kwargs = dict(max_length=config.max_length, batch_tokens=max(config.batch_tokens, 512))
    declare_phases(ctx, finetune_phases(config, len(heldout), len(target_heldout), len(target_train)))
    saved = checkpoint_meta(resume)
    if "before_programs" in saved:  # resumed: the evaluation before training is in the checkpoint
        before_programs, pass_before = saved["before_programs"], saved.get("pass_before")
    else:
        ctx.progress(0, len(heldout), "evaluating before training")
        before_programs = program_losses(loaded, heldout, **eval_kwargs, progress=lambda done, total: ctx.progress(
            done, total, "evaluating before training"))
        pass_before = _pass_at_k(loaded, target_heldout, config) if config.pass_at_k else None
    before = _language_means(heldout, before_programs)
    ctx.check()
    torch.manual_seed(config.seed)
    adaptation = method_of(config.method).adapt(loaded, config)
    try:
        if resume is not None:
            adaptation.load(resume)
        batches = seeded_batches(lm_sequences(loaded, target_train, config.max_length), loaded.pad_id,
                                 loaded.device, config.batch_tokens, seed=config.seed)
        ctx.log(f"method {config.method}: {sum(p.numel() for p in adaptation.params):,} trainable parameters, "
                f"{len(batches)} batches")
        extra = {"before_programs": before_programs, "pass_before": pass_before}

        def save_with_adaptation(training: Callable[[Path], None]) -> Path:
            def write(folder: Path) -> None:
                adaptation.save(folder, extra)
                training(folder)
            return checkpoint(write)

        save = save_with_adaptation if checkpoint else None
        with adaptation.applied():
            report = train(loaded.model, adaptation.params, batches, steps=config.steps, lr=config.lr, ctx=ctx,
                           seed=config.seed, checkpoint=save, checkpoint_every=config.checkpoint_every, resume=resume)
            ctx.progress(0, len(heldout), "evaluating after training")
            after_programs = program_losses(loaded, heldout, **eval_kwargs, progress=lambda done, total: ctx.progress(
                done, total, "evaluating after training"))
            pass_after = _pass_at_k(loaded, target_heldout, config) if config.pass_at_k else None
        after = _language_means(heldout, after_programs)
        delta = {lang: after[lang] - before[lang] for lang in before}
        others = [v for lang, v in delta.items() if lang != config.target]
        items = [{"id": s.id, "lang": s.lang, "task": s.task, "before": b, "after": a}
                 for s, b, a in zip(heldout, before_programs, after_programs)]
        change = lambda item: item["after"] - item["before"]  # noqa: E731
        cis = language_intervals(items, change, seed=config.seed)
        other_langs = [lang for lang in before if lang != config.target]
        model_params = sum(p.numel() for name, p in loaded.model.named_parameters() if "lora_" not in name)
        return FinetuneResult(
            config=config, target=config.target, method=config.method, neuron_set=config.neuron_set,
            neurons=config.n_neurons if method_of(config.method).trains_neurons else 0,
            neurons_per_layer={str(k): len(v) for k, v in config.neurons.items()},
            lora_rank=adaptation.rank or None, model_params=model_params,
            train_programs=len(target_train), heldout_programs=len(heldout), heldout_total=len(split.evaluation),
            split=split.summary(),
            device=str(loaded.device), **report.summary(), losses=report.losses,
            trainable_share=report.trainable / max(model_params, 1),
            heldout_before=before, heldout_after=after, heldout_delta=delta,
            target_delta=delta.get(config.target), others_delta_mean=float(np.mean(others)) if others else None,
            seed=config.seed, per_program=items,
            heldout_delta_ci={lang: interval_summary(ci) for lang, ci in cis.items()},
            target_delta_ci=interval_summary(cis.get(config.target)),
            others_delta_ci=interval_summary(mean_of_languages_interval(items, change, other_langs, seed=config.seed))
            if other_langs else None,
            pass_at_k_before=pass_before, pass_at_k_after=pass_after,
            sandbox=_sandbox() if config.pass_at_k else None)
    finally:  # the next method of a run may train this same loaded copy
        adaptation.remove()


def finetune_phases(config: FinetuneConfig, n_eval: int, n_target_eval: int, n_train: int) -> list[tuple[str, float]]:
    """The run's phases weighted by expected model passes (program-sized units): scoring the evaluation
    programs (one forward each; pass@k: a generation of up to max_new_tokens passes per target program), and
    training (forward + backward, about three passes, over a batch's programs per step)."""
    evaluate = n_eval + (n_target_eval * config.max_new_tokens if config.pass_at_k else 0)
    per_batch = max(1, min(n_train, config.batch_tokens // max(config.max_length, 1)))
    return [("evaluating before training", evaluate), ("training", 3 * config.steps * per_batch),
            ("evaluating after training", evaluate)]


def merge_finetuned(base: LoadedModel, config: FinetuneConfig, checkpoint: Path) -> nn.Module:
    """`base` (a fresh copy of the job's model) with the checkpoint's trained state merged into its
    weights, for export: W_eff = W + deltas; LoRA merged; full: the saved weights."""
    return method_of(config.method).merge(base, config, checkpoint)


def split_label(summary: Mapping | None) -> str | None:
    """'30% evaluated, seed 0' from a result's split summary (None for jobs from before the shared split)."""
    if not summary:
        return None
    return f"{summary['eval_fraction']:.0%} evaluated, seed {summary['seed']}"


def results_table(results: Mapping[str, FinetuneResult]) -> pd.DataFrame:
    """One row per run ({job id: result}, e.g. neuro.jobs' finished_results): what was trained, at what
    cost, and the evaluation-side losses."""
    rows = []
    for job_id, r in results.items():
        rows.append({
            "target": r.target, "method": r.method, "seed": r.config.seed, "neurons": r.neurons,
            "trainable_params": r.trainable_params,
            "trainable_%": round(100 * r.trainable_share, 4),
            "target_loss_before": r.heldout_before.get(r.target), "target_loss_after": r.heldout_after.get(r.target),
            "target_delta": r.target_delta, "target_delta_ci": _ci_text(r.target_delta_ci),
            "others_delta_mean": r.others_delta_mean, "others_delta_ci": _ci_text(r.others_delta_ci),
            "peak_memory_mb": r.peak_memory_mb, "memory_overhead_mb": r.memory_overhead_mb,
            "optimizer_state": r.optimizer_state, "s_per_step": r.seconds_per_step, "steps": r.steps,
            "lr": r.config.lr, "neuron_set": r.neuron_set, "lora_rank": r.lora_rank,
            "split": split_label(r.split), "evaluated": evaluated_text(r.heldout_programs, r.heldout_total),
            "job": job_id,
        })
    return pd.DataFrame(rows)


def method_table(results: Mapping[str, FinetuneResult]) -> pd.DataFrame:
    """One row per method of the runs given (e.g. one launch): seeds run, trainable parameters, the target's
    held-out loss before and after and its change (after - before; means over seeds), the change's interval
    over evaluation tasks (one seed: that run's; several: see the seed comparison), and what was evaluated."""
    rows: dict[FinetuneMethod, list[FinetuneResult]] = {}
    for r in results.values():
        rows.setdefault(r.method, []).append(r)
    out = []
    for method, runs in rows.items():
        mean = lambda values: float(np.mean(values)) if values and None not in values else None  # noqa: E731
        out.append({"method": METHOD_LABELS.get(method, method), "seeds": len(runs),
                    "trainable_params": runs[0].trainable_params,
                    "target_loss_before": mean([r.heldout_before.get(r.target) for r in runs]),
                    "target_loss_after": mean([r.heldout_after.get(r.target) for r in runs]),
                    "target_delta": mean([r.target_delta for r in runs]),
                    "target_delta_ci": _ci_text(runs[0].target_delta_ci) if len(runs) == 1 else None,
                    "evaluated": evaluated_text(runs[0].heldout_programs, runs[0].heldout_total)})
    return pd.DataFrame(out)


def _ci_text(ci: Mapping | None) -> str | None:
    if not ci or ci.get("low") is None:
        return None
    return f"[{ci['low']:.4f}, {ci['high']:.4f}]"


def comparison_key(r: FinetuneResult) -> str:
    """Which runs are compared with each other: those started together (the config's comparison id); a run
    from before comparisons existed is grouped with runs of the same target, neuron set, steps and split."""
    c = r.config
    return c.comparison or f"{c.target}|{c.neuron_set}|{c.steps}|{c.eval_fraction}|{c.split_seed}"


def compare_finetune(results: Mapping[str, FinetuneResult], reference: str = "neurons"
                     ) -> dict[str, SeedComparison]:
    """{comparison key: the methods compared over seeds} on the target language's held-out loss change
    (lower is better): per method mean +- sd over seeds, and `reference` (the neuron-guided run) minus each
    other method per seed, with the interval over evaluation tasks of the target's per-task difference."""
    groups: dict[str, list[Run]] = {}
    for job_id, r in results.items():
        if r.target_delta is None:
            continue
        groups.setdefault(comparison_key(r), []).append(
            Run(r.method, r.config.seed, r.target_delta, r.per_program, r.trainable_params, job_id))
    out = {}
    for key, runs in groups.items():
        target = next(r for r in results.values() if comparison_key(r) == key).target
        out[key] = compare(runs, metric=f"{target} held-out loss change (after - before, nats)", reference=reference,
                           lower_is_better=True, item_value=_loss_change, item_filter=partial(_in_language, target))
    return out


def _loss_change(item: Mapping[str, Any]) -> float:
    """A held-out program's loss change (after - before training)."""
    return item["after"] - item["before"]


def _in_language(lang: str, item: Mapping[str, Any]) -> bool:
    return item["lang"] == lang
