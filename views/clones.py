"""Clones: paste a program, find the same task in other languages with concept-layer embeddings.
Thin: widgets and charts here, computation in neuro/analysis/clones/."""

import altair as alt
import pandas as pd
import streamlit as st

from neuro.analysis.clones.index import CloneIndex
from neuro.analysis.embeddings import CENTERINGS, DEFAULT_CENTERING
from neuro.code.corpus import LANGS
from neuro.code.upload import CloneInputError, decode_upload
from neuro.results.clones import CLONE_EVAL, build_index
from views.ui import charts, corpus_key, corpus_split, lazy_tabs, page_header, small_enough_to_auto_run
from views.ui.state import scoped_state

model, corpus = page_header(
    "Clones",
    "Zero-shot clone detection: every program is embedded as the mean of its hidden states at one layer "
    "(by default a concept layer, where programs of the same task align across languages), and clones "
    "are the nearest programs by cosine similarity, in any language.")
split = corpus_split(corpus)
key = f"{model.identity}|{corpus_key(corpus)}|{split.params}"
parallel = len({s.task for s in corpus}) < len(corpus)


@st.cache_resource(show_spinner=False)
def index_registry() -> dict[tuple, CloneIndex]:
    """Indexes shared by every session of this process (a plain dict, so building one can show progress)."""
    return {}


def get_index(layer: int | None, center: str, text: str) -> CloneIndex:
    registry = index_registry()
    found = registry.get((key, layer, center))
    if found is None:
        bar = st.progress(0.0, text=text)
        with st.spinner("Finding the concept layer…" if layer is None else "Embedding…"):
            found = build_index(model, corpus, layer, split=split, center=center,
                                progress=lambda done, total: bar.progress(done / total,
                                                                          text=f"{text} {done}/{total} programs"))
        bar.empty()
        if len(registry) >= 16:
            registry.pop(next(iter(registry)))
        registry[(key, layer, center)] = found
    return found


if not (small_enough_to_auto_run(model, corpus) or scoped_state(model, corpus).clones_ready):
    st.info(f"The corpus ({len(corpus)} programs) is not embedded for {model.source} in this session. Embedding "
            "runs the model up to the concept layer once (cached on disk); on a large model use a GPU "
            "(`python -m neuro clones eval`) and browse the cache here.")
    if not st.button("Embed the corpus", type="primary", key="clones_embed"):
        st.stop()
    scoped_state(model, corpus).clones_ready = True

c1, c2 = st.columns([1, 2])
center = c2.selectbox(
    "Centring before cosine", list(CENTERINGS), index=list(CENTERINGS).index(DEFAULT_CENTERING), key="clones_center",
    format_func=lambda x: f"{x}: {CENTERINGS[x]}",
    help="Pooled states carry a direction shared by every program and one per language (a probe reads the "
         "language off every layer). Subtracting each language's mean leaves what programs of one language "
         "differ in, which is what lines up across languages; 'corpus' subtracts one shared mean.")
default = get_index(None, center, "Embedding the corpus:")
layer = int(c1.number_input("Embedding layer", 0, model.n_layers - 1, value=default.layer, key="clones_layer",
                            help="Default: the middle concept layer found by the Layers page's rule on the "
                                 "selection side of the corpus split."))
index = default if layer == default.layer else get_index(layer, center, f"Embedding the corpus at layer {layer}:")
st.caption(f"The index holds all {len(corpus)} programs in {', '.join(index.index.languages)}, centred on its own "
           f"means (never the query's); embeddings from block {index.layer} (of 0..{model.n_layers - 1}, "
           f"{'the concept layer' if layer == default.layer else 'chosen by you'}), centring: {center}.")


# --------------------------------------------------------------------------- search
def search_tab() -> None:
    example = next((s.code for s in corpus if s.lang == "python"), corpus[0].code)
    code = st.text_area("Paste a function", value=example, height=220, key="clones_code")
    upload = st.file_uploader("…or upload a source file", key="clones_upload")
    if upload is not None:
        decoded = decode_upload(upload.getvalue(), upload.name)
        if decoded.error:
            st.error(decoded.error + " The pasted code is searched instead.")
        else:
            code = decoded.text
            st.caption(f"Searching the uploaded file {upload.name} ({decoded.encoding}).")
    c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
    lang = c1.selectbox("Query language", ["auto", *LANGS], key="clones_lang",
                        format_func=lambda x: "detect automatically" if x == "auto" else x)
    languages = c2.multiselect("Hits in", index.index.languages, default=index.index.languages,
                               key="clones_filter")
    k = c3.number_input("Hits", 1, 100, 10, key="clones_k")
    cross = c4.checkbox("Other languages only", value=True, key="clones_cross",
                        help="Drop hits in the query's own language (same-language programs share syntax, so "
                             "they crowd out the cross-language clones).")
    try:
        result = index.search(code, k=int(k), languages=languages, lang=None if lang == "auto" else lang,
                              cross_language=cross)
    except CloneInputError as err:
        st.info(str(err))
        result = None
    if result is not None:
        q = result.query
        how = "chosen by you" if q.overridden else f"detected at {q.confidence:.0%} confidence"
        st.markdown(f"**Query language: {q.lang}** ({how}).")
        for notice in q.notices:
            st.warning(notice)
        if not result.hits:
            st.info("No program matches the language filter.")
        else:
            table = pd.DataFrame([{"rank": i + 1, "similarity": round(h.score, 4), "language": h.lang,
                                   "task": h.task, "id": h.id} for i, h in enumerate(result.hits)])
            st.dataframe(table, width="stretch", hide_index=True)
            left, right = st.columns(2)
            with left:
                st.markdown("**Query**")
                st.code(q.code, language=q.lang)
            with right:
                st.markdown("**Hits**")
                for i, hit in enumerate(result.hits):
                    with st.expander(f"#{i + 1}  {hit.score:.3f}  ·  {hit.lang}  ·  {hit.task}", expanded=i == 0):
                        st.code(hit.code, language=hit.lang)


# --------------------------------------------------------------------------- evaluation
def evaluation_tab() -> None:
    st.markdown("Every evaluation-side program is a query; relevant = the programs of the same task. The concept "
                "layer, the centring means and TF-IDF's vocabulary come from the selection side. **Cross-language**: "
                "candidates are the programs in the other languages; **all-language**: every other program. "
                "**MAP@R**: mean average precision over the first R candidates, R = the number of relevant ones; "
                "**Recall@1**: share of queries whose nearest candidate is relevant.")
    if not parallel:
        st.info("This corpus has no parallel programs (no task in two languages): nothing to evaluate. "
                "Use the demo corpus or HumanEval-X.")
        return
    at = None if layer == default.layer else layer
    strip = st.toggle("Without comments and docstrings", key="clones_strip",
                      help="Parallel corpora often carry the same English docstring in every language, which "
                           "lets any lexical method find clones by their prose. This evaluates the code alone.")
    result = CLONE_EVAL.get(model, corpus, layer=at, split=split, center=center, strip=strip, compute=False)
    if result is None:
        st.caption("Not computed for this model, corpus and layer yet: one pass over the corpus keeps every layer, "
                   "then the metrics take seconds.")
        if st.button("Run the evaluation", type="primary", key="clones_eval"):
            bar = st.progress(0.0, text="Embedding every layer…")
            result = CLONE_EVAL.get(model, corpus, layer=at, split=split, center=center, strip=strip,
                                    progress=lambda done, total: bar.progress(
                                        done / total, text=f"Embedding every layer: {done}/{total} programs"))
            bar.empty()
    if result is not None:
        st.caption(f"Measured on the evaluation side only: {split.caption()}.")
        st.dataframe(result.overall().round(4), width="stretch", hide_index=True)
        methods = list(dict.fromkeys(result.scores.method))
        c1, c2 = st.columns(2)
        method = c1.selectbox("Language pairs for", methods, key="clones_pair_method")
        metric = c2.radio("Metric", ["map_at_r", "recall_at_1"], horizontal=True, key="clones_pair_metric",
                          format_func={"map_at_r": "MAP@R", "recall_at_1": "Recall@1"}.get)
        left, right = st.columns(2)
        left.altair_chart(charts.matrix_heatmap(result.pair_matrix(method, metric).round(3), "query", "candidates",
                                                metric, title=f"{method}: query language x candidate language",
                                                scheme="greens"), width="stretch")
        sweep = result.sweep.melt(id_vars=["layer", "setting"], value_vars=["map_at_r", "recall_at_1"],
                                  var_name="metric")
        lines = alt.Chart(sweep, title="Every layer (one pass keeps them all)").mark_line(point=True).encode(
            x=alt.X("layer:O"), y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1])), color="setting:N",
            strokeDash="metric:N", tooltip=["layer", "setting", "metric", alt.Tooltip("value:Q", format=".3f")])
        marks = pd.DataFrame({"layer": sorted({*result.concept_layers, result.layer})})
        band = alt.Chart(marks).mark_rule(color="#f4a261", size=6, opacity=0.4).encode(x="layer:O")
        right.altair_chart(band + lines, width="stretch")
        st.caption(f"Shaded: the concept layers {result.concept_layers} and the evaluated layer {result.layer}. "
                   "Baselines in the table: first and last layer, the mean of all layers' states, and TF-IDF "
                   f"over identifier pieces and symbols. Embeddings are centred ({CENTERINGS[center]}) "
                   "before cosine; switch above to compare.")
        st.download_button("Download all scores (CSV)", result.scores.to_csv(index=False), "clone_scores.csv")


# --------------------------------------------------------------------------- tabs
TABS = {"Search": search_tab, "Evaluation": evaluation_tab}
lazy_tabs(TABS)
