"""Streamlit entry point: `streamlit run app.py`. A router; the views live in views/.

Not in `pages/`: Streamlit treats a `pages/` folder as the old multipage layout until the first
session has run this script, so a deep link (e.g. /neurons?tab=Token+inspector) opened first on a
fresh server ran the page file directly: no page config, no router, the folder's file names as
navigation.
"""

import streamlit as st

from neuro.model.errors import WeightsNotLoaded
from neuro.results import cache_problem

st.set_page_config(page_title="Neuro: code LLMs neuron by neuron", page_icon=":material/neurology:", layout="wide")

pages = [
    st.Page("views/home.py", title="Overview", icon=":material/home:", default=True),
    st.Page("views/neurons.py", title="Neurons", icon=":material/neurology:"),
    st.Page("views/neuron.py", title="Neuron", icon=":material/network_node:"),
    st.Page("views/steering.py", title="Steering", icon=":material/alt_route:"),
    st.Page("views/layers.py", title="Layers", icon=":material/stacked_line_chart:"),
    st.Page("views/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page("views/clones.py", title="Clones", icon=":material/content_copy:"),
    st.Page("views/finetune.py", title="Fine-tuning", icon=":material/tune:"),
    st.Page("views/transfer.py", title="Transfer", icon=":material/translate:"),
    st.Page("views/jobs.py", title="Jobs", icon=":material/work_history:"),
]
page = st.navigation(pages)
notice = st.empty()  # above the page: filled once the page has run, when its results could not be kept
try:
    page.run()
except WeightsNotLoaded as err:  # a browse-only session (no weights) reached a view that must run the model
    st.info(str(err))
finally:
    problem = cache_problem()
    if problem:
        notice.warning(f"Results are not being kept: {problem}.", icon=":material/sd_card_alert:")
