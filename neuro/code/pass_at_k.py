"""pass@k: the unbiased estimator of Chen et al. (2021) and its mean per language over sampled programs
(each sample's pass or fail comes from running it in the sandbox, neuro.code.sandbox)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from neuro.code.corpus import LANGS, normalize_lang

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    prod = 1.0  # the product form avoids huge binomials: prod_{i=n-c+1}^{n} (1 - k / i)
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_at_k_by_language(outcomes: Iterable[tuple[str, str, bool]], ks: Iterable[int] = (1,)
                          ) -> dict[str, dict[int, float]]:
    """Mean pass@k per language from (lang, task, passed) samples; a k above some task's n is left out."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for lang, task, passed in outcomes:
        entry = counts[(normalize_lang(lang), task)]
        entry[0] += 1
        entry[1] += bool(passed)
    table: dict[str, dict[int, float]] = {}
    for lang in LANGS:
        tasks = [nc for (lng, _), nc in counts.items() if lng == lang]
        if tasks:
            table[lang] = {k: sum(pass_at_k(n, c, k) for n, c in tasks) / len(tasks)
                           for k in ks if all(n >= k for n, _ in tasks)}
    return table
