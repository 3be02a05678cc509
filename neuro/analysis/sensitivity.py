"""How the neuron counts move with the selection's normalisation and thresholds.

Which languages "have" specific neurons can hinge on a choice the paper leaves open (on the demo model raw
PLS gives C++ 6 and Python 2, the default per-language-and-layer scale C++ 1 and Python 7): this table puts
the counts of each choice side by side, one parameter varied at a time around a base setting. Pure numpy on
the per-language statistics (no per-program scores), fast enough to recompute on a page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd

from neuro.analysis.selectivity import SelectionParams, select_pls
from neuro.choices import NORMALIZATIONS, Normalization
from neuro.instrument.statistics import CorpusStats

QUANTILES = (0.8, 0.9, 0.95)
RATIOS = (1.25, 1.5, 2.0)
FRACTIONS = (0.005, 0.01, 0.02)


def sensitivity(stats: CorpusStats, base: SelectionParams | None = None, *,
                normalizations: Sequence[Normalization] = NORMALIZATIONS, quantiles: Sequence[float] = QUANTILES,
                ratios: Sequence[float] = RATIOS, fractions: Sequence[float] = FRACTIONS) -> pd.DataFrame:
    """PLS (or attribution) counts per language and universal, one row per setting: the base, then each of
    `normalize`, `candidate_quantile`, `ratio` and `top_fraction` varied alone over the given values.

    Columns: varied (the parameter), value, normalize, candidate_quantile, ratio, top_fraction, is_base, then
    one count per language and "universal"."""
    base = base or SelectionParams()
    settings: list[tuple[str, str | float, SelectionParams]] = [("base", "", base)]
    settings += [("normalize", v, replace(base, normalize=v)) for v in normalizations if v != base.normalize]
    settings += [("candidate_quantile", v, replace(base, candidate_quantile=v)) for v in quantiles
                 if v != base.candidate_quantile]
    settings += [("ratio", v, replace(base, ratio=v)) for v in ratios if v != base.ratio]
    settings += [("top_fraction", v, replace(base, top_fraction=v)) for v in fractions if v != base.top_fraction]
    rows = []
    for varied, value, params in settings:
        counts = select_pls(stats, params).counts_by_language()
        rows.append({"varied": varied, "value": str(value), "normalize": params.normalize,
                     "candidate_quantile": params.candidate_quantile, "ratio": params.ratio,
                     "top_fraction": params.top_fraction, "is_base": params == base, **counts})
    return pd.DataFrame(rows)
