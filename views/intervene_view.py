"""The Neurons page's "Intervene" tab: change chosen neurons on pasted code and see, token by token, what the
model predicts differently (neuro.analysis.token_effects: two forward passes)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from neuro.analysis.token_effects import intervene_tokens
from neuro.code.split import CorpusSplit
from neuro.instrument.intervention import OPS, Intervention
from neuro.model.loading import LoadedModel
from neuro.results.interventions import MEANS
from views.ui import charts
from views.ui.progress import cost_caption, progress_bar

MAX_PASTE = 20_000
CHOICES = {"one": "one neuron", "language": "a language's selected set", "universal": "the universal set",
           "custom": "a custom list"}
OP_HELP = {"zero": "a <- 0 (ablation)", "mean": "a <- its mean activation over a language's programs",
           "scale": "a <- factor x a", "set": "a <- a value", "patch": "a <- its activation on a second input, "
           "position by position (over the shorter input's length)"}


def _parse_pairs(text: str) -> list[tuple[int, int]]:
    pairs = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        layer, sep, neuron = item.partition(":")
        if not sep or not layer.strip().isdigit() or not neuron.strip().isdigit():
            raise ValueError(f"write LAYER:NEURON pairs separated by commas (e.g. 3:17, 5:2); {item!r} is not one")
        pairs.append((int(layer), int(neuron)))
    return pairs


def _neurons(model: LoadedModel, selection) -> list[tuple[int, int]]:
    which = st.radio("Neurons", list(CHOICES), format_func=CHOICES.get, horizontal=True, key="iv_which")
    if which == "one":
        c1, c2 = st.columns(2)
        layer = c1.number_input("Layer", 0, model.n_layers - 1, model.n_layers // 2, key="iv_layer")
        neuron = c2.number_input("Neuron", 0, model.n_neurons - 1, 0, key="iv_neuron")
        return [(int(layer), int(neuron))]
    if which == "language":
        lang = st.selectbox("Language", selection.languages, key="iv_group")
        return selection.neurons_for(lang, as_pairs=True)
    if which == "universal":
        return selection.neurons_for("universal", as_pairs=True)
    return _parse_pairs(st.text_input("Neurons (LAYER:NEURON, comma-separated)", "0:0", key="iv_custom"))


def _intervention(model: LoadedModel, split: CorpusSplit, neurons, code: str) -> Intervention | None:
    op = st.selectbox("Operation", OPS, format_func=lambda o: f"{o}: {OP_HELP[o]}", key="iv_op")
    if op == "scale":
        return Intervention(neurons, op, float(st.number_input("Factor", -100.0, 100.0, 2.0, 0.5, key="iv_factor")))
    if op == "set":
        return Intervention(neurons, op, float(st.number_input("Value", -100.0, 100.0, 0.0, 0.1, key="iv_value")))
    if op == "mean":
        langs = list(dict.fromkeys(s.lang for s in split.selection))
        lang = st.selectbox("Mean over the programs of", langs, key="iv_mean_lang")
        means = MEANS.get(model, split.selection, compute=False)
        if means is None:
            st.caption(f"The mean activations need one forward pass over the {len(split.selection)} selection "
                       "programs (kept in the cache afterwards).")
            cost_caption("forward", model, split.selection, what="the mean activations")
            if not st.button("Compute mean activations", key="iv_means"):
                return None
            with progress_bar("Mean activations (one forward pass)") as progress:
                means = MEANS.get(model, split.selection, progress=progress)
        return Intervention.mean(neurons, lang, means)
    if op == "patch":
        other = next((s.code for s in split.evaluation if s.code != code), code)
        source = st.text_area("Second input (its activations are substituted)", other, height=150, key="iv_source")
        return Intervention(neurons, op, source=source[:MAX_PASTE])
    return Intervention(neurons, op)


def intervene_panel(model: LoadedModel, split: CorpusSplit, selection) -> None:
    st.markdown("Change chosen neurons at the input of their layer's FFN output projection (where they are "
                "captured) and compare, token by token, the **next-token loss** and the model's **top-1 "
                "prediction** before and after: two forward passes of your code.")
    prefill = next((s.code for s in split.evaluation if s.lang == "python"), split.evaluation[0].code)
    code = st.text_area("Code", prefill, height=200, key="iv_code")
    if len(code) > MAX_PASTE:
        st.warning(f"Only the first {MAX_PASTE:,} characters are used.")
        code = code[:MAX_PASTE]
    if not code.strip():
        st.info("Paste some code to intervene on.")
        return
    try:
        neurons = _neurons(model, selection)
        if not neurons:
            st.info("No neurons in this set with the current selection parameters.")
            return
        intervention = _intervention(model, split, neurons, code)
        if intervention is None:
            return
        key = f"iv|{model.identity}|{hash((code, intervention))}"
        effects = st.session_state.get(key)
        if effects is None:
            effects = st.session_state[key] = intervene_tokens(model, code, [intervention])
    except ValueError as err:
        st.error(str(err))
        return
    c1, c2, c3 = st.columns(3)
    c1.metric("Summed loss change (nats)", f"{effects.summed_change:+.3f}",
              help="Sum over the tokens of (loss after - loss before): the change of the code's summed next-token "
                   "loss.")
    c2.metric("Mean change per token", f"{effects.mean_change:+.4f}")
    c3.metric("Top-1 predictions changed", f"{len(effects.changed)} of {len(effects.delta)}")
    st.caption(f"{intervention.label()}. Red: the token became harder to predict, blue: easier; a box marks a "
               "changed top-1 prediction; hover a token for the numbers.")
    for p, n in effects.patched:
        if p < n:
            st.caption(f"Patched the first {p} of {n} positions: the second input is shorter.")
    values = np.concatenate([[0.0], effects.delta])
    labels = ["(first token: not predicted)"] + [f"loss {b:.3f} -> {a:.3f}; top-1 {tb!r} -> {ta!r}"
                                                 for b, a, tb, ta in zip(effects.loss_before, effects.loss_after,
                                                                         effects.top1_before, effects.top1_after)]
    st.html(charts.token_html(code, effects.offsets, values, labels))
    table = effects.table()
    st.dataframe(table.round(4), width="stretch", hide_index=True)
