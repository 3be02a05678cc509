"""Streamlit entry point: `streamlit run app.py`. A router; the views live in pages/."""

import streamlit as st

from neuro.browse import WeightsNotLoaded

st.set_page_config(page_title="Neuro: code LLMs neuron by neuron", page_icon=":material/neurology:", layout="wide")

pages = [
    st.Page("pages/home.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/neurons.py", title="Neurons", icon=":material/neurology:"),
    st.Page("pages/layers.py", title="Layers", icon=":material/stacked_line_chart:"),
    st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page("pages/clones.py", title="Clones", icon=":material/content_copy:"),
    st.Page("pages/finetune.py", title="Fine-tuning", icon=":material/tune:"),
    st.Page("pages/transfer.py", title="Transfer", icon=":material/translate:"),
    st.Page("pages/jobs.py", title="Jobs", icon=":material/work_history:"),
]
try:
    st.navigation(pages).run()
except WeightsNotLoaded as err:  # a browse-only session (no weights) reached a view that must run the model
    st.info(str(err))
