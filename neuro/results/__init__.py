"""Cached results: each kind is a `Recipe` (neuro.results.recipe), all listed in neuro.results.registry,
in the recipes' modules (statistics, layers, embeddings, clones). Callers name a cache folder (or
pass the store from `open_store`) and never reach the store or the resumable passes themselves."""

from neuro.results.recipe import Recipe, open_store
from neuro.results.store import cache_problem

__all__ = ["Recipe", "cache_problem", "open_store"]
