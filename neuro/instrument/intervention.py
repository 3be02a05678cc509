"""Interventions on neurons: one record (which neurons, which operation, which positions) and one context
manager that applies any number of them at the site capture and ablation read, the input of the FFN's
output projection.

    zero   a <- 0                         (ablation; `neuro.instrument.ablation.ablated` is this op)
    mean   a <- the neuron's mean activation over one language's programs (`Intervention.mean`)
    scale  a <- value * a                 (steering: value > 1 amplifies, 0 silences, 1 changes nothing)
    set    a <- value                     (one value, or one per neuron)
    patch  a <- the neuron's activation on a second input (`source`), position by position

Positions count from the first position of the model's input row (the BOS where the tokenizer has one);
during cached generation the hook adds the cache's length, so a range keeps meaning the same tokens.
Where the rows are left-padded (batched generation) the padding counts too: use positions on one input.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal, get_args

import numpy as np
import torch

from neuro.model.loading import LoadedModel

Op = Literal["zero", "mean", "scale", "set", "patch"]
OPS: tuple[str, ...] = get_args(Op)


def neuron_pairs(neurons) -> tuple[tuple[int, int], ...]:
    """{layer: indices} or [(layer, neuron), ...] as sorted unique (layer, neuron) pairs."""
    if isinstance(neurons, Mapping):
        pairs = [(int(layer), int(n)) for layer, idx in neurons.items() for n in np.asarray(idx).ravel()]
    else:
        pairs = [(int(layer), int(n)) for layer, n in neurons]
    return tuple(sorted(set(pairs)))


@dataclass(frozen=True)
class Intervention:
    """What to do to which neurons at which positions (see the module docstring for the operations).

    neurons: (layer, neuron) pairs (a {layer: indices} mapping is accepted too), kept sorted and unique.
    value: the factor of "scale"; the value of "set" (one number, or one per neuron in `neurons`' sorted
    order); one per neuron for "mean" (built by `Intervention.mean`); unused by "zero" and "patch".
    positions: None (all) or (start, stop), a half-open range of token positions.
    language: "mean" only, whose programs the means were taken over (shown with the result).
    source: "patch" only, the code whose activations are substituted (where the two inputs' lengths differ,
    the overlapping prefix: `patched_positions` says how many)."""

    neurons: tuple[tuple[int, int], ...]
    op: Op = "zero"
    value: float | tuple[float, ...] | None = None
    positions: tuple[int, int] | None = None
    language: str | None = None
    source: str | None = None

    def __post_init__(self):
        raw = self.neurons
        pairs = neuron_pairs(raw)
        if isinstance(self.value, (np.floating, np.integer, int)) and not isinstance(self.value, bool):
            object.__setattr__(self, "value", float(self.value))
        per_neuron = isinstance(self.value, (tuple, list, np.ndarray))
        if per_neuron and not isinstance(raw, Mapping):
            given = [(int(layer), int(n)) for layer, n in raw]
            if len(given) != len(set(given)):
                raise ValueError("a neuron is listed twice beside per-neuron values")
            values = np.asarray(self.value, dtype=np.float64).ravel()
            if len(values) != len(given):
                raise ValueError(f"{len(values)} values for {len(given)} neurons")
            order = sorted(range(len(given)), key=lambda i: given[i])
            object.__setattr__(self, "value", tuple(float(values[i]) for i in order))
        elif per_neuron:
            raise ValueError("per-neuron values need the neurons as a list of (layer, neuron) pairs")
        object.__setattr__(self, "neurons", pairs)
        if self.op not in OPS:
            raise ValueError(f"unknown operation {self.op!r}: choose one of {', '.join(OPS)}")
        if self.op == "scale" and not isinstance(self.value, (int, float)):
            raise ValueError("'scale' needs one factor as value (e.g. value=2.0)")
        if self.op == "set" and self.value is None:
            raise ValueError("'set' needs a value (one number, or one per neuron)")
        if self.op == "mean" and not (isinstance(self.value, tuple) and len(self.value) == len(pairs)):
            raise ValueError("'mean' needs one mean per neuron: build it with Intervention.mean(neurons, language, "
                             "means)")
        if self.op == "patch" and not (self.source and self.source.strip()):
            raise ValueError("'patch' needs the source code whose activations are taken (source=...)")
        if isinstance(self.value, (int, float)) and not np.isfinite(self.value):
            raise ValueError(f"value must be finite, got {self.value}")
        if isinstance(self.value, tuple) and not np.all(np.isfinite(self.value)):
            raise ValueError("every value must be finite")
        if self.positions is not None:
            start, stop = (int(p) for p in self.positions)
            if not 0 <= start < stop:
                raise ValueError(f"positions must be a range (start, stop) with 0 <= start < stop, "
                                 f"got {self.positions}")
            object.__setattr__(self, "positions", (start, stop))

    @classmethod
    def mean(cls, neurons, language: str, means, positions: tuple[int, int] | None = None) -> Intervention:
        """Set `neurons` to their mean activation over `language`'s programs; `means` is a
        neuro.instrument.means.LanguageMeans (or any object with `.of(language)` -> (layers, width))."""
        pairs = neuron_pairs(neurons)
        table = means.of(language)
        return cls(pairs, "mean", tuple(float(table[layer, n]) for layer, n in pairs), positions,
                   language=language)

    def label(self) -> str:
        """A short description for tables and legends."""
        what = {"zero": "zero", "mean": f"mean of {self.language}", "patch": "patch",
                "scale": f"scale x{self.value:g}" if isinstance(self.value, (int, float)) else "scale",
                "set": f"set {self.value:g}" if isinstance(self.value, (int, float)) else "set"}[self.op]
        where = "" if self.positions is None else f" at positions {self.positions[0]}..{self.positions[1] - 1}"
        return f"{what} of {len(self.neurons)} neuron{'s' * (len(self.neurons) != 1)}{where}"

    def layer_map(self) -> dict[int, np.ndarray]:
        """{layer: neuron indices} (sorted, as in `neurons`)."""
        out: dict[int, list[int]] = {}
        for layer, n in self.neurons:
            out.setdefault(layer, []).append(n)
        return {layer: np.array(idx, dtype=np.int64) for layer, idx in out.items()}


def check_neurons(loaded: LoadedModel, pairs: Iterable[tuple[int, int]]) -> None:
    """A clear error for a (layer, neuron) outside the model."""
    layers, width = loaded.n_layers, loaded.n_neurons
    for layer, n in pairs:
        if not 0 <= layer < layers or not 0 <= n < width:
            raise ValueError(f"neuron ({layer}, {n}) is outside {layers} layers x {width} neurons")


def patch_source(loaded: LoadedModel, code: str, layers: Sequence[int],
                 max_length: int = 1024) -> dict[int, np.ndarray]:
    """The activations (tokens, width) of each of `layers` on `code`: what a "patch" substitutes."""
    from neuro.instrument.statistics import trace_tokens

    trace = trace_tokens(loaded, code, layers=sorted(set(layers)), max_length=max_length)
    return {layer: trace.activations[i] for i, layer in enumerate(trace.layers)}


@dataclass
class _Applied:
    """One intervention's part in one layer, the tensors moved to the activation's device once."""

    op: str
    idx: torch.Tensor
    values: torch.Tensor | None  # (k,) for set/mean, () for scale, (source tokens, k) for patch
    positions: tuple[int, int] | None
    keep: torch.Tensor | None = None  # "zero" everywhere: the multiplicative mask ablation always used
    moved: dict | None = None

    def on(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        key = (a.device, a.dtype)
        if self.moved is None:
            self.moved = {}
        if key not in self.moved:
            self.moved[key] = (self.idx.to(a.device),
                               None if self.values is None else self.values.to(device=a.device, dtype=a.dtype),
                               None if self.keep is None else self.keep.to(device=a.device, dtype=a.dtype))
        return self.moved[key]


def _window(positions: tuple[int, int] | None, offset: int, seq: int, limit: int | None = None) -> tuple[int, int]:
    """The local slice [lo, hi) of an input row of `seq` positions starting at absolute `offset` that the
    absolute range `positions` (None: all) and `limit` (patch: the source's length) cover."""
    start, stop = positions if positions is not None else (0, offset + seq)
    if limit is not None:
        stop = min(stop, limit)
    return max(start - offset, 0), max(min(stop - offset, seq), 0)


def _apply(out: torch.Tensor, part: _Applied, offset: int) -> torch.Tensor:
    idx, values, keep = part.on(out)
    if keep is not None:  # zero at every position: multiply by a 0/1 mask, as ablation always did
        return out * keep
    seq = out.shape[-2]
    limit = values.shape[0] if part.op == "patch" and values is not None else None
    lo, hi = _window(part.positions, offset, seq, limit)
    if hi <= lo:
        return out
    block = out[..., lo:hi, :]
    if part.op == "zero":
        block[..., idx] = 0
        return out
    assert values is not None, "every operation but 'zero' carries its values (_prepare)"
    if part.op == "scale":
        block[..., idx] = block[..., idx] * values
    elif part.op in ("set", "mean"):
        block[..., idx] = values.expand(block.shape[:-1] + (len(idx),))
    else:  # patch: absolute positions offset+lo .. offset+hi of the source
        block[..., idx] = values[offset + lo: offset + hi].expand(block.shape[:-2] + (hi - lo, len(idx)))
    return out


def _prepare(loaded: LoadedModel, interventions: Sequence[Intervention], max_length: int) -> dict[int, list[_Applied]]:
    width = loaded.n_neurons
    per_layer: dict[int, list[_Applied]] = {}
    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise TypeError(f"expected an Intervention, got {type(iv).__name__}")
        check_neurons(loaded, iv.neurons)
        if not iv.neurons:
            continue
        source = None
        if iv.op == "patch":
            assert iv.source is not None, "a patch has its source (checked on construction)"
            source = patch_source(loaded, iv.source, list(iv.layer_map()), max_length)
        start = 0
        for layer, idx in iv.layer_map().items():
            values, keep = None, None
            if iv.op == "zero" and iv.positions is None:
                keep = torch.ones(width)
                keep[torch.as_tensor(idx)] = 0.0
            elif iv.op == "scale":
                assert isinstance(iv.value, (int, float)), "a scale has one factor (checked on construction)"
                values = torch.tensor(float(iv.value))
            elif iv.op in ("set", "mean"):
                assert iv.value is not None, "'set' and 'mean' have values (checked on construction)"
                v = iv.value if isinstance(iv.value, tuple) else (float(iv.value),) * len(iv.neurons)
                values = torch.tensor(v[start:start + len(idx)], dtype=torch.float64)
            elif iv.op == "patch":
                assert source is not None
                values = torch.from_numpy(np.ascontiguousarray(source[layer][:, idx]))
            per_layer.setdefault(layer, []).append(_Applied(iv.op, torch.as_tensor(idx), values, iv.positions,
                                                            keep))
            start += len(idx)
    return per_layer


def patched_positions(loaded: LoadedModel, code: str, source: str, max_length: int = 1024) -> tuple[int, int]:
    """(positions patched, positions of `code`): a patch covers the overlapping prefix of the two inputs."""
    from neuro.instrument.tokens import encode

    n, m = len(encode(loaded, code, max_length).ids), len(encode(loaded, source, max_length).ids)
    return min(n, m), n


@contextmanager
def intervened(loaded: LoadedModel, *interventions: Intervention, max_length: int = 1024) -> Iterator[None]:
    """Inside, every forward pass of the model (losses, `generate`) sees the interventions applied, in order,
    at the input of each layer's FFN output projection. Holds the model's lock, so other sessions sharing the
    model never see it changed; an intervention on no neurons registers nothing (the model is untouched).
    "patch" runs the model once on its source first (`max_length` tokens at most)."""
    per_layer = _prepare(loaded, interventions, max_length)
    positional = any(p.positions is not None or p.op == "patch" for parts in per_layer.values() for p in parts)
    state = {"offset": 0}

    def track(kwargs):
        past = kwargs.get("past_key_values", kwargs.get("cache"))  # the KV cache's name differs by version
        state["offset"] = int(past.get_seq_length()) if past is not None and hasattr(past, "get_seq_length") else 0

    def change(a, parts):
        out = a if all(p.keep is not None for p in parts) else a.clone()
        for part in parts:
            out = _apply(out, part, state["offset"])
        return out

    points = loaded.hook_sites
    pairs = [(points.call_kwargs(), track)] if positional else []
    pairs += [(points.neuron_input(layer), partial(change, parts=parts)) for layer, parts in per_layer.items()]
    with loaded.hooks(pairs):
        yield
