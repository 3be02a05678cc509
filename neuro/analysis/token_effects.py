"""What an intervention does on one input, token by token: next-token loss and top-1 prediction before and
after (two forward passes, no full logits copy), the tokens whose prediction changed, and the summed change."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from neuro.instrument.intervention import Intervention, intervened, patched_positions
from neuro.instrument.losses import final_hidden
from neuro.instrument.tokens import encode
from neuro.model.loading import LoadedModel
from neuro.model.plan import ce_chunk_tokens

MAX_TOKENS = 1024


@dataclass(frozen=True, eq=False)
class TokenEffects:
    """Per token of `code` (from the second on: the first is never predicted), its next-token loss and the
    model's top-1 guess for it, before and after the interventions.

    offsets: character range of every token (the first included); loss_* / top1_*: arrays over tokens 1..n-1.
    patched: for each "patch" intervention, (positions patched, positions of the input)."""

    code: str
    token_ids: list[int]
    offsets: list[tuple[int, int]]
    loss_before: np.ndarray
    loss_after: np.ndarray
    top1_before: list[str]
    top1_after: list[str]
    labels: list[str]
    patched: list[tuple[int, int]]
    truncated: bool = False

    @property
    def delta(self) -> np.ndarray:
        return self.loss_after - self.loss_before

    @property
    def summed_change(self) -> float:
        """Sum over tokens of the loss change (nats): the change of the input's summed next-token loss."""
        return float(self.delta.sum())

    @property
    def mean_change(self) -> float:
        return float(self.delta.mean()) if len(self.delta) else 0.0

    @property
    def changed(self) -> list[int]:
        """Token positions (1..n-1) whose top-1 prediction changed."""
        return [i + 1 for i, (a, b) in enumerate(zip(self.top1_before, self.top1_after)) if a != b]

    @property
    def token_texts(self) -> list[str]:
        return [self.code[a:b] for a, b in self.offsets]

    def table(self) -> pd.DataFrame:
        """One row per predicted token: position, token, loss before / after / change, top-1 before / after."""
        return pd.DataFrame({"position": np.arange(1, len(self.token_ids)), "token": self.token_texts[1:],
                             "loss before": self.loss_before, "loss after": self.loss_after, "change": self.delta,
                             "top-1 before": self.top1_before, "top-1 after": self.top1_after,
                             "top-1 changed": [a != b for a, b in zip(self.top1_before, self.top1_after)]})

    def summary(self) -> dict:
        return {"interventions": self.labels, "tokens": len(self.token_ids), "truncated": self.truncated,
                "summed_loss_before": float(self.loss_before.sum()), "summed_loss_after": float(self.loss_after.sum()),
                "summed_change": self.summed_change, "mean_change": self.mean_change,
                "top1_changed": len(self.changed), "changed_positions": self.changed,
                "patched": [{"positions": p, "of": n} for p, n in self.patched],
                "tokens_table": self.table().to_dict(orient="records")}

    def text(self, rows: int = 20) -> str:
        table = self.table()
        biggest = table.reindex(table["change"].abs().sort_values(ascending=False).index).head(rows)
        lines = [", ".join(self.labels) or "no intervention",
                 f"{len(self.token_ids)} tokens; summed next-token loss {self.loss_before.sum():.3f} -> "
                 f"{self.loss_after.sum():.3f} (change {self.summed_change:+.3f} nats, mean {self.mean_change:+.4f}); "
                 f"top-1 prediction changed at {len(self.changed)} of {len(table)} tokens"]
        lines += [f"patched the first {p} of {n} positions (the shorter input's length)" for p, n in self.patched
                  if p < n]
        lines.append(f"largest changes:\n{biggest.round(4).to_string(index=False)}")
        return "\n".join(lines)


def _losses_and_top1(loaded: LoadedModel, ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """One forward: each target's cross-entropy and the top-1 guess for it, projecting the final hidden states
    a chunk of positions at a time (no (positions x vocabulary) logits kept)."""
    model = loaded.model
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    with final_hidden(loaded) as kept:
        model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    hidden = kept.pop("hidden")[0, :-1]
    targets = ids[0, 1:].to(hidden.device)
    chunk = ce_chunk_tokens(int(model.config.vocab_size))
    ce, top = [], []
    for start in range(0, hidden.shape[0], chunk):
        logits = head(hidden[start:start + chunk]).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        ce.append(F.cross_entropy(logits, targets[start:start + chunk], reduction="none"))
        top.append(logits.argmax(-1))
    return torch.cat(ce).cpu().numpy().astype(np.float64), torch.cat(top).cpu().numpy()


def intervene_tokens(loaded: LoadedModel, code: str, interventions: Sequence[Intervention],
                     max_length: int = MAX_TOKENS) -> TokenEffects:
    """Next-token loss and top-1 prediction per token of `code` before and after `interventions` (two
    forward passes of one input)."""
    if not code.strip():
        raise ValueError("no code to intervene on")
    loaded.require_weights()
    enc = encode(loaded, code, max_length)
    if len(enc.ids) < 2:
        raise ValueError("the code is a single token: nothing is predicted")
    ids = torch.tensor([enc.ids], device=loaded.device)
    with loaded.lock, torch.inference_mode():
        before, top_before = _losses_and_top1(loaded, ids)
        with intervened(loaded, *interventions, max_length=max_length):
            after, top_after = _losses_and_top1(loaded, ids)
    tok = loaded.tokenizer
    patched = [patched_positions(loaded, code, iv.source, max_length) for iv in interventions
               if iv.op == "patch" and iv.neurons and iv.source is not None]
    return TokenEffects(code, enc.ids, enc.offsets, before, after,
                        [tok.decode([int(t)]) for t in top_before], [tok.decode([int(t)]) for t in top_after],
                        [iv.label() for iv in interventions], patched, enc.truncated)
