"""Models: the architecture adapters (the only place that names a model's modules), loading from a folder
or the hub, weight identity for cache keys, and cached model cards for browse-only sessions.
"""
