"""info and capture."""

from __future__ import annotations

import dataclasses
import time

from neuro.cli import command, open_corpus, open_model, open_split, progress
from neuro.instrument.tokens import truncation
from neuro.model.loading import model_info


@command("info", "model summary: architecture, layers, neurons per layer, neuron site")
def cmd_info(args) -> tuple[dict, str]:
    info = dataclasses.asdict(model_info(open_model(args)))
    text = "\n".join(f"{k:>18}: {v}" for k, v in info.items())
    return info, text


def _capture_options(p) -> None:
    p.add_argument("--no-gradients", action="store_true", help="activations only (no PLS)")
    p.add_argument("--no-syntax", action="store_true", help="skip the per-node-type profiles")
    p.add_argument("--top-k", type=int, default=16, help="top activating tokens kept per neuron")


@command("capture", "per-language neuron statistics (activations, PLS, LAPE counts) into the cache",
         _capture_options)
def cmd_capture(args) -> tuple[dict, str]:
    from neuro.instrument.distributed import distributed_statistics, init_from_env, world
    from neuro.instrument.statistics import capture_statistics
    from neuro.results.statistics import STATS

    rank, size = world()
    device = init_from_env()  # under torchrun: one shard of the corpus per rank, accumulators all-reduced
    if device:
        args.device = args.device or device
    loaded = open_model(args)
    split = open_split(args, open_corpus(args))
    snippets = split.selection  # statistics choose neurons: the split's selection side
    start = time.time()
    stats, hit = STATS.fetch(loaded, snippets, gradients=not args.no_gradients, syntax=not args.no_syntax,
                             top_k=args.top_k, max_length=args.max_length, cache=args.cache,
                             progress=progress(f"capture [rank {rank}/{size}]" if size > 1 else "capture"),
                             capture=distributed_statistics if size > 1 else capture_statistics, save=rank == 0)
    summary = {
        "model": loaded.identity, "snippets": len(snippets), "split": split.summary(), "cache_hit": hit, "ranks": size,
        "seconds": round(time.time() - start, 2), "gradients": stats.pls_sum is not None,
        "layers": stats.n_layers, "neurons_per_layer": stats.n_neurons,
        "node_types": len(stats.meta.get("node_types", [])), "top_k": stats.meta.get("top_k", 0),
        "truncated_programs": truncation(loaded, snippets, args.max_length).summary(),
        "languages": {lang: {"samples": int(stats.samples[i]), "tokens": int(stats.tokens[i]),
                             "mean_loss": round(stats.mean_loss()[lang], 4)}
                      for i, lang in enumerate(stats.languages)},
    }
    lines = [f"{'language':<12}{'samples':>9}{'tokens':>10}{'loss':>8}"]
    lines += [f"{lang:<12}{v['samples']:>9}{v['tokens']:>10}{v['mean_loss']:>8.3f}"
              for lang, v in summary["languages"].items()]
    lines.append(f"{'(cache hit)' if hit else '(computed)'} in {summary['seconds']} s")
    if note := truncation(loaded, snippets, args.max_length).caption():
        lines.append(note)
    return summary, "\n".join(lines)


@command("models", "models with cached results: their card folders open with --model without the weights")
def cmd_models(args) -> tuple[dict, str]:
    from neuro.model.cards import list_cards

    cards = list_cards(args.cache)
    rows = [{**{k: v for k, v in dataclasses.asdict(c).items() if k != "folder"}, "folder": str(c.folder)}
            for c in cards]
    text = "\n".join(f"{c.folder}  {c.label}" for c in cards) or "no cached results yet"
    return {"models": rows}, text
