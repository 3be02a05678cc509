"""What one neuron responds to: its syntax node-type profile and its top activating tokens in context.

Both come from the statistics pass (no extra model run): the profile from per-node-type sums, the
examples from the running top-k, re-tokenizing only the few programs they point into.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from neuro.code.corpus import Snippet
from neuro.code.syntax import align_tokens
from neuro.instrument.statistics import POSITION_BITS, CorpusStats
from neuro.instrument.tokens import encode
from neuro.model.loading import LoadedModel


def syntax_profile(stats: CorpusStats, layer: int, neuron: int, min_count: int = 5) -> pd.DataFrame:
    """Mean activation of the neuron per tree-sitter node type (types seen at least `min_count` times),
    highest first."""
    if stats.type_sum is None or stats.type_count is None:  # captured together
        raise ValueError("these statistics were captured without syntax profiles")
    counts = stats.type_count
    frame = pd.DataFrame({
        "node_type": stats.meta["node_types"],
        "mean_activation": stats.type_sum[layer, :, neuron] / counts.clip(min=1),
        "tokens": counts.astype(int),
    })
    frame = frame[frame.tokens >= min_count]
    return frame.sort_values("mean_activation", ascending=False, ignore_index=True)


@dataclass(frozen=True)
class Example:
    """One top-activating token with its context: `before` + `token` + `after` reproduce the line(s)."""

    rank: int
    activation: float
    snippet_id: str
    lang: str
    token: str
    before: str
    after: str
    node_type: str | None


def top_examples(stats: CorpusStats, snippets: Sequence[Snippet], loaded: LoadedModel, layer: int, neuron: int,
                 context_chars: int = 80, max_length: int | None = None) -> list[Example]:
    """The neuron's top-k activating tokens, each with the code around it and its syntax node."""
    if stats.top_values is None or stats.top_ids is None:  # captured together
        raise ValueError("these statistics were captured without top-k examples")
    ids = stats.meta.get("snippet_ids", [])
    by_id = {s.id: s for s in snippets}
    max_length = max_length or stats.meta.get("max_length", 512)
    out = []
    for rank, (value, gid) in enumerate(zip(stats.top_values[layer, :, neuron], stats.top_ids[layer, :, neuron])):
        if gid < 0 or not value > float("-inf"):
            continue
        index, position = int(gid) >> POSITION_BITS, int(gid) & ((1 << POSITION_BITS) - 1)
        snippet = by_id.get(ids[index]) if index < len(ids) else None
        if snippet is None:
            continue
        offsets = encode(loaded, snippet.code, max_length).offsets
        if position >= len(offsets):
            continue
        start, end = offsets[position]
        node = align_tokens(snippet.code, snippet.lang, [(start, end)])[0]
        code = snippet.code
        out.append(Example(rank + 1, float(value), snippet.id, snippet.lang, code[start:end],
                           code[max(0, start - context_chars):start], code[end:end + context_chars], node.type))
    return out
