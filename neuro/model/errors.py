"""Errors of loading and running models, kept apart so every module of neuro.model can raise them."""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded; the message says why and what to do."""


class WeightsNotLoaded(RuntimeError):
    """A browse-only model (opened from its cached card, no weights; see neuro.model.cards) was asked to run."""


BROWSE_ONLY_MESSAGE = (
    "This needs to run the model, but it was opened from its cached card without weights (browse-only): only "
    "results already in the cache can be shown. Load the model's folder or hub id to compute.")
