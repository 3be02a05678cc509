"""Steering: scale a language's neurons while the model writes, and see whether it switches language
(neuro.analysis.steering): one prompt before and after, and the dose-response sweep against matched random
neurons."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from neuro.analysis.generation import GenerationParams, prompt_of
from neuro.analysis.selectivity import SelectionParams, select_neurons
from neuro.analysis.steering import SteerSpec, steer_prompt, steering_prompts
from neuro.cost import estimate, tokens_in
from neuro.params import spec
from neuro.progress import duration
from neuro.results.interventions import STEERING
from views.ui import corpus_key, corpus_split, page_header, pls_statistics
from views.ui.params import number_input
from views.ui.progress import progress_bar

CONTROL_NAMES = {"selected": "selected neurons", "matched": "matched random neurons (mean of draws)"}


def sweep_chart(table: pd.DataFrame, target: str) -> alt.Chart:
    """Share of continuations detected as `target` against the factor: the selected neurons beside the matched
    random ones, each with its 95 % interval as a band."""
    frame = table.assign(neurons=table["control"].map(CONTROL_NAMES))
    base = alt.Chart(frame).encode(
        x=alt.X("factor:Q", title="factor the target's neurons are scaled by"),
        color=alt.Color("neurons:N", title=None, sort=list(CONTROL_NAMES.values())))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("target low:Q"), y2="target high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("target share:Q", title=f"share of continuations detected as {target}", scale=alt.Scale(domain=[0, 1])),
        tooltip=["neurons", "factor", alt.Tooltip("target share:Q", format=".2f"),
                 alt.Tooltip("target low:Q", format=".2f"), alt.Tooltip("target high:Q", format=".2f"),
                 alt.Tooltip("loss change:Q", format="+.3f")])
    return alt.layer(band, line).properties(title=f"Continuations detected as {target} vs factor (95 % CI over tasks)",
                                            height=320)


@st.cache_resource(show_spinner=False, max_entries=4)
def _selection(key: str, top_fraction: float, _stats):
    return select_neurons(_stats, "pls", SelectionParams(top_fraction=top_fraction))


def _factors(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(f) for f in text.split(",") if f.strip())
    except ValueError:
        raise ValueError("factors: numbers separated by commas, e.g. 0,1,2,4,8") from None


model, corpus = page_header(
    "Steering",
    "Scale a language's neurons while the model writes: does it start writing that language? Against matched "
    "random neurons.")
split = corpus_split(corpus)
stats = pls_statistics(model, split.selection)
TOP = spec(SelectionParams, "top_fraction")
top_fraction = number_input(TOP, key="steer_top",
                            label=f"{TOP.label} (the selection's; other parameters: the defaults)")
selection = _selection(f"{model.identity}|{corpus_key(split.selection)}", float(top_fraction), stats)
counts = selection.counts_by_language()
languages = list(selection.languages)
targets = [lang for lang in languages if counts.get(lang)]
if not targets:
    st.info("No language has selected neurons with these selection parameters: nothing to steer with (raise the "
            "top fraction).")
    st.stop()
c1, c2, c3 = st.columns(3)
source = c1.selectbox("From (the prompts' language)", languages, key="steer_from")
target = c2.selectbox("To (its neurons are scaled)", [t for t in targets if t != source] or targets,
                      format_func=lambda lang: f"{lang} ({counts[lang]} neurons)", key="steer_to")
source_factor = c3.number_input("Source neurons' factor (1: untouched, 0: suppressed)", -10.0, 10.0, 1.0, 0.5,
                                key="steer_source_factor")
c1, c2, c3 = st.columns(3)
factor_text = c1.text_input("Factors", "0,1,2,4,8", key="steer_factors")
draws = int(c2.number_input("Matched random draws", 0, 50, 3, key="steer_draws"))
new_tokens = int(c3.number_input("New tokens", 8, 256, 48, 8, key="steer_tokens"))
try:
    spec = SteerSpec(source, target, _factors(factor_text), float(source_factor), draws)
except ValueError as err:
    st.error(str(err))
    st.stop()
params = GenerationParams(max_new_tokens=new_tokens)
st.caption(f"Neurons chosen on the selection side ({split.caption()}) by PLS (the Neurons page's defaults, top "
           f"fraction {top_fraction:.3f}); "
           "the language of a continuation is detected by tree-sitter parse errors plus lexical cues "
           "(neuro.code.syntax.detect_language), with its confidence.")

# --------------------------------------------------------------------------- one prompt
st.subheader("One prompt")
try:
    default = prompt_of(steering_prompts(split.evaluation, source)[0][0])
except ValueError:
    default = ""
prompt = st.text_area("Prompt (a code start or a docstring)", default, height=140, key="steer_prompt")
once = estimate("generation", model, 1 + len(spec.factors), tokens=new_tokens)
st.caption(f"Cost: {1 + len(spec.factors)} generations of {new_tokens} tokens · about {duration(once.seconds)} "
           f"({once.basis}).")
one_key = f"steer_one|{model.identity}|{hash((prompt, spec, params))}"
if st.button("Generate", key="steer_generate", type="primary"):
    try:
        st.session_state[one_key] = steer_prompt(model, prompt, spec, selection.neurons_for(target),
                                                 source=selection.neurons_for(source), params=params)
    except ValueError as err:
        st.error(str(err))
steered = st.session_state.get(one_key)
if steered is not None:
    left, right = st.columns(2)
    left.markdown(f"**Unchanged** · detected **{steered.before['lang']}** ({100 * steered.before['confidence']:.0f} %)")
    left.code(prompt + steered.before["completion"])
    factor = right.selectbox("Factor", list(spec.factors), index=len(spec.factors) - 1, key="steer_show_factor")
    row = steered.after[steered.after["factor"] == factor].iloc[0]
    right.markdown(f"**{target} neurons x{factor:g}** · detected **{row['lang']}** ({100 * row['confidence']:.0f} %)")
    right.code(prompt + row["completion"])
    st.dataframe(steered.after[["factor", "lang", "confidence", "error_target", "error_source", "completion"]]
                 .rename(columns={"error_target": f"parse errors as {target}", "error_source":
                                  f"parse errors as {source}"}), width="stretch", hide_index=True)

# --------------------------------------------------------------------------- sweep
st.subheader("Dose-response sweep")
try:
    chosen, _ = steering_prompts(split.evaluation, source)
except ValueError as err:
    st.info(str(err))
    st.stop()
steps = 1 + (1 + draws) * len(spec.factors)
st.caption(f"{steps} steps: each one greedy generation over the {len(chosen)} {source} prompts of the evaluation "
           f"side and one loss pass over those programs (the cost). Matched controls: the same number of neurons per "
           "layer, from the same decile of the score that selected them.")
sweep_cost = (estimate("generation", model, len(chosen), passes=steps, tokens=new_tokens).seconds
              + estimate("forward", model, len(chosen), passes=steps, tokens=tokens_in(chosen)).seconds)
st.caption(f"Cost: {steps} x ({len(chosen)} generations + one loss pass over {len(chosen)} programs) · about "
           f"{duration(sweep_cost)} ({once.basis}); kept in the cache, and an interrupted sweep resumes from its "
           "finished steps.")
args = dict(selection=selection, spec=spec, params=params)
result = STEERING.get(model, split.evaluation, compute=False, **args)
if result is None and st.button("Run sweep", key="steer_run", type="primary"):
    try:
        with progress_bar("Steering sweep") as progress:
            result = STEERING.get(model, split.evaluation, progress=progress, **args)
    except ValueError as err:
        st.error(str(err))
if result is not None:
    table = result.table()
    st.altair_chart(sweep_chart(table, target), width="stretch")
    shown = table.assign(neurons=table["control"].map(CONTROL_NAMES)).drop(columns="control")
    st.dataframe(shown.round(3), width="stretch", hide_index=True)
    st.caption(f"Intervals over {result.prompts['unit'].nunique()} evaluation tasks; p vs matched = (1 + draws with "
               f"a target share at least as high) / (1 + {result.draws}), one-sided"
               + (f" (smallest possible: {1 / (1 + result.draws):.3g})." if result.draws else "."))
