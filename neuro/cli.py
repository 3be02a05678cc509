"""`python -m neuro ...`: every analysis headless, with a `--json` summary on stdout.

Conventions for all subcommands: `--model` takes a local folder or a hub id, `--corpus` a Snippet
JSONL file, a folder of source files or a folder of HumanEval-X files; both default to the embedded
demo. With `--json`, stdout carries one JSON document and nothing else; logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable

from .corpus import CorpusError, load_corpus
from .models import ModelLoadError, load_model, model_info
from .paths import DEMO_MODEL_DIR
from .store import Store

log = logging.getLogger("neuro")
COMMANDS: dict[str, Callable] = {}


def command(name: str, help: str):
    def wrap(fn):
        fn.help = help
        COMMANDS[name] = fn
        return fn
    return wrap


def _progress(label: str):
    start = time.time()

    def report(done: int, total: int) -> None:
        end = "\n" if done >= total else "\r"
        print(f"{label}: {done}/{total} ({time.time() - start:.1f}s)", end=end, file=sys.stderr, flush=True)
    return report


def open_model(args):
    source = args.model or str(DEMO_MODEL_DIR)
    log.info("loading model %s", source)
    return load_model(source, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code)


def open_corpus(args):
    snippets = load_corpus(args.corpus)
    if args.languages:
        wanted = set(args.languages.split(","))
        snippets = [s for s in snippets if s.lang in wanted]
    if args.limit:
        snippets = snippets[: args.limit]
    if not snippets:
        raise CorpusError("the corpus is empty after filtering")
    return snippets


# --------------------------------------------------------------------------- commands

@command("info", "model summary: architecture, layers, neurons per layer, neuron site")
def cmd_info(args) -> tuple[dict, str]:
    info = dataclasses.asdict(model_info(open_model(args)))
    text = "\n".join(f"{k:>18}: {v}" for k, v in info.items())
    return info, text


@command("capture", "per-language neuron statistics (activations, PLS, LAPE counts) into the cache")
def cmd_capture(args) -> tuple[dict, str]:
    from .analyses import corpus_statistics

    loaded = open_model(args)
    snippets = open_corpus(args)
    start = time.time()
    stats, hit = corpus_statistics(loaded, snippets, gradients=not args.no_gradients,
                                   syntax=not args.no_syntax, top_k=args.top_k,
                                   max_length=args.max_length, store=Store(args.cache),
                                   progress=_progress("capture"))
    summary = {
        "model": loaded.identity, "snippets": len(snippets), "cache_hit": hit,
        "seconds": round(time.time() - start, 2), "gradients": stats.pls_sum is not None,
        "layers": stats.n_layers, "neurons_per_layer": stats.n_neurons,
        "node_types": len(stats.meta.get("node_types", [])), "top_k": stats.meta.get("top_k", 0),
        "languages": {lang: {"samples": int(stats.samples[i]), "tokens": int(stats.tokens[i]),
                             "mean_loss": round(stats.mean_loss()[lang], 4)}
                      for i, lang in enumerate(stats.languages)},
    }
    lines = [f"{'language':<12}{'samples':>9}{'tokens':>10}{'loss':>8}"]
    lines += [f"{lang:<12}{v['samples']:>9}{v['tokens']:>10}{v['mean_loss']:>8.3f}"
              for lang, v in summary["languages"].items()]
    lines.append(f"{'(cache hit)' if hit else '(computed)'} in {summary['seconds']} s")
    return summary, "\n".join(lines)


def _statistics(args, loaded, snippets):
    from .analyses import corpus_statistics

    stats, _ = corpus_statistics(loaded, snippets, max_length=args.max_length, store=Store(args.cache),
                                 progress=_progress("capture"))
    return stats


def _selection(args, stats):
    from .selectivity import LapeParams, SelectionParams, select_neurons

    if args.method == "lape":
        params = LapeParams(top_fraction=args.top_fraction)
    else:
        params = SelectionParams(candidate_quantile=args.candidate_quantile, ratio=args.ratio,
                                 top_fraction=args.top_fraction)
    return select_neurons(stats, args.method, params)


@command("neurons", "language-specific and universal neurons (PLS or LAPE): counts per language and layer")
def cmd_neurons(args) -> tuple[dict, str]:
    from .selectivity import overlap, select_neurons

    loaded, snippets = open_model(args), open_corpus(args)
    stats = _statistics(args, loaded, snippets)
    selection = _selection(args, stats)
    other = select_neurons(stats, "lape" if args.method == "pls" else "pls")
    by_layer = selection.counts_by_layer()
    summary = selection.summary() | {
        "model": loaded.identity, "snippets": len(snippets),
        "by_layer": {str(layer): row.to_dict() for layer, row in by_layer.iterrows()},
        "overlap_with_" + other.method: overlap(selection, other).reset_index().to_dict(orient="records"),
    }
    if args.out:
        table = selection.selected()
        if str(args.out).endswith(".parquet"):
            table.to_parquet(args.out, index=False)
        else:
            table.to_csv(args.out, index=False)
        summary["exported"] = str(args.out)
    lines = [f"method {selection.method}, candidate threshold {selection.threshold:.4g}, "
             f"{selection.total:,} neurons"]
    counts = selection.counts_by_language()
    lines += [f"  {k:<12}{v:>7}  ({100 * v / selection.total:.2f} %)" for k, v in counts.items()]
    lines.append("per layer:\n" + by_layer.to_string())
    return summary, "\n".join(lines)


@command("ablate", "loss change per language when each language's neurons are zeroed, with a random control")
def cmd_ablate(args) -> tuple[dict, str]:
    from .analyses import ablation

    loaded, snippets = open_model(args), open_corpus(args)
    stats = _statistics(args, loaded, snippets)
    selection = _selection(args, stats)
    result, hit = ablation(loaded, snippets, selection, seed=args.seed, max_length=args.max_length,
                           store=Store(args.cache), progress=_progress("ablation"))
    table = result.summary()
    summary = {"model": loaded.identity, "method": selection.method, "cache_hit": hit, "base_loss": result.base,
               "delta": result.delta.to_dict(orient="index"),
               "delta_random": result.delta_random.to_dict(orient="index"),
               "summary": table.to_dict(orient="index")}
    text = ("loss change (rows: ablated group, columns: evaluated language)\n" + result.delta.round(4).to_string()
            + "\n\nrandom control\n" + result.delta_random.round(4).to_string()
            + "\n\n" + table.round(3).to_string())
    return summary, text


@command("ablate-gen", "pass@k of generated code with and without a language's neurons (needs a capable model)")
def cmd_ablate_gen(args) -> tuple[dict, str]:
    from .generation import GenerationParams, evaluate_pass_at_k
    from .intervene import random_like

    loaded, snippets = open_model(args), open_corpus(args)
    stats = _statistics(args, loaded, snippets)
    selection = _selection(args, stats)
    neurons = selection.neurons_for(args.target)
    if not neurons:
        raise ValueError(f"no neurons are specific to {args.target} with these parameters")
    params = GenerationParams(samples=args.samples, temperature=args.temperature,
                              max_new_tokens=args.max_new_tokens, seed=args.seed)
    ks = sorted({1, *args.k})
    conditions = {"none": None, args.target: neurons,
                  "random": random_like(neurons, loaded.n_neurons, seed=args.seed, exclude=neurons)}
    results = {}
    for name, ablate in conditions.items():
        results[name] = evaluate_pass_at_k(loaded, snippets, params, ks=ks, ablate=ablate,
                                           progress=_progress(f"generate [{name} ablated]"))
    summary = {"model": loaded.identity, "target": args.target, "neurons": sum(len(v) for v in neurons.values()),
               "params": dataclasses.asdict(params),
               "pass_at_k": {name: r.by_language for name, r in results.items()}}
    lines = [f"pass@k with nothing / {args.target} neurons / random neurons ablated"]
    for name, r in results.items():
        lines.append(f"[{name}] " + ", ".join(f"{lang}: " + " ".join(f"@{k}={v:.3f}" for k, v in by_k.items())
                                            for lang, by_k in r.by_language.items()))
    return summary, "\n".join(lines)


# --------------------------------------------------------------------------- plumbing

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m neuro", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in COMMANDS.items():
        p = sub.add_parser(name, help=fn.help, description=fn.help)
        p.add_argument("--model", help="local folder or hub id (default: the embedded demo model)")
        p.add_argument("--corpus", help="Snippet JSONL, folder of sources or of HumanEval-X files "
                                        "(default: the embedded demo corpus)")
        p.add_argument("--languages", help="comma-separated subset, e.g. python,go")
        p.add_argument("--limit", type=int, help="use only the first N snippets")
        p.add_argument("--max-length", type=int, default=512, help="tokens per program (default 512)")
        p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
        p.add_argument("--dtype", help="float32, bfloat16, float16 (default: float32 on CPU, bf16 on GPU)")
        p.add_argument("--trust-remote-code", action="store_true", help="run code shipped with the model")
        p.add_argument("--cache", help="cache folder (default: cache/ or $NEURO_CACHE)")
        p.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
        p.add_argument("-v", "--verbose", action="store_true")
        if name in ("neurons", "ablate", "ablate-gen"):
            p.add_argument("--method", choices=["pls", "lape"], default="pls")
            p.add_argument("--candidate-quantile", type=float, default=0.90,
                           help="candidate threshold = this quantile of all neurons' max PLS (default 0.90)")
            p.add_argument("--ratio", type=float, default=1.5, help="specificity ratio top/second (default 1.5)")
            p.add_argument("--top-fraction", type=float, default=0.01, help="top share by max PLS (default 0.01)")
        if name == "neurons":
            p.add_argument("--out", help="export the selected neurons to a .csv or .parquet file")
        if name in ("ablate", "ablate-gen"):
            p.add_argument("--seed", type=int, default=0, help="seed of the random control (and sampling)")
        if name == "ablate-gen":
            p.add_argument("--target", required=True, help="language whose specific neurons are ablated")
            p.add_argument("--samples", type=int, default=1, help="samples per problem (n of pass@k)")
            p.add_argument("--k", type=int, nargs="+", default=[1], help="k values of pass@k")
            p.add_argument("--temperature", type=float, default=0.0)
            p.add_argument("--max-new-tokens", type=int, default=256)
        if name == "capture":
            p.add_argument("--no-gradients", action="store_true", help="activations only (no PLS)")
            p.add_argument("--no-syntax", action="store_true", help="skip the per-node-type profiles")
            p.add_argument("--top-k", type=int, default=16, help="top activating tokens kept per neuron")
        p.set_defaults(handler=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        summary, text = args.handler(args)
    except (ModelLoadError, CorpusError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": str(err)}))
        return 2
    print(json.dumps(summary, indent=1, default=str) if args.json else text)
    return 0
