"""Tokenizing programs with character offsets, and batching them by length to bound padding.

Which positions describe a program: the first position never does. With a BOS it holds the BOS; a
tokenizer that adds none (Qwen2.5, StarCoder2) puts the first code token there, and large models park
their attention-sink activations on whatever token sits first, so it is left out exactly as a BOS would
be (`real_token_mask`). It stays an input, and the loss targets are unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from neuro.model.loading import LoadedModel


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    offsets: list[tuple[int, int]]
    truncated: bool = False  # the program had more tokens than max_length allows: only the first were kept


def encode(loaded: LoadedModel, code: str, max_length: int) -> Encoded:
    """Token ids and character offsets of one program (a BOS token first when the tokenizer has one),
    cut to `max_length` tokens in all; `truncated` says whether anything was cut."""
    tok = loaded.tokenizer
    bos = tok.bos_token_id
    limit = max(0, max_length - 1 if bos is not None else max_length)
    # one token more than the limit: whether there was more, without tokenizing the program twice
    enc = tok(code, add_special_tokens=False, return_offsets_mapping=True, truncation=True, max_length=limit + 1)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    truncated = len(ids) > limit
    if truncated:
        keep = slice(len(ids) - limit, None) if getattr(tok, "truncation_side", "right") == "left" else slice(0, limit)
        ids, offsets = ids[keep], offsets[keep]
    if bos is not None:
        ids, offsets = [bos] + ids, [(0, 0)] + offsets
    return Encoded(ids, offsets, truncated)


@dataclass(frozen=True)
class Truncation:
    """How many of a corpus's programs are longer than `max_length` tokens (only their first are read);
    `programs` is None where the model has no tokenizer (a browse-only card without one)."""

    programs: int | None
    of: int
    max_length: int

    def summary(self) -> dict:
        return {"count": self.programs, "of": self.of, "max_length": self.max_length}

    def caption(self) -> str | None:
        """A line for a page, or None when nothing was cut (or nothing can be counted)."""
        if not self.programs:
            return None
        return (f"{self.programs:,} of {self.of:,} programs are longer than {self.max_length:,} tokens: "
                f"only their first {self.max_length:,} tokens are analysed.")


def truncation(loaded: LoadedModel, snippets: Sequence, max_length: int) -> Truncation:
    """Count the programs (anything with a `.code`) that `encode` cuts at `max_length` tokens; a
    tokenization pass only (about 0.1 s for the 330 demo programs), no model run."""
    if loaded.tokenizer is None:
        return Truncation(None, len(snippets), int(max_length))
    cut = sum(encode(loaded, s.code, max_length).truncated for s in snippets)
    return Truncation(int(cut), len(snippets), int(max_length))


def length_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int = 64) -> list[list[int]]:
    """Indices grouped into batches of similar length: padded size (batch x longest) <= batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
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
    """1 for a program's own tokens: padding, special tokens and each program's first position excluded.

    Statistics that describe what a neuron does on code (PLS's token mean, LAPE counts, syntax profiles,
    top-k examples, pooled states) read only these; a real model's huge activations at the first position
    (the BOS, or without one the first code token: the attention sink) would dominate them otherwise. With
    a BOS the first position is the BOS, so this is the BOS rule; without one it leaves out the first code
    token the same way (see the module's docstring). Attribution is not restricted by this mask: it covers
    every position ablation zeroes."""
    special = list(getattr(loaded.tokenizer, "all_special_ids", None) or [])
    real = mask.clone()
    if special:
        real[torch.isin(ids, torch.tensor(special, device=ids.device))] = 0
    real.scatter_(1, mask.argmax(1, keepdim=True), 0)  # each row's first attended position (right padding: 0)
    return real
