"""Interventions on neurons: zero a set of neurons (ablation) during loss evaluation or generation.

`ablated(loaded, neurons)` is a context manager: inside it every forward pass of the model (loss,
`generate`) sees the chosen neurons' activations set to zero. It holds the model's lock, so other
sessions sharing the model never see the ablated model.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .capture import Progress, collate, encode, hooked, length_batches, sample_losses
from .corpus import Snippet
from .models import LoadedModel

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
            keep = torch.ones(width, device=loaded.device)
            keep[torch.as_tensor(idx, device=loaded.device)] = 0.0

            def hook(module, args, keep=keep):
                return (args[0] * keep.to(args[0].dtype),) + tuple(args[1:])
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
                    batch_tokens: int = 8192, max_batch: int = 32) -> dict[str, float]:
    """Mean next-token cross-entropy per language (mean over programs of each program's mean)."""
    loaded.require_weights()
    encoded = [encode(loaded, s.code, max_length) for s in snippets]
    totals: dict[str, list[float]] = {}
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    with loaded.lock, torch.inference_mode():
        for batch in length_batches([len(e.ids) for e in encoded], batch_tokens, max_batch):
            ids, mask = collate([encoded[i] for i in batch], pad, loaded.device)
            logits = loaded.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            for i, loss in zip(batch, sample_losses(logits, ids, mask).tolist()):
                totals.setdefault(snippets[i].lang, []).append(loss)
    return {lang: float(np.mean(v)) for lang, v in totals.items()}


@dataclass(frozen=True)
class AblationResult:
    """Loss change when each language's neurons (rows) are zeroed, evaluated per language (columns)."""

    base: dict[str, float]
    delta: pd.DataFrame          # ablated language x evaluated language
    delta_random: pd.DataFrame   # the same for a random control of equal size per layer
    sizes: dict[str, int]

    def selectivity(self, random: bool = False) -> dict[str, float]:
        """Loss change on the own language / mean change on the other languages (nan for a group that
        is not a language, e.g. the universal neurons)."""
        frame = self.delta_random if random else self.delta
        out = {}
        for lang in frame.index:
            if lang not in frame.columns:
                out[lang] = float("nan")
                continue
            own, others = float(frame.loc[lang, lang]), frame.loc[lang].drop(lang)
            mean_other = float(others.mean()) if len(others) else float("nan")
            if own <= 0:
                out[lang] = 0.0  # silencing the group did not hurt its own language
            else:
                out[lang] = own / mean_other if mean_other > 0 else float("inf")
        return out

    def summary(self) -> pd.DataFrame:
        own = lambda f: [float(f.loc[g, g]) if g in f.columns else float("nan") for g in f.index]  # noqa: E731
        return pd.DataFrame({
            "neurons": [self.sizes[g] for g in self.delta.index],
            "own_loss_change": own(self.delta),
            "own_loss_change_random": own(self.delta_random),
            "mean_loss_change": self.delta.mean(axis=1).tolist(),
            "mean_loss_change_random": self.delta_random.mean(axis=1).tolist(),
            "selectivity": list(self.selectivity().values()),
            "selectivity_random": list(self.selectivity(random=True).values()),
        }, index=self.delta.index)


def ablation_matrix(loaded: LoadedModel, snippets: Sequence[Snippet], groups: Mapping[str, NeuronSet], *,
                    seed: int = 0, max_length: int = 512, progress: Progress | None = None) -> AblationResult:
    """For each group (usually a language's specific neurons) the per-language loss change when it is
    zeroed, beside a random control of the same size per layer (that avoids every group's neurons)."""
    width = loaded.n_neurons
    all_selected: dict[int, list[int]] = {}
    for neurons in groups.values():
        for layer, idx in as_layer_map(neurons).items():
            all_selected.setdefault(layer, []).extend(idx.tolist())
    steps = 1 + 2 * len(groups)
    base = language_losses(loaded, snippets, max_length=max_length)
    if progress:
        progress(1, steps)
    rows, rows_random, sizes = {}, {}, {}
    for i, (name, neurons) in enumerate(groups.items()):
        sizes[name] = count(neurons)
        with ablated(loaded, neurons):
            losses = language_losses(loaded, snippets, max_length=max_length)
        rows[name] = {lang: losses[lang] - base[lang] for lang in base}
        control = random_like(neurons, width, seed=seed + i, exclude=all_selected)
        with ablated(loaded, control):
            losses = language_losses(loaded, snippets, max_length=max_length)
        rows_random[name] = {lang: losses[lang] - base[lang] for lang in base}
        if progress:
            progress(3 + 2 * i, steps)
    frame = lambda rows: pd.DataFrame.from_dict(rows, orient="index")[list(base)]  # noqa: E731
    return AblationResult(base, frame(rows), frame(rows_random), sizes)
