"""Layers: where the model encodes language-specific syntax and where shared semantics (concept layers)."""

import altair as alt
import streamlit as st

import charts
from neuro.layers import cached_layer_report
from ui import page_header, small_enough_to_auto_run

model, corpus = page_header(
    "Layers",
    "Per layer: can a probe tell the language (syntax-specific), do parallel programs in different "
    "languages align (shared semantics), can a probe read the syntax node of a token, and how much "
    "does the layer's FFN matter. Concept layers are where alignment peaks after language identity fades.")
if len({s.task for s in corpus}) == len(corpus):
    st.warning("This corpus has no parallel programs (no task appears in two languages): cross-language "
               "alignment cannot be measured. Use the demo corpus or HumanEval-X.")

report = cached_layer_report(model, corpus, compute=False)
if report is None:
    run = small_enough_to_auto_run(model, corpus) or st.button("Compute layer scores", type="primary")
    if not run:
        st.info("Layer scores are not cached for this model and corpus yet.")
        st.stop()
    bar = st.progress(0.0, text="Capturing hidden states…")
    report = cached_layer_report(model, corpus, progress=lambda d, t: bar.progress(
        d / t, text=f"Layer scores: step {d}/{t}"))
    bar.empty()

override = st.multiselect("Concept layers (override the rule)", list(range(model.n_layers)),
                          default=report.concept_layers, key="concept_override")
concept = sorted(override) or report.concept_layers
st.session_state["concept_layers"] = concept
st.markdown(f"**Concept layers: {concept}.** {report.rule if concept == report.concept_layers else 'Set by you.'}")

frame = report.normalized().dropna(subset=["value"])
main_scores = ["lang_id_acc", "align_mrr", "align_acc", "align_cka", "syntax_acc", "contribution"]
frame = frame[frame.score.isin(main_scores)]
lines = alt.Chart(frame, title="Every per-layer score, min-max normalized across layers").mark_line(point=True).encode(
    x=alt.X("layer:O"), y=alt.Y("value:Q", title="normalized score"), color="score:N",
    tooltip=["layer", "score", alt.Tooltip("raw:Q", format=".4f")])
bands = alt.Chart(frame[frame.layer.isin(concept)].drop_duplicates("layer")).mark_rect(
    opacity=0.15, color="#f4a261").encode(x="layer:O")
st.altair_chart(bands + lines, width="stretch")
st.caption("lang_id_acc: language-ID probe on pooled states; align_*: retrieval of the same task in another "
           "language (accuracy@1, MRR) and linear CKA; syntax_acc: token -> node-type probe; contribution: loss "
           "increase when the layer's FFN is silenced. Shaded: concept layers.")

layer = st.slider("Layer for the language-pair view", 0, model.n_layers - 1, concept[len(concept) // 2],
                  key="layers_pair_layer")
metric = st.radio("Pair metric", ["mrr", "accuracy", "cka"], horizontal=True, key="layers_pair_metric")
if report.pairs.empty:
    st.info("No language pairs share tasks in this corpus.")
else:
    st.altair_chart(charts.matrix_heatmap(report.pair_matrix(layer, metric).round(3), "query", "candidates", metric,
                                          title=f"Cross-language {metric} at layer {layer}", scheme="greens"),
                    width="stretch")
st.dataframe(report.scores.round(4), width="stretch", hide_index=True)
st.download_button("Download per-layer scores (CSV)", report.scores.to_csv(index=False), "layer_scores.csv")
