"""Clones: paste a program, find the same task in other languages with concept-layer embeddings.
Thin: widgets and charts here, computation in neuro/analysis/clones/."""

import altair as alt
import pandas as pd
import streamlit as st

from neuro.analysis.clones.baselines import TfidfIndex
from neuro.analysis.clones.explain import MODEL, TFIDF
from neuro.analysis.clones.index import CloneIndex
from neuro.analysis.embeddings import CENTERINGS, DEFAULT_CENTERING
from neuro.code.corpus import LANGS
from neuro.code.upload import CloneInputError, decode_upload
from neuro.results.clones import CLONE_EVAL, baseline_index, build_index, explain_search, explanation_cached
from views.ui import charts, corpus_key, corpus_split, lazy_tabs, page_header, small_enough_to_auto_run
from views.ui import truncation_caption
from views.ui.progress import cost_caption, metered_bar, progress_bar
from views.ui.state import scoped_state

model, corpus = page_header(
    "Clones",
    "Zero-shot clone detection: every program is embedded as the mean of its hidden states at one layer "
    "(by default a concept layer, where programs of the same task align across languages), and clones "
    "are the nearest programs by cosine similarity, in any language.")
split = corpus_split(corpus)
key = f"{model.identity}|{corpus_key(corpus)}|{split.params}"
parallel = len({s.task for s in corpus}) < len(corpus)
truncation_caption(model, corpus)


@st.cache_resource(show_spinner=False)
def index_registry() -> dict[tuple, CloneIndex]:
    """Indexes shared by every session of this process (a plain dict, so building one can show progress)."""
    return {}


def get_index(layer: int | None, center: str, text: str) -> CloneIndex:
    registry = index_registry()
    found = registry.get((key, layer, center))
    if found is None:
        with metered_bar(f"{text} (programs embedded)", "forward", model, len(corpus)) as progress:
            found = build_index(model, corpus, layer, split=split, center=center, progress=progress)
        if len(registry) >= 16:
            registry.pop(next(iter(registry)))
        registry[(key, layer, center)] = found
    return found


@st.cache_resource(show_spinner=False, max_entries=4)
def _baseline(corpus_and_split: str, _corpus, _split) -> TfidfIndex:
    return baseline_index(_corpus, _split)


def baseline() -> TfidfIndex:
    """The TF-IDF index of this corpus, fitted on its split's selection side, kept across reruns."""
    return _baseline(f"{corpus_key(corpus)}|{split.params}", corpus, split)


if not (small_enough_to_auto_run(model, corpus) or scoped_state(model, corpus).clones_ready):
    st.info(f"The corpus ({len(corpus)} programs) is not embedded for {model.source} in this session. Embedding "
            "runs the model up to the concept layer once (cached on disk); on a large model use a GPU "
            "(`python -m neuro clones eval`) and browse the cache here.")
    cost_caption("forward", model, corpus, what="one forward pass up to the concept layer")
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
tasks_by_lang: dict[str, dict[str, str]] = {}
for snippet in corpus:
    tasks_by_lang.setdefault(snippet.lang, {}).setdefault(snippet.task, snippet.code)
everywhere = [t for t in dict.fromkeys(s.task for s in corpus) if all(t in by for by in tasks_by_lang.values())]
# The default example: the corpus's first task that every language has (in Python when there is one), not
# chosen for how well the model does on it; the page explains whatever it shows.
default_lang = "python" if "python" in tasks_by_lang else next(iter(tasks_by_lang))
default_task = everywhere[0] if everywhere else next(iter(tasks_by_lang[default_lang]))


def _use_example() -> None:
    lang, task = st.session_state["clones_example_lang"], st.session_state.get("clones_example_task")
    if task in tasks_by_lang.get(lang, {}):
        st.session_state["clones_code"] = st.session_state["clones_query"] = tasks_by_lang[lang][task]
        st.session_state["clones_task"] = task
        st.session_state["clones_source"] = None


def _edited() -> None:
    """Edited code (Ctrl+Enter or leaving the box) is searched; its task is found by matching the corpus again."""
    st.session_state["clones_task"] = "auto"
    st.session_state["clones_query"] = st.session_state["clones_code"]
    st.session_state["clones_source"] = None


def _uploaded() -> None:
    """An uploaded file goes into the code box (what is searched is what the box shows), and is searched."""
    upload = st.session_state.get("clones_upload")
    st.session_state["clones_upload_error"] = None
    if upload is None:
        st.session_state["clones_source"] = None
        return
    decoded = decode_upload(upload.getvalue(), upload.name)
    if decoded.error:
        st.session_state["clones_upload_error"] = decoded.error + " The code in the box is searched instead."
        return
    st.session_state["clones_code"] = st.session_state["clones_query"] = decoded.text
    st.session_state["clones_task"] = "auto"
    st.session_state["clones_source"] = f"the uploaded file {upload.name} ({decoded.encoding})"


def _search_clicked() -> None:
    st.session_state["clones_query"] = st.session_state["clones_code"]


def hits_frame(hits) -> pd.DataFrame:
    return pd.DataFrame([{"rank": i + 1, "similarity": round(h.score, 4), "language": h.lang, "task": h.task,
                          "id": h.id} for i, h in enumerate(hits)])


def layer_chart(explanation) -> alt.Chart:
    """One heat row per program: its similarity to the query at every layer, the index's layer marked."""
    sim = explanation.similarity
    order = {MODEL: {h.id: i + 1 for i, h in enumerate(explanation.hits[MODEL])},
             TFIDF: {h.id: i + 1 for i, h in enumerate(explanation.hits[TFIDF])}}
    labels = []
    for id, same in zip(sim.ids, sim.same_task):
        tags = [f"model #{order[MODEL][id]}" if id in order[MODEL] else "",
                f"TF-IDF #{order[TFIDF][id]}" if id in order[TFIDF] else "", "same task" if same else ""]
        labels.append(f"{id}  ({', '.join(t for t in tags if t)})")
    frame = sim.frame()
    frame["program"] = frame.id.map(dict(zip(sim.ids, labels)))
    heat = alt.Chart(frame, title="Similarity to the query at every layer").mark_rect().encode(
        x=alt.X("layer:O"), y=alt.Y("program:N", sort=labels, title=None,
                                    axis=alt.Axis(labelOverlap=False, labelLimit=420)),  # every row labelled
        color=alt.Color("similarity:Q", scale=alt.Scale(scheme="redblue", domain=[-1, 1], reverse=True)),
        tooltip=["id", "task", "layer", alt.Tooltip("similarity:Q", format=".3f")])
    mark = alt.Chart(pd.DataFrame({"layer": [sim.layer]})).mark_rect(
        fill=None, stroke="black", strokeWidth=2).encode(x="layer:O")
    return (heat + mark).properties(height=alt.Step(18))


def search_tab() -> None:
    langs = list(tasks_by_lang)
    if "clones_code" not in st.session_state:
        st.session_state["clones_code"] = tasks_by_lang[default_lang][default_task]
        st.session_state["clones_task"] = default_task
    st.session_state.setdefault("clones_query", st.session_state["clones_code"])
    with st.expander("Pick an example from the corpus", expanded=False):
        e1, e2 = st.columns(2)
        example_lang = e1.selectbox("Language", langs, index=langs.index(default_lang), key="clones_example_lang",
                                    on_change=_use_example)
        tasks = list(tasks_by_lang[example_lang])
        e2.selectbox("Task", tasks, index=tasks.index(default_task) if default_task in tasks else 0,
                     key="clones_example_task", on_change=_use_example)
        st.caption(f"The page opens on {default_task} in {default_lang}: the corpus's first task that "
                   f"{'every language has' if everywhere else 'it has'}, not chosen for how well the model does on "
                   "it. Whatever the ranks below are, they are what this model does.")
    st.text_area("Paste a function", height=220, key="clones_code", on_change=_edited,
                 help="Ctrl+Enter (or the Search button) searches what the box holds.")
    st.file_uploader("…or upload a source file (it replaces the code above)", key="clones_upload",
                     on_change=_uploaded)
    if st.session_state.get("clones_upload_error"):
        st.error(st.session_state["clones_upload_error"])
    if source := st.session_state.get("clones_source"):
        st.caption(f"The code above is {source}.")
    code = st.session_state["clones_query"]
    # two rows of controls, each wide enough for its label and choices (five in one row cut them off:
    # "detect automati", "Other languag...")
    c1, c5, c3 = st.columns([1, 1, 1])
    c2, c4 = st.columns([3, 1])
    lang = c1.selectbox("Query language", ["auto", *LANGS], key="clones_lang",
                        format_func=lambda x: "detect automatically" if x == "auto" else x)
    languages = c2.multiselect("Hits in", index.index.languages, default=index.index.languages,
                               key="clones_filter")
    k = c3.number_input("Hits", 1, 100, 10, key="clones_k")
    cross = c4.checkbox("Other languages only", value=True, key="clones_cross",
                        help="Drop hits in the query's own language (same-language programs share syntax, so "
                             "they crowd out the cross-language clones).")
    all_tasks = list(dict.fromkeys(s.task for s in corpus))
    if st.session_state.get("clones_task") not in ["auto", *all_tasks]:
        st.session_state["clones_task"] = "auto"
    task = c5.selectbox("Query's task", ["auto", *all_tasks], key="clones_task",
                        format_func=lambda x: "match the corpus" if x == "auto" else x,
                        help="For the same-task ranks: which corpus task the query is. 'match the corpus': the "
                             "task of the corpus program it equals (whitespace aside), if any.")
    s1, s2 = st.columns([1, 4])
    s1.button("Search", type="primary", key="clones_search", on_click=_search_clicked)
    with s2:
        cost_caption("forward", model, 1, what="the query embedded up to the index's layer")
    args = dict(k=int(k), languages=languages, lang=None if lang == "auto" else lang, cross_language=cross)
    try:
        with st.spinner("Searching…"):
            result = index.search(code, **args)
    except CloneInputError as err:
        st.info(str(err))
        return
    explanation = None
    cached = explanation_cached(index, corpus)
    if not cached:
        cost_caption("forward", model, corpus, what="comparing with TF-IDF and every layer first embeds the "
                     "corpus at every layer, one pass kept on disk")
    if small_enough_to_auto_run(model, corpus) or cached \
            or st.button("Compare with TF-IDF and every layer", key="clones_explain",
                         help="One pass over the corpus that keeps every layer (cached on disk)."):
        bar = progress_bar("Embedding every layer") if cached else \
            metered_bar("Embedding every layer", "forward", model, len(corpus))  # only a real pass is timed
        with st.spinner("Comparing with TF-IDF and every layer…"), bar as progress:
            explanation = explain_search(index, corpus, code, task=None if task == "auto" else task, split=split,
                                         baseline=baseline(), concept=layer == default.layer, progress=progress,
                                         **args)
    q = result.query
    how = "chosen by you" if q.overridden else f"detected at {q.confidence:.0%} confidence"
    st.markdown(f"**Query language: {q.lang}** ({how}).")
    for notice in q.notices:
        st.warning(notice)
    model_hits = result.hits if explanation is None else explanation.hits[MODEL]
    if not model_hits:
        st.info("No program matches the language filter.")
        return
    name = f"Model: {'concept ' if layer == default.layer else ''}layer {index.layer}"
    if explanation is None:
        st.dataframe(hits_frame(model_hits), width="stretch", hide_index=True)
    else:
        left, right = st.columns(2)
        left.markdown(f"**{name}** (cosine of pooled states)")
        left.dataframe(hits_frame(model_hits), width="stretch", hide_index=True)
        right.markdown("**Lexical baseline: token TF-IDF** (fitted on the selection side)")
        right.dataframe(hits_frame(explanation.hits[TFIDF]), width="stretch", hide_index=True)
        explain_block(explanation)
    left, right = st.columns(2)
    with left:
        st.markdown("**Query**")
        st.code(q.code, language=q.lang)
    with right:
        st.markdown(f"**Hits** ({name.lower()})")
        for i, hit in enumerate(model_hits):
            with st.expander(f"#{i + 1}  {hit.score:.3f}  ·  {hit.lang}  ·  {hit.task}", expanded=i == 0):
                st.code(hit.code, language=hit.lang)


def explain_block(explanation) -> None:
    st.markdown("**Where each method finds the query's task**")
    for note in explanation.notes:
        st.caption(note)
    if explanation.ranks:
        side = "evaluation" if explanation.task in {s.task for s in split.evaluation} else "selection"
        st.dataframe(explanation.rank_frame(), width="stretch", hide_index=True)
        st.markdown(explanation.describe())
        st.caption("Rank in language: among that language's programs (column programs; the query's own copy "
                   "left out); a rank is 1 + the number of programs scoring higher. Rank among hits: its place in "
                   "the hit list above, were the "
                   f"list {explanation.candidates} long (the language filter applies). The task {explanation.task} "
                   f"is on the {side} side of the split (the concept layer is chosen on the selection side). "
                   "TF-IDF matches identifier pieces, symbols and the docstring's words, which parallel programs "
                   "often share; the model's similarity comes from its hidden states alone.")
    st.altair_chart(layer_chart(explanation), width="stretch")
    st.caption("How to read the rows: each is a hit (of the model, of TF-IDF, or both) or a program of the query's "
               "task; each cell is its cosine similarity to the query at that layer, centred at every layer as the "
               f"index centres ({CENTERINGS[center]}). Red: similar, blue: dissimilar. The boxed column is layer "
               f"{explanation.layer}, where the model's hits are ranked. A same-task row that is red at some layers "
               "and pale at the boxed one shows where the model's representations agree and where they do not.")


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
        pending = st.empty()  # the "not computed" note and its button, removed once the result is here
        with pending.container():
            st.caption("Not computed for this model, corpus and layer yet: one pass over the corpus keeps every "
                       "layer, then the metrics take seconds.")
            cost_caption("forward", model, corpus, what="one pass keeping every layer")
            if st.button("Run the evaluation", type="primary", key="clones_eval"):
                with metered_bar("Embedding every layer (programs)", "forward", model, len(corpus)) as progress:
                    result = CLONE_EVAL.get(model, corpus, layer=at, split=split, center=center, strip=strip,
                                            progress=progress)
        if result is not None:
            pending.empty()
    if result is not None:
        st.caption(f"Measured on the evaluation side only: {split.caption()}.")
        if result.intervals.empty:
            st.dataframe(result.overall().round(4), width="stretch", hide_index=True)
        else:
            intervals_block(result)
        methods = list(dict.fromkeys(result.scores.method))
        c1, c2 = st.columns(2)
        method = c1.selectbox("Language pairs for", methods, key="clones_pair_method")
        metric = c2.radio("Metric", ["map_at_r", "recall_at_1"], horizontal=True, key="clones_pair_metric",
                          format_func={"map_at_r": "MAP@R", "recall_at_1": "Recall@1"}.get)
        left, right = st.columns(2)
        left.altair_chart(charts.matrix_heatmap(result.pair_matrix(method, metric).round(3), "query", "candidates",
                                                metric, title=f"{method}: query language x candidate language",
                                                scheme="greens"), width="stretch")
        sweep = sweep_frame(result.sweep)
        lines = alt.Chart(sweep, title="Every layer (one pass keeps them all), with 95 % CIs").mark_line(
            point=True).encode(
            x=alt.X("layer:O"), y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1])), color="setting:N",
            strokeDash="metric:N", tooltip=["layer", "setting", "metric", alt.Tooltip("value:Q", format=".3f"),
                                            alt.Tooltip("low:Q", format=".3f"), alt.Tooltip("high:Q", format=".3f")])
        marks = pd.DataFrame({"layer": sorted({*result.concept_layers, result.layer})})
        band = alt.Chart(marks).mark_rule(color="#f4a261", size=6, opacity=0.4).encode(x="layer:O")
        layers = [band, lines]
        if "low" in sweep:
            layers.append(alt.Chart(sweep[sweep.metric == "map_at_r"]).mark_errorbar(ticks=True).encode(
                x="layer:O", y=alt.Y("low:Q", title="value"), y2="high:Q", color="setting:N"))
        right.altair_chart(alt.layer(*layers), width="stretch")
        st.caption(f"Shaded: the concept layers {result.concept_layers} and the evaluated layer {result.layer}. "
                   "Error bars: MAP@R's 95 % task-bootstrap interval at each layer. "
                   "Baselines in the table: first and last layer, the mean of all layers' states, and TF-IDF "
                   f"over identifier pieces and symbols. Embeddings are centred ({CENTERINGS[center]}) "
                   "before cosine; switch above to compare.")
        st.download_button("Download all scores (CSV)", result.scores.to_csv(index=False), "clone_scores.csv")


def sweep_frame(sweep: pd.DataFrame) -> pd.DataFrame:
    """Long (layer, setting, metric, value[, low, high]) rows of the layer sweep, for one chart."""
    frames = []
    for metric in ("map_at_r", "recall_at_1"):
        part = sweep[["layer", "setting"]].assign(metric=metric, value=sweep[metric])
        if f"{metric}_low" in sweep:
            part = part.assign(low=sweep[f"{metric}_low"], high=sweep[f"{metric}_high"])
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def intervals_block(result) -> None:
    """The headline table with 95 % task-bootstrap intervals, a chart of them, and the paired differences."""
    boot = result.meta.get("bootstrap", {})
    table = None
    for setting in ("cross-language", "all-language"):
        part = result.headline(setting).rename(columns={"MAP@R": f"{setting} MAP@R",
                                                        "Recall@1": f"{setting} Recall@1"})
        table = part if table is None else table.merge(part, on=["method", "layer"])
    st.dataframe(table, width="stretch", hide_index=True)
    st.caption(f"Each cell: estimate [95 % interval]. The interval is a task-level bootstrap: each query's AP@R "
               f"(or hit@1) is one value and the queries of one task are resampled together "
               f"({boot.get('tasks', '?')} evaluation tasks, {boot.get('n_resamples', '?')} resamples).")
    frame = result.intervals.assign(method_layer=[f"{m} ({result._layer_label(m, int(at)) or '-'})"
                                                  for m, at in zip(result.intervals.method, result.intervals.layer)])
    frame = frame[frame.metric == "map_at_r"]
    order = list(dict.fromkeys(frame.method_layer))
    base = alt.Chart(frame, title="MAP@R per method with 95 % task-bootstrap intervals")
    points = base.mark_point(filled=True, size=70).encode(
        x=alt.X("estimate:Q", title="MAP@R", scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("method_layer:N", sort=order, title=None), color="setting:N", yOffset="setting:N",
        tooltip=["method", "setting", alt.Tooltip("estimate:Q", format=".3f"), alt.Tooltip("low:Q", format=".3f"),
                 alt.Tooltip("high:Q", format=".3f")])
    bars = base.mark_errorbar(ticks=True).encode(x=alt.X("low:Q", title="MAP@R"), x2="high:Q",
                                                 y=alt.Y("method_layer:N", sort=order), color="setting:N",
                                                 yOffset="setting:N")
    st.altair_chart(bars + points, width="stretch")
    st.markdown("**Paired differences** (per query, tasks resampled together)")
    st.dataframe(result.difference_table(), width="stretch", hide_index=True)
    close = result.differences[result.differences.covers_zero & (result.differences.metric == "map_at_r")
                               & (result.differences.setting == "cross-language")]
    if len(close):
        st.caption("Indistinguishable on this corpus (cross-language MAP@R, the interval covers 0): "
                   + "; ".join(close.comparison) + ". A difference is called real only when its interval excludes 0.")


# --------------------------------------------------------------------------- tabs
TABS = {"Search": search_tab, "Evaluation": evaluation_tab}
lazy_tabs(TABS)
