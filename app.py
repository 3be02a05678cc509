"""Streamlit entry point: `streamlit run app.py`. A router; the views live in pages/."""

import streamlit as st

st.set_page_config(page_title="Neuro: code LLMs neuron by neuron", page_icon="🧠", layout="wide")

pages = [
    st.Page("pages/home.py", title="Overview", icon="🏠", default=True),
    st.Page("pages/neurons.py", title="Neurons", icon="🔬"),
    st.Page("pages/layers.py", title="Layers", icon="📶"),
    st.Page("pages/embeddings.py", title="Embeddings", icon="🗺️"),
]
st.navigation(pages).run()
