"""Cached layer reports (recipe `LAYER_REPORT`) and the concept layers other analyses default to."""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from neuro.analysis.embeddings import DEFAULT_CENTERING
from neuro.analysis.layers import LayerReport, contribution_losses, contribution_sample, layer_report
from neuro.choices import CenterChoice
from neuro.code.corpus import Snippet, corpus_hash
from neuro.instrument.states import LayerStates, layer_states, token_sample
from neuro.model.loading import LoadedModel
from neuro.progress import Progress
from neuro.results.embeddings import POOLED
from neuro.results.layered import Layered
from neuro.results.recipe import Cache, Call, Recipe
from neuro.results.store import Entry, make_key


def _resumable_states(call: Call, *, tokens_per_snippet: int, seed: int, max_length: int, max_tokens: int | None,
                      progress: Progress | None) -> LayerStates[Layered]:
    """`layer_states` in chunks of programs kept in the cache (neuro.results.resume) until the report is saved,
    each chunk's rows written as they come into per-layer files staged in the cache (neuro.results.layered):
    the pass holds one chunk, the report then reads one layer at a time. The sampled tokens are
    `token_sample`'s reservoir of at most `max_tokens`, fixed before the pass (the same in a resumed pass)."""
    loaded, snippets = call.loaded, call.snippets
    picks = token_sample(loaded, snippets, tokens_per_snippet=tokens_per_snippet, seed=seed, max_length=max_length,
                         max_tokens=max_tokens)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in picks])]).astype(int)

    def chunk(lo: int, hi: int, chunk_progress: Progress | None) -> Entry:
        part = layer_states(loaded, snippets[lo:hi], tokens_per_snippet=tokens_per_snippet, seed=seed,
                            max_length=max_length, progress=chunk_progress, picks=picks[lo:hi])
        arrays = {"pooled": part.pooled}
        if part.tokens is not None and len(part.tokens):
            arrays["tokens"] = part.tokens
        return Entry(arrays=arrays)

    hidden = loaded.embeddings.weight.shape[1]
    pooled = call.layer_writer(len(snippets), loaded.n_layers, hidden, "pooled")
    tokens = call.layer_writer(int(offsets[-1]), loaded.n_layers, hidden, "tokens") if tokens_per_snippet else None
    for lo, hi, part in call.chunks(chunk, progress=progress):
        pooled.write(lo, part.arrays["pooled"])
        if tokens is not None and offsets[hi] > offsets[lo]:
            tokens.write(int(offsets[lo]), part.arrays["tokens"])
    if tokens is None:
        return LayerStates(pooled.finish(), None, None)
    index = np.array([(i, int(pos)) for i, p in enumerate(picks) for pos in p], dtype=np.int64).reshape(-1, 2)
    return LayerStates(pooled.finish(), tokens.finish(), index)


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
    options = params
    sample = contribution_sample(snippets, options["contribution_limit"]) if options["contribution"] else []
    n, n_layers = len(snippets), loaded.n_layers
    total = n + n_layers + (n_layers + 1) * len(sample)
    states = _resumable_states(call, tokens_per_snippet=options["tokens_per_snippet"], seed=options["seed"],
                               max_length=options["max_length"], max_tokens=options["max_tokens"],
                               progress=progress and (lambda d, _t: progress(d, total)))
    passes = (n_layers + 1) * len(sample)  # then the loss passes, then the probes (one per layer)
    losses = _resumable_losses(call, sample, max_length=options["max_length"],
                               progress=progress and (lambda d, _t: progress(n + d * len(sample), total))
                               ) if sample else None
    probes = progress and (lambda d, _t: progress(passes + d, total) if d > n else None)
    try:
        report = layer_report(loaded, snippets, progress=probes, states=states, losses=losses, **params)
    finally:  # the staged states are scratch: only the scores are kept
        for array in (states.pooled, states.tokens):
            if array is not None:
                array.discard()
    return Entry(tables={"scores": report.scores, "pairs": report.pairs, "alignment": report.alignment},
                 meta={"concept_layers": report.concept_layers, "rule": report.rule, "meta": report.meta})


def _selection_side(loaded: LoadedModel, snippets, args: dict) -> tuple[Sequence[Snippet], dict]:
    """A `CorpusSplit` means its selection side: the concept layers are never chosen on the programs
    they are evaluated on."""
    return getattr(snippets, "selection", snippets), args


REPORT_DEFAULTS = {name: p.default for name, p in inspect.signature(layer_report).parameters.items()
                   if p.kind is p.KEYWORD_ONLY and name not in ("progress", "states", "losses")}


def _report_key(args: dict) -> dict:
    """The parameters that differ from `layer_report`'s defaults: a default given or left out is one key (the
    key of a call with every default is the key of a call with none, as entries were keyed before)."""
    return {name: value for name, value in args.items()
            if name not in REPORT_DEFAULTS or json.dumps(value, default=str) != json.dumps(REPORT_DEFAULTS[name],
                                                                                            default=str)}


LAYER_REPORT: Recipe[LayerReport] = Recipe(
    # 2: token positions sampled per program (resumable in chunks); 3: probes cross-validated by program / task
    # (grouped folds), alignment and concept layers measured after clone search's centring (and kept for each)
    kind="layer_scores", version=3,
    compute=_report, read=lambda entry: LayerReport(
        entry.tables["scores"], entry.tables["pairs"], list(entry.meta["concept_layers"]), entry.meta["rule"],
        entry.meta["meta"], entry.tables.get("alignment", pd.DataFrame())),
    key_parts=_report_key, defaults=REPORT_DEFAULTS, prepare=_selection_side, inputs={"pooled": POOLED})
"""`layer_report` (per-layer language ID, alignment, syntax probe, contribution; the concept layers) of
the selection side of the corpus split; `snippets` may be the `CorpusSplit` itself. Its args are
`layer_report`'s parameters."""


def concept_layers(loaded: LoadedModel, snippets: Sequence[Snippet], cache: Cache = None,
                   progress: Progress | None = None, center: CenterChoice = DEFAULT_CENTERING) -> list[int]:
    """The concept layers of a model on a corpus: the Layers page's report when cached, else a report
    without the contribution passes (computed and cached, reporting to `progress`). The default layers
    for clone detection embeddings and for concept-layer-guided adaptation. `snippets`: the selection
    side of the corpus split, or a `CorpusSplit`, never the programs the layers are evaluated on.
    `center`: the centring the alignment is measured after, the one clone search will use (one report
    holds the choice for every centring)."""
    full = LAYER_REPORT.get(loaded, snippets, cache=cache, compute=False)
    return (full or LAYER_REPORT.get(loaded, snippets, cache=cache, contribution=False,
                                     progress=progress)).concept_layers_for(center)


def default_concept_layer(loaded: LoadedModel, snippets: Sequence[Snippet], cache: Cache = None,
                          center: CenterChoice = DEFAULT_CENTERING) -> int:
    """One layer for embeddings: the middle of the concept layers (chosen on the selection side, with
    alignment measured after `center`'s centring)."""
    layers = concept_layers(loaded, snippets, cache, center=center)
    return layers[len(layers) // 2]
