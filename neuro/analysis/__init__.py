"""Analyses on instrumented models: neuron selectivity, per-layer scores and concept layers, the logit
lens, syntax profiles, embeddings, generation and clone detection. Pure: cached inputs arrive as
arguments (neuro.results computes through here, never the reverse).
"""
