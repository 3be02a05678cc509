"""Every kind of cached result, in one list: a result kept in the cache is computed by one of these
recipes (neuro.results.recipe), whose version is the one place to invalidate its entries."""

from __future__ import annotations

from neuro.results.clones import CLONE_EVAL
from neuro.results.embeddings import LAYER_EMBEDDINGS, POOLED, PROJECTION
from neuro.results.interventions import MEANS, STEERING
from neuro.results.layers import LAYER_REPORT
from neuro.results.recipe import Recipe
from neuro.results.statistics import ABLATION, CHANCE, STATS
from neuro.results.statistics import UNIVERSALITY

RECIPES: dict[str, Recipe] = {recipe.kind: recipe for recipe in (
    STATS,             # per-language neuron statistics (Neurons page, capture, fine-tuning's neurons)
    ABLATION,          # loss change when each language's neurons are zeroed
    CHANCE,            # counts of a selection rule under permuted language labels
    UNIVERSALITY,      # split-half stability and matched control of the universal neurons
    POOLED,            # all-layer pooled program states
    LAYER_EMBEDDINGS,  # one layer's pooled states (the clone index)
    PROJECTION,        # 2-D UMAP of one layer's pooled states
    LAYER_REPORT,      # per-layer scores and the concept layers
    CLONE_EVAL,        # cross-language clone retrieval scores
    MEANS,             # per-language mean activation of every neuron (the "mean" intervention)
    STEERING,          # steering sweep: language of continuations vs the factor the target's neurons are scaled by
)}
