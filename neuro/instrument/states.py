"""Hidden states of the blocks, pooled per program and at sampled tokens, from one forward pass that
stops at the highest block asked for."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from neuro.code.corpus import Snippet
from neuro.instrument.hooks import forward_until, hooked
from neuro.instrument.tokens import collate, encode, length_batches, real_token_mask
from neuro.model.loading import LoadedModel
from neuro.progress import Progress


@dataclass(frozen=True)
class LayerStates:
    """Hidden states per block from one pass: pooled per snippet, and at a sample of token positions.

    pooled: (snippets, layers, hidden) mean over each snippet's tokens; tokens: (sampled tokens, layers,
    hidden); token_index: (sampled tokens, 2) = (snippet index, token position).
    """

    pooled: np.ndarray
    tokens: np.ndarray | None = None
    token_index: np.ndarray | None = None


def sample_positions(length: int, count: int, seed: int, code: str) -> np.ndarray:
    """`count` sorted token positions of 1..length-1 drawn with a stream seeded by `seed` and the program's
    text: the same program gets the same positions wherever it sits in the corpus. Position 0 is never
    drawn: it holds the BOS, or without one the first code token, which `real_token_mask` leaves out too."""
    if not count or length <= 1:
        return np.zeros(0, int)
    rng = np.random.default_rng([seed, zlib.crc32(code.encode("utf-8"))])
    return np.sort(rng.choice(np.arange(1, length), size=min(count, length - 1), replace=False))


def layer_states(loaded: LoadedModel, snippets: Sequence[Snippet], *, upto_layer: int | None = None,
                 tokens_per_snippet: int = 0, seed: int = 0, max_length: int = 512, batch_tokens: int = 8192,
                 max_batch: int = 64, progress: Progress | None = None) -> LayerStates:
    """Pooled (the mean over real tokens: the first position, BOS or not, and padding excluded, see
    `real_token_mask`) and optionally sampled token states
    of blocks 0..upto_layer, in one forward pass that stops after block `upto_layer` (default: the
    last), so a middle layer costs only the layers below.

    Token positions are sampled uniformly per snippet (the first position excluded), from a
    random stream of the snippet's own (`sample_positions`), so a chunk of the corpus samples what the
    whole corpus would.
    """
    loaded.require_weights()
    sites = loaded.sites()
    last = len(sites) - 1 if upto_layer is None else upto_layer
    if not 0 <= last < len(sites):
        raise ValueError(f"upto_layer must lie in 0..{len(sites) - 1}")
    encoded = [encode(loaded, s.code, max_length) for s in snippets]
    hidden = loaded.embeddings.weight.shape[1]
    pooled = np.zeros((len(snippets), last + 1, hidden), dtype=np.float32)
    picks = [sample_positions(len(e.ids), tokens_per_snippet, seed, s.code) for e, s in zip(encoded, snippets)]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in picks])])
    tokens = np.zeros((offsets[-1], last + 1, hidden), dtype=np.float32) if tokens_per_snippet else None
    current: dict = {}

    def register(handles):
        for site in sites[: last + 1]:
            def hook(module, args, output, layer=site.layer):
                states = output[0] if isinstance(output, tuple) else output
                mask = current["mask"]
                mean = (states.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
                pooled[current["rows"], layer] = mean.cpu().numpy()
                if tokens is not None:
                    for r, i in enumerate(current["rows"]):
                        if len(picks[i]):
                            chosen = states[r, torch.as_tensor(picks[i], device=states.device)]
                            tokens[offsets[i]:offsets[i + 1], layer] = chosen.float().cpu().numpy()
            handles.append(site.block.register_forward_hook(hook))

    done = 0
    with loaded.lock, hooked(register), torch.inference_mode():
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
                  max_length: int = 512, batch_tokens: int = 8192, max_batch: int = 64,
                  progress: Progress | None = None) -> np.ndarray:
    """Mean over tokens of each block's output for each snippet: (snippets, layers, hidden) float32,
    stopping after block `upto_layer`."""
    return layer_states(loaded, snippets, upto_layer=upto_layer, max_length=max_length,
                        batch_tokens=batch_tokens, max_batch=max_batch, progress=progress).pooled
