"""Paper scale, measured: the memory plan against measured peak memory, and peak memory as the corpus grows.

`plan`: 2-layer random copies of Llama-3.1-8B's and Qwen2.5-Coder-32B's published configs (bench/configs,
random weights, on the CPU; `--dtype float32` by default, since a CPU without native bf16 runs bf16 matmuls
hundreds of times slower) run `neurons`, `ablate`, `layers` and `clones eval` one after another on a slice of
the demo corpus, each in its own process (one cache, so each command does only its own work); the plan's
predicted peak host memory (`neuro.model.plan.plan_commands(..., on_cpu=True)`) beside each process's
measured peak RSS. Target: within 25 %.

`growth`: peak RSS of `python -m neuro layers` and of `python -m neuro clones eval` (each a subprocess on a
fresh cache, measured with getrusage(RUSAGE_CHILDREN) in a wrapper process of its own) on the demo model,
with the demo corpus (or its first --limit programs) and with that corpus grown `--factor` times (each
program repeated with a small edit that keeps its task and language: a comment naming the copy), side by
side. The goal: growth under 10 % (corpus-sized arrays live on disk one layer at a time; RAM holds one
layer's matrix and a fixed reservoir of sampled tokens).

    python bench/bench_scale.py plan [--configs llama-3.1-8b,qwen2.5-coder-32b] [--tasks 4] [--json]
    python bench/bench_scale.py growth [--limit N] [--factor 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuro.code.corpus import Snippet, load_corpus, save_jsonl  # noqa: E402
from neuro.paths import DEMO_MODEL_DIR  # noqa: E402

CONFIGS = ROOT / "bench" / "configs"
# ablate with one random draw: the memory of a loss pass does not depend on how many there are
PLAN_COMMANDS = {"neurons": ["neurons"], "ablate": ["ablate", "--draws", "1"], "layers": ["layers"],
                 "clones eval": ["clones", "eval"]}

# runs one command in this process and reports its own peak RSS (ru_maxrss, KiB on Linux) on stderr
_RUNNER = ("import resource, sys; from neuro.cli import main; code = main(sys.argv[1:]); "
           "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
           "sys.exit(code)")


COMMENT = {"python": "#"}  # every other language of the demo corpus comments with //

WRAPPER = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")


def grown(snippets: list[Snippet], factor: int) -> list[Snippet]:
    """The corpus `factor` times: copy k > 0 of each program ends with a comment naming it (distinct text,
    same task, same language)."""
    out = list(snippets)
    for k in range(1, factor):
        for s in snippets:
            mark = COMMENT.get(s.lang, "//")
            out.append(Snippet(f"{s.id}~{k}", s.lang, s.task, f"{s.code.rstrip()}\n{mark} copy {k}\n", s.prompt))
    return out


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of `python -m neuro ARGS`, alone in a wrapper process."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "neuro", *args],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    kb, rc = out.stdout.split()
    if rc != "0":
        raise RuntimeError(f"python -m neuro {' '.join(args)} failed ({rc}): {out.stderr[-2000:]}")
    return int(kb) / 1024, time.perf_counter() - start


def growth(limit: int = 0, factor: int = 4, model: str = str(DEMO_MODEL_DIR), contribution: bool = True) -> dict:
    """Peak RSS of `layers` and `clones eval` on the corpus and on it grown `factor` times (`contribution`:
    with the layers' FFN ablation passes, on at most 200 programs whatever the corpus size).

    Measure from a corpus whose batches are already full (100 programs or more on the demo model): below
    that, a larger corpus fills the fixed-size batches more and their activations grow with it, up to the cap."""
    base = load_corpus(None)
    if limit:
        base = base[:limit]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="neuro-bench-scale-") as work:
        for name, corpus in (("1x", base), (f"{factor}x", grown(base, factor))):
            corpus_file, cache = Path(work) / f"{name}.jsonl", Path(work) / f"cache-{name}"
            save_jsonl(corpus, corpus_file)
            common = ["--model", model, "--corpus", str(corpus_file), "--cache", str(cache)]
            layers_mb, layers_s = peak_rss_mb(["layers", *common, *([] if contribution else ["--no-contribution"])])
            clones_mb, clones_s = peak_rss_mb(["clones", "eval", *common])
            rows[name] = {"programs": len(corpus), "layers_peak_mb": round(layers_mb, 1),
                          "layers_seconds": round(layers_s, 1), "clones_eval_peak_mb": round(clones_mb, 1),
                          "clones_eval_seconds": round(clones_s, 1)}
    small, large = rows["1x"], rows[f"{factor}x"]
    return {"model": model, "factor": factor, "limit": limit or None, "contribution": contribution, "runs": rows,
            "layers_growth": round(large["layers_peak_mb"] / small["layers_peak_mb"] - 1, 4),
            "clones_eval_growth": round(large["clones_eval_peak_mb"] / small["clones_eval_peak_mb"] - 1, 4)}


def random_copy(name: str, layers: int, folder: Path, dtype: str) -> Path:
    """A `layers`-block copy of a preset config with random weights in `dtype` and the demo tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from neuro.paths import DEMO_MODEL_DIR

    config = AutoConfig.from_pretrained(CONFIGS / name)
    if isinstance(getattr(config, "layer_types", None), list):  # Qwen2: one entry per block
        config.layer_types = config.layer_types[:layers]
    config.num_hidden_layers = layers
    torch.manual_seed(0)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    out = folder / f"{name}-{layers}l"
    model.save_pretrained(out)
    for file in DEMO_MODEL_DIR.iterdir():
        if file.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(file, out / file.name)
    del model
    return out


def run_command(model: Path, command: list[str], corpus: Path, cache: Path, dtype: str) -> dict:
    args = [*command, "--model", str(model), "--corpus", str(corpus), "--cache", str(cache), "--dtype", dtype,
            "--device", "cpu", "--json"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUNNER, *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = next((int(line.split()[1]) * 1024 for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KIB")),
                None)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return {"peak_rss_bytes": peak, "seconds": round(seconds, 1)}


def corpus_slice(per_language: int, folder: Path) -> tuple[Path, int, int, int]:
    """The first `per_language` tasks' programs of the demo corpus: (file, programs per language, languages,
    mean tokens by the demo tokenizer)."""
    snippets = load_corpus(None)
    tasks = list(dict.fromkeys(s.task for s in snippets))[:per_language]
    chosen = [s for s in snippets if s.task in set(tasks)]
    path = folder / "corpus.jsonl"
    save_jsonl(chosen, path)
    from transformers import AutoTokenizer

    from neuro.paths import DEMO_MODEL_DIR

    tok = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    mean_tokens = int(sum(len(tok(s.code)["input_ids"]) for s in chosen) / len(chosen)) + 1
    langs = len({s.lang for s in chosen})
    return path, len(chosen) // langs, langs, mean_tokens


def plan_part(names: list[str], layers: int, per_language: int, dtype: str = "float32") -> dict:
    from neuro.model.plan import plan_commands, read_config

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus, programs, languages, mean_tokens = corpus_slice(per_language, tmp)
        for name in names:
            model = random_copy(name, layers, tmp, dtype)
            plan = plan_commands(read_config(model), dtype=dtype, programs_per_language=programs,
                                 languages=languages, mean_tokens=mean_tokens, on_cpu=True)
            cache = tmp / f"cache-{name}"
            rows = {}
            for label, command in PLAN_COMMANDS.items():
                measured = run_command(model, command, corpus, cache, dtype)
                predicted = plan.commands[label].host_bytes
                rows[label] = {"predicted_host_bytes": predicted, **measured,
                               "predicted_over_measured": round(predicted / measured["peak_rss_bytes"], 3)}
                print(f"{name} ({layers} layers) {label:<12} predicted {predicted / 2**30:6.2f} GiB  measured "
                      f"{measured['peak_rss_bytes'] / 2**30:6.2f} GiB  ratio {rows[label]['predicted_over_measured']}"
                      f"  ({measured['seconds']} s)", file=sys.stderr, flush=True)
            out[name] = {"layers": layers, "parameters": plan.model.parameters, "programs": programs * languages,
                         "commands": rows}
            shutil.rmtree(model)
            shutil.rmtree(cache, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document")
    parts = p.add_subparsers(dest="part", required=True)
    g = parts.add_parser("growth", parents=[common], help="peak RSS of `layers` and `clones eval` as the corpus grows")
    g.add_argument("--limit", type=int, default=0, help="the first N programs of the demo corpus (default: all)")
    g.add_argument("--factor", type=int, default=4, help="how many times the corpus grows (default 4)")
    g.add_argument("--model", default=str(DEMO_MODEL_DIR))
    g.add_argument("--no-contribution", action="store_true", help="`layers` without its FFN ablation passes")
    q = parts.add_parser("plan", parents=[common], help="the plan's host memory against measured peak RSS")
    q.add_argument("--configs", default="llama-3.1-8b,qwen2.5-coder-32b")
    q.add_argument("--layers", type=int, default=2)
    q.add_argument("--tasks", type=int, default=4, help="demo-corpus tasks in the slice (5 programs each)")
    q.add_argument("--dtype", default="float32", help="weights' dtype (bf16 is very slow on most CPUs)")
    args = p.parse_args()
    if args.part == "plan":
        result = plan_part(args.configs.split(","), args.layers, args.tasks, args.dtype)
        print(json.dumps(result, indent=1) if args.json else result)
        return
    result = growth(args.limit, args.factor, args.model, contribution=not args.no_contribution)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for name, row in result["runs"].items():
        print(f"{name:>4} {row['programs']:>6} programs  layers {row['layers_peak_mb']:8.1f} MB "
              f"({row['layers_seconds']:.0f} s)   clones eval {row['clones_eval_peak_mb']:8.1f} MB "
              f"({row['clones_eval_seconds']:.0f} s)")
    print(f"peak RSS growth at {args.factor}x the corpus: layers {100 * result['layers_growth']:+.1f} %, "
          f"clones eval {100 * result['clones_eval_growth']:+.1f} %  (goal: under 10 %)")


if __name__ == "__main__":
    main()
