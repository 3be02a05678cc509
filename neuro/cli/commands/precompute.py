"""precompute: rebuild the results shipped with the repository for the embedded default.

The demo model on the demo corpus, with the default split and the default parameters, is what a newcomer's
first view of every page shows. Its results are shipped in neuro/assets/precomputed (a read-only layer
under the cache, neuro.results.store), keyed exactly like computed ones, so those pages open at once. This
command computes them afresh (in a temporary cache) with the same calls the pages make at first view and
writes them there, trimmed: the statistics leave out their per-program arrays (22 of their 26 MB), which
only a chance level for other parameters needs (it then captures them again, neuro.results.statistics).

`first_views` is the one list of those calls; tests/test_precomputed.py checks the shipped entries against
it (and the pages against the shipped entries), so a changed model, corpus, parameter or recipe version
fails there and says to run `python -m neuro precompute`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuro.analysis.selectivity import SelectionParams
from neuro.cli import command, progress
from neuro.code.corpus import Snippet, corpus_hash, load_corpus
from neuro.code.split import SplitParams, split_corpus
from neuro.instrument.tokens import truncation
from neuro.model.loading import LoadedModel
from neuro.paths import DEMO_MODEL_DIR, PRECOMPUTED_DIR
from neuro.progress import Progress
from neuro.results.embeddings import LAYER_EMBEDDINGS, POOLED, PROJECTION
from neuro.results.layers import LAYER_REPORT
from neuro.results.recipe import Cache, Recipe, open_store
from neuro.results.statistics import CHANCE, STATS, without_units
from neuro.results.statistics import UNIVERSALITY

REBUILD = "python -m neuro precompute"

# the Neurons page's selection parameters before any slider is moved (views/neurons.py: the fields' defaults)
NEURONS_PAGE_PARAMS = SelectionParams()

# asked for by a page at first view but not shipped, with why (the shipped folder is kept small: ~6.6 MB).
LEFT_OUT = {LAYER_EMBEDDINGS.kind: "one layer of the all-layer pooled states, which are shipped and serve it "
                                   "(LAYER_EMBEDDINGS reuses POOLED's entry)"}


@dataclass
class Asked:
    """One result a page asks for at first view, and what it got (None: not cached, with compute=False)."""

    page: str
    recipe: Recipe
    snippets: Sequence[Snippet]
    args: dict
    result: Any = None
    seconds: float = 0.0
    key: str = field(default="")


def first_views(loaded: LoadedModel, snippets: Sequence[Snippet], *, cache: Cache = None, compute: bool = True,
                progress_for: Callable[[str], Progress | None] | None = None) -> list[Asked]:
    """Every cached result the Neurons, Layers, Embeddings and Clones pages ask for at first view on
    `snippets` (default split, default parameters), in the order the pages ask, each got from `cache`
    (computed where missing, unless `compute=False`)."""
    split = split_corpus(snippets, SplitParams())
    store = open_store(cache)
    out: list[Asked] = []

    def ask(page: str, recipe: Recipe, part: Sequence[Snippet], **args) -> Any:
        asked = Asked(page, recipe, part, args, key=recipe.key(loaded, part, **args))
        start = time.perf_counter()
        asked.result = recipe.get(loaded, part, cache=store, compute=compute,
                                  progress=progress_for and progress_for(f"{page}: {recipe.kind}"), **args)
        asked.seconds = time.perf_counter() - start
        out.append(asked)
        return asked.result

    # Neurons (views/ui pls_statistics, then the chance level of the default selection)
    ask("Neurons", STATS, split.selection)
    ask("Neurons", CHANCE, split.selection, method="pls", params=NEURONS_PAGE_PARAMS)
    ask("Neurons", UNIVERSALITY, split.selection, method="pls", params=NEURONS_PAGE_PARAMS)
    # Layers: the layer report of the selection side
    report = ask("Layers", LAYER_REPORT, split.selection)
    concept = report.concept_layers if report is not None else [loaded.n_layers // 2]
    middle = concept[len(concept) // 2]
    # Clones: the index at the middle concept layer (build_index's default_concept_layer); asked before the
    # projections compute the all-layer states, so it is computed (and kept) as its own entry
    ask("Clones", LAYER_EMBEDDINGS, list(snippets), layer=middle, max_length=512)
    # Embeddings: the projections at layer 0 and at the middle concept layer, not centred
    for layer in dict.fromkeys((0, middle)):
        ask("Embeddings", PROJECTION, list(snippets), layer=layer, center="none")
    # Clones: the search explanation's all-layer states (computed by the projections already; see LEFT_OUT)
    ask("Clones", POOLED, list(snippets), max_length=512)
    return out


def shipped_entry(asked: Asked, store):
    """The entry to ship for one request: the computed one (the statistics without their per-unit arrays)."""
    entry = store.load(asked.recipe.kind, asked.key)
    if entry is None:
        raise RuntimeError(f"{asked.page}: {asked.recipe.kind}/{asked.key} was computed but not kept")
    return without_units(entry) if asked.recipe is STATS else entry


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build(loaded: LoadedModel, snippets: Sequence[Snippet], out: Path,
          progress_for: Callable[[str], Progress | None] | None = None, keep_matching: bool = False) -> dict:
    """Compute the first views afresh and write them (trimmed) into `out`, replacing what it held; the
    summary of what was shipped. `keep_matching`: entries already shipped under a key that is still asked
    for are kept instead of computed again (their keys name model, corpus, parameters and versions)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "index.json").is_file():
        raise ValueError(f"{out} holds files that are not shipped results; pick an empty or new folder")
    with tempfile.TemporaryDirectory(prefix="neuro-precompute-") as work:
        kept = set()
        if keep_matching and out.is_dir():
            for manifest in out.glob("*/*/manifest.json"):
                shutil.copytree(manifest.parent, Path(work) / manifest.parent.parent.name / manifest.parent.name)
                kept.add(manifest.parent.name)
        fresh = open_store(work, shipped=None)
        asked = first_views(loaded, snippets, cache=fresh, progress_for=progress_for)
        staging = out.parent / f".{out.name}-new"
        shutil.rmtree(staging, ignore_errors=True)
        target = open_store(staging, shipped=None)
        entries = []
        for a in (a for a in asked if a.recipe.kind not in LEFT_OUT):
            folder = target.save(a.recipe.kind, a.key, shipped_entry(a, fresh))
            entries.append({"page": a.page, "kind": a.recipe.kind, "key": a.key, "bytes": folder_bytes(folder),
                            "compute_seconds": None if a.key in kept else round(a.seconds, 1),
                            "args": json.loads(json.dumps(a.args, default=str))})
    index = {"about": f"results of the embedded demo model on the embedded demo corpus, rebuilt by `{REBUILD}`; "
                      "read-only, consulted when the cache misses (neuro.results.store)",
             "model": loaded.identity, "corpus": corpus_hash(list(snippets)), "programs": len(snippets),
             "split": split_corpus(snippets, SplitParams()).summary(), "entries": entries,
             "left_out": LEFT_OUT}
    (staging / "index.json").write_text(json.dumps(index, indent=1, default=str) + "\n")
    old = out.parent / f".{out.name}-old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)
    return dict(index, folder=str(out), total_bytes=folder_bytes(out))


def _options(p) -> None:
    p.add_argument("--out", default=str(PRECOMPUTED_DIR),
                   help=f"folder of the shipped results (default: {PRECOMPUTED_DIR})")
    p.add_argument("--keep-matching", action="store_true",
                   help="keep shipped entries whose keys are still asked for; compute only the rest")


@command("precompute", "rebuild the results shipped for the embedded demo model and corpus "
                       "(neuro/assets/precomputed) from fresh computation", _options)
def cmd_precompute(args) -> tuple[dict, str]:
    from neuro.code.split import DEFAULT_EVAL_FRACTION
    from neuro.model.loading import load_model

    if (args.model or args.corpus or args.languages or args.limit or args.max_length != 512
            or args.eval_fraction != DEFAULT_EVAL_FRACTION or args.split_seed != 0):
        raise ValueError("precompute builds the results shipped for the embedded default only (demo model, demo "
                         "corpus, default split and parameters); other setups compute and cache as usual")
    loaded = load_model(str(DEMO_MODEL_DIR), dtype=args.dtype or "float32", device=args.device)
    corpus = load_corpus(None)
    summary = build(loaded, corpus, Path(args.out), progress_for=progress, keep_matching=args.keep_matching)
    summary["truncated_programs"] = truncation(loaded, corpus, args.max_length).summary()
    lines = [f"{e['page']:<11}{e['kind']:<18}{e['key']}  {e['bytes'] / 1e6:6.2f} MB  "
             + ("(kept)" if e["compute_seconds"] is None else f"(computed in {e['compute_seconds']:.0f} s)")
             for e in summary["entries"]]
    lines.append(f"total {summary['total_bytes'] / 1e6:.2f} MB in {summary['folder']}")
    lines += [f"left out: {kind}: {why}" for kind, why in LEFT_OUT.items()]
    return summary, "\n".join(lines)
