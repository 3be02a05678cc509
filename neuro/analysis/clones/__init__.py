"""Cross-language clone detection: the vector index, retrieval metrics and the lexical baseline.
"""
