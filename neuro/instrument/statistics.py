"""Hook-based capture of FFN neuron activity: corpus statistics, token traces, pooled hidden states.

Every capture installs its hooks inside a context manager that removes them in `finally`, and holds
the model's lock for its whole duration, so browser sessions sharing one loaded model never see each
other's hooks. Corpus statistics are reduced inside the hooks to per-(layer, neuron) accumulators:
memory is O(layers x neurons) whatever the corpus size.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from neuro.code.corpus import Snippet
from neuro.instrument.hooks import checkpointed_blocks, forward_until
from neuro.instrument.tokens import Encoded, Truncation, collate, encode, length_batches, real_token_mask
from neuro.model.adapters import NeuronSite
from neuro.model.hook_sites import Attachment
from neuro.model.loading import LoadedModel
from neuro.progress import Progress

log = logging.getLogger(__name__)


def _check_width(site: NeuronSite, tensor: torch.Tensor, expected: int) -> None:
    if tensor.shape[-1] != expected:
        raise RuntimeError(f"layer {site.layer}: captured width {tensor.shape[-1]} != intermediate size "
                           f"{expected}; the adapter names the wrong module")


POSITION_BITS = 20  # a top-k token id is snippet_index << POSITION_BITS | token_position

UNIT_BUDGET = 1 << 26  # values per per-unit array (units x layers x neurons) kept for the permutation null

STATS_VERSION = 3  # 3: summed-loss gradients, BOS excluded, attribution with both signs, per-unit scores


@dataclass
class CorpusStats:
    """Per-language, per-(layer, neuron) accumulators over a corpus.

    Gradients g_t = dL/da_t come from one backward pass of each program's *summed* next-token
    cross-entropy L (a mean loss would put 1/T into every gradient and make short programs score higher).
    A program's real tokens are its own: its first position (the BOS, or without one its first token),
    padding and other special tokens are excluded (neuro.instrument.tokens.real_token_mask).

    act_abs_sum: sum over real tokens of |a|;  active_count: real tokens with act_fn(gate) > 0 (LAPE);
    pls_sum: sum over programs of the mean over the program's real tokens of |a_t * g_t| (PLS);
    attribution_sum: sum over programs of -(1/T) sum_t a_t * g_t over every position the model reads
    (BOS included, as ablation zeroes it too), T = the program's number of next-token targets: the
    first-order estimate of the change in the program's mean loss when the neuron is zeroed, signs
    kept; tokens (real) / samples / loss_sum (of programs' mean losses) per language.

    Per unit (a program, or a block of one language's programs on models too large for that, see
    `unit_plan`): unit_pls, unit_attribution, unit_active (units, layers, neurons) with unit_tokens,
    unit_samples and unit_lang (index into `languages`): the same sums per unit, so a permutation of
    language labels among units gives the chance level of any selection rule (neuro.analysis.selectivity).

    Optional, pooled over languages: type_sum / type_count, the sum of activations per tree-sitter
    node type (the syntax profile, node type names in meta["node_types"]); top_values / top_ids, the
    k largest activations of each neuron and where they occurred (see POSITION_BITS).
    """

    languages: list[str]
    act_abs_sum: np.ndarray   # (languages, layers, neurons) float32
    active_count: np.ndarray  # (languages, layers, neurons) float32
    pls_sum: np.ndarray | None  # (languages, layers, neurons) float32, None without gradients
    tokens: np.ndarray        # (languages,)
    samples: np.ndarray       # (languages,)
    loss_sum: np.ndarray      # (languages,)
    meta: dict = field(default_factory=dict)
    type_sum: np.ndarray | None = None    # (layers, node types, neurons) float32
    type_count: np.ndarray | None = None  # (node types,)
    top_values: np.ndarray | None = None  # (layers, k, neurons) float32, descending
    top_ids: np.ndarray | None = None     # (layers, k, neurons) int64
    attribution_sum: np.ndarray | None = None  # (languages, layers, neurons) float32, with gradients
    unit_pls: np.ndarray | None = None          # (units, layers, neurons) float32
    unit_attribution: np.ndarray | None = None  # (units, layers, neurons) float32
    unit_active: np.ndarray | None = None       # (units, layers, neurons) float32
    unit_tokens: np.ndarray | None = None       # (units,)
    unit_samples: np.ndarray | None = None      # (units,)
    unit_lang: np.ndarray | None = None         # (units,) int64

    _OPTIONAL = ("pls_sum", "type_sum", "type_count", "top_values", "top_ids", "attribution_sum", "unit_pls",
                 "unit_attribution", "unit_active", "unit_tokens", "unit_samples", "unit_lang")
    # what two shards of one corpus add up (unit_lang and the top-k are not sums)
    SUMMED = ("act_abs_sum", "active_count", "pls_sum", "tokens", "samples", "loss_sum", "type_sum", "type_count",
              "attribution_sum", "unit_pls", "unit_attribution", "unit_active", "unit_tokens", "unit_samples")

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
        """PLS(n, L): the mean over L's programs of the mean over their real tokens of |a_t * dL/da_t|."""
        if self.pls_sum is None:
            raise ValueError("these statistics were captured without gradients: no PLS")
        return self.pls_sum / np.maximum(self.samples, 1)[:, None, None]

    def attribution(self) -> np.ndarray:
        """Mean over L's programs of -(1/T) sum_t a_t * dL/da_t: the estimated change of a program's mean
        loss when the neuron is zeroed (positive: removing it hurts)."""
        if self.attribution_sum is None:
            raise ValueError("these statistics have no attribution (captured without gradients): recapture them")
        return self.attribution_sum / np.maximum(self.samples, 1)[:, None, None]

    def score(self, name: str) -> np.ndarray:
        """A per-language score by name: "pls", "attribution" or "probability" (LAPE's)."""
        return {"pls": self.pls, "attribution": self.attribution,
                "probability": self.activation_probability}[name]()

    UNIT_ARRAYS = ("unit_pls", "unit_attribution", "unit_active", "unit_tokens", "unit_samples", "unit_lang")

    def has_units(self) -> bool:
        return self.unit_lang is not None and len(self.unit_lang) > 0

    @property
    def units_omitted(self) -> bool:
        """Whether the per-unit arrays were left out of these statistics (`without_units`, e.g. the shipped
        results of the demo model): a chance level then needs the statistics captured again."""
        return bool(self.meta.get("units_omitted"))

    def without_units(self) -> CorpusStats:
        """These statistics without the per-unit arrays (most of their size; only a chance level needs
        them), their meta saying they were left out."""
        return dataclasses.replace(self, meta=dict(self.meta, units_omitted=True), unit_pls=None,
                                   unit_attribution=None, unit_active=None, unit_tokens=None, unit_samples=None,
                                   unit_lang=None)

    def unit_values(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(per-unit sums of score `name` (units, layers, neurons), per-unit weights: programs, or tokens for
        "probability"); a clear error where the statistics keep none."""
        if not self.has_units():
            raise ValueError("these statistics keep no per-program scores" + (
                " (left out of the shipped results)" if self.units_omitted else "")
                + ": recapture them for a chance level")
        values = {"pls": self.unit_pls, "attribution": self.unit_attribution, "probability": self.unit_active}[name]
        if values is None:
            raise ValueError(f"these statistics have no per-program {name}")
        weights = self.unit_tokens if name == "probability" else self.unit_samples
        if weights is None:
            raise ValueError("these statistics keep per-program scores without their counts: recapture them")
        return values, weights

    def unit_score(self, name: str, unit_lang: np.ndarray) -> np.ndarray:
        """The per-language score with units labelled `unit_lang` (e.g. a permutation of the real labels):
        sums over each label's units divided by its programs (tokens for "probability")."""
        values, weights = self.unit_values(name)
        onehot: np.ndarray = np.zeros((len(self.languages), len(unit_lang)), dtype=np.float64)
        onehot[np.asarray(unit_lang), np.arange(len(unit_lang))] = 1.0
        totals = np.tensordot(onehot, values, axes=(1, 0))
        return totals / np.maximum(onehot @ weights, 1)[:, None, None]

    def mean_loss(self) -> dict[str, float]:
        return {lang: float(self.loss_sum[i] / max(self.samples[i], 1)) for i, lang in enumerate(self.languages)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"act_abs_sum": self.act_abs_sum, "active_count": self.active_count, "tokens": self.tokens,
                  "samples": self.samples, "loss_sum": self.loss_sum}
        arrays.update({name: getattr(self, name) for name in self._OPTIONAL if getattr(self, name) is not None})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> CorpusStats:
        return cls(languages=list(meta["languages"]), act_abs_sum=arrays["act_abs_sum"],
                   active_count=arrays["active_count"], tokens=arrays["tokens"], samples=arrays["samples"],
                   loss_sum=arrays["loss_sum"], meta=meta,
                   **{name: arrays.get(name) for name in cls._OPTIONAL})

    def merge(self, other: CorpusStats) -> CorpusStats:
        """Sum of two shards' statistics of one corpus, e.g. from data-parallel ranks.

        Top-k ids must already be global (snippet indices into the whole corpus), units the same plan.
        """
        if self.languages != other.languages or self.meta.get("node_types") != other.meta.get("node_types"):
            raise ValueError("cannot merge statistics over different languages or node types")
        # None for an optional array these statistics lack (the required ones are never None)
        summed: dict[str, Any] = {
            name: None if getattr(self, name) is None else getattr(self, name) + getattr(other, name)
            for name in self.SUMMED}
        top_values, top_ids = self.top_values, self.top_ids
        if top_values is not None:
            values = np.concatenate([self.top_values, other.top_values], axis=1)
            ids = np.concatenate([self.top_ids, other.top_ids], axis=1)
            order = np.argsort(-values, axis=1, kind="stable")[:, : top_values.shape[1]]
            top_values, top_ids = np.take_along_axis(values, order, 1), np.take_along_axis(ids, order, 1)
        return CorpusStats(self.languages, meta=dict(self.meta), top_values=top_values, top_ids=top_ids,
                           unit_lang=self.unit_lang, **summed)


def unit_plan(snippets: Sequence[Snippet], languages: Sequence[str], n_layers: int, width: int,
              budget: int = UNIT_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """(unit of each snippet (-1: not captured), language index of each unit).

    One unit per program while units x layers x neurons fits `budget`; beyond it (a 32-layer model on a
    large corpus) each language's programs are dealt in corpus order into equal blocks, as many per
    language as fit (at least 2), so the permutation null runs on blocks instead of programs.
    """
    langs = list(languages)
    members = {lang: [i for i, s in enumerate(snippets) if s.lang == lang] for lang in langs}
    per_program = sum(len(m) for m in members.values())
    blocks = None if per_program * n_layers * width <= budget else max(2, budget // (n_layers * width * len(langs)))
    unit_of: np.ndarray = np.full(len(snippets), -1, dtype=np.int64)
    unit_lang: list[int] = []
    for li, lang in enumerate(langs):
        n_units = len(members[lang]) if blocks is None else min(blocks, len(members[lang]))
        for j, i in enumerate(members[lang]):
            unit_of[i] = len(unit_lang) + j % max(n_units, 1)
        unit_lang += [li] * n_units
    return unit_of, np.array(unit_lang, dtype=np.int64)


class _Staged:
    """One batch's contributions, kept apart until the batch's backward has finished: a batch that runs
    out of memory midway is dropped whole and retried smaller, and the totals never count it twice."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, int], torch.Tensor] = {}            # (name, layer) -> (width,)
        self.rows: dict[tuple[str, int], torch.Tensor] = {}            # (name, layer) -> (batch, width)
        self.types: dict[int, torch.Tensor] = {}                       # layer -> (types, width)
        self.top: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}    # layer -> (k, width) values, ids


def _add_into(per_layer: list[torch.Tensor | None], layer: int, value: torch.Tensor) -> None:
    if per_layer[layer] is None:
        per_layer[layer] = value.clone()
    else:
        per_layer[layer] += value


class StatisticsHooks:
    """Hooks and accumulators of one capture. Per-language sums are read and reset between languages;
    the per-unit sums, the syntax profile and the running top-k are kept over the whole corpus.

    Every accumulator lives on the device the activations of the layer it watches arrive on (a model
    split over devices by accelerate's device_map never moves activations to gather them), allocated on
    first use; per-batch inputs (masks, weights) are copied once per device. A batch's contributions are
    staged (`_Staged`) and added by `commit` only once its forward and backward have both finished
    (`discard` drops them after an error).

    Under gradient checkpointing (`replaying` set while the backward recomputes blocks) the forward-side
    statistics are not counted again, and the gated FFN's `up` is read from the recomputation when its
    gradient arrives instead of being held from the first forward (which would defeat checkpointing).
    """

    SUMS = ("act_abs", "active", "pls", "attribution")

    def __init__(self, loaded: LoadedModel, gradients: bool, n_node_types: int = 0, top_k: int = 0,
                 n_units: int = 0):
        self.sites = loaded.sites()
        self.points = loaded.hook_sites
        self.width = loaded.n_neurons
        self.gradients = gradients
        # allocated on first use, on the device the layer's activations arrive on (accelerate may place a
        # block on another device, or offload it and run it on an execution device)
        n = len(self.sites)
        self.totals: dict[str, list[torch.Tensor | None]] = {name: [None] * n for name in self.SUMS}
        self.n_units = n_units
        self.unit_totals: dict[str, list[torch.Tensor | None]] = {
            name: [None] * n for name in ("active", "pls", "attribution")
            if n_units and (name == "active" or gradients)}
        self.n_types = n_node_types
        self.type_sum: list[torch.Tensor | None] | None = [None] * n if n_node_types else None
        self.type_count = torch.zeros(n_node_types)
        self.top_k = top_k
        self.top_values: list[torch.Tensor | None] | None = [None] * n if top_k else None
        self.top_ids: list[torch.Tensor | None] | None = [None] * n if top_k else None
        self.replaying = False      # set by the caller while the backward recomputes checkpointed blocks
        self.checkpointing = False
        self.staged = _Staged()
        self._inputs: dict = {}
        self._replayed: dict[int, torch.Tensor] = {}
        self._batch_type_count: torch.Tensor | None = None

    # per-batch inputs ---------------------------------------------------------------------------

    def set_batch(self, mask: torch.Tensor, real: torch.Tensor | None = None, units: torch.Tensor | None = None,
                  node_types: torch.Tensor | None = None, token_ids: torch.Tensor | None = None) -> None:
        """Per-batch inputs: attention mask; real-token mask (default: the attention mask); unit of each
        program; node type id per token (-1: none); global token ids (-1: not a real token)."""
        real = mask if real is None else real
        inputs = {"real": real, "pls_weight": real / real.sum(1, keepdim=True).clamp(min=1),
                  "attr_weight": -mask / mask[:, 1:].sum(1, keepdim=True).clamp(min=1), "units": units}
        if self.n_types:
            assert node_types is not None, "a capture with a syntax profile passes node types"
            flat = torch.where(real.reshape(-1) > 0, node_types.reshape(-1), -1)
            onehot = torch.zeros((self.n_types, flat.numel()), device=mask.device)
            keep = flat >= 0
            onehot[flat[keep], keep.nonzero()[:, 0]] = 1.0
            inputs["type_onehot"] = onehot
            self._batch_type_count = onehot.sum(1).cpu()
        if self.top_k:
            assert token_ids is not None, "a capture with top-k passes token ids"
            inputs["token_ids"] = torch.where(real.reshape(-1) > 0, token_ids.reshape(-1), -1)
        self._inputs = {(name, mask.device): value for name, value in inputs.items()}
        self.staged = _Staged()
        self._replayed.clear()

    def _get(self, name: str, device: torch.device):
        """A per-batch input on `device` (copied there once per batch)."""
        key = (name, device)
        if key not in self._inputs:
            source = next(v for (n, _d), v in self._inputs.items() if n == name)
            self._inputs[key] = None if source is None else source.to(device)
        return self._inputs[key]

    # staging and committing -----------------------------------------------------------------------

    def _stage_sum(self, name: str, layer: int, rows: torch.Tensor, unit_name: str | None = None) -> None:
        """Per-program rows (batch, width) of one layer: their sum for the language, the rows for units."""
        key = (name, layer)
        total = rows.sum(0)
        self.staged.sums[key] = self.staged.sums[key] + total if key in self.staged.sums else total
        if unit_name in self.unit_totals:
            self.staged.rows[(unit_name, layer)] = rows

    def commit(self) -> None:
        """Add the staged batch to the totals (after its forward and backward both finished)."""
        for (name, layer), value in self.staged.sums.items():
            _add_into(self.totals[name], layer, value)
        for (name, layer), rows in self.staged.rows.items():
            acc = self.unit_totals[name][layer]
            if acc is None:
                acc = self.unit_totals[name][layer] = rows.new_zeros((self.n_units, self.width))
            acc.index_add_(0, self._get("units", rows.device), rows)
        for layer, value in self.staged.types.items():
            assert self.type_sum is not None, "types are staged only with a syntax profile"
            _add_into(self.type_sum, layer, value)
        if self.n_types and self._batch_type_count is not None:
            self.type_count += self._batch_type_count
        for layer, (values, ids) in self.staged.top.items():
            assert self.top_values is not None and self.top_ids is not None, "top-k is staged only with top_k"
            if self.top_values[layer] is None:
                self.top_values[layer] = torch.full((self.top_k, self.width), -torch.inf, device=values.device)
                self.top_ids[layer] = torch.full((self.top_k, self.width), -1, dtype=torch.long, device=values.device)
            merged_values = torch.cat([self.top_values[layer], values])
            merged_ids = torch.cat([self.top_ids[layer], ids])
            best, order = merged_values.topk(self.top_k, dim=0)
            self.top_values[layer] = best
            self.top_ids[layer] = merged_ids.gather(0, order)
        self.discard()

    def discard(self) -> None:
        self.staged = _Staged()
        self._replayed.clear()
        self._batch_type_count = None

    def reset(self) -> None:
        for per_layer in self.totals.values():
            for acc in per_layer:
                if acc is not None:
                    acc.zero_()

    def gathered(self, per_layer: list[torch.Tensor | None], shape: tuple[int, ...], fill: float = 0.0,
                 dtype=torch.float32, dim: int = 0) -> np.ndarray:
        """Per-layer tensors from every device stacked on the host (`fill` for a layer never reached)."""
        return torch.stack([torch.full(shape, fill, dtype=dtype) if t is None else t.cpu() for t in per_layer],
                           dim=dim).numpy()

    def language_sums(self) -> dict[str, np.ndarray]:
        """The per-language sums gathered from every device: (layers, neurons) float32 each."""
        return {name: self.gathered(per_layer, (self.width,)) for name, per_layer in self.totals.items()}

    def unit_arrays(self) -> dict[str, np.ndarray]:
        """Per-unit sums gathered from every device, (units, layers, neurons)."""
        return {name: self.gathered(per_layer, (self.n_units, self.width), dim=1)
                for name, per_layer in self.unit_totals.items()}

    # reductions ---------------------------------------------------------------------------------

    def _reduce(self, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """weights (rows, N) @ values (N, width) in float32 (GPU GEMMs accumulate in fp32)."""
        out = torch.mm(weights.to(values.dtype), values.reshape(-1, self.width)).float()
        return out[0] if out.shape[0] == 1 else out

    def _per_program(self, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Per program, sum_t weights[b, t] * values[b, t, :]: (batch, width) float32."""
        rows = torch.bmm(weights.to(values.dtype).unsqueeze(1), values.reshape(*weights.shape, self.width))
        return rows.squeeze(1).float()

    # hooks --------------------------------------------------------------------------------------

    def attachments(self) -> list[Attachment]:
        """(site, hook) pairs for `LoadedModel.hooks`: the neuron activations, the activation function's
        output (LAPE's "active") and, for gradients of a gated FFN, the up projection's output."""
        out: list[Attachment] = []
        for site in self.sites:
            out.append((self.points.neuron_input(site.layer), self._down_hook(site)))
            out.append((self.points.act_output(site.layer), self._act_hook(site)))
            if self.gradients and site.up is not None:
                out.append((self.points.up_output(site.layer), self._up_hook(site)))
        return out

    def register(self, handles: list) -> None:
        """`attachments`, for a caller that manages hooks itself (bench/bench_capture.py with `hooked`)."""
        handles.extend(site.attach(fn) for site, fn in self.attachments())

    def _down_hook(self, site: NeuronSite):
        hold_activation = self.gradients and site.up is None

        def hook(a):
            _check_width(site, a, self.width)
            detached = a.detach()
            if self.replaying:  # a checkpointed block recomputed in the backward: counted already
                if hold_activation:
                    self._replayed[site.layer] = detached
                return
            dev = a.device
            layer = site.layer
            self._stage_sum("act_abs", layer, self._reduce(self._get("real", dev).reshape(1, -1), detached.abs())[None])
            if self.n_types:
                self.staged.types[layer] = self._reduce(self._get("type_onehot", dev), detached)
            if self.top_k:
                self._stage_top(layer, detached.reshape(-1, self.width))
            if hold_activation and a.requires_grad:
                # Non-gated FFN: a * dL/da needs `a` itself when its gradient arrives (from the
                # recomputation under checkpointing).
                held = None if self.checkpointing else detached
                a.register_hook(lambda g: self._add_gradient(layer, self._held(layer, held) * g))
        return hook

    def _held(self, layer: int, held: torch.Tensor | None) -> torch.Tensor:
        return held if held is not None else self._replayed.pop(layer)

    def _stage_top(self, layer: int, flat: torch.Tensor) -> None:
        token_ids = self._get("token_ids", flat.device)
        values = flat.float().masked_fill(~(token_ids >= 0)[:, None], -torch.inf)
        k = min(self.top_k, values.shape[0])
        batch_values, rows = values.topk(k, dim=0)
        self.staged.top[layer] = (batch_values, token_ids[rows])

    def _act_hook(self, site: NeuronSite):
        def hook(out):
            _check_width(site, out, self.width)
            if self.replaying:
                return
            fired = (out.detach() > 0).to(out.dtype)
            self._stage_sum("active", site.layer, self._per_program(self._get("real", out.device), fired), "active")
        return hook

    def _up_hook(self, site: NeuronSite):
        def hook(up):
            # Gated FFN: a = act(gate) * up, so a * dL/da = up * dL/dup. Autograd keeps `up` for the
            # product's backward anyway, so holding it here until its gradient arrives costs nothing
            # (under checkpointing it is not kept: the recomputation hands it over instead).
            # The hook must not refer to `up` itself: up -> its hook -> up is a reference cycle that keeps
            # every batch's `up` alive until Python's cyclic GC runs (peak memory grew with the corpus).
            layer = site.layer
            if self.replaying:
                self._replayed[layer] = up.detach()
                return
            if up.requires_grad:
                held = None if self.checkpointing else up.detach()
                up.register_hook(lambda g: self._add_gradient(layer, self._held(layer, held) * g))
        return hook

    def _add_gradient(self, layer: int, product: torch.Tensor) -> None:
        dev = product.device
        self._stage_sum("attribution", layer, self._per_program(self._get("attr_weight", dev), product),
                        "attribution")
        self._stage_sum("pls", layer, self._per_program(self._get("pls_weight", dev), product.abs_()), "pls")


def node_type_vocabulary(encoded: Sequence[Encoded], snippets: Sequence[Snippet],
                         max_types: int) -> tuple[list[str], list[list[int]]]:
    """Per token, the id of its smallest enclosing named node type (-1 for none).

    The `max_types - 1` most frequent types keep their names; the rest share "(other)".
    """
    from collections import Counter

    from neuro.code.syntax import align_tokens

    names = [[node.type for node in align_tokens(s.code, s.lang, e.offsets)] for s, e in zip(snippets, encoded)]
    counts = Counter(t for row in names for t in row if t is not None)
    vocab = [t for t, _ in counts.most_common(max_types - 1)]
    if len(counts) > len(vocab):
        vocab.append("(other)")
    index = {t: i for i, t in enumerate(vocab)}
    other = index.get("(other)", -1)
    ids = [[-1 if t is None else index.get(t, other) for t in row] for row in names]
    return vocab, ids


def is_out_of_memory(err: BaseException) -> bool:
    """An allocation failure of the device (CUDA) or of the host (CPU allocator)."""
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


@dataclass
class _Plan:
    """The batching a capture runs with: tokens per batch, and whether blocks are checkpointed."""

    batch_tokens: int
    checkpointing: bool
    planned: bool  # sized from the memory plan (False: given by the caller)
    halvings: int = 0


def _capture_plan(loaded: LoadedModel, gradients: bool, max_length: int, batch_tokens: int | None,
                  checkpointing: bool | None, fixed: int) -> _Plan:
    if batch_tokens is not None:
        return _Plan(int(batch_tokens), bool(checkpointing), planned=False)
    from neuro.model.plan import batch_plan

    plan = batch_plan(loaded, "backward" if gradients else "forward", max_length, fixed=fixed)
    if not plan.fits:
        raise ValueError(f"not even one program of {max_length} tokens fits in the memory free for this pass "
                          f"({(plan.budget_bytes or 0) / (1 << 30):.1f} GiB; {plan.per_token_bytes / (1 << 20):.2f} "
                          "MiB per token): lower --max-length, use a device map over more devices, or a GPU with "
                          "more memory")
    return _Plan(plan.batch_tokens, plan.checkpointing if checkpointing is None else checkpointing, planned=True)


def _run_batch(loaded: LoadedModel, hooks: StatisticsHooks, ids: torch.Tensor, mask: torch.Tensor,
               gradients: bool) -> torch.Tensor:
    """One forward (and backward) of a batch through the hooks; each program's mean loss, (batch,)."""
    from torch.utils.checkpoint import set_checkpoint_early_stop

    from neuro.instrument.losses import model_token_losses

    if not gradients:
        with torch.inference_mode():
            ce, targets = model_token_losses(loaded, ids, mask)
        return ce.sum(1) / targets.sum(1).clamp(min=1)
    inputs = loaded.embeddings(ids).detach().requires_grad_(True)
    ce, targets = model_token_losses(loaded, ids, mask, inputs_embeds=inputs)
    hooks.replaying = True
    try:
        with set_checkpoint_early_stop(False):  # a recomputed block runs whole, so every hook sees it
            ce.sum().backward()  # each program's summed loss: no 1/T in its gradients
    finally:
        hooks.replaying = False
    return ce.detach().sum(1) / targets.sum(1).clamp(min=1)


@dataclass
class _Programs:
    """What a capture reads: the programs it processes (`mine`, snippet indices), their encodings, and the
    corpus-wide labels that stay those of the whole list (units, node types)."""

    langs: list[str]
    mine: list[int]
    pending: list[list[int]]  # per language: its processed programs, in corpus order
    encoded: dict[int, Encoded]
    node_types: list[str]
    type_ids: dict[int, list[int]] | None
    unit_of: np.ndarray | None
    unit_lang: np.ndarray | None

    @property
    def n_units(self) -> int:
        return 0 if self.unit_lang is None else len(self.unit_lang)


def _programs(loaded: LoadedModel, snippets: Sequence[Snippet], langs: list[str], *, max_length: int,
              shard: tuple[int, int] | None, indices: Sequence[int] | None, syntax: bool, units: bool,
              max_node_types: int, node_types: Sequence[str] | None) -> _Programs:
    """Select this capture's programs (shard, indices, languages), tokenize and (with `syntax`) align only
    those, and plan the units over the whole list."""
    keep = None if indices is None else set(indices)
    mine = [i for i in range(len(snippets))
            if (shard is None or i % shard[1] == shard[0]) and (keep is None or i in keep)
            and snippets[i].lang in langs]
    encoded = {i: encode(loaded, snippets[i].code, max_length) for i in mine}
    type_ids = None
    vocab: list[str] = []
    if syntax:
        if node_types is None:
            node_types, _ = node_type_vocabulary([encode(loaded, s.code, max_length) for s in snippets], snippets,
                                                 max_node_types)
        vocab = list(node_types)
        type_ids = _type_ids(encoded, snippets, vocab)
    unit_of, unit_lang = unit_plan(snippets, langs, loaded.n_layers, loaded.n_neurons) if units else (None, None)
    pending = [[i for i in mine if snippets[i].lang == lang] for lang in langs]
    return _Programs(langs, mine, pending, encoded, vocab, type_ids, unit_of, unit_lang)


@dataclass
class _Counts:
    """Per-language and per-unit counts of the batches committed so far (float64, as the cache keeps them)."""

    tokens: np.ndarray
    samples: np.ndarray
    loss_sum: np.ndarray
    unit_tokens: np.ndarray
    unit_samples: np.ndarray
    done: int = 0

    @classmethod
    def zeros(cls, n_langs: int, n_units: int) -> _Counts:
        tokens, samples, loss_sum = (np.zeros(n_langs) for _ in range(3))
        return cls(tokens, samples, loss_sum, np.zeros(n_units), np.zeros(n_units))

    def add(self, li: int, rows: list[int], real: torch.Tensor, losses: torch.Tensor,
            unit_of: np.ndarray | None) -> None:
        """Count one committed batch of language `li`: its real tokens, programs and summed mean losses."""
        n_real = real.sum(1).cpu().numpy()
        self.tokens[li] += float(n_real.sum())
        self.samples[li] += len(rows)
        self.loss_sum[li] += float(losses.sum())
        if unit_of is not None:
            np.add.at(self.unit_tokens, unit_of[rows], n_real)
            np.add.at(self.unit_samples, unit_of[rows], 1)
        self.done += len(rows)


def _batch_step(loaded: LoadedModel, hooks: StatisticsHooks, programs: _Programs, rows: list[int],
                gradients: bool, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch through the hooks: collate it, hand the hooks its masks and labels, run the forward (and
    backward); (real-token mask, each program's mean loss). The hooks' contributions stay staged."""
    ids, mask = collate([programs.encoded[i] for i in rows], loaded.pad_id, loaded.device)
    real = real_token_mask(loaded, ids, mask)
    unit_of = programs.unit_of
    batch_units = None if unit_of is None else torch.as_tensor(unit_of[rows], device=loaded.device)
    labels = _token_labels(rows, programs.type_ids, mask) if programs.type_ids is not None or top_k else (None, None)
    hooks.set_batch(mask, real, batch_units, *labels)
    with checkpointed_blocks(loaded, hooks.checkpointing):
        losses = _run_batch(loaded, hooks, ids, mask, gradients)
    return real, losses


def _capture_language(loaded: LoadedModel, hooks: StatisticsHooks, programs: _Programs, li: int, plan: _Plan,
                      counts: _Counts, *, gradients: bool, top_k: int, max_batch: int,
                      progress: Progress | None) -> None:
    """Every batch of language `li`'s programs, committed one by one; a batch that runs out of memory is
    dropped whole and the language's remaining programs re-batched smaller (`_shrink`)."""
    pending = programs.pending[li]
    queue = _batches(pending, programs.encoded, plan.batch_tokens, max_batch)
    hooks.reset()
    while queue:
        rows = queue.pop(0)
        try:
            real, losses = _batch_step(loaded, hooks, programs, rows, gradients, top_k)
        except Exception as err:  # noqa: BLE001 - only an allocation failure is retried
            hooks.discard()
            if not is_out_of_memory(err) or not _shrink(plan, hooks, len(rows), gradients):
                raise
            _free_cache(loaded.device)
            remaining = set(rows).union(*map(set, queue))
            queue = _batches([i for i in pending if i in remaining], programs.encoded, plan.batch_tokens, max_batch)
            continue
        hooks.commit()
        counts.add(li, rows, real, losses, programs.unit_of)
        if progress:
            progress(counts.done, len(programs.mine))


def _capture_meta(loaded: LoadedModel, snippets: Sequence[Snippet], programs: _Programs, plan: _Plan,
                  hooks: StatisticsHooks, *, gradients: bool, max_length: int, top_k: int, units: bool) -> dict:
    """The statistics' meta: how they were captured (loss, token reduction, units, batching) and their labels."""
    langs = programs.langs
    return {"languages": langs, "gradients": gradients, "max_length": max_length, "version": STATS_VERSION,
            "loss": "sum over the program's next-token targets (one backward pass per program)",
            "token_reduction": "mean over the program's real tokens (the first position: the BOS or, without one, "
                               "the first token; padding and special tokens excluded)",
            "truncated_programs": Truncation(sum(e.truncated for e in programs.encoded.values()),
                                             len(programs.encoded), max_length).summary(),
            "units": "program" if units and programs.n_units == sum(s.lang in langs for s in snippets) else "block",
            "model": loaded.identity, "node_types": programs.node_types, "top_k": top_k,
            "snippet_ids": [s.id for s in snippets] if top_k else [],
            "batch_tokens": plan.batch_tokens, "checkpointing": hooks.checkpointing,
            "batch_halvings": plan.halvings}


def _finalize(hooks: StatisticsHooks, programs: _Programs, counts: _Counts, out: dict[str, np.ndarray],
              meta: dict, *, gradients: bool, top_k: int) -> CorpusStats:
    """CorpusStats from the per-language sums (`out`), the counts and what the hooks kept over the corpus
    (per-unit sums, syntax profile, top-k), gathered from their devices."""
    width = hooks.width
    stats = CorpusStats(programs.langs, out["act_abs"], out["active"], out["pls"] if gradients else None,
                        counts.tokens, counts.samples, counts.loss_sum, meta,
                        attribution_sum=out["attribution"] if gradients else None)
    if programs.unit_lang is not None:
        arrays = hooks.unit_arrays()
        stats.unit_pls, stats.unit_attribution = arrays.get("pls"), arrays.get("attribution")
        stats.unit_active = arrays["active"]
        stats.unit_tokens, stats.unit_samples = counts.unit_tokens, counts.unit_samples
        stats.unit_lang = programs.unit_lang
    if programs.type_ids is not None:
        assert hooks.type_sum is not None, "a syntax profile's hooks keep type sums"
        stats.type_sum = hooks.gathered(hooks.type_sum, (len(programs.node_types), width))
        stats.type_count = hooks.type_count.numpy().astype(np.float64)
    if top_k:
        assert hooks.top_values is not None and hooks.top_ids is not None, "top-k hooks keep values and ids"
        stats.top_values = hooks.gathered(hooks.top_values, (top_k, width), -np.inf)
        stats.top_ids = hooks.gathered(hooks.top_ids, (top_k, width), -1, torch.long)
    return stats


def capture_statistics(loaded: LoadedModel, snippets: Sequence[Snippet], *, gradients: bool = True,
                       syntax: bool = False, top_k: int = 0, max_node_types: int = 48,
                       max_length: int = 512, batch_tokens: int | None = None, max_batch: int = 32,
                       languages: Sequence[str] | None = None, shard: tuple[int, int] | None = None,
                       units: bool = True, progress: Progress | None = None,
                       indices: Sequence[int] | None = None, checkpointing: bool | None = None,
                       node_types: Sequence[str] | None = None) -> CorpusStats:
    """Per-language neuron statistics of a corpus: one forward (and one backward) pass per batch.

    `shard=(rank, world)` processes only the snippets whose index % world == rank (data parallel; the
    shards' statistics sum to the whole corpus's, see neuro.instrument.distributed). `indices` likewise processes
    only those snippets (a chunk of a resumable pass, neuro.results.resume); units, node types and top-k ids stay
    those of the whole list, so the statistics of disjoint index sets sum to the whole corpus's. Only the
    programs processed are tokenized and aligned; `node_types` (the corpus's vocabulary, from
    `node_type_vocabulary`) saves a chunk from aligning the whole corpus to find it.

    Gradients are activation-only: parameters stay frozen and the backward of each program's summed
    next-token loss starts from input embeddings that require grad, so no parameter gradient is ever
    computed or stored. `syntax` adds the per-node-type profile, `top_k` the k most activating tokens
    of every neuron and `units` the per-program (or per-block) scores, all in the same pass.

    Batches: `batch_tokens` padded tokens each, or (None) as many as the memory plan says fit in the
    memory free on the model's devices (neuro.model.plan), with every block checkpointed where one
    program would not fit otherwise (`checkpointing` forces it on or off). A batch that runs out of memory
    is dropped whole, halved and retried (logged, and counted in meta["batch_halvings"]).
    """
    if not snippets:
        raise ValueError("no snippets to capture")
    loaded.require_weights()
    langs = list(languages or dict.fromkeys(s.lang for s in snippets))
    programs = _programs(loaded, snippets, langs, max_length=max_length, shard=shard, indices=indices,
                         syntax=syntax, units=units, max_node_types=max_node_types, node_types=node_types)
    n_layers, width = loaded.n_layers, loaded.n_neurons
    from neuro.model.plan import capture_fixed_bytes

    plan = _capture_plan(loaded, gradients, max_length, batch_tokens, checkpointing,
                         capture_fixed_bytes(n_layers, width, programs.n_units, len(programs.node_types), top_k))
    # float32 like the accumulators on the device: float64 would double the cache for no precision
    out: dict[str, np.ndarray] = {name: np.zeros((len(langs), n_layers, width), dtype=np.float32)
                                  for name in StatisticsHooks.SUMS}
    counts = _Counts.zeros(len(langs), programs.n_units)
    with loaded.lock:  # held from the accumulators' allocation to reading them; the hooks nest in it
        hooks = StatisticsHooks(loaded, gradients, n_node_types=len(programs.node_types), top_k=top_k,
                                n_units=programs.n_units)
        hooks.checkpointing = plan.checkpointing and gradients
        with loaded.hooks(hooks.attachments()):
            for li in range(len(langs)):
                _capture_language(loaded, hooks, programs, li, plan, counts, gradients=gradients, top_k=top_k,
                                  max_batch=max_batch, progress=progress)
                for name, value in hooks.language_sums().items():
                    out[name][li] = value
    meta = _capture_meta(loaded, snippets, programs, plan, hooks, gradients=gradients, max_length=max_length,
                         top_k=top_k, units=units)
    return _finalize(hooks, programs, counts, out, meta, gradients=gradients, top_k=top_k)


def _batches(pending: list[int], encoded: dict, batch_tokens: int, max_batch: int) -> list[list[int]]:
    """`pending` (snippet indices) in batches of similar length, at most `batch_tokens` padded tokens."""
    return [[pending[j] for j in batch]
            for batch in length_batches([len(encoded[i].ids) for i in pending], batch_tokens, max_batch)]


def _shrink(plan: _Plan, hooks: StatisticsHooks, batch_programs: int, gradients: bool) -> bool:
    """After an out-of-memory error: halve the batch, or checkpoint every block once a single program
    does not fit; False when there is nothing left to try."""
    if batch_programs > 1:
        plan.batch_tokens = max(1, plan.batch_tokens // 2)
        what = f"batches of {plan.batch_tokens} tokens"
    elif gradients and not hooks.checkpointing:
        plan.checkpointing = hooks.checkpointing = True
        what = "every block checkpointed"
    else:
        return False
    plan.halvings += 1
    log.warning("out of memory in a batch of %d programs: retrying with %s", batch_programs, what)
    return True


def _free_cache(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _type_ids(encoded: dict[int, Encoded], snippets: Sequence[Snippet], vocab: list[str]) -> dict[int, list[int]]:
    """Per processed program, each token's node type id in `vocab` (-1: none; unknown types: "(other)")."""
    from neuro.code.syntax import align_tokens

    index = {t: i for i, t in enumerate(vocab)}
    other = index.get("(other)", -1)
    return {i: [-1 if node.type is None else index.get(node.type, other)
                for node in align_tokens(snippets[i].code, snippets[i].lang, e.offsets)]
            for i, e in encoded.items()}


def _token_labels(rows: list[int], type_ids: dict[int, list[int]] | None, mask: torch.Tensor):
    """(node type ids, global token ids) of a padded batch; -1 where there is no token."""
    types = torch.full(mask.shape, -1, dtype=torch.long)
    positions = torch.full(mask.shape, -1, dtype=torch.long)
    for r, (i, n) in enumerate(zip(rows, mask.sum(1).tolist())):
        if type_ids is not None:
            types[r, :n] = torch.tensor(type_ids[i], dtype=torch.long)
        positions[r, :n] = (i << POSITION_BITS) + torch.arange(n)
    return types.to(mask.device), positions.to(mask.device)


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
    loaded.require_weights()
    sites = loaded.sites()
    layers = sorted(set(range(len(sites)) if layers is None else layers))
    if any(not 0 <= layer < len(sites) for layer in layers):
        raise ValueError(f"layers must lie in 0..{len(sites) - 1}")
    enc = encode(loaded, code, max_length)
    kept: dict[int, torch.Tensor] = {}

    def keep(a, site):
        _check_width(site, a, loaded.n_neurons)
        kept[site.layer] = a[0].float().cpu()

    ids = torch.tensor([enc.ids], device=loaded.device)
    pairs = [(loaded.hook_sites.neuron_input(layer), lambda a, site=sites[layer]: keep(a, site)) for layer in layers]
    with loaded.hooks(pairs, inference=True):
        forward_until(loaded, ids, torch.ones_like(ids), last_layer=layers[-1])
    acts = np.stack([kept[layer].numpy() for layer in layers])
    return TokenTrace(code, enc.ids, enc.offsets, layers, acts)
