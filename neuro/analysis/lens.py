"""Logit lens (nostalgebraist, 2020): read each block's output through the model's own final norm and
unembedding, as if the model stopped there, and see which next token it already predicts.

For a code model this shows where a program's tokens become predictable: the layer at which the
model's final answer first appears, and how the loss on the actual next token falls with depth. The
last block read this way is exactly the model's output (tested). The per-layer logits (positions x
vocabulary, 0.5 GB per layer for 1,024 tokens of a 128k vocabulary) are reduced inside the block hook
to the top-k and the actual next token's rank and probability, so memory does not grow with depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from neuro.instrument.hooks import forward_until
from neuro.instrument.tokens import encode
from neuro.model.loading import LoadedModel


@dataclass(frozen=True)
class LogitLens:
    """What each block's output predicts at every position of one program.

    top_ids / top_probs: (layers, positions, k) the k most likely next tokens after each position;
    next_rank / next_prob: (layers, positions - 1) the 1-based rank and probability of the token that
    actually comes next; output_top: (positions,) the model's own top-1 (its last block).
    """

    code: str
    token_ids: list[int]
    offsets: list[tuple[int, int]]
    layers: list[int]
    top_ids: np.ndarray
    top_probs: np.ndarray
    top_texts: list[list[list[str]]]
    next_rank: np.ndarray
    next_prob: np.ndarray
    output_top: np.ndarray
    truncated_from: int = 0  # the program's length in tokens when only the first max_length were read

    @property
    def token_texts(self) -> list[str]:
        return [self.code[a:b] for a, b in self.offsets]

    def layer_summary(self) -> pd.DataFrame:
        """Per layer: mean loss on the actual next token (nats), its top-1 and top-5 accuracy, and the
        share of positions where the layer's top-1 already equals the model's output."""
        rows = []
        for i, layer in enumerate(self.layers):
            rows.append({"layer": layer,
                         "next-token loss": float(-np.log(np.maximum(self.next_prob[i], 1e-30)).mean()),
                         "top-1 accuracy": float((self.next_rank[i] == 1).mean()),
                         "top-5 accuracy": float((self.next_rank[i] <= 5).mean()),
                         "agrees with output": float((self.top_ids[i, :, 0] == self.output_top).mean())})
        return pd.DataFrame(rows)

    def first_agreeing_layer(self) -> np.ndarray:
        """Per position, the first layer from which every later layer's top-1 equals the output's
        (-1 where none of the read layers does)."""
        agree = self.top_ids[:, :, 0] == self.output_top[None, :]
        settled = np.flip(np.logical_and.accumulate(np.flip(agree, 0), 0), 0)
        first = np.where(settled.any(0), np.argmax(settled, 0), -1)
        return np.where(first >= 0, np.asarray(self.layers)[np.maximum(first, 0)], -1)

    def token_frame(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Long table for positions start..stop-1: position, token, layer, the layer's top-1 next token
        and its probability, the actual next token, its probability and rank (the last position has no
        next token: probability and rank are NaN)."""
        stop = len(self.token_ids) if stop is None else min(stop, len(self.token_ids))
        texts = self.token_texts
        rows = []
        for i, layer in enumerate(self.layers):
            for t in range(start, stop):
                has_next = t < len(self.token_ids) - 1
                rows.append({"position": t, "token": texts[t], "layer": layer, "top1": self.top_texts[i][t][0],
                             "top1_prob": float(self.top_probs[i, t, 0]),
                             "next": texts[t + 1] if has_next else "",
                             "next_prob": float(self.next_prob[i, t]) if has_next else float("nan"),
                             "next_rank": int(self.next_rank[i, t]) if has_next else None})
        return pd.DataFrame(rows)

    def summary(self, per_token: bool = False) -> dict:
        out = {"layers": self.layers, "tokens": len(self.token_ids), "truncated_from": self.truncated_from,
               "scores": self.layer_summary().round(4).to_dict(orient="records")}
        if per_token:
            out["per_token"] = [{"position": t, "token": self.token_texts[t],
                                 "top1_by_layer": {str(layer): self.top_texts[i][t][0]
                                                   for i, layer in enumerate(self.layers)}}
                                for t in range(len(self.token_ids))]
        return out


def _token_text(tokenizer, token_id: int) -> str:
    """A vocabulary entry as text (`<id 123>` for rows of a padded unembedding that have no token)."""
    token = tokenizer.convert_ids_to_tokens(token_id)
    return f"<id {token_id}>" if token is None else tokenizer.convert_tokens_to_string([token])


def _final_logits(loaded: LoadedModel):
    """hidden states -> logits the way the model computes them after its last block."""
    norm, head = loaded.final_norm, loaded.unembedding
    cap = getattr(loaded.config, "final_logit_softcapping", None)  # Gemma 2

    def logits(hidden: torch.Tensor) -> torch.Tensor:
        out = head(norm(hidden)).float()
        return torch.tanh(out / cap) * cap if cap else out
    return logits


def logit_lens(loaded: LoadedModel, code: str, layers: Sequence[int] | None = None, *, top_k: int = 5,
               max_length: int = 512) -> LogitLens:
    """One forward pass over `code`; every block in `layers` (default: all) read through the final norm
    and unembedding, reduced to top-k and the actual next token's rank and probability."""
    if not code.strip():
        raise ValueError("no code to read")
    loaded.require_weights()
    sites = loaded.sites()
    last = len(sites) - 1
    layers = sorted(set(range(len(sites)) if layers is None else layers))
    if any(not 0 <= layer <= last for layer in layers):
        raise ValueError(f"layers must lie in 0..{last}")
    enc = encode(loaded, code, max_length)
    whole = len(encode(loaded, code, 1 << 30).ids)
    if len(enc.ids) < 2:
        raise ValueError("the code is a single token: there is no next token to predict")
    ids = torch.tensor([enc.ids], device=loaded.device)
    targets = ids[0, 1:]
    to_logits = _final_logits(loaded)
    read: dict[int, tuple] = {}

    def read_block(hidden, layer):
        probs = torch.softmax(to_logits(hidden[0]), -1)
        top = probs.topk(top_k, -1)
        picked = probs[:-1].gather(1, targets[:, None].to(probs.device))
        rank = 1 + (probs[:-1] > picked).sum(-1)
        read[layer] = (top.indices.cpu().numpy(), top.values.cpu().numpy(), rank.cpu().numpy(),
                       picked[:, 0].cpu().numpy())

    pairs = [(loaded.hook_sites.block_output(layer), lambda hidden, layer=layer: read_block(hidden, layer))
             for layer in sorted({*layers, last})]
    with loaded.hooks(pairs, inference=True):
        forward_until(loaded, ids, torch.ones_like(ids), last_layer=last)
    top_ids = np.stack([read[layer][0] for layer in layers])
    vocab = {int(i): _token_text(loaded.tokenizer, int(i)) for i in np.unique(top_ids)}
    top_texts = [[[vocab[int(i)] for i in position] for position in layer] for layer in top_ids]
    return LogitLens(code, enc.ids, enc.offsets, layers, top_ids,
                     np.stack([read[layer][1] for layer in layers]).astype(np.float32), top_texts,
                     np.stack([read[layer][2] for layer in layers]).astype(np.int64),
                     np.stack([read[layer][3] for layer in layers]).astype(np.float32), read[last][0][:, 0],
                     whole if whole > len(enc.ids) else 0)
