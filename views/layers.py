"""Layers: where the model encodes language-specific syntax and where shared semantics (concept layers)."""

import altair as alt
import streamlit as st

from neuro.analysis.lens import LogitLens, logit_lens
from neuro.results.layers import LAYER_REPORT
from views.ui import charts, corpus_split, lazy_tabs, page_header, small_enough_to_auto_run, truncation_caption
from neuro.cost import Meter
from views.ui.progress import cancelled, cost_caption, metered_bar
from views.ui.state import scope_key, scoped_state

model, corpus = page_header(
    "Layers",
    "Per layer: can a probe tell the language (syntax-specific), do parallel programs in different "
    "languages align (shared semantics), can a probe read the syntax node of a token, and how much "
    "does the layer's FFN matter. Concept layers are where alignment peaks after language identity fades. "
    "The logit lens reads each layer through the model's output head.")


# --------------------------------------------------------------------------- layer scores
def scores_tab() -> None:
    if len({s.task for s in corpus}) == len(corpus):
        st.warning("This corpus has no parallel programs (no task appears in two languages): cross-language "
                   "alignment cannot be measured. Use the demo corpus or HumanEval-X.")
    split = corpus_split(corpus)
    report = LAYER_REPORT.get(model, split.selection, compute=False)
    if report is None:
        est = cost_caption("layer_scores", model, split.selection,
                           what="one forward pass keeping every layer, then the probes and one pass per layer "
                                "with its FFN silenced")
        auto = small_enough_to_auto_run(model, split.selection) and not est.long and not cancelled("layers_cancel")
        run = auto or st.button("Compute layer scores", type="primary", key="layers_compute")
        if not run:
            st.info("Layer scores are not cached for this model and corpus yet.")
            return
        with metered_bar("Layer scores (programs forwarded, then layers probed)", "layer_scores", model,
                         len(split.selection), cancel="layers_cancel" if est.long else None) as progress:
            report = LAYER_REPORT.get(model, split.selection, progress=progress)
    override = st.multiselect("Concept layers (override the rule)", list(range(model.n_layers)),
                              default=report.concept_layers, key=f"concept_override|{scope_key(model, corpus)}")
    concept = sorted(override) or report.concept_layers
    scoped_state(model, corpus).concept_layers = concept
    st.markdown(f"**Concept layers: {concept}.** {report.rule if concept == report.concept_layers else 'Set by you.'}")
    st.caption(f"Every score on this tab comes from the selection side, so the concept layers are never chosen on "
               f"the programs the Clones page evaluates them on. {split.caption()}.")
    by_center = report.meta.get("concept_layers_by_center")
    if by_center:
        st.caption("Alignment is measured after the centring clone search uses (each program minus its language's "
                   "mean, fitted on these selection-side programs), so the rule picks where centred retrieval "
                   f"peaks. Measured on raw states it would pick {by_center.get('none')}; after subtracting one "
                   f"corpus mean, {by_center.get('corpus')}. The probes are cross-validated "
                   f"{report.meta.get('probe_folds', '')}.")
    truncation_caption(model, split.selection)

    frame = report.normalized().dropna(subset=["value"])
    main_scores = ["lang_id_acc", "align_mrr", "align_acc", "align_cka", "syntax_acc", "contribution"]
    frame = frame[frame.score.isin(main_scores)]
    normalize = st.toggle("Stretch each score to [0, 1] across layers (min-max)", value=False, key="layers_normalize",
                          help="Off: the raw values (accuracies, MRR and CKA on 0-1, contribution in nats), so a "
                               "score that barely moves is drawn flat. On: each score's own min and max fill the "
                               "axis, which shows its shape and hides how little it may vary.")
    if normalize:
        title, y = "Every per-layer score, min-max normalized across layers", alt.Y("value:Q", title="normalized score")
    else:
        title = "Every per-layer score (raw values)"
        y = alt.Y("raw:Q", title="score (accuracy, MRR, CKA: 0 to 1; contribution: nats)")
    lines = alt.Chart(frame, title=title).mark_line(point=True).encode(
        x=alt.X("layer:O"), y=y, color=alt.Color("score:N", sort=main_scores),
        tooltip=["layer", "score", alt.Tooltip("raw:Q", format=".4f")])
    bands = alt.Chart(frame[frame.layer.isin(concept)].drop_duplicates("layer")).mark_rect(
        opacity=0.15, color="#f4a261").encode(x="layer:O")
    st.altair_chart(bands + lines, width="stretch")
    st.caption("lang_id_acc: language-ID probe on pooled states; align_*: retrieval of the same task in another "
               "language (accuracy@1, MRR, after per-language centring) and linear CKA; syntax_acc: token -> "
               "node-type probe; contribution: loss "
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


# --------------------------------------------------------------------------- logit lens
LENS_CELL = (56, 30)  # px per token column and per layer row: wide enough for a 7-character label at font 10


def lens_grid(chart: alt.LayerChart) -> alt.LayerChart:
    """Cells of a fixed size (the grid scrolls sideways) rather than squeezed into the page's width, where 32
    tokens left cells too small to read."""
    return chart.properties(width=alt.Step(LENS_CELL[0]), height=alt.Step(LENS_CELL[1]))


def lens_tab() -> None:
    st.markdown("The **logit lens** reads each block's output through the model's final norm and output head, "
                "as if the model stopped there: which next token does that layer already predict, and how "
                "likely is the token that really comes next? The last layer is the model's own output.")
    example = next((s.code for s in corpus if s.lang == "python"), corpus[0].code)
    code = st.text_area("Program", value=example, height=180, key="lens_code")
    if not code.strip():
        st.info("Paste a program to read.")
        return
    memo = scoped_state(model, corpus).lens
    lens: LogitLens | None = memo.get(code)
    if lens is None:
        cost_caption("lens", model, 1, what="one forward pass, every layer read through the output head")
        try:
            with st.spinner("One forward pass…"), Meter("lens", model, 1) as meter:
                report = meter.wrap()
                report(0, 1)
                lens = logit_lens(model, code)
                report(1, 1)
        except ValueError as err:
            st.info(str(err))
            return
        memo.clear()
        memo[code] = lens
    if lens.truncated_from:
        st.warning(f"Only the first {len(lens.token_ids):,} of its {lens.truncated_from:,} tokens are read.")
    summary = lens.layer_summary()
    long = summary.melt(id_vars="layer", value_vars=["top-1 accuracy", "top-5 accuracy", "agrees with output"],
                        var_name="score")
    left, right = st.columns(2)
    left.altair_chart(alt.Chart(long, title="Next-token accuracy per layer").mark_line(point=True).encode(
        x="layer:O", y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1])), color="score:N",
        tooltip=["layer", "score", alt.Tooltip("value:Q", format=".3f")]), width="stretch")
    right.altair_chart(alt.Chart(summary, title="Loss on the actual next token (nats)").mark_line(
        point=True, color="#d62728").encode(x="layer:O", y=alt.Y("next-token loss:Q"),
                                            tooltip=["layer", alt.Tooltip("next-token loss:Q", format=".3f")]),
        width="stretch")
    n = len(lens.token_ids)
    window = 32
    start = st.slider("From token", 0, max(0, n - 1), 0, step=1, key="lens_start",
                      help=f"The grid shows {window} tokens at a time.") if n > window else 0
    frame = lens.token_frame(start, start + window)
    frame["label"] = frame.top1.map(lambda t: charts.short_label(charts.visible_whitespace(t), 7))
    frame["column"] = (frame.position.astype(str).str.zfill(4) + " "
                       + frame.token.map(lambda t: charts.short_label(charts.visible_whitespace(t), 12)))
    # the token axis's order is the tokens' positions, given explicitly: with no order given the browser kept a
    # previous program's categories and appended the new ones, so columns sat under the wrong tokens
    columns = list(frame.sort_values("position")["column"].unique())
    base = alt.Chart(frame, title="Each layer's top-1 next token (colour: probability of the actual next token)")
    cells = base.mark_rect().encode(
        x=alt.X("column:N", title="position and token", sort=columns,
                axis=alt.Axis(labelAngle=-70, labelOverlap=False, labelFontSize=10)),
        y=alt.Y("layer:O", sort="descending"),
        color=alt.Color("next_prob:Q", title="p(next)", scale=alt.Scale(scheme="blues", domain=[0, 1])),
        tooltip=["position", "token", "layer", "top1", alt.Tooltip("top1_prob:Q", format=".3f"), "next",
                 alt.Tooltip("next_prob:Q", format=".3f"), "next_rank"])
    labels = base.mark_text(fontSize=10).encode(x=alt.X("column:N", sort=columns),
                                                y=alt.Y("layer:O", sort="descending"), text="label:N")
    st.altair_chart(lens_grid(cells + labels), width="content")
    st.dataframe(summary.round(4), width="stretch", hide_index=True)
    st.download_button("Download the lens (CSV)", lens.token_frame().to_csv(index=False), "logit_lens.csv")


lazy_tabs({"Layer scores": scores_tab, "Logit lens": lens_tab})
