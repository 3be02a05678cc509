"""Neuron profiles from the statistics pass: node-type means and top examples in context."""

import numpy as np
import pytest

from neuro.analysis.profiles import syntax_profile, top_examples
from neuro.instrument.statistics import capture_statistics, trace_tokens


@pytest.fixture(scope="module")
def rich_stats(tiny_llama):
    from conftest import SNIPPETS
    return capture_statistics(tiny_llama, SNIPPETS, syntax=True, top_k=5)


def test_syntax_profile_is_a_mean_per_type(rich_stats):
    frame = syntax_profile(rich_stats, layer=1, neuron=3, min_count=1)
    assert frame.mean_activation.is_monotonic_decreasing
    types = rich_stats.meta["node_types"]
    row = frame.iloc[0]
    j = types.index(row.node_type)
    assert row.mean_activation == pytest.approx(rich_stats.type_sum[1, j, 3] / rich_stats.type_count[j])
    assert "identifier" in set(frame.node_type)


def test_top_examples_point_at_the_right_tokens(rich_stats, tiny_llama, snippets):
    examples = top_examples(rich_stats, snippets, tiny_llama, layer=2, neuron=11)
    assert [e.rank for e in examples] == [1, 2, 3, 4, 5]
    assert all(a.activation >= b.activation for a, b in zip(examples, examples[1:]))
    by_id = {s.id: s for s in snippets}
    for e in examples:
        snippet = by_id[e.snippet_id]
        assert (e.before + e.token + e.after) in snippet.code
        trace = trace_tokens(tiny_llama, snippet.code, layers=[2])
        assert np.isclose(trace.activations[0, :, 11], e.activation, atol=1e-5).any()


def test_missing_extras_raise(tiny_llama, snippets):
    plain = capture_statistics(tiny_llama, snippets[:2])
    with pytest.raises(ValueError):
        syntax_profile(plain, 0, 0)
    with pytest.raises(ValueError):
        top_examples(plain, snippets, tiny_llama, 0, 0)
