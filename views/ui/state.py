"""Typed session state kept per (model identity, corpus hash).

What a page chooses or computes for one model and corpus (the Layers page's concept layers, whether the
corpus was embedded for clone search, the logit lens of the last program) is kept in one `ScopedState`
under that pair, so switching the model or the corpus in the sidebar never carries another model's
choices into Embeddings, Clones or Transfer; switching back finds them again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from neuro.code.corpus import Snippet, corpus_hash
from neuro.model.loading import LoadedModel

PREFIX = "scoped|"


@dataclass
class ScopedState:
    concept_layers: list[int] | None = None  # set on the Layers page: the rule's choice or the user's override
    clones_ready: bool = False                # the user asked to embed this corpus for clone search
    lens: dict = field(default_factory=dict)  # program text -> its logit lens (the last one only)


def scope_key(model: LoadedModel, corpus: list[Snippet]) -> str:
    """The pair a piece of state belongs to: the model's identity (weights) and the corpus's content hash."""
    return f"{model.identity}|{corpus_hash(corpus)}"


def scoped_state(model: LoadedModel, corpus: list[Snippet]) -> ScopedState:
    key = PREFIX + scope_key(model, corpus)
    state = st.session_state.get(key)
    if not isinstance(state, ScopedState):  # absent, or left by an older version of the app
        state = st.session_state[key] = ScopedState()
    return state
