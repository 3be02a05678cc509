"""A progress bar that says what is running, how far it is and about how long is left (neuro.progress.Eta)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from neuro.progress import Progress, reporter


@contextmanager
def progress_bar(label: str) -> Iterator[Progress]:
    """`with progress_bar("Layer scores") as progress: compute(..., progress=progress)`; the bar goes when the
    computation ends or is cancelled (a cancelled resumable pass keeps its finished chunks)."""
    bar = st.progress(0.0, text=f"{label}: starting…")
    try:
        yield reporter(label, lambda fraction, text: bar.progress(fraction, text=text))
    finally:
        bar.empty()
