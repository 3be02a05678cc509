"""neuro: neuron-level interpretation of code language models (backend; no UI code here)."""

__version__ = "0.1.0"
