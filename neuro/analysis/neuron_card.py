"""Everything about one neuron, any (layer, neuron) of the model, not only the selected ones.

Input side: its per-language scores from the corpus statistics (and its class under a selection), its
syntax profile, and its top contexts with the activation of every token (one forward pass per shown
program). Output side: the direct logit effect, the neuron's output column (what a unit of its
activation adds to the residual stream) read through the final norm's per-dimension gain and the
unembedding, i.e. which next tokens it pushes up and down by itself. Measured: the activation histogram
per language (neuro.instrument.histogram) and the loss change when it alone is zeroed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from neuro.analysis.profiles import syntax_profile
from neuro.analysis.uncertainty import Interval, grouped_mean_bootstrap
from neuro.code.corpus import Snippet
from neuro.code.syntax import align_tokens
from neuro.instrument.ablation import ablation_losses, program_loss_pass, units_of
from neuro.instrument.histogram import ActivationHistogram, activation_histogram
from neuro.instrument.statistics import POSITION_BITS, CorpusStats, trace_tokens
from neuro.model.loading import LoadedModel
from neuro.progress import Progress

SCORE_LABELS = {"pls": "PLS", "attribution": "attribution", "probability": "activation probability"}
NORMALIZE_LABELS = {"language_layer": "scaled per language and layer", "language": "scaled per language",
                    "none": "raw"}


def check_neuron(n_layers: int, n_neurons: int, layer: int, neuron: int) -> None:
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} is outside 0..{n_layers - 1}")
    if not 0 <= neuron < n_neurons:
        raise ValueError(f"neuron {neuron} is outside 0..{n_neurons - 1}")


# --------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class NeuronScores:
    """Per-language statistics of one neuron (`table`: language, pls, attribution (NaN when not captured),
    activation probability, mean |activation|), and where a selection puts it: `shown` is the score the
    selection ranks by (`shown_label` names it, e.g. "PLS (scaled per language and layer)"), `cls`
    specific / universal / other, `langs` the languages it is specific to, `rank` by the maximum of the
    shown score over languages (1 = highest of all neurons)."""

    layer: int
    neuron: int
    table: pd.DataFrame
    shown_label: str
    shown: dict[str, float]
    cls: str
    langs: str
    rank: int
    total: int

    @property
    def selected(self) -> bool:
        return self.cls != "other"

    def summary(self) -> dict:
        return {"layer": self.layer, "neuron": self.neuron, "class": self.cls, "langs": self.langs,
                "selected": self.selected, "rank_by_max": self.rank, "neurons": self.total,
                "shown_score": self.shown_label, "shown": self.shown,
                "per_language": self.table.to_dict(orient="records")}


def shown_label(selection) -> str:
    """What a selection's per-language values are, for titles: the score and its scale."""
    if selection.method != "pls":
        return SCORE_LABELS["probability"]
    params = selection.params
    return f"{SCORE_LABELS[params.score]} ({NORMALIZE_LABELS[params.normalize]})"


def neuron_scores(stats: CorpusStats, selection, layer: int, neuron: int) -> NeuronScores:
    """The neuron's row of the statistics and of `selection` (a NeuronSelection on the same statistics)."""
    check_neuron(stats.n_layers, stats.n_neurons, layer, neuron)
    attribution = (stats.attribution()[:, layer, neuron] if stats.attribution_sum is not None
                   else np.full(len(stats.languages), np.nan))
    table = pd.DataFrame({
        "language": stats.languages,
        "pls": stats.pls()[:, layer, neuron] if stats.pls_sum is not None else np.nan,
        "attribution": attribution,
        "activation probability": stats.activation_probability()[:, layer, neuron],
        "mean |activation|": stats.mean_abs_activation()[:, layer, neuron]})
    row = selection.frame.iloc[layer * selection.n_neurons + neuron]
    assert int(row.layer) == layer and int(row.neuron) == neuron, "selection frame out of order"
    max_col = f"max_{selection.value_name}"
    rank = int((selection.frame[max_col].to_numpy() > float(row[max_col])).sum()) + 1
    shown = {lang: float(row[col]) for lang, col in zip(selection.languages, selection.value_columns)}
    return NeuronScores(layer, neuron, table, shown_label(selection), shown, str(row.cls), str(row.langs), rank,
                        selection.total)


def neuron_syntax(stats: CorpusStats, layer: int, neuron: int, top: int = 15) -> pd.DataFrame | None:
    """The syntax profile's `top` node types (None when the statistics have no profiles)."""
    return None if stats.type_sum is None else syntax_profile(stats, layer, neuron).head(top)


# --------------------------------------------------------------------------- contexts
@dataclass(frozen=True)
class TokenContext:
    """A window of one program around one of the neuron's top activations, with the activation at every
    token of the window. `offsets` are relative to `text`; `peak` indexes the top token among them;
    `recorded` is the value the statistics kept, `activations[peak]` the one traced again."""

    rank: int
    snippet_id: str
    lang: str
    text: str
    start: int  # character offset of `text` in the program
    offsets: list[tuple[int, int]]
    activations: np.ndarray
    node_types: list[str | None]
    peak: int
    recorded: float

    def summary(self) -> dict:
        tokens = [{"text": self.text[a:b], "activation": float(v)} for (a, b), v in zip(self.offsets, self.activations)]
        return {"rank": self.rank, "snippet_id": self.snippet_id, "lang": self.lang, "text": self.text,
                "start": self.start, "recorded": self.recorded, "peak_token": tokens[self.peak]["text"],
                "tokens": tokens}


def _window(code: str, start: int, end: int, lines: int) -> tuple[int, int]:
    """Character span of `lines` lines before and after the line(s) holding [start, end)."""
    lo = start
    for _ in range(lines + 1):
        lo = code.rfind("\n", 0, max(lo - 1, 0)) + 1 if lo > 0 else 0
    hi = end
    for _ in range(lines + 1):
        nxt = code.find("\n", hi)
        if nxt < 0:
            return lo, len(code)
        hi = nxt + 1
    return lo, hi


def top_contexts(stats: CorpusStats, snippets: Sequence[Snippet], loaded: LoadedModel, layer: int, neuron: int,
                 count: int = 5, lines: int = 3, max_length: int | None = None) -> list[TokenContext]:
    """The neuron's top activations in up to `count` distinct programs (highest first), each re-run through
    the model (one forward pass per program, up to `layer`) so every token of the window is shaded."""
    if stats.top_values is None or stats.top_ids is None:  # captured together
        raise ValueError("these statistics were captured without top-k examples")
    check_neuron(stats.n_layers, stats.n_neurons, layer, neuron)
    ids = stats.meta.get("snippet_ids", [])
    by_id = {s.id: s for s in snippets}
    max_length = max_length or stats.meta.get("max_length", 512)
    out: list[TokenContext] = []
    seen: set[str] = set()
    for rank, (value, gid) in enumerate(zip(stats.top_values[layer, :, neuron], stats.top_ids[layer, :, neuron])):
        if len(out) >= count:
            break
        if gid < 0 or not value > float("-inf"):
            continue
        index, position = int(gid) >> POSITION_BITS, int(gid) & ((1 << POSITION_BITS) - 1)
        snippet = by_id.get(ids[index]) if index < len(ids) else None
        if snippet is None or snippet.id in seen:
            continue
        trace = trace_tokens(loaded, snippet.code, layers=[layer], max_length=max_length)
        if position >= len(trace.offsets):
            continue
        seen.add(snippet.id)
        lo, hi = _window(snippet.code, *trace.offsets[position], lines)
        keep = [t for t, (a, b) in enumerate(trace.offsets) if b > a and a >= lo and b <= hi]
        if position not in keep:
            continue
        offsets = [(trace.offsets[t][0] - lo, trace.offsets[t][1] - lo) for t in keep]
        nodes = align_tokens(snippet.code, snippet.lang, [trace.offsets[t] for t in keep])
        out.append(TokenContext(rank + 1, snippet.id, snippet.lang, snippet.code[lo:hi], lo, offsets,
                                trace.activations[0][keep, neuron].astype(np.float32), [n.type for n in nodes],
                                keep.index(position), float(value)))
    return out


# --------------------------------------------------------------------------- logit effect
UNEMBED_ROWS = 8192  # vocabulary rows read through the logit effect at a time
@dataclass(frozen=True)
class TokenEffect:
    token_id: int
    token: str
    logit: float


@dataclass(frozen=True)
class LogitEffect:
    """The direct effect of one unit of the neuron's activation on the next-token logits: unembedding x
    (final norm gain * output column). `promoted` highest first, `suppressed` lowest first."""

    layer: int
    neuron: int
    promoted: list[TokenEffect]
    suppressed: list[TokenEffect]
    column_norm: float
    through: str  # how the column reached the logits, for captions

    def frame(self) -> pd.DataFrame:
        rows = [{"direction": "promoted", "rank": i + 1, "token": t.token, "token_id": t.token_id, "logit": t.logit}
                for i, t in enumerate(self.promoted)]
        rows += [{"direction": "suppressed", "rank": i + 1, "token": t.token, "token_id": t.token_id,
                  "logit": t.logit} for i, t in enumerate(self.suppressed)]
        return pd.DataFrame(rows, columns=["direction", "rank", "token", "token_id", "logit"])

    def summary(self) -> dict:
        return {"layer": self.layer, "neuron": self.neuron, "column_norm": self.column_norm, "through": self.through,
                "promoted": [vars(t) for t in self.promoted], "suppressed": [vars(t) for t in self.suppressed]}


def output_column(loaded: LoadedModel, layer: int, neuron: int) -> torch.Tensor:
    """What one unit of the neuron's activation writes into the residual stream: its column of the FFN output
    projection (an nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out))."""
    check_neuron(loaded.n_layers, loaded.n_neurons, layer, neuron)
    down = loaded.sites()[layer].down
    weight = down.weight
    if isinstance(down, nn.Linear):
        return weight[:, neuron]
    if weight.shape[0] == loaded.n_neurons:
        return weight[neuron, :]
    raise RuntimeError(f"layer {layer}: output projection weight {tuple(weight.shape)} has no input of width "
                       f"{loaded.n_neurons}")


def norm_gain(norm: nn.Module, hidden: int, device, dtype) -> torch.Tensor:
    """The final norm's per-dimension gain, measured rather than read: the norm applied to a zero-mean,
    unit-RMS probe v and to -v gives (g * v + b, -g * v + b) for a LayerNorm or RMSNorm (whatever its
    parameterisation, e.g. Gemma's 1 + w), so g = (f(v) - f(-v)) / 2v. Two probes cover odd widths."""
    probes = []
    for shift in (0, 1):
        v = torch.zeros(hidden, dtype=torch.float64)
        idx = torch.arange(shift, hidden - (hidden - shift) % 2)
        v[idx] = torch.where(torch.arange(len(idx)) % 2 == 0, 1.0, -1.0).double()
        v *= (hidden / max(len(idx), 1)) ** 0.5
        probes.append(v)
    gain = torch.zeros(hidden, dtype=torch.float64)
    with torch.inference_mode():
        for v in probes:
            x = v.to(device=device, dtype=dtype)[None, None]
            diff = (norm(x) - norm(-x))[0, 0].double().cpu()
            hit = (v != 0) & (gain == 0)
            gain[hit] = diff[hit] / (2 * v[hit])
            if hidden % 2 == 0:
                break
    return gain


def logit_effect(loaded: LoadedModel, layer: int, neuron: int, k: int = 10) -> LogitEffect:
    """The k tokens the neuron's output column promotes and suppresses most through the final norm's gain
    and the unembedding (its bias, the same for any input, left out)."""
    loaded.require_weights()
    column = output_column(loaded, layer, neuron).detach()
    unembed = loaded.unembedding.weight.detach()
    norm = loaded.final_norm
    gain = norm_gain(norm, column.shape[0], column.device, column.dtype)
    direction = (column.double().cpu() * gain).to(device=unembed.device, dtype=torch.float32)
    logits = torch.empty(unembed.shape[0])
    with torch.inference_mode():  # in float32, a block of rows at a time (no float copy of a 128k vocabulary)
        for start in range(0, unembed.shape[0], UNEMBED_ROWS):
            logits[start:start + UNEMBED_ROWS] = (unembed[start:start + UNEMBED_ROWS].float() @ direction).cpu()
    vocab = len(loaded.tokenizer)
    logits = logits[:vocab] if logits.shape[0] > vocab else logits  # padded vocabularies: rows no id names
    k = min(k, logits.shape[0])
    top, bottom = torch.topk(logits, k), torch.topk(-logits, k)

    def effects(values, indices, sign):
        return [TokenEffect(int(i), loaded.tokenizer.decode([int(i)]), sign * float(v))
                for v, i in zip(values, indices)]
    through = (f"output column of L{layer} N{neuron} (norm {float(column.float().norm()):.3g}) x the final "
               f"{type(norm).__name__}'s gain x the unembedding")
    return LogitEffect(layer, neuron, effects(top.values, top.indices, 1), effects(bottom.values, bottom.indices, -1),
                       float(column.float().norm()), through)


# --------------------------------------------------------------------------- single-neuron ablation
ABLATION_PASSES = 2  # one unablated pass, one with the neuron zeroed


@dataclass(frozen=True)
class NeuronAblation:
    """Change of each language's mean loss (nats) when the neuron alone is zeroed, with its interval from
    resampling the evaluation units (tasks where the corpus is parallel, else programs)."""

    layer: int
    neuron: int
    table: pd.DataFrame  # language, programs, loss, ablated, change, low, high
    unit: str
    intervals: dict[str, Interval] = field(repr=False)

    def summary(self) -> dict:
        return {"layer": self.layer, "neuron": self.neuron, "unit": self.unit,
                "per_language": self.table.to_dict(orient="records")}


def ablate_neuron(loaded: LoadedModel, snippets: Sequence[Snippet], layer: int, neuron: int, *,
                  max_length: int = 512, progress: Progress | None = None) -> NeuronAblation:
    """Zero (layer, neuron) and measure each program's loss change (`ABLATION_PASSES` passes over `snippets`,
    which should be evaluation programs the neuron was not chosen on)."""
    check_neuron(loaded.n_layers, loaded.n_neurons, layer, neuron)
    run = program_loss_pass(loaded, snippets, max_length=max_length)
    base = run()
    if progress:
        progress(1, ABLATION_PASSES)
    ablated = ablation_losses(loaded, run, {layer: [neuron]})
    if progress:
        progress(2, ABLATION_PASSES)
    units, unit = units_of(snippets)
    rows, intervals = [], {}
    for lang in dict.fromkeys(s.lang for s in snippets):
        idx = [i for i, s in enumerate(snippets) if s.lang == lang]
        change = ablated[idx] - base[idx]
        interval = grouped_mean_bootstrap(change, [units[i] for i in idx], unit=unit)
        intervals[lang] = interval
        rows.append({"language": lang, "programs": len(idx), "loss": float(base[idx].mean()),
                     "ablated": float(ablated[idx].mean()), "change": float(change.mean()),
                     "low": interval.low, "high": interval.high})
    return NeuronAblation(layer, neuron, pd.DataFrame(rows), unit, intervals)


# --------------------------------------------------------------------------- the whole card (CLI)
@dataclass(frozen=True)
class NeuronCard:
    scores: NeuronScores
    syntax: pd.DataFrame | None
    contexts: list[TokenContext]
    logits: LogitEffect
    histogram: ActivationHistogram | None = None
    ablation: NeuronAblation | None = None

    def summary(self) -> dict:
        return {**self.scores.summary(),
                "syntax_profile": None if self.syntax is None else self.syntax.to_dict(orient="records"),
                "contexts": [c.summary() for c in self.contexts], "logit_effect": self.logits.summary(),
                "histogram": self.histogram.summary() if self.histogram else None,
                "ablation": self.ablation.summary() if self.ablation else None}


def neuron_card(loaded: LoadedModel, stats: CorpusStats, selection, snippets: Sequence[Snippet], layer: int,
                neuron: int, *, k: int = 10, contexts: int = 5, histogram: bool = True,
                ablate_on: Sequence[Snippet] | None = None, max_length: int = 512,
                progress: Progress | None = None) -> NeuronCard:
    """Scores, syntax profile, top contexts and logit effect of (layer, neuron); its histogram over `snippets`
    (the programs the statistics describe) unless `histogram` is False; its ablation on `ablate_on`."""
    check_neuron(loaded.n_layers, loaded.n_neurons, layer, neuron)
    ctx = top_contexts(stats, snippets, loaded, layer, neuron, count=contexts) if stats.top_values is not None else []
    return NeuronCard(
        neuron_scores(stats, selection, layer, neuron), neuron_syntax(stats, layer, neuron), ctx,
        logit_effect(loaded, layer, neuron, k),
        activation_histogram(loaded, snippets, layer, neuron, max_length=max_length, progress=progress)
        if histogram else None,
        ablate_neuron(loaded, ablate_on, layer, neuron, max_length=max_length) if ablate_on else None)
