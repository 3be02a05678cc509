"""The paper's experiments: neuron-guided fine-tuning, concept-layer-guided summarization transfer,
export of adapted models, and their metrics.
"""
