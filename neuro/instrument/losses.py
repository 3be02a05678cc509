"""Next-token cross-entropy per token and per program, padding excluded."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_losses(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy at every target position (0 at padding) and the target mask, (batch, seq-1)."""
    target_mask = mask[:, 1:].to(torch.float32)
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
    return ce.view(ids.shape[0], -1) * target_mask, target_mask


def sample_losses(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sample (padding excluded), shape (batch,)."""
    ce, target_mask = token_losses(logits, ids, mask)
    return ce.sum(1) / target_mask.sum(1).clamp(min=1)
