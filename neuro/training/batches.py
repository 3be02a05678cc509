"""Training batches: right-padded token ids with per-token target flags, and their loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from neuro.instrument.losses import model_token_losses
from neuro.instrument.tokens import length_batches


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
    """Mean cross-entropy over the batch's target tokens (each token weighs the same), in chunks of
    positions (no full logits tensor, neuro.instrument.losses)."""
    ce, _mask = model_token_losses(model, batch.ids, batch.mask)
    weights = batch.targets
    return (ce * weights).sum() / weights.sum().clamp(min=1)
