"""A progress bar that says what is running, how far it is and about how long is left (neuro.progress.Eta)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from neuro.progress import Progress, reporter


@contextmanager
def progress_bar(label: str, lazy: bool = False) -> Iterator[Progress]:
    """`with progress_bar("Layer scores") as progress: compute(..., progress=progress)`; the bar goes when the
    computation ends or is cancelled (a cancelled resumable pass keeps its finished chunks). `lazy`: the bar
    appears with the first report, for a call that may find its result cached and report nothing (put it
    inside an `st.spinner`, which shows only when the call takes longer than a moment)."""
    slot = st.empty()
    if not lazy:
        slot.progress(0.0, text=f"{label}: starting…")
    try:
        yield reporter(label, lambda fraction, text: slot.progress(fraction, text=text))
    finally:
        slot.empty()
