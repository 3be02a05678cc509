"""Hidden states of the blocks, pooled per program and at sampled tokens, from one forward pass that
stops at the highest block asked for."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from neuro.code.corpus import Snippet
from neuro.instrument.hooks import forward_until
from neuro.instrument.tokens import collate, encode, length_batches, real_token_mask
from neuro.model.loading import LoadedModel
from neuro.model.plan import batch_plan
from neuro.progress import Progress


class LayeredArray(Protocol):
    """What a (rows, layers, cols) array kept one matrix per layer answers (neuro.results.layered.Layered
    satisfies it): the layers below neuro.results read such arrays through this without importing it."""

    @property
    def shape(self) -> tuple[int, int, int]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, key: Any) -> np.ndarray: ...

    def layer(self, index: int) -> np.ndarray: ...

    def mean(self, axis: int) -> np.ndarray: ...

    def discard(self) -> None: ...


StateArray = np.ndarray | LayeredArray  # a 3-D array in RAM, or one read a layer at a time
A = TypeVar("A", bound=StateArray, covariant=True)


@dataclass(frozen=True)
class LayerStates(Generic[A]):
    """Hidden states per block from one pass: pooled per snippet, and at a sample of token positions.

    pooled: (snippets, layers, hidden) mean over each snippet's tokens; tokens: (sampled tokens, layers,
    hidden); token_index: (sampled tokens, 2) = (snippet index, token position). The states arrays are 3-D
    arrays from `layer_states`, or layered (neuro.results.layered) from the resumable pass of neuro.results.
    """

    pooled: A
    tokens: A | None = None
    token_index: np.ndarray | None = None


def sample_positions(length: int, count: int, seed: int, code: str) -> np.ndarray:
    """`count` sorted token positions of 1..length-1 drawn with a stream seeded by `seed` and the program's
    text: the same program gets the same positions wherever it sits in the corpus. Position 0 is never
    drawn: it holds the BOS, or without one the first code token, which `real_token_mask` leaves out too."""
    if not count or length <= 1:
        return np.zeros(0, int)
    rng = np.random.default_rng([seed, zlib.crc32(code.encode("utf-8"))])
    return np.sort(rng.choice(np.arange(1, length), size=min(count, length - 1), replace=False))


DEFAULT_MAX_TOKENS = 4096  # sampled token states kept per layer (12 a program x 330 programs = 3,960 fit)


def _priorities(code: str, count: int, seed: int) -> np.ndarray:
    """A uniform random number per sampled token of one program, from a stream of the program's own."""
    return np.random.default_rng([seed, zlib.crc32(code.encode("utf-8")), 1]).random(count)


def token_sample(loaded: LoadedModel, snippets: Sequence[Snippet], *, tokens_per_snippet: int, seed: int = 0,
                 max_length: int = 512, max_tokens: int | None = DEFAULT_MAX_TOKENS) -> list[np.ndarray]:
    """The token positions sampled per snippet: `sample_positions` of each, then, where they add up to more
    than `max_tokens`, the `max_tokens` of them with the lowest priorities (a uniform number drawn per
    sampled token from the program's own seeded stream), ties broken by program text, id and position.

    A fixed-size reservoir whatever the corpus size: which tokens are kept depends only on the programs'
    contents and the seed, never on their order or on how a pass is cut into chunks or resumed; where the
    corpus samples fewer than `max_tokens`, every sampled token is kept (the positions are those of
    `sample_positions` alone)."""
    if not tokens_per_snippet:
        return [np.zeros(0, int) for _ in snippets]
    picks = [sample_positions(len(encode(loaded, s.code, max_length).ids), tokens_per_snippet, seed, s.code)
             for s in snippets]
    total = sum(len(p) for p in picks)
    if max_tokens is None or total <= max_tokens:
        return picks
    owner: np.ndarray = np.repeat(np.arange(len(snippets)), [len(p) for p in picks])
    position = np.concatenate(picks)
    priority = np.concatenate([_priorities(s.code, len(p), seed) for s, p in zip(snippets, picks)])
    crc = np.array([zlib.crc32(snippets[i].code.encode("utf-8")) for i in owner], dtype=np.int64)
    ids = np.array([snippets[i].id for i in owner], dtype=object)
    order = sorted(range(total), key=lambda j: (priority[j], crc[j], ids[j], position[j]))
    keep: np.ndarray = np.zeros(total, bool)
    keep[order[:max_tokens]] = True
    return [position[(owner == i) & keep] for i in range(len(snippets))]


def layer_states(loaded: LoadedModel, snippets: Sequence[Snippet], *, upto_layer: int | None = None,
                 tokens_per_snippet: int = 0, seed: int = 0, max_length: int = 512, batch_tokens: int | None = None,
                 max_batch: int = 64, progress: Progress | None = None,
                 picks: Sequence[np.ndarray] | None = None) -> LayerStates[np.ndarray]:
    """Pooled (the mean over real tokens: the first position, BOS or not, and padding excluded, see
    `real_token_mask`) and optionally sampled token states
    of blocks 0..upto_layer, in one forward pass that stops after block `upto_layer` (default: the
    last), so a middle layer costs only the layers below.

    Token positions are sampled uniformly per snippet (the first position excluded), from a
    random stream of the snippet's own (`sample_positions`), so a chunk of the corpus samples what the
    whole corpus would. `picks` gives the positions per snippet instead (e.g. `token_sample`'s reservoir).
    """
    loaded.require_weights()
    sites = loaded.sites()
    last = len(sites) - 1 if upto_layer is None else upto_layer
    if not 0 <= last < len(sites):
        raise ValueError(f"upto_layer must lie in 0..{len(sites) - 1}")
    encoded = [encode(loaded, s.code, max_length) for s in snippets]
    hidden = loaded.embeddings.weight.shape[1]
    pooled = np.zeros((len(snippets), last + 1, hidden), dtype=np.float32)
    if picks is None:
        picks = [sample_positions(len(e.ids), tokens_per_snippet, seed, s.code) for e, s in zip(encoded, snippets)]
    else:
        picks = [np.asarray(p, dtype=int) for p in picks]
        if len(picks) != len(snippets) or any(len(p) and not 1 <= p.min() <= p.max() < len(e.ids)
                                              for p, e in zip(picks, encoded)):
            raise ValueError("picks must give token positions 1..length-1 of each snippet")
    sampling = bool(tokens_per_snippet) or any(len(p) for p in picks)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in picks])]).astype(int)
    tokens = np.zeros((offsets[-1], last + 1, hidden), dtype=np.float32) if sampling else None
    current: dict = {}

    def keep(states, layer):
        mask = current["mask"].to(states.device)  # a block accelerate placed on another device
        mean = (states.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        pooled[current["rows"], layer] = mean.cpu().numpy()
        if tokens is not None:
            for r, i in enumerate(current["rows"]):
                if len(picks[i]):
                    chosen = states[r, torch.as_tensor(picks[i], device=states.device)]
                    tokens[offsets[i]:offsets[i + 1], layer] = chosen.float().cpu().numpy()

    pairs = [(loaded.hook_sites.block_output(layer), lambda states, layer=layer: keep(states, layer))
             for layer in range(last + 1)]

    done = 0
    with loaded.hooks(pairs, inference=True):
        batch_tokens = batch_tokens or batch_plan(loaded, "forward", max_length).batch_tokens or max_length
        for batch in length_batches([len(e.ids) for e in encoded], batch_tokens, max_batch):
            ids, mask = collate([encoded[i] for i in batch], loaded.pad_id, loaded.device)
            current.update(rows=batch, mask=real_token_mask(loaded, ids, mask).float())  # first position excluded
            forward_until(loaded, ids, mask, last_layer=last)
            done += len(batch)
            if progress:
                progress(done, len(snippets))
    index = None
    if tokens is not None:
        index = np.array([(i, int(pos)) for i, p in enumerate(picks) for pos in p], dtype=np.int64).reshape(-1, 2)
    return LayerStates(pooled, tokens, index)


def pooled_states(loaded: LoadedModel, snippets: Sequence[Snippet], *, upto_layer: int | None = None,
                  max_length: int = 512, batch_tokens: int | None = None, max_batch: int = 64,
                  progress: Progress | None = None) -> np.ndarray:
    """Mean over tokens of each block's output for each snippet: (snippets, layers, hidden) float32,
    stopping after block `upto_layer`."""
    return layer_states(loaded, snippets, upto_layer=upto_layer, max_length=max_length,
                        batch_tokens=batch_tokens, max_batch=max_batch, progress=progress).pooled
