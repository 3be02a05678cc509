"""TODO docstring (neuro.results.layers)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neuro.analysis.layers import LayerReport, contribution_losses, contribution_sample, layer_report
from neuro.code.corpus import Snippet, corpus_hash
from neuro.instrument.states import LayerStates, layer_states
from neuro.model.cards import remember_model
from neuro.model.loading import LoadedModel
from neuro.progress import Progress
from neuro.results.resume import chunked_rows, drop_chunks, resumable_steps
from neuro.results.store import Entry, Store, make_key

LAYERS_KIND = "layer_scores"

LAYERS_VERSION = 2  # 2: token positions sampled per program (resumable in chunks)

def _resumable_states(loaded: LoadedModel, snippets: Sequence[Snippet], key: str, store: Store, *,
                      tokens_per_snippet: int, seed: int, max_length: int, progress: Progress | None) -> LayerStates:
    """`layer_states` in chunks of programs kept in the cache (neuro.resume) until the report is saved."""
    def chunk(lo: int, hi: int, chunk_progress: Progress | None) -> Entry:
        part = layer_states(loaded, snippets[lo:hi], tokens_per_snippet=tokens_per_snippet, seed=seed,
                            max_length=max_length, progress=chunk_progress)
        arrays = {"pooled": part.pooled}
        if part.tokens is not None:
            arrays.update(tokens=part.tokens, token_index=part.token_index + np.array([lo, 0]))
        return Entry(arrays=arrays)

    parts = [p.arrays for p in chunked_rows(store, LAYERS_KIND, key, snippets, chunk, progress=progress)]
    if not tokens_per_snippet:
        return LayerStates(np.concatenate([p["pooled"] for p in parts]), None, None)
    return LayerStates(*(np.concatenate([p[name] for p in parts]) for name in ("pooled", "tokens", "token_index")))

def _resumable_losses(loaded: LoadedModel, sample: Sequence[Snippet], key: str, store: Store, *, max_length: int,
                      progress: Progress | None) -> list[dict[str, float]]:
    """`contribution_losses` for nothing and then each layer silenced, each kept in the cache when done."""
    layers = [None, *range(loaded.n_layers)]
    steps = [make_key("contribution", result=key, silenced=layer, sample=corpus_hash(sample)) for layer in layers]

    def step(index: int) -> Entry:
        entry = Entry(meta={"losses": contribution_losses(loaded, sample, layers[index], max_length)})
        if progress:
            progress(index + 1, len(layers))
        return entry

    entries = resumable_steps(store, LAYERS_KIND, key, steps, step,
                              loaded=progress and (lambda index: progress(index + 1, len(layers))))
    return [e.meta["losses"] for e in entries]

def cached_layer_report(loaded: LoadedModel, snippets: Sequence[Snippet], *, store: Store | None = None,
                        progress: Progress | None = None, compute: bool = True, **params) -> LayerReport | None:
    """`layer_report` through the cache (None when not cached and `compute` is False). `snippets`: the
    selection side of the corpus split, or a `CorpusSplit` (its selection side is used).

    Its passes over the model (the states of every program, one loss pass per silenced layer) are
    resumable: a killed or cancelled computation keeps its finished chunks and the next one resumes."""
    from neuro.results.embeddings import POOLED_VERSION

    snippets = list(getattr(snippets, "selection", snippets))
    store = store or Store()
    key = make_key(LAYERS_KIND, model=loaded.identity, corpus=corpus_hash(snippets), pooled=POOLED_VERSION,
                   version=LAYERS_VERSION, **params)
    entry = store.load(LAYERS_KIND, key)
    if entry is None:
        if not compute:
            return None
        options = dict(tokens_per_snippet=12, contribution=True, contribution_limit=200, max_length=512, seed=0)
        options.update(params)
        sample = contribution_sample(snippets, options["contribution_limit"]) if options["contribution"] else []
        n, n_layers = len(snippets), loaded.n_layers
        total = n + n_layers + (n_layers + 1) * len(sample)
        states = _resumable_states(loaded, snippets, key, store, tokens_per_snippet=options["tokens_per_snippet"],
                                   seed=options["seed"], max_length=options["max_length"],
                                   progress=progress and (lambda d, _t: progress(d, total)))
        passes = (n_layers + 1) * len(sample)  # then the loss passes, then the probes (one per layer)
        losses = _resumable_losses(loaded, sample, key, store, max_length=options["max_length"],
                                   progress=progress and (lambda d, _t: progress(n + d * len(sample), total))
                                   ) if sample else None
        probes = progress and (lambda d, _t: progress(passes + d, total) if d > n else None)
        report = layer_report(loaded, snippets, progress=probes, states=states, losses=losses, **params)
        entry = Entry(tables={"scores": report.scores, "pairs": report.pairs},
                      meta={"concept_layers": report.concept_layers, "rule": report.rule, "meta": report.meta})
        if store.try_save(LAYERS_KIND, key, entry) is not None:
            drop_chunks(store, LAYERS_KIND, key)
            remember_model(loaded, store.root)
    return LayerReport(entry.tables["scores"], entry.tables["pairs"], list(entry.meta["concept_layers"]),
                       entry.meta["rule"], entry.meta["meta"])

def concept_layers(loaded: LoadedModel, snippets: Sequence[Snippet], store: Store | None = None) -> list[int]:
    """The concept layers of a model on a corpus (cached): the default layers for clone detection
    embeddings and for concept-layer-guided adaptation. `snippets`: the selection side of the corpus
    split, or a `CorpusSplit` (its selection side is used), never the programs the layers are evaluated on."""
    snippets = getattr(snippets, "selection", snippets)
    full = cached_layer_report(loaded, snippets, store=store, compute=False)  # the page's report, if any
    return (full or cached_layer_report(loaded, snippets, store=store, contribution=False)).concept_layers

def default_concept_layer(loaded: LoadedModel, snippets: Sequence[Snippet], store: Store | None = None) -> int:
    """One layer for embeddings: the middle of the concept layers (chosen on the selection side)."""
    layers = concept_layers(loaded, snippets, store)
    return layers[len(layers) // 2]
