"""Landing page: what was found for the chosen model and corpus (read from the cache, never computed here),
beside the paper; then the model and corpus at a glance and the definitions. The findings are written by
neuro.analysis.findings from the results neuro.results.findings reads with compute=False."""

import dataclasses

import pandas as pd
import streamlit as st

from neuro.analysis.findings import Finding
from neuro.code.corpus import LANGS
from neuro.code.split import DEFAULT_EVAL_FRACTION, SplitParams
from neuro.model.loading import model_info
from neuro.results.findings import cache_signature, gather_findings
from views.ui import corpus_key, sidebar, with_model

PAGES = {"neurons": "views/neurons.py", "layers": "views/layers.py", "clones": "views/clones.py"}

selection = sidebar(load=False)  # the findings need only the model's identity: drawn before it is loaded

st.title("Code LLMs, neuron by neuron")
st.markdown(
    "This app reproduces and extends *Neuron-Guided Interpretation of Code LLMs: Where, Why, and How?* "
    "(arXiv 2512.19980) on any Hugging Face causal LM and any multilingual code corpus "
    "(C++, Java, Python, Go, JavaScript). It captures FFN neuron activations and gradients, finds "
    "**language-specific** and **universal** neurons (PLS score), aligns neurons to syntax with "
    "tree-sitter, and scores each layer for syntax versus shared semantics (**concept layers**)."
)


@st.cache_resource(show_spinner="Reading the cached results…", max_entries=8)
def cached_findings(model_identity: str, corpus_hash: str, split: SplitParams, signature: tuple, _model, _corpus):
    """The findings from the cache (never computed here), kept until a result they read is kept or removed.
    `_model`: the loaded model or its reference (neuro.model.reference); both find the same results."""
    return gather_findings(_model, _corpus, split=split)


def show_finding(finding: Finding) -> None:
    with st.container(border=True):
        st.markdown(f"**{finding.title}.** {finding.text}")
        if finding.differs:
            st.markdown(f":orange[{finding.differs}]")
        if finding.paper:
            st.caption(f"Paper: {finding.paper}")
        st.page_link(PAGES[finding.link.page], label=finding.link.label, icon=":material/arrow_forward:",
                     query_params={"tab": finding.link.tab} if finding.link.tab else None)


st.subheader("What was found")
if selection.cache_model is None or selection.corpus is None:
    st.caption("Pick a model and a corpus in the sidebar to see what was found on them.")
else:
    split = SplitParams(eval_fraction=float(st.session_state.get("eval_fraction", DEFAULT_EVAL_FRACTION)),
                        seed=int(st.session_state.get("split_seed", 0)))
    found = cached_findings(selection.cache_model.identity, corpus_key(selection.corpus), split, cache_signature(),
                            selection.cache_model, selection.corpus)
    st.caption(f"On {found.corpus}, from the cached results (nothing is computed on this page: each line links to "
               "the page that computes and shows it). " + " ".join(found.notes))
    for finding in found:
        show_finding(finding)

left, right = st.columns(2)
with right:
    st.subheader("Corpus")
    if selection.corpus is None:
        st.warning(selection.corpus_error)
    else:
        frame = pd.DataFrame([{"language": s.lang, "task": s.task, "chars": len(s.code)} for s in selection.corpus])
        counts = (frame.groupby("language").agg(programs=("task", "size"), tasks=("task", "nunique"),
                                                mean_chars=("chars", "mean")).round(0).reindex(
            [lang for lang in LANGS if lang in set(frame.language)]))
        st.metric("Programs", len(frame))
        st.dataframe(counts, width="stretch")
with left:  # after the corpus: loading the model is the slow part of this page
    st.subheader("Model")
    selection = with_model(selection)
    if selection.model is None:
        st.warning(selection.model_error)
    else:
        info = model_info(selection.model)
        if not selection.model.weights_loaded:
            st.info("Cached results only: the model is opened from its card without weights (device `meta`). "
                    "Every view shows what is in the cache; computing anything new needs the model's folder.")
        c1, c2, c3 = st.columns(3)
        c1.metric("Layers", info.n_layers)
        c2.metric("Neurons per layer", f"{info.neurons_per_layer:,}")
        c3.metric("Neurons in all", f"{info.total_neurons:,}")
        rows = {k: str(v) for k, v in dataclasses.asdict(info).items()}
        st.dataframe(pd.DataFrame({"field": list(rows), "value": list(rows.values())}), hide_index=True,
                     width="stretch")

with st.expander("Definitions used throughout"):
    st.markdown(
        "- **Neuron**: one channel of a transformer block's FFN intermediate activation, i.e. the input of "
        "the FFN's output projection (`mlp.down_proj` in Llama/Qwen).\n"
        "- **PLS(n, L)** = mean over L's programs of (1/|R|) sum over t in R of |a_n,t x g_t|, with "
        "g_t = dL/da_n,t from one backward pass of the program's *summed* next-token cross-entropy L and R "
        "the program's real tokens (padding, special tokens and the first position excluded: the BOS, or the first "
        "code token where the tokenizer adds no BOS, where large models put attention-sink activations). The "
        "paper writes "
        "E_s |a_n(s) x grad L(s)| without the loss reduction; this is our reading (a mean loss would make "
        "short programs score higher).\n"
        "- **Attribution(n, L)** (an extension) = mean over L's programs of -(1/T) sum over every position t of "
        "a_n,t x g_t, T = the program's next-token targets: the first-order estimate of the change in the "
        "program's mean loss when the neuron is zeroed (at every position, as ablation does); positive = "
        "removing it hurts.\n"
        "- **Language-specific neuron**: top-language score above a candidate threshold, at least 1.5x its "
        "second language, and in the top 1 % of neurons by max score. **Chance**: the count the same rule gives "
        "when the language labels are shuffled among the programs.\n"
        "- **Selection / evaluation split**: a seeded split by task (sidebar); neurons, concept layers and "
        "centring means are chosen on one side, ablation effects, clone scores, fine-tuning and transfer "
        "measured on the other.\n"
        "- **Concept layers**: middle layers where programs of the same task align across languages while "
        "language identity has faded.\n"
        "- **Clone embedding**: a program's hidden states at one layer averaged over its tokens; by default "
        "each program minus the mean of its language's programs before cosine similarity.\n"
        "- **Logit lens**: a layer's output read through the model's final norm and output head, i.e. the next "
        "token that layer would predict if the model stopped there."
    )
