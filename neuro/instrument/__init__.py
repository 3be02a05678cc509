"""Instrumenting a model: tokenizing and batching, hooks that run to a layer, corpus statistics of FFN
neurons (activations and gradients), hidden states, losses and ablation.
"""
