"""Hook-based capture of FFN neuron activity: corpus statistics, token traces, pooled hidden states.

Every capture installs its hooks inside a context manager that removes them in `finally`, and holds
the model's lock for its whole duration, so browser sessions sharing one loaded model never see each
other's hooks. Corpus statistics are reduced inside the hooks to per-(layer, neuron) accumulators:
memory is O(layers x neurons) whatever the corpus size.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .corpus import Snippet
from .models import LoadedModel, NeuronSite

Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- tokenization and batching

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


def _pad_id(loaded: LoadedModel) -> int:
    tok = loaded.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def sample_losses(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sample (padding excluded), shape (batch,)."""
    target_mask = mask[:, 1:].to(torch.float32)
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
    ce = ce.view(ids.shape[0], -1) * target_mask
    return ce.sum(1) / target_mask.sum(1).clamp(min=1)


# --------------------------------------------------------------------------- hooks

@contextmanager
def hooked(register: Callable[[list], None]) -> Iterator[None]:
    """Run `register(handles)` and guarantee every handle it appended is removed afterwards."""
    handles: list = []
    try:
        register(handles)
        yield
    finally:
        for handle in handles:
            handle.remove()


def _check_width(site: NeuronSite, tensor: torch.Tensor, expected: int) -> None:
    if tensor.shape[-1] != expected:
        raise RuntimeError(f"layer {site.layer}: captured width {tensor.shape[-1]} != intermediate size "
                           f"{expected}; the adapter names the wrong module")


# --------------------------------------------------------------------------- corpus statistics

@dataclass
class CorpusStats:
    """Per-language, per-(layer, neuron) accumulators over a corpus.

    act_abs_sum: sum over tokens of |a|;  pls_sum: sum over samples of mean over the sample's tokens
    of |a * dLoss/da| (Loss = the sample's mean next-token cross-entropy); active_count: tokens with
    act_fn(gate) > 0 (LAPE); tokens / samples / loss_sum per language.
    """

    languages: list[str]
    act_abs_sum: np.ndarray   # (languages, layers, neurons) float64
    active_count: np.ndarray  # (languages, layers, neurons) float64
    pls_sum: np.ndarray | None  # (languages, layers, neurons) float64, None without gradients
    tokens: np.ndarray        # (languages,)
    samples: np.ndarray       # (languages,)
    loss_sum: np.ndarray      # (languages,)
    meta: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return self.act_abs_sum.shape[1]

    @property
    def n_neurons(self) -> int:
        return self.act_abs_sum.shape[2]

    def mean_abs_activation(self) -> np.ndarray:
        return self.act_abs_sum / np.maximum(self.tokens, 1)[:, None, None]

    def activation_probability(self) -> np.ndarray:
        return self.active_count / np.maximum(self.tokens, 1)[:, None, None]

    def pls(self) -> np.ndarray:
        if self.pls_sum is None:
            raise ValueError("these statistics were captured without gradients: no PLS")
        return self.pls_sum / np.maximum(self.samples, 1)[:, None, None]

    def mean_loss(self) -> dict[str, float]:
        return {lang: float(self.loss_sum[i] / max(self.samples[i], 1)) for i, lang in enumerate(self.languages)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"act_abs_sum": self.act_abs_sum, "active_count": self.active_count, "tokens": self.tokens,
                  "samples": self.samples, "loss_sum": self.loss_sum}
        if self.pls_sum is not None:
            arrays["pls_sum"] = self.pls_sum
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> CorpusStats:
        return cls(languages=list(meta["languages"]), act_abs_sum=arrays["act_abs_sum"],
                   active_count=arrays["active_count"], pls_sum=arrays.get("pls_sum"),
                   tokens=arrays["tokens"], samples=arrays["samples"], loss_sum=arrays["loss_sum"], meta=meta)

    def merge(self, other: CorpusStats) -> CorpusStats:
        """Sum of two shards' statistics (same model and languages), e.g. from data-parallel ranks."""
        assert self.languages == other.languages
        pls = None if self.pls_sum is None else self.pls_sum + other.pls_sum
        return CorpusStats(self.languages, self.act_abs_sum + other.act_abs_sum,
                           self.active_count + other.active_count, pls, self.tokens + other.tokens,
                           self.samples + other.samples, self.loss_sum + other.loss_sum, dict(self.meta))


class StatisticsHooks:
    """Accumulators for one language at a time; the per-batch token weights are set before each pass."""

    def __init__(self, loaded: LoadedModel, gradients: bool):
        self.sites = loaded.sites()
        self.width = loaded.n_neurons
        self.gradients = gradients
        dev = loaded.device
        shape = (len(self.sites), self.width)
        self.act_abs = torch.zeros(shape, dtype=torch.float32, device=dev)
        self.active = torch.zeros(shape, dtype=torch.float32, device=dev)
        self.pls = torch.zeros(shape, dtype=torch.float32, device=dev)
        self.token_mask: torch.Tensor | None = None    # (1, batch*seq): 1 for real tokens
        self.sample_weight: torch.Tensor | None = None  # (1, batch*seq): 1/len(sample) for real tokens

    def set_batch(self, mask: torch.Tensor) -> None:
        flat = mask.reshape(1, -1)
        self.token_mask = flat
        self.sample_weight = (mask / mask.sum(1, keepdim=True).clamp(min=1)).reshape(1, -1)

    def reset(self) -> None:
        for acc in (self.act_abs, self.active, self.pls):
            acc.zero_()

    def _reduce(self, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """weights (1, N) @ values (N, width) -> (width,) in float32 (GPU GEMMs accumulate in fp32)."""
        return torch.mm(weights.to(values.dtype), values.reshape(-1, self.width)).float()[0]

    def register(self, handles: list) -> None:
        for site in self.sites:
            handles.append(site.down.register_forward_pre_hook(self._down_hook(site)))
            handles.append(site.act.register_forward_hook(self._act_hook(site)))
            if self.gradients and site.up is not None:
                handles.append(site.up.register_forward_hook(self._up_hook(site)))

    def _down_hook(self, site: NeuronSite):
        hold_activation = self.gradients and site.up is None

        def hook(module, args):
            a = args[0]
            _check_width(site, a, self.width)
            self.act_abs[site.layer] += self._reduce(self.token_mask, a.detach().abs())
            if hold_activation and a.requires_grad:
                # Non-gated FFN: |a * dL/da| needs `a` itself when its gradient arrives.
                weight = self.sample_weight
                a.register_hook(lambda g: self._add_pls(site.layer, weight, a.detach() * g))
        return hook

    def _act_hook(self, site: NeuronSite):
        def hook(module, args, out):
            _check_width(site, out, self.width)
            self.active[site.layer] += self._reduce(self.token_mask, (out.detach() > 0).to(out.dtype))
        return hook

    def _up_hook(self, site: NeuronSite):
        def hook(module, args, up):
            # Gated FFN: a = act(gate) * up, so a * dL/da = up * dL/dup. Autograd keeps `up` for the
            # product's backward anyway, so holding it here until its gradient arrives costs nothing.
            if up.requires_grad:
                weight = self.sample_weight
                up.register_hook(lambda g: self._add_pls(site.layer, weight, up.detach() * g))
        return hook

    def _add_pls(self, layer: int, weight: torch.Tensor, product: torch.Tensor) -> None:
        self.pls[layer] += self._reduce(weight, product.abs_())


def capture_statistics(loaded: LoadedModel, snippets: Sequence[Snippet], *, gradients: bool = True,
                       max_length: int = 512, batch_tokens: int = 4096, max_batch: int = 32,
                       languages: Sequence[str] | None = None, progress: Progress | None = None) -> CorpusStats:
    """Per-language neuron statistics of a corpus: one forward (and one backward) pass per batch.

    Gradients are activation-only: parameters stay frozen and the backward starts from input
    embeddings that require grad, so no parameter gradient is ever computed or stored.
    """
    if not snippets:
        raise ValueError("no snippets to capture")
    langs = list(languages or dict.fromkeys(s.lang for s in snippets))
    n_layers, width = loaded.n_layers, loaded.n_neurons
    out = {name: np.zeros((len(langs), n_layers, width)) for name in ("act_abs", "active", "pls")}
    tokens, samples, loss_sum = (np.zeros(len(langs)) for _ in range(3))
    pad_id, device, model = _pad_id(loaded), loaded.device, loaded.model
    embed = model.get_input_embeddings()
    done, total = 0, len(snippets)

    with loaded.lock:
        hooks = StatisticsHooks(loaded, gradients)
        with hooked(hooks.register):
            for li, lang in enumerate(langs):
                group = [s for s in snippets if s.lang == lang]
                encoded = [encode(loaded, s.code, max_length) for s in group]
                hooks.reset()
                for batch in length_batches([len(e.ids) for e in encoded], batch_tokens, max_batch):
                    ids, mask = collate([encoded[i] for i in batch], pad_id, device)
                    hooks.set_batch(mask)
                    if gradients:
                        inputs = embed(ids).detach().requires_grad_(True)
                        logits = model(inputs_embeds=inputs, attention_mask=mask, use_cache=False).logits
                        losses = sample_losses(logits, ids, mask)
                        losses.sum().backward()
                        losses = losses.detach()
                    else:
                        with torch.inference_mode():
                            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                            losses = sample_losses(logits, ids, mask)
                    del logits
                    tokens[li] += float(mask.sum())
                    samples[li] += len(batch)
                    loss_sum[li] += float(losses.sum())
                    done += len(batch)
                    if progress:
                        progress(done, total)
                out["act_abs"][li] = hooks.act_abs.double().cpu().numpy()
                out["active"][li] = hooks.active.double().cpu().numpy()
                out["pls"][li] = hooks.pls.double().cpu().numpy()

    meta = {"languages": langs, "gradients": gradients, "max_length": max_length,
            "token_reduction": "mean over the sample's tokens", "model": loaded.identity}
    return CorpusStats(langs, out["act_abs"], out["active"], out["pls"] if gradients else None,
                       tokens, samples, loss_sum, meta)


# --------------------------------------------------------------------------- token traces

@dataclass(frozen=True)
class TokenTrace:
    """Activations of every neuron of the chosen layers at every token of one program."""

    code: str
    token_ids: list[int]
    offsets: list[tuple[int, int]]
    layers: list[int]
    activations: np.ndarray  # (len(layers), tokens, neurons) float32

    @property
    def token_texts(self) -> list[str]:
        return [self.code[a:b] for a, b in self.offsets]


def trace_tokens(loaded: LoadedModel, code: str, layers: Sequence[int] | None = None,
                 max_length: int = 1024) -> TokenTrace:
    """One forward pass over `code`, keeping the neuron activations of `layers` (default: all)."""
    if not code.strip():
        raise ValueError("no code to trace")
    sites = loaded.sites()
    layers = sorted(set(range(len(sites)) if layers is None else layers))
    if any(not 0 <= layer < len(sites) for layer in layers):
        raise ValueError(f"layers must lie in 0..{len(sites) - 1}")
    enc = encode(loaded, code, max_length)
    kept: dict[int, torch.Tensor] = {}

    def register(handles):
        for layer in layers:
            site = sites[layer]

            def hook(module, args, site=site):
                _check_width(site, args[0], loaded.n_neurons)
                kept[site.layer] = args[0][0].float().cpu()
            handles.append(site.down.register_forward_pre_hook(hook))

    ids = torch.tensor([enc.ids], device=loaded.device)
    with loaded.lock, hooked(register), torch.inference_mode():
        _forward_until(loaded, ids, torch.ones_like(ids), last_layer=layers[-1])
    acts = np.stack([kept[layer].numpy() for layer in layers])
    return TokenTrace(code, enc.ids, enc.offsets, layers, acts)


# --------------------------------------------------------------------------- pooled hidden states

class _StopForward(Exception):
    """Raised by a block hook to end a forward pass early (nothing above that block is needed)."""


def _forward_until(loaded: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, last_layer: int | None) -> None:
    sites = loaded.sites()
    stop_at = len(sites) - 1 if last_layer is None else last_layer

    def stop(module, args, output):
        raise _StopForward

    handle = sites[stop_at].block.register_forward_hook(stop) if stop_at < len(sites) - 1 else None
    try:
        loaded.model(input_ids=ids, attention_mask=mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        if handle is not None:
            handle.remove()


def pooled_states(loaded: LoadedModel, snippets: Sequence[Snippet], *, upto_layer: int | None = None,
                  max_length: int = 512, batch_tokens: int = 8192, max_batch: int = 64,
                  progress: Progress | None = None) -> np.ndarray:
    """Mean over tokens of each block's output for each snippet: (snippets, layers, hidden) float32.

    The forward pass stops after block `upto_layer` (default: the last), so embeddings from a middle
    layer cost only the layers below it.
    """
    sites = loaded.sites()
    last = len(sites) - 1 if upto_layer is None else upto_layer
    if not 0 <= last < len(sites):
        raise ValueError(f"upto_layer must lie in 0..{len(sites) - 1}")
    encoded = [encode(loaded, s.code, max_length) for s in snippets]
    hidden = loaded.model.get_input_embeddings().weight.shape[1]
    result = np.zeros((len(snippets), last + 1, hidden), dtype=np.float32)
    current: dict = {}

    def register(handles):
        for site in sites[: last + 1]:
            def hook(module, args, output, layer=site.layer):
                states = output[0] if isinstance(output, tuple) else output
                mask = current["mask"]
                pooled = (states.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
                result[current["rows"], layer] = pooled.cpu().numpy()
            handles.append(site.block.register_forward_hook(hook))

    done = 0
    with loaded.lock, hooked(register), torch.inference_mode():
        for batch in length_batches([len(e.ids) for e in encoded], batch_tokens, max_batch):
            ids, mask = collate([encoded[i] for i in batch], _pad_id(loaded), loaded.device)
            current.update(rows=batch, mask=mask.float())
            _forward_until(loaded, ids, mask, last_layer=last)
            done += len(batch)
            if progress:
                progress(done, len(snippets))
    return result
