"""Each neuron's mean (signed) activation per language: what the "mean" intervention sets a neuron to.

The corpus statistics keep |a| (and PLS), not the signed activation, so this is one forward pass of its own
over the programs (no gradient), reduced inside the hooks to per-(language, layer, neuron) sums over the
programs' real tokens (neuro.instrument.tokens.real_token_mask)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from neuro.code.corpus import Snippet
from neuro.instrument.tokens import collate, encode, length_batches, real_token_mask
from neuro.model.hook_sites import Attachment, cut_positions
from neuro.model.loading import LoadedModel
from neuro.model.plan import batch_plan
from neuro.progress import Progress


@dataclass(frozen=True, eq=False)
class LanguageMeans:
    """means: (languages, layers, neurons) mean activation over each language's real tokens; tokens: how
    many tokens each mean is over."""

    languages: list[str]
    means: np.ndarray
    tokens: np.ndarray

    def of(self, language: str) -> np.ndarray:
        """(layers, neurons) means of one language, with a clear error for one not measured."""
        if language not in self.languages:
            raise ValueError(f"no mean activations for {language!r}: measured on {', '.join(self.languages)}")
        return self.means[self.languages.index(language)]


def language_means(loaded: LoadedModel, snippets: Sequence[Snippet], *, max_length: int = 512,
                   batch_tokens: int | None = None, max_batch: int = 32,
                   progress: Progress | None = None) -> LanguageMeans:
    """Mean activation of every neuron over each language's programs (token-weighted), one forward pass."""
    loaded.require_weights()
    langs = list(dict.fromkeys(s.lang for s in snippets))
    if not langs:
        raise ValueError("no programs to take mean activations over")
    sites = loaded.sites()
    sums = [torch.zeros((len(langs), loaded.n_neurons), dtype=torch.float64) for _ in sites]
    tokens: np.ndarray = np.zeros(len(langs), dtype=np.int64)
    encoded = [encode(loaded, s.code, max_length) for s in snippets]
    batch_tokens = batch_tokens or batch_plan(loaded, "forward", max_length).batch_tokens or max_length
    batches = length_batches([len(e.ids) for e in encoded], batch_tokens, max_batch)
    current: dict = {}

    def add(a, layer):
        a = a.to(torch.float64)
        weights = current["onehot"].to(a.device)  # (batch, seq, languages): real tokens of each language
        sums[layer] += torch.einsum("bsl,bsn->ln", weights, a).cpu()

    pairs: list[Attachment] = [(loaded.hook_sites.neuron_input(layer), lambda a, layer=layer: add(a, layer))
             for layer in range(len(sites))]
    pairs.append((loaded.hook_sites.head_input(), cut_positions))  # no logits: only the FFN inputs are read
    with loaded.hooks(pairs, inference=True):
        for done, batch in enumerate(batches, 1):
            ids, mask = collate([encoded[i] for i in batch], loaded.pad_id, loaded.device)
            real = real_token_mask(loaded, ids, mask).to(torch.float64)
            lang_of = torch.tensor([langs.index(snippets[i].lang) for i in batch])
            onehot = torch.nn.functional.one_hot(lang_of, len(langs)).to(torch.float64)
            current["onehot"] = real.cpu()[:, :, None] * onehot[:, None, :]
            tokens += current["onehot"].sum((0, 1)).numpy().astype(np.int64)
            loaded.model(input_ids=ids, attention_mask=mask, use_cache=False)
            if progress:
                progress(done, len(batches))
    totals = np.stack([s.numpy() for s in sums], axis=1)  # (languages, layers, neurons)
    means = (totals / np.maximum(tokens, 1)[:, None, None]).astype(np.float32)
    return LanguageMeans(langs, means, tokens)
