"""Neuron: one page for any FFN neuron, addressable by URL (?layer=7&neuron=541): what it reads (scores per
language, syntax, top contexts, activation distribution) and what it writes (direct logit effect), and the
loss change when it alone is zeroed. Thin: computation in neuro.analysis.neuron_card."""

import dataclasses

import pandas as pd
import streamlit as st

from neuro.analysis.neuron_card import (
    ABLATION_PASSES,
    ablate_neuron,
    logit_effect,
    neuron_scores,
    neuron_syntax,
    top_contexts,
)
from neuro.analysis.selectivity import SelectionParams, select_neurons
from neuro.choices import Normalization, Score, choices
from neuro.instrument.histogram import activation_histogram
from views.ui import charts, corpus_key, corpus_split, page_header, pls_statistics, small_enough_to_auto_run
from views.ui.links import NEURONS_PAGE, neuron_params, open_in_inspector, open_in_intervene, parse_neuron
from views.ui.progress import cost_caption, progress_bar

model, corpus = page_header(
    "Neuron",
    "One FFN neuron (an input channel of a block's FFN output projection), any layer and index: its scores per "
    "language, what it responds to, the tokens its output pushes up and down, and what silencing it costs.")
split = corpus_split(corpus)
corpus = split.selection  # as on the Neurons page: the statistics describe the selection side
stats = pls_statistics(model, corpus)
stats_key = f"{model.identity}|{corpus_key(corpus)}"
DEFAULTS = SelectionParams()  # the Neurons page's defaults: the class is said under these, score and scale chosen
SCALE_LABELS = {"none": "raw", "language": "per language", "language_layer": "per language and layer"}  # Normalization
AUTO_HISTOGRAM_TOKENS = 8_000  # above this the histogram waits for a click (the demo's ~26k tokens: ~1 min on 2 CPUs)


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_selection(key: str, params, _stats):
    return select_neurons(_stats, "pls", params)


@st.cache_resource(show_spinner="Tracing the top contexts (one forward pass per program)…", max_entries=32)
def cached_contexts(key: str, layer: int, neuron: int, _stats, _corpus, _model):
    return top_contexts(_stats, _corpus, _model, layer, neuron)


@st.cache_resource(show_spinner="Reading the output column through the unembedding…", max_entries=64)
def cached_logits(identity: str, layer: int, neuron: int, _model):
    return logit_effect(_model, layer, neuron, k=15)


def kept_histogram(key: str, layer: int, neuron: int, label: str):
    """The histogram, computed once per session and neuron (with a progress bar: not a cached function, which
    cannot replay a bar drawn outside it); the last 16 kept."""
    kept = st.session_state.setdefault("neuron_histograms", {})
    if key not in kept:
        with progress_bar(label) as progress:
            kept[key] = activation_histogram(model, corpus, layer, neuron, progress=progress)
        while len(kept) > 16:
            kept.pop(next(iter(kept)))
    return kept[key]


with st.expander("Score and scale of the class and the bars"):
    scores_here = [s for s in choices(Score) if s != "attribution" or stats.attribution_sum is not None]
    score = st.radio("Score", scores_here, horizontal=True, key="neuron_score",
                     index=scores_here.index(DEFAULTS.score),
                     format_func={"pls": "PLS (the paper)", "attribution": "attribution (signed)"}.get)
    scales = list(choices(Normalization))  # the alias's set and order; the selection's default preselected
    scale = st.radio("Scale", scales, horizontal=True, key="neuron_scale", index=scales.index(DEFAULTS.normalize),
                     format_func=lambda v: SCALE_LABELS[v] + (" (default)" if v == DEFAULTS.normalize else ""))
PARAMS = dataclasses.replace(DEFAULTS, score=score, normalize=scale)
selection = cached_selection(stats_key, PARAMS, stats)

# --------------------------------------------------------------------------- which neuron: the URL decides
raw = (st.query_params.get("layer"), st.query_params.get("neuron"))
wanted, problem = (None, None) if raw == (None, None) else parse_neuron(*raw, model.n_layers, model.n_neurons)
if problem:
    st.error(f"{problem} Pick a neuron below.")
if wanted is not None:  # set before the widgets exist: a link (or the URL typed in) always wins
    st.session_state["neuron_layer"], st.session_state["neuron_index"] = wanted
elif "neuron_layer" not in st.session_state:
    top = selection.selected()
    first = (int(top.layer.iloc[0]), int(top.neuron.iloc[0])) if len(top) else (0, 0)
    st.session_state["neuron_layer"], st.session_state["neuron_index"] = first


def _to_url() -> None:
    st.query_params.update(neuron_params(st.session_state["neuron_layer"], st.session_state["neuron_index"]))


c1, c2, c3 = st.columns([1, 1, 2])
layer = int(c1.number_input("Layer", 0, model.n_layers - 1, key="neuron_layer", on_change=_to_url))
neuron = int(c2.number_input("Neuron", 0, model.n_neurons - 1, key="neuron_index", on_change=_to_url))
if not problem:
    st.query_params.update(neuron_params(layer, neuron))
c3.page_link(NEURONS_PAGE, label="All neurons (table, layer map)", icon=":material/table:")

scores = neuron_scores(stats, selection, layer, neuron)
st.header(f"Layer {layer}, neuron {neuron}")
if scores.selected:
    what = f"specific to {scores.langs}" if scores.cls == "specific" else "universal"
    st.markdown(f"**Selected: {what}** (rank {scores.rank:,} of {scores.total:,} by max {scores.shown_label}).")
else:
    st.markdown(f"**Not selected** (rank {scores.rank:,} of {scores.total:,} by max {scores.shown_label}; "
                f"the top {100 * PARAMS.top_fraction:g} % can be).")
st.caption(f"Class under the Neurons page's default thresholds: candidate quantile {PARAMS.candidate_quantile}, "
           f"ratio {PARAMS.ratio}, top fraction {PARAMS.top_fraction}, {scores.shown_label}. "
           f"Site: {model.adapter.site_label().replace('{i}', str(layer))}, channel {neuron}.")
b1, b2 = st.columns(2)
if b1.button("Open in the token inspector", icon=":material/text_fields:", key="neuron_inspect"):
    open_in_inspector(layer, neuron)
if b2.button("Intervene on it (zero, scale, set, patch) on your code", icon=":material/tune:",
             key="neuron_intervene"):
    open_in_intervene(layer, neuron)

# --------------------------------------------------------------------------- input side
left, right = st.columns(2)
with left:
    values = pd.DataFrame({"language": list(scores.shown), "score": list(scores.shown.values())})
    st.altair_chart(charts.bars(values, "language", "score", color="language",
                                title=f"{scores.shown_label} per language"), width="stretch")
    if (values.score < 0).any():
        st.caption("Negative: zeroing the neuron is estimated to LOWER that language's loss.")
with right:
    profile = neuron_syntax(stats, layer, neuron)
    if profile is not None and len(profile):
        st.altair_chart(charts.bars(profile, "node_type", "mean_activation", horizontal=True,
                                    title="Mean activation per syntax node type"), width="stretch")
    else:
        st.caption("No syntax profile in these statistics.")
with st.expander("Every statistic per language (raw)"):
    st.dataframe(scores.table.round(5), hide_index=True, width="stretch")
    st.caption("pls: mean over programs of the token mean of |a x dL/da|; attribution: -(1/T) sum a x dL/da, the "
               "estimated loss change when zeroed; activation probability: share of tokens with act(gate) > 0.")

# --------------------------------------------------------------------------- output side
if not model.weights_loaded:  # cached results only: what follows reads the weights or runs the model
    st.info("The logit effect, top contexts, activation distribution and ablation read this model's weights: "
            "load the model itself (sidebar) to see them.")
    st.stop()
st.subheader("Direct logit effect")
effect = cached_logits(model.identity, layer, neuron, model)
frame = effect.frame()
left, right = st.columns(2)
left.altair_chart(charts.token_effects(frame[frame.direction == "promoted"], title="Promoted next tokens"),
                  width="stretch")
right.altair_chart(charts.token_effects(frame[frame.direction == "suppressed"], title="Suppressed next tokens"),
                   width="stretch")
st.caption(f"What one unit of activation adds to the next-token logits by this path alone: {effect.through}. "
           "Later blocks can change its effect; the norm's division by the state's size is left out (it is the "
           "same for every token).")

# --------------------------------------------------------------------------- contexts
st.subheader("Top contexts")
if stats.top_values is None:
    st.caption("These statistics have no top-k examples.")
else:
    contexts = cached_contexts(stats_key, layer, neuron, stats, corpus, model)
    scale = max((float(abs(c.activations).max()) for c in contexts), default=0.0)
    st.caption("Every token shaded by this neuron's activation on one scale (red positive, blue negative); the "
               "top token outlined; hover for the value and syntax node. One forward pass per program.")
    for i, c in enumerate(contexts):
        head, link = st.columns([4, 1])
        head.caption(f"#{c.rank}  {c.recorded:+.3f}  {c.lang}  {c.snippet_id}")
        if link.button("Token inspector", key=f"neuron_ctx_{i}", help="This program in the token inspector"):
            open_in_inspector(layer, neuron, next(s.code for s in corpus if s.id == c.snippet_id))
        st.html(charts.context_html(c.text, c.offsets, c.activations, c.node_types, scale, c.peak))

# --------------------------------------------------------------------------- distribution
st.subheader("Activation distribution")
tokens = int(stats.tokens.sum())
cost = (f"one forward pass up to layer {layer} over the {len(corpus):,} selection programs "
        f"({tokens:,} tokens)")
hist_key = f"{stats_key}|{layer}|{neuron}"
auto = small_enough_to_auto_run(model, corpus) and tokens <= AUTO_HISTOGRAM_TOKENS
if not auto and hist_key not in st.session_state.get("neuron_histograms", {}):
    cost_caption("forward", model, corpus, what=f"{cost}; at most, since the pass stops at the layer")
    auto = st.button("Compute the histogram", key="neuron_hist")
hist = kept_histogram(hist_key, layer, neuron, f"Histogram: {cost}") if auto else (
    st.session_state.get("neuron_histograms", {}).get(hist_key))
if hist is not None:
    st.altair_chart(charts.activation_histogram(hist.frame(), title=f"L{layer} N{neuron}: activation per "
                                                f"language ({len(hist.edges) - 1} bins)"), width="stretch")
    st.caption(f"Every real token of the selection programs (first position and padding left out), per language: "
               f"{', '.join(f'{k} {v:,}' for k, v in hist.tokens.items())}; streamed in fixed bins.")

# --------------------------------------------------------------------------- ablation
st.subheader("Ablate this neuron")
ablation_key = f"neuron_ablation|{model.identity}|{corpus_key(split.evaluation)}|{layer}|{neuron}"
st.caption(f"Zeroes this neuron alone and measures each language's mean loss on the {len(split.evaluation)} "
           f"evaluation programs (none used to compute the statistics): {ABLATION_PASSES} forward passes over them, "
           "one plain and one ablated.")
cost_caption("forward", model, split.evaluation, passes=ABLATION_PASSES, what="one plain and one ablated pass")
if st.button("Ablate this neuron", type="primary", key="neuron_ablate"):
    with progress_bar("Ablating one neuron") as progress:
        st.session_state[ablation_key] = ablate_neuron(model, split.evaluation, layer, neuron, progress=progress)
result = st.session_state.get(ablation_key)
if result is not None:
    table = result.table.rename(columns={"change": "loss change (nats)", "low": "95 % low", "high": "95 % high"})
    st.dataframe(table.round(4), hide_index=True, width="stretch")
    st.caption(f"Intervals from resampling evaluation {result.unit}s.")
