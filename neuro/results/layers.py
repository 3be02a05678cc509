"""Cached layer reports (recipe `LAYER_REPORT`) and the concept layers other analyses default to."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neuro.analysis.layers import LayerReport, contribution_losses, contribution_sample, layer_report
from neuro.code.corpus import Snippet, corpus_hash
from neuro.instrument.states import LayerStates, layer_states
from neuro.model.loading import LoadedModel
from neuro.progress import Progress
from neuro.results.embeddings import POOLED
from neuro.results.recipe import Cache, Call, Recipe
from neuro.results.store import Entry, make_key


def _resumable_states(call: Call, *, tokens_per_snippet: int, seed: int, max_length: int,
                      progress: Progress | None) -> LayerStates:
    """`layer_states` in chunks of programs kept in the cache (neuro.results.resume) until the report is saved."""
    def chunk(lo: int, hi: int, chunk_progress: Progress | None) -> Entry:
        part = layer_states(call.loaded, call.snippets[lo:hi], tokens_per_snippet=tokens_per_snippet, seed=seed,
                            max_length=max_length, progress=chunk_progress)
        arrays = {"pooled": part.pooled}
        if part.tokens is not None:
            arrays.update(tokens=part.tokens, token_index=part.token_index + np.array([lo, 0]))
        return Entry(arrays=arrays)

    parts = [p.arrays for p in call.chunked_rows(chunk, progress=progress)]
    if not tokens_per_snippet:
        return LayerStates(np.concatenate([p["pooled"] for p in parts]), None, None)
    return LayerStates(*(np.concatenate([p[name] for p in parts]) for name in ("pooled", "tokens", "token_index")))


def _resumable_losses(call: Call, sample: Sequence[Snippet], *, max_length: int,
                      progress: Progress | None) -> list[dict[str, float]]:
    """`contribution_losses` for nothing and then each layer silenced, each kept in the cache when done."""
    layers = [None, *range(call.loaded.n_layers)]
    steps = [make_key("contribution", result=call.key, silenced=layer, sample=corpus_hash(sample)) for layer in layers]

    def step(index: int) -> Entry:
        entry = Entry(meta={"losses": contribution_losses(call.loaded, sample, layers[index], max_length)})
        if progress:
            progress(index + 1, len(layers))
        return entry

    entries = call.steps(steps, step, loaded=progress and (lambda index: progress(index + 1, len(layers))))
    return [e.meta["losses"] for e in entries]


def _report(call: Call) -> Entry:
    """The report's passes over the model (the states of every program, one loss pass per silenced layer)
    are resumable: a killed or cancelled computation keeps its finished chunks and the next one resumes."""
    loaded, snippets, params, progress = call.loaded, call.snippets, call.args, call.progress
    options = dict(tokens_per_snippet=12, contribution=True, contribution_limit=200, max_length=512, seed=0)
    options.update(params)
    sample = contribution_sample(snippets, options["contribution_limit"]) if options["contribution"] else []
    n, n_layers = len(snippets), loaded.n_layers
    total = n + n_layers + (n_layers + 1) * len(sample)
    states = _resumable_states(call, tokens_per_snippet=options["tokens_per_snippet"], seed=options["seed"],
                               max_length=options["max_length"],
                               progress=progress and (lambda d, _t: progress(d, total)))
    passes = (n_layers + 1) * len(sample)  # then the loss passes, then the probes (one per layer)
    losses = _resumable_losses(call, sample, max_length=options["max_length"],
                               progress=progress and (lambda d, _t: progress(n + d * len(sample), total))
                               ) if sample else None
    probes = progress and (lambda d, _t: progress(passes + d, total) if d > n else None)
    report = layer_report(loaded, snippets, progress=probes, states=states, losses=losses, **params)
    return Entry(tables={"scores": report.scores, "pairs": report.pairs},
                 meta={"concept_layers": report.concept_layers, "rule": report.rule, "meta": report.meta})


def _selection_side(loaded: LoadedModel, snippets, args: dict) -> tuple[Sequence[Snippet], dict]:
    """A `CorpusSplit` means its selection side: the concept layers are never chosen on the programs
    they are evaluated on."""
    return getattr(snippets, "selection", snippets), args


LAYER_REPORT: Recipe[LayerReport] = Recipe(
    kind="layer_scores", version=2,  # 2: token positions sampled per program (resumable in chunks)
    compute=_report, read=lambda entry: LayerReport(
        entry.tables["scores"], entry.tables["pairs"], list(entry.meta["concept_layers"]), entry.meta["rule"],
        entry.meta["meta"]),
    key_parts=dict,  # the layer_report parameters as given (a default left out keys apart from one given)
    prepare=_selection_side, inputs={"pooled": POOLED})
"""`layer_report` (per-layer language ID, alignment, syntax probe, contribution; the concept layers) of
the selection side of the corpus split; `snippets` may be the `CorpusSplit` itself. Its args are
`layer_report`'s parameters."""


def concept_layers(loaded: LoadedModel, snippets: Sequence[Snippet], cache: Cache = None,
                   progress: Progress | None = None) -> list[int]:
    """The concept layers of a model on a corpus: the Layers page's report when cached, else a report
    without the contribution passes (computed and cached, reporting to `progress`). The default layers
    for clone detection embeddings and for concept-layer-guided adaptation. `snippets`: the selection
    side of the corpus split, or a `CorpusSplit`, never the programs the layers are evaluated on."""
    full = LAYER_REPORT.get(loaded, snippets, cache=cache, compute=False)
    return (full or LAYER_REPORT.get(loaded, snippets, cache=cache, contribution=False,
                                     progress=progress)).concept_layers


def default_concept_layer(loaded: LoadedModel, snippets: Sequence[Snippet], cache: Cache = None) -> int:
    """One layer for embeddings: the middle of the concept layers (chosen on the selection side)."""
    layers = concept_layers(loaded, snippets, cache)
    return layers[len(layers) // 2]
