"""The lexical baseline of clone detection: TF-IDF over identifier subwords and symbols, fitted on the
selection side.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from neuro.code.corpus import Snippet

_SUBWORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+|[^\s\w]")


def code_tokens(code: str) -> list[str]:
    """Lower-cased identifier pieces (camelCase and snake_case split), numbers and punctuation, so
    `hasCloseElements`, `has_close_elements` and `HasCloseElements` share their tokens."""
    return [t.lower() for t in _SUBWORD.findall(code)]


def _vectorizer():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer=code_tokens, sublinear_tf=True, norm="l2")


def tfidf_vectors(snippets: Sequence[Snippet], fit_on: Sequence[Snippet] | None = None):
    """Unit-normalized sparse TF-IDF rows (sublinear tf) of the snippets' code tokens, with the vocabulary
    and idf fitted on `fit_on` (the selection side; default: the snippets themselves). Tokens unseen
    there are dropped, as a fitted model would drop them."""
    vectorizer = _vectorizer()
    if fit_on is None:
        return vectorizer.fit_transform([s.code for s in snippets]).tocsr()
    vectorizer.fit([s.code for s in fit_on])
    return vectorizer.transform([s.code for s in snippets]).tocsr()


class TfidfIndex:
    """The baseline as a search index: TF-IDF fitted on `fit_on` (the selection side, as the evaluation fits
    it), the candidates' rows computed once, a query's cosine with every candidate by one sparse product."""

    def __init__(self, snippets: Sequence[Snippet], fit_on: Sequence[Snippet] | None = None):
        self.vectorizer = _vectorizer().fit([s.code for s in (snippets if fit_on is None else fit_on)])
        self.matrix = self.vectorizer.transform([s.code for s in snippets]).tocsr()

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def scores(self, code: str) -> np.ndarray:
        """(candidates,) cosine similarity of `code` with each candidate, in the order they were given (0 for a
        query with no token of the fitted vocabulary)."""
        query = self.vectorizer.transform([code])
        return np.asarray((self.matrix @ query.T).toarray()).ravel().astype(np.float32)
