"""Next-token cross-entropy per token and per program, padding excluded, without a full logits copy.

The model's forward is run with its unembedding reading zero positions (its head-input site), so no
(batch x sequence x vocabulary) logits tensor is ever made; the final hidden states it would have read
are projected in chunks of positions, each chunk's fp32 logits freed before the next (and, where a
gradient is needed, recomputed chunk by chunk in the backward by activation checkpointing). The result
equals cross-entropy over the model's own logits (tested)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from neuro.model.hook_sites import cut_positions, head_input, hooks_held
from neuro.model.loading import LoadedModel
from neuro.model.plan import ce_chunk_tokens


def token_losses(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy at every target position (0 at padding) and the target mask, (batch, seq-1),
    from full logits (small models, generation); `model_token_losses` avoids them."""
    target_mask = mask[:, 1:].to(torch.float32)
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
    return ce.view(ids.shape[0], -1) * target_mask, target_mask


def sample_losses(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sample (padding excluded), shape (batch,)."""
    ce, target_mask = token_losses(logits, ids, mask)
    return ce.sum(1) / target_mask.sum(1).clamp(min=1)


@contextmanager
def final_hidden(loaded: LoadedModel | torch.nn.Module) -> Iterator[dict]:
    """Inside, the unembedding head reads no position (the model's logits are empty) and the hidden states
    it was given (its head-input site, neuro.model.hook_sites) are kept in the yielded dict under "hidden".

    A LoadedModel's hook goes through `loaded.hooks` (its lock held inside, re-entrant for callers that
    already hold it); a plain module (a peft-wrapped model in training) belongs to its caller alone, so no
    lock is taken. Gradients are left as they are (the statistics backward flows through the kept states)."""
    kept: dict = {}

    def keep_and_cut(hidden: torch.Tensor) -> torch.Tensor:
        kept["hidden"] = hidden
        return cut_positions(hidden)

    if isinstance(loaded, LoadedModel):
        held = loaded.hooks([(loaded.hook_sites.head_input(), keep_and_cut)])
    else:
        held = hooks_held(nullcontext(), [(head_input(loaded), keep_and_cut)])
    with held:
        yield kept


def _chunk_ce(head, cap: float | None, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, targets, reduction="none")


def chunked_ce(model: torch.nn.Module, hidden: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
               chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_losses` from the final hidden states (batch, seq, hidden) of `model` (a causal LM): logits made
    `chunk` positions at a time; with gradients each chunk is checkpointed (only the hidden states are kept
    for the backward)."""
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)  # Gemma 2
    chunk = chunk or ce_chunk_tokens(int(model.config.vocab_size))
    flat = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    targets = ids[:, 1:].reshape(-1).to(flat.device)
    pieces = []
    for start in range(0, flat.shape[0], chunk):
        h, y = flat[start:start + chunk], targets[start:start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(_chunk_ce, head, cap, h, y, use_reentrant=False))
        else:
            pieces.append(_chunk_ce(head, cap, h, y))
    target_mask = mask[:, 1:].to(torch.float32).to(flat.device)
    ce = torch.cat(pieces).view(ids.shape[0], -1) * target_mask
    return ce, target_mask


def model_token_losses(loaded: LoadedModel | torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                       inputs_embeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward of the model (a LoadedModel, or a causal LM such as a peft-wrapped one in training) and
    the next-token cross-entropy of every target position, (batch, seq-1), with the target mask; never a
    full logits tensor (see the module docstring)."""
    model = loaded.model if isinstance(loaded, LoadedModel) else loaded
    with final_hidden(loaded) as kept:
        if inputs_embeds is None:
            model(input_ids=ids, attention_mask=mask, use_cache=False)
        else:
            model(inputs_embeds=inputs_embeds, attention_mask=mask, use_cache=False)
    return chunked_ce(model, kept.pop("hidden"), ids, mask)


def model_sample_losses(loaded: LoadedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each program of a batch, (batch,), without full logits."""
    ce, target_mask = model_token_losses(loaded, ids, mask)
    return ce.sum(1) / target_mask.sum(1).clamp(min=1)
