"""Summary metrics: smoothed sentence BLEU-4 as CodeXGLUE code-to-text reports it, and ROUGE-L.

BLEU follows CodeXGLUE's `evaluator/smooth_bleu.py` (itself from the MOSES/NIST `bleu.py`), so numbers
are comparable with published code-summarization results:

- text is lower-cased, split into words and punctuation (`splitPuncts`), then NIST-normalized;
- per sentence: clipped n-gram matches for n = 1..4; Lin & Och (2004) smoothing adds 1 to the
  matches and to the candidate n-gram count for n >= 2 (not for unigrams);
- brevity penalty exp(min(0, 1 - (r + 1) / (c + 1))) with r the shortest reference length;
- the corpus score is the mean of the sentence scores, x 100.

ROUGE-L is the F-measure of the longest common subsequence of words (lower-cased, alphanumeric words
as in Google's `rouge-score` tokenizer), beta = 1 by default, averaged over sentences, x 100.
"""

from __future__ import annotations

import math
import re
import sys
import xml.sax.saxutils
from collections import Counter
from collections.abc import Sequence

_TINY = sys.float_info.min

_NORMALIZE1 = [(re.compile(p), r) for p, r in [("<skipped>", ""), (r"-\n", ""), (r"\n", " ")]]

_NORMALIZE2 = [(re.compile(p), r) for p, r in [
    (r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", r" \1 "),  # punctuation (apostrophe excluded)
    (r"([^0-9])([\.,])", r"\1 \2 "),               # period and comma unless preceded by a digit
    (r"([\.,])([^0-9])", r" \1 \2"),               # period and comma unless followed by a digit
    (r"([0-9])(-)", r"\1 \2 "),                    # dash after a digit
]]


def split_puncts(text: str) -> str:
    """CodeXGLUE's pre-tokenization: words and single punctuation characters, space-separated."""
    return " ".join(re.findall(r"[\w]+|[^\s\w]", text))


def bleu_tokens(text: str) -> list[str]:
    """The tokens BLEU counts: CodeXGLUE's splitPuncts(lower(strip)), then NIST normalization."""
    s = split_puncts(text.strip().lower())
    for pattern, repl in _NORMALIZE1:
        s = pattern.sub(repl, s)
    s = xml.sax.saxutils.unescape(s, {"&quot;": '"'})
    s = f" {s} ".lower()
    for pattern, repl in _NORMALIZE2:
        s = pattern.sub(repl, s)
    return s.split()


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i: i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def sentence_bleu(references: str | Sequence[str], candidate: str, n: int = 4) -> float:
    """Smoothed BLEU-n of one candidate in [0, 1] (see the module docstring)."""
    refs = [references] if isinstance(references, str) else list(references)
    ref_tokens = [bleu_tokens(r) for r in refs]
    max_counts: Counter = Counter()
    for tokens in ref_tokens:
        max_counts |= _ngrams(tokens, n)
    test = bleu_tokens(candidate)
    correct = [0] * n
    for gram, count in _ngrams(test, n).items():
        correct[len(gram) - 1] += min(max_counts.get(gram, 0), count)
    guess = [max(len(test) - k, 0) for k in range(n)]
    log_bleu = 0.0
    for k in range(n):
        add = 1 if k > 0 else 0
        log_bleu += math.log(correct[k] + add + _TINY) - math.log(guess[k] + add + _TINY)
    log_bleu /= n
    ref_len = min(len(t) for t in ref_tokens)
    brevity = min(0.0, 1 - (ref_len + 1) / (len(test) + 1))
    return math.exp(log_bleu + brevity)


def smoothed_bleu4(references: Sequence[str], candidates: Sequence[str]) -> float:
    """Mean sentence BLEU-4 over pairs, x 100 (CodeXGLUE's reported number)."""
    if len(references) != len(candidates):
        raise ValueError(f"{len(references)} references for {len(candidates)} candidates")
    if not references:
        return float("nan")
    return 100.0 * sum(sentence_bleu(r, c) for r, c in zip(references, candidates)) / len(references)


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenizer: lower-case, non-alphanumerics become spaces."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) dynamic programme, one row kept)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b, 1):
            row.append(prev[j - 1] + 1 if x == y else max(prev[j], row[j - 1]))
        prev = row
    return prev[-1]


def sentence_rouge_l(reference: str, candidate: str, beta: float = 1.0) -> float:
    """ROUGE-L F-measure of one candidate in [0, 1]: P = LCS/|cand|, R = LCS/|ref|."""
    ref, cand = rouge_tokens(reference), rouge_tokens(candidate)
    lcs = lcs_length(ref, cand)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return (1 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision)


def rouge_l(references: Sequence[str], candidates: Sequence[str], beta: float = 1.0) -> float:
    """Mean sentence ROUGE-L F-measure over pairs, x 100."""
    if len(references) != len(candidates):
        raise ValueError(f"{len(references)} references for {len(candidates)} candidates")
    if not references:
        return float("nan")
    return 100.0 * sum(sentence_rouge_l(r, c, beta) for r, c in zip(references, candidates)) / len(references)
