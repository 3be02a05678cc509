"""Code as data: the corpus, tree-sitter syntax, the selection / evaluation split, comment stripping,
uploaded-file decoding and the sandbox that runs generated programs.
"""
