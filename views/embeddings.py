"""Embeddings: UMAP of pooled program states at a lower layer and at the concept layer, side by side."""

import pandas as pd
import streamlit as st

from neuro.analysis.embeddings import compile_projection
from neuro.progress import duration
from neuro.results.embeddings import POOLED, PROJECTION
from neuro.results.layers import LAYER_REPORT
from views.ui import charts, corpus_split, page_header, truncation_caption
from views.ui.progress import cost_caption, metered_bar
from views.ui.state import scoped_state

model, corpus = page_header(
    "Embeddings",
    "Each point is one program, mean-pooled over its tokens at a layer. Lower layers tend to cluster by "
    "language (syntax); concept layers by task (the same program in five languages lands together).")
if len(corpus) < 4:
    st.warning("A projection needs at least 4 programs.")
    st.stop()

report = LAYER_REPORT.get(model, corpus_split(corpus).selection, compute=False)  # chosen on the selection side
concept = scoped_state(model, corpus).concept_layers or (report.concept_layers if report else [model.n_layers // 2])
c1, c2, c3, c4 = st.columns([1, 1, 1, 1.3])
low = c1.number_input("Lower layer", 0, model.n_layers - 1, value=0, key="emb_low")
high = c2.number_input("Concept layer", 0, model.n_layers - 1, value=concept[len(concept) // 2], key="emb_high")
color = c3.radio("Colour by", ["language", "task"], horizontal=True, key="emb_color")
center = "language" if c4.toggle(
    "Remove each language's mean", key="emb_center",
    help="Pooled states carry one direction per language at every layer. Subtracting each language's mean "
         "(the centring the Clones page uses by default) shows what is left: do programs of the same task "
         "come together across languages?") else "none"
if report is None:
    st.caption("Concept layer: the middle layer until the Layers page has computed the scores.")
truncation_caption(model, corpus)

points = {layer: PROJECTION.get(model, corpus, layer=layer, center=center, compute=False)
          for layer in (int(low), int(high))}
missing = [layer for layer, xy in points.items() if xy is None]
if missing:
    pooled_cached = POOLED.get(model, corpus, compute=False) is not None
    if not pooled_cached:
        cost_caption("forward", model, corpus, what="pooled states of every program at every layer, kept on disk")
    fits = cost_caption("projection", model, corpus, passes=len(missing),
                        what="UMAP fits (plus about 20 s compiling UMAP's code, the first time in a server process)")
    if not pooled_cached:
        with metered_bar("Pooled states of every program at every layer", "forward", model, len(corpus)) as progress:
            POOLED.get(model, corpus, progress=progress)  # cached: the projections below only fit UMAP
    with st.spinner("Compiling UMAP's code (once per server process; about 20 s on a 2-core machine)…"):
        compile_projection()
    # UMAP reports nothing while it fits: the bar moves per projection, its time left from the estimate until a
    # fit has been timed
    per_fit = fits.seconds / max(1, len(missing))
    with st.spinner(f"UMAP: {len(missing)} projection{'s' * (len(missing) > 1)}, about {duration(per_fit)} each "
                    f"({fits.basis})…"), \
            metered_bar("UMAP projections", "projection", model, len(corpus) * len(missing)) as progress:
        progress(0, len(missing))
        for done, layer in enumerate(missing, 1):
            points[layer] = PROJECTION.get(model, corpus, layer=layer, center=center)
            progress(done, len(missing))

frame = pd.DataFrame({"id": [s.id for s in corpus], "language": [s.lang for s in corpus],
                      "task": [s.task for s in corpus], "code": [s.code[:300] for s in corpus]})
shown_tasks = None
if color == "task":
    tasks = list(dict.fromkeys(frame.task))
    widest = sorted(tasks, key=lambda t: -frame.task.eq(t).sum())  # tasks in the most languages first
    shown_tasks = st.multiselect(
        f"Tasks to colour (at most {len(charts.TASK_PALETTE)}; the others are grey)", tasks,
        default=widest[:6], max_selections=len(charts.TASK_PALETTE), key="emb_tasks",
        help="One colour per task, never reused: with dozens of tasks a recycled palette would paint unrelated "
             "tasks alike. Shape shows the language.")
cols = st.columns(2)
for col, layer in zip(cols, (int(low), int(high))):
    data = frame.assign(x=points[layer][:, 0], y=points[layer][:, 1])
    title = f"Layer {layer}" + (", each language's mean removed" if center == "language" else "")
    col.altair_chart(charts.projection_scatter(data, color, title, shown_tasks), width="stretch")
