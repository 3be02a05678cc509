"""Tokenizing programs with character offsets, and batching them by length to bound padding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from neuro.model.loading import LoadedModel


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    offsets: list[tuple[int, int]]


def encode(loaded: LoadedModel, code: str, max_length: int) -> Encoded:
    """Token ids and character offsets of one program (a BOS token first when the tokenizer has one)."""
    tok = loaded.tokenizer
    enc = tok(code, add_special_tokens=False, return_offsets_mapping=True, truncation=True,
              max_length=max_length - 1 if tok.bos_token_id is not None else max_length)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    if tok.bos_token_id is not None:
        ids, offsets = [tok.bos_token_id] + ids, [(0, 0)] + offsets
    return Encoded(ids, offsets)


def length_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int = 64) -> list[list[int]]:
    """Indices grouped into batches of similar length: padded size (batch x longest) <= batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current = [], []
    for i in order:
        longest = max(lengths[i], max((lengths[j] for j in current), default=0))
        if current and ((len(current) + 1) * longest > batch_tokens or len(current) >= max_batch):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def collate(encoded: Sequence[Encoded], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask."""
    longest = max(len(e.ids) for e in encoded)
    ids = torch.full((len(encoded), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), longest), dtype=torch.long)
    for row, e in enumerate(encoded):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        mask[row, : len(e.ids)] = 1
    return ids.to(device), mask.to(device)


def real_token_mask(loaded: LoadedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 for a program's own tokens: padding and special tokens (BOS, ...) excluded.

    Statistics that describe what a neuron does on code (PLS's token mean, LAPE counts, syntax profiles,
    top-k examples, pooled states) read only these; a real model's huge BOS activations would dominate
    them otherwise."""
    special = list(getattr(loaded.tokenizer, "all_special_ids", None) or [])
    real = mask.clone()
    if special:
        real[torch.isin(ids, torch.tensor(special, device=ids.device))] = 0
    return real
