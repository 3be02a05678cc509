"""Attribution where first order fails: the gradient averaged along the path from a neuron's activation to
zero, checked against measured single-neuron zeroing.

The attribution score (neuro.instrument.statistics) is -(1/T) sum_t a_t * dL/da_t: the first-order estimate
of the change in a program's mean loss L when neuron n is zeroed, read at the current activation. Where the
loss saturates along the way to zero (a neuron that already makes the next token near certain: gradient ~0
at a, a large rise once it is gone) that estimate has the wrong size or even the wrong sign. Exactly,

    L(0) - L(a) = -integral_0^1 sum_t a_t * g_t(alpha) d alpha,

where g_t(alpha) is dL/da_t with n's activation scaled by alpha at every position (the other neurons left
to respond). `path_attribution` approximates the integral with a quadrature over K points alpha_k in
(0, 1) (midpoint rule by default, or Gauss-Legendre) and aggregates like the first-order score: each
program's estimate, then the mean over a language's programs. With the single point alpha = 1
(`FIRST_ORDER`) it is the first-order attribution itself.

Cost: K forward+backward passes over the programs *per neuron* (at alpha = 1 the forward is the model's
own, so every neuron shares one pass), the backward starting at the neuron's layer. It is an estimator for
chosen neurons (checks, `attribution_check`), not a score for the whole model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import numpy as np
import pandas as pd
import torch

from neuro.choices import QuadratureRule

from neuro.code.corpus import Snippet
from neuro.instrument.ablation import as_layer_map, neuron_effects
from neuro.instrument.hooks import checkpointed_blocks
from neuro.instrument.losses import model_token_losses
from neuro.instrument.statistics import CorpusStats
from neuro.instrument.tokens import collate, encode, length_batches
from neuro.model.loading import LoadedModel
from neuro.model.plan import batch_plan
from neuro.progress import Progress


@dataclass(frozen=True)
class Quadrature:
    """Points alpha_k in (0, 1] with weights summing to 1: the mean gradient along the path is
    sum_k w_k g(alpha_k)."""

    rule: QuadratureRule | Literal["first-order"]  # first-order: the gradient at the activation alone
    points: tuple[float, ...]
    weights: tuple[float, ...]

    def __post_init__(self):
        if not self.points or len(self.points) != len(self.weights):
            raise ValueError("a quadrature needs as many weights as points, at least one")
        if any(not 0.0 < p <= 1.0 for p in self.points):
            raise ValueError(f"quadrature points must lie in (0, 1], got {self.points}")

    def summary(self) -> dict:
        return {"rule": self.rule, "points": list(self.points), "weights": list(self.weights)}


FIRST_ORDER = Quadrature("first-order", (1.0,), (1.0,))


def quadrature(k: int, rule: QuadratureRule = "midpoint") -> Quadrature:
    """K points on (0, 1): "midpoint" ((i + 1/2) / K, equal weights) or "gauss" (Gauss-Legendre, exact for
    polynomials of degree 2K - 1)."""
    if k < 1:
        raise ValueError(f"at least one point is needed, got {k}")
    if rule == "midpoint":
        return Quadrature(rule, tuple((i + 0.5) / k for i in range(k)), (1.0 / k,) * k)
    if rule == "gauss":
        x, w = np.polynomial.legendre.leggauss(k)
        return Quadrature(rule, tuple(float(v) for v in (x + 1) / 2), tuple(float(v) for v in w / 2))
    raise ValueError(f"unknown quadrature rule {rule!r} (midpoint, gauss)")


Pair = tuple[int, int]


def _gradient_pass(loaded: LoadedModel, encoded, batches: list[list[int]], layer_map: dict[int, np.ndarray],
                   alpha: float, checkpointing: bool) -> dict[Pair, np.ndarray]:
    """For each neuron of `layer_map`, each program's -(1/T) sum_t a_t * g_t, g_t = dL/da_t with those
    neurons' activations scaled by `alpha` (a_t the unscaled activation, L the program's summed loss, T its
    next-token targets; every attended position, as ablation zeroes them all)."""
    from torch.utils.checkpoint import set_checkpoint_early_stop

    out = {(layer, int(n)): np.zeros(len(encoded)) for layer, idx in layer_map.items() for n in idx}
    kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def probed(a, layer, index):
        # a' = a with the chosen columns scaled by alpha, plus a zero probe there: dL/dprobe = dL/da'.
        # The graph through a is kept whole, so an earlier layer's neuron reaches the loss through
        # this layer's neurons (the chosen ones included) as it does in the model.
        at = index.to(a.device)
        chosen = a.index_select(-1, at)
        if layer not in kept:  # else a checkpointed block recomputed in the backward: the same probe
            kept[layer] = (chosen.detach(), torch.zeros_like(chosen, requires_grad=True))
        probe = kept[layer][1]
        return a.index_copy(-1, at, chosen * alpha + probe)

    pairs = [(loaded.hook_sites.neuron_input(layer), partial(probed, layer=layer, index=torch.as_tensor(idx)))
             for layer, idx in layer_map.items()]
    # the caller holds the lock across every pass of one estimate; the context nests in it
    with loaded.hooks(pairs), checkpointed_blocks(loaded, checkpointing), set_checkpoint_early_stop(False):
        for batch in batches:
            kept.clear()
            ids, mask = collate([encoded[i] for i in batch], loaded.pad_id, loaded.device)
            with torch.enable_grad():
                ce, _ = model_token_losses(loaded, ids, mask)
                layers = list(kept)
                grads = torch.autograd.grad(ce.sum(), [kept[layer][1] for layer in layers], allow_unused=True)
            for layer, grad in zip(layers, grads):
                original = kept[layer][0]
                if grad is None:
                    grad = torch.zeros_like(original)
                m = mask.to(original.device).float()
                weight = -m / m[:, 1:].sum(1, keepdim=True).clamp(min=1)       # (batch, seq)
                rows = torch.einsum("bs,bsk->bk", weight, (original.float() * grad.float())).cpu().numpy()
                for j, n in enumerate(layer_map[layer]):
                    out[(layer, int(n))][batch] = rows[:, j]
            kept.clear()
    return out


def path_attribution(loaded: LoadedModel, snippets: Sequence[Snippet], neurons: Iterable[Pair], *,
                     points: Quadrature | int = 4, max_length: int = 512, batch_tokens: int | None = None,
                     max_batch: int = 32, progress: Progress | None = None) -> pd.DataFrame:
    """Path-integrated estimate of the change in each language's mean loss when each (layer, neuron) alone
    is zeroed: -(1/T) sum_t a_t * sum_k w_k g_t(alpha_k), the mean over a program's targets, then over the
    language's programs (one row per neuron, one column per language, like `neuron_effects`).

    `points`: a Quadrature, or K for the K-point midpoint rule; `FIRST_ORDER` gives the first-order
    attribution. Cost: one forward+backward pass over the programs per neuron and point (points at 1.0
    share one pass for all neurons); see the module docstring."""
    loaded.require_weights()
    rule = quadrature(points) if isinstance(points, int) else points
    pairs = [(int(layer), int(n)) for layer, n in neurons]
    if not pairs:
        raise ValueError("no neurons to estimate")
    as_layer_map(pairs)  # validates the shape of the list
    sites, width = loaded.sites(), loaded.n_neurons
    for layer, n in pairs:
        if not (0 <= layer < len(sites) and 0 <= n < width):
            raise ValueError(f"neuron ({layer}, {n}) is outside {len(sites)} layers x {width} neurons")
    encoded = [encode(loaded, s.code, max_length) for s in snippets]
    plan = batch_plan(loaded, "backward", max_length)
    tokens = batch_tokens or plan.batch_tokens or max_length
    batches = length_batches([len(e.ids) for e in encoded], tokens, max_batch)
    unique = list(dict.fromkeys(pairs))
    # one pass per (point, neuron); every neuron shares the pass at alpha = 1 (the unmodified forward)
    jobs: list[tuple[float, float, list[Pair]]] = []
    for alpha, w in zip(rule.points, rule.weights):
        jobs += [(alpha, w, unique)] if alpha == 1.0 else [(alpha, w, [pair]) for pair in unique]
    per_program = {pair: np.zeros(len(snippets)) for pair in unique}
    with loaded.lock:
        for i, (alpha, w, group) in enumerate(jobs):
            scores = _gradient_pass(loaded, encoded, batches, as_layer_map(group), alpha,
                                    bool(plan.checkpointing and not batch_tokens))
            for pair in group:
                per_program[pair] += w * scores[pair]
            if progress:
                progress(i + 1, len(jobs))
    langs = list(dict.fromkeys(s.lang for s in snippets))
    members = {lang: np.array([i for i, s in enumerate(snippets) if s.lang == lang]) for lang in langs}
    rows = [{"layer": layer, "neuron": n, **{lang: float(per_program[(layer, n)][members[lang]].mean())
                                             for lang in langs}} for layer, n in pairs]
    return pd.DataFrame(rows, columns=["layer", "neuron", *langs])


# ------------------------------------------------------------------------------------------ strong neurons

def strong_neurons(stats: CorpusStats, per_kind: int = 10) -> pd.DataFrame:
    """The neurons worth checking, from statistics of the SELECTION side: the `per_kind` largest by mean |a|
    and the `per_kind` largest by |attribution| (each the maximum over languages), not typical ones. One row
    per neuron (layer, neuron, kind: "activation", "attribution" or "both", and both scores)."""
    if per_kind < 1:
        raise ValueError(f"per_kind must be >= 1, got {per_kind}")
    activation = np.abs(stats.mean_abs_activation()).max(axis=0)
    attribution = np.abs(stats.attribution()).max(axis=0)
    kinds: dict[Pair, list[str]] = {}
    for name, score in (("activation", activation), ("attribution", attribution)):
        for flat in np.argsort(-score.reshape(-1), kind="stable")[:per_kind]:
            kinds.setdefault(divmod(int(flat), score.shape[1]), []).append(name)
    rows = [{"layer": layer, "neuron": n, "kind": "both" if len(k) > 1 else k[0],
             "mean_abs_activation": float(activation[layer, n]), "abs_attribution": float(attribution[layer, n])}
            for (layer, n), k in kinds.items()]
    return pd.DataFrame(rows, columns=["layer", "neuron", "kind", "mean_abs_activation", "abs_attribution"])


# ------------------------------------------------------------------------------------------------ the check

DEFAULT_MIN_EFFECT = 1e-4  # nats: a change smaller than this has no sign worth comparing


@dataclass(frozen=True)
class AttributionCheck:
    """First-order and path-integrated estimates beside measured single-neuron zeroing, on the same
    (evaluation) programs: frames of one row per neuron, one column per language, in nats."""

    first_order: pd.DataFrame
    path: pd.DataFrame
    measured: pd.DataFrame
    quadrature: Quadrature
    programs: int
    min_effect: float = DEFAULT_MIN_EFFECT
    neurons: pd.DataFrame = field(default_factory=pd.DataFrame)  # strong_neurons' table, when chosen so

    ESTIMATES = ("first_order", "path")

    @property
    def languages(self) -> list[str]:
        return [c for c in self.measured.columns if c not in ("layer", "neuron")]

    def long(self) -> pd.DataFrame:
        """One row per (neuron, language): measured, first_order, path."""
        frames = {name: getattr(self, name).melt(["layer", "neuron"], self.languages, "language", name)
                  for name in ("measured", *self.ESTIMATES)}
        out = frames["measured"]
        for name in self.ESTIMATES:
            out = out.merge(frames[name], on=["layer", "neuron", "language"])
        return out

    def agreement(self) -> dict[str, dict]:
        """Per estimate: the share of (neuron, language) pairs with |measured| >= min_effect whose estimate
        has the measured sign, and Spearman / Pearson correlations with the measurement over all pairs."""
        from scipy.stats import pearsonr, spearmanr

        table = self.long()
        measured = table["measured"].to_numpy()
        signed = np.abs(measured) >= self.min_effect
        out = {}
        for name in self.ESTIMATES:
            est = table[name].to_numpy()
            varied = len(est) > 2 and np.ptp(est) > 0 and np.ptp(measured) > 0
            out[name] = {
                "sign_agreement": float((np.sign(est[signed]) == np.sign(measured[signed])).mean())
                if signed.any() else float("nan"),
                "signed_pairs": int(signed.sum()), "pairs": len(est),
                "spearman": float(spearmanr(est, measured).statistic) if varied else float("nan"),
                "pearson": float(pearsonr(est, measured).statistic) if varied else float("nan"),
                "mean_abs_error": float(np.abs(est - measured).mean()),
            }
        return out

    def disagreements(self, factor: float = 2.0) -> pd.DataFrame:
        """(neuron, language) pairs where an estimate and the measurement differ in sign or by more than
        `factor` in size, either of them at least min_effect; `problem` names which estimate and how."""
        table = self.long()
        problems = []
        for _, row in table.iterrows():
            found = []
            for name in self.ESTIMATES:
                est, meas = row[name], row["measured"]
                if max(abs(est), abs(meas)) < self.min_effect:
                    continue
                if np.sign(est) != np.sign(meas):
                    found.append(f"{name}: sign")
                elif max(abs(est), abs(meas)) > factor * min(abs(est), abs(meas)):
                    found.append(f"{name}: size")
            problems.append("; ".join(found))
        table["problem"] = problems
        return table[table["problem"] != ""].reset_index(drop=True)

    def summary(self) -> dict:
        return {"quadrature": self.quadrature.summary(), "programs": self.programs, "min_effect": self.min_effect,
                "neurons": len(self.measured), "languages": self.languages, "agreement": self.agreement(),
                "disagreements": self.disagreements().to_dict(orient="records"),
                "pairs": self.long().to_dict(orient="records"),
                "chosen": self.neurons.to_dict(orient="records")}


def attribution_check(loaded: LoadedModel, snippets: Sequence[Snippet], neurons: Iterable[Pair] | pd.DataFrame, *,
                      points: Quadrature | int = 4, max_length: int = 512, min_effect: float = DEFAULT_MIN_EFFECT,
                      progress: Progress | None = None) -> AttributionCheck:
    """First-order attribution, the path-integrated estimate and measured zeroing of each neuron, all on
    `snippets`: pass the EVALUATION side (neuro.code.split), never the programs the neurons were chosen on.
    `neurons` may be `strong_neurons`' table. Cost: (1 + K x neurons) backward passes and 1 + neurons
    forward passes over the programs."""
    table = neurons if isinstance(neurons, pd.DataFrame) else pd.DataFrame()
    pairs = [(int(r.layer), int(r.neuron)) for r in neurons.itertuples()] if isinstance(neurons, pd.DataFrame) \
        else [(int(layer), int(n)) for layer, n in neurons]
    rule = quadrature(points) if isinstance(points, int) else points
    steps = 1 + len(pairs) * (len(rule.points) + 1)

    def stage(offset: int):
        return None if progress is None else (lambda done, total: progress(offset + done, steps))

    first = path_attribution(loaded, snippets, pairs, points=FIRST_ORDER, max_length=max_length, progress=stage(0))
    path = path_attribution(loaded, snippets, pairs, points=rule, max_length=max_length, progress=stage(1))
    measured = neuron_effects(loaded, snippets, pairs, max_length=max_length,
                              progress=stage(1 + len(pairs) * len(rule.points)))
    return AttributionCheck(first, path, measured, rule, len(snippets), min_effect, table)
