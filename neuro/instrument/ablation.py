"""Interventions on neurons: zero a set of neurons (ablation) during loss evaluation or generation.

`ablated(loaded, neurons)` is a context manager: inside it every forward pass of the model (loss,
`generate`) sees the chosen neurons' activations set to zero. It holds the model's lock, so other
sessions sharing the model never see the ablated model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from neuro.code.corpus import Snippet
from neuro.instrument.hooks import hooked
from neuro.instrument.losses import model_sample_losses
from neuro.instrument.tokens import collate, encode, length_batches
from neuro.model.loading import LoadedModel
from neuro.model.plan import batch_plan
from neuro.progress import Progress

NeuronSet = Mapping[int, Sequence[int]]  # layer -> neuron indices


def as_layer_map(neurons: NeuronSet | Iterable[tuple[int, int]]) -> dict[int, np.ndarray]:
    """Normalise {layer: indices} or [(layer, neuron), ...] to {layer: sorted unique int array}."""
    if isinstance(neurons, Mapping):
        pairs = [(int(layer), int(n)) for layer, idx in neurons.items() for n in np.asarray(idx).ravel()]
    else:
        pairs = [(int(layer), int(n)) for layer, n in neurons]
    out: dict[int, list[int]] = {}
    for layer, n in pairs:
        out.setdefault(layer, []).append(n)
    return {layer: np.unique(np.array(idx, dtype=np.int64)) for layer, idx in sorted(out.items())}


def count(neurons: NeuronSet) -> int:
    return int(sum(len(v) for v in as_layer_map(neurons).values()))


@contextmanager
def ablated(loaded: LoadedModel, neurons: NeuronSet | Iterable[tuple[int, int]]) -> Iterator[None]:
    """Zero the given neurons (inputs of the FFN output projection) in every forward pass inside."""
    layer_map = as_layer_map(neurons)
    sites = loaded.sites()
    width = loaded.n_neurons
    for layer, idx in layer_map.items():
        if not 0 <= layer < len(sites) or (len(idx) and (idx.min() < 0 or idx.max() >= width)):
            raise ValueError(f"neuron ({layer}, ...) is outside {len(sites)} layers x {width} neurons")

    def register(handles):
        for layer, idx in layer_map.items():
            if not len(idx):
                continue
            keep = torch.ones(width)
            keep[torch.as_tensor(idx)] = 0.0

            def hook(module, args, keep=keep, moved={}):  # noqa: B006 - one copy per device, per call
                a = args[0]
                key = (a.device, a.dtype)
                if key not in moved:
                    moved[key] = keep.to(device=a.device, dtype=a.dtype)
                return (a * moved[key],) + tuple(args[1:])
            handles.append(sites[layer].down.register_forward_pre_hook(hook))

    with loaded.lock, hooked(register):
        yield


def random_like(neurons: NeuronSet, width: int, seed: int = 0,
                exclude: NeuronSet | None = None) -> dict[int, np.ndarray]:
    """A random control: the same number of neurons in each layer, avoiding `exclude`."""
    rng = np.random.default_rng(seed)
    banned = as_layer_map(exclude or {})
    out = {}
    for layer, idx in as_layer_map(neurons).items():
        pool = np.setdiff1d(np.arange(width), banned.get(layer, np.array([], dtype=np.int64)))
        out[layer] = np.sort(rng.choice(pool, size=min(len(idx), len(pool)), replace=False))
    return out


def language_losses(loaded: LoadedModel, snippets: Sequence[Snippet], *, max_length: int = 512,
                    batch_tokens: int | None = None, max_batch: int = 32) -> dict[str, float]:
    """Mean next-token cross-entropy per language (mean over programs of each program's mean); batches of
    `batch_tokens` padded tokens (default: the memory plan's, neuro.model.plan)."""
    loaded.require_weights()
    encoded = [encode(loaded, s.code, max_length) for s in snippets]
    batch_tokens = batch_tokens or batch_plan(loaded, "forward", max_length).batch_tokens or max_length
    totals: dict[str, list[float]] = {}
    with loaded.lock, torch.inference_mode():
        for batch in length_batches([len(e.ids) for e in encoded], batch_tokens, max_batch):
            ids, mask = collate([encoded[i] for i in batch], loaded.pad_id, loaded.device)
            for i, loss in zip(batch, model_sample_losses(loaded, ids, mask).tolist()):
                totals.setdefault(snippets[i].lang, []).append(loss)
    return {lang: float(np.mean(v)) for lang, v in totals.items()}


@dataclass(frozen=True)
class AblationResult:
    """Loss change when each group's neurons (rows) are zeroed, evaluated per language (columns), beside
    `len(random_draws)` random controls of the same size per layer (disjoint from every group)."""

    base: dict[str, float]
    delta: pd.DataFrame               # ablated group x evaluated language
    random_draws: list[pd.DataFrame]  # one frame like `delta` per random draw
    sizes: dict[str, int]

    @property
    def delta_random(self) -> pd.DataFrame:
        return sum(self.random_draws) / len(self.random_draws)

    @property
    def delta_random_sd(self) -> pd.DataFrame:
        stacked = np.stack([f.to_numpy() for f in self.random_draws])
        sd = stacked.std(axis=0, ddof=1) if len(self.random_draws) > 1 else np.zeros_like(stacked[0])
        return pd.DataFrame(sd, index=self.delta.index, columns=self.delta.columns)

    @staticmethod
    def _own(frame: pd.DataFrame, group: str) -> float:
        return float(frame.loc[group, group]) if group in frame.columns else float("nan")

    @classmethod
    def _selectivity(cls, frame: pd.DataFrame) -> dict[str, float]:
        """Own-language loss change minus the mean change of the other languages (nan for a group that is
        not a language, e.g. the universal neurons): bounded, and 0 when the group hurts all alike."""
        out = {}
        for group in frame.index:
            others = frame.loc[group].drop(group, errors="ignore")
            out[group] = cls._own(frame, group) - float(others.mean()) if group in frame.columns and len(others) \
                else float("nan")
        return out

    def selectivity(self) -> dict[str, float]:
        return self._selectivity(self.delta)

    def summary(self) -> pd.DataFrame:
        """Per group: size, own-language change with the random draws' mean, sd, z and the share of draws
        that changed it at least as much (a permutation-style p-value), and selectivity likewise."""
        rows = {}
        sel = self.selectivity()
        sel_draws = [self._selectivity(f) for f in self.random_draws]
        for group in self.delta.index:
            own = self._own(self.delta, group)
            draws = np.array([self._own(f, group) for f in self.random_draws])
            if np.isnan(own):  # not a language: compare the mean change over all languages
                own, draws = float(self.delta.loc[group].mean()), np.array([float(f.loc[group].mean())
                                                                            for f in self.random_draws])
            sd = float(draws.std(ddof=1)) if len(draws) > 1 else 0.0
            s_draws = np.array([d[group] for d in sel_draws])
            rows[group] = {
                "neurons": self.sizes[group], "loss_change": own,
                "random_mean": float(draws.mean()), "random_sd": sd,
                "z": (own - float(draws.mean())) / sd if sd > 0 else float("nan"),
                "random_at_least": float((draws >= own).mean()),
                "selectivity": sel[group], "selectivity_random_mean": float(np.mean(s_draws)),
                "selectivity_random_sd": float(np.std(s_draws, ddof=1)) if len(s_draws) > 1 else 0.0,
            }
        return pd.DataFrame.from_dict(rows, orient="index")


def ablation_matrix(loaded: LoadedModel, snippets: Sequence[Snippet], groups: Mapping[str, NeuronSet], *,
                    draws: int = 5, seed: int = 0, max_length: int = 512,
                    progress: Progress | None = None) -> AblationResult:
    """For each group (usually a language's specific neurons) the per-language loss change when it is
    zeroed, beside `draws` random controls of the same size per layer that avoid every group's neurons.

    `snippets` should be programs the groups were NOT selected on (see neuro.code.split)."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    width = loaded.n_neurons
    all_selected: dict[int, list[int]] = {}
    for neurons in groups.values():
        for layer, idx in as_layer_map(neurons).items():
            all_selected.setdefault(layer, []).extend(idx.tolist())
    steps, done = 1 + (1 + draws) * len(groups), 1
    base = language_losses(loaded, snippets, max_length=max_length)
    if progress:
        progress(done, steps)

    def change(neurons) -> dict[str, float]:
        nonlocal done
        with ablated(loaded, neurons):
            losses = language_losses(loaded, snippets, max_length=max_length)
        done += 1
        if progress:
            progress(done, steps)
        return {lang: losses[lang] - base[lang] for lang in base}

    rows, random_rows, sizes = {}, [{} for _ in range(draws)], {}
    for i, (name, neurons) in enumerate(groups.items()):
        sizes[name] = count(neurons)
        rows[name] = change(neurons)
        for d in range(draws):
            control = random_like(neurons, width, seed=seed + 1000 * d + i, exclude=all_selected)
            random_rows[d][name] = change(control)
    frame = lambda rows: pd.DataFrame.from_dict(rows, orient="index")[list(base)]  # noqa: E731
    return AblationResult(base, frame(rows), [frame(r) for r in random_rows], sizes)


def neuron_effects(loaded: LoadedModel, snippets: Sequence[Snippet], neurons: Sequence[tuple[int, int]], *,
                   max_length: int = 512, progress: Progress | None = None) -> pd.DataFrame:
    """Measured change of each language's mean loss when each (layer, neuron) alone is zeroed: one row per
    neuron, one column per language (the ground truth an attribution score estimates)."""
    base = language_losses(loaded, snippets, max_length=max_length)
    rows = []
    for i, (layer, neuron) in enumerate(neurons):
        with ablated(loaded, {int(layer): [int(neuron)]}):
            losses = language_losses(loaded, snippets, max_length=max_length)
        rows.append({"layer": int(layer), "neuron": int(neuron), **{k: losses[k] - base[k] for k in base}})
        if progress:
            progress(i + 1, len(neurons))
    return pd.DataFrame(rows, columns=["layer", "neuron", *base])
