"""Paper scale, measured: the memory plan against measured peak memory.

`plan` part: 2-layer random copies of Llama-3.1-8B's and Qwen2.5-Coder-32B's published configs
(bench/configs, bf16, on the CPU) run `neurons`, `ablate`, `layers` and `clones eval` one after another on
a slice of the demo corpus, each in its own process (one cache, so each command does only its own work);
the plan's predicted peak host memory (`neuro.model.plan.plan_commands(..., on_cpu=True)`) beside each
process's measured peak RSS. Target: within 25 %.

    python bench/bench_scale.py --part plan --json
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

CONFIGS = ROOT / "bench" / "configs"
# ablate with one random draw: the memory of a loss pass does not depend on how many there are
PLAN_COMMANDS = {"neurons": ["neurons"], "ablate": ["ablate", "--draws", "1"], "layers": ["layers"],
                 "clones eval": ["clones", "eval"]}

# runs one command in this process and reports its own peak RSS (ru_maxrss, KiB on Linux) on stderr
_RUNNER = ("import resource, sys; from neuro.cli import main; code = main(sys.argv[1:]); "
           "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
           "sys.exit(code)")


def random_copy(name: str, layers: int, folder: Path) -> Path:
    """A `layers`-block copy of a preset config with random bf16 weights and the demo tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from neuro.paths import DEMO_MODEL_DIR

    config = AutoConfig.from_pretrained(CONFIGS / name)
    config.num_hidden_layers = layers
    torch.manual_seed(0)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
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


def run_command(model: Path, command: list[str], corpus: Path, cache: Path) -> dict:
    args = [*command, "--model", str(model), "--corpus", str(corpus), "--cache", str(cache), "--dtype", "bfloat16",
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
    from neuro.code.corpus import load_corpus

    snippets = load_corpus(None)
    tasks = list(dict.fromkeys(s.task for s in snippets))[:per_language]
    chosen = [s for s in snippets if s.task in set(tasks)]
    path = folder / "corpus.jsonl"
    with path.open("w") as fh:
        for s in chosen:
            fh.write(json.dumps({"id": s.id, "lang": s.lang, "task": s.task, "code": s.code, "summary": s.summary,
                                 "test": s.test}) + "\n")
    from transformers import AutoTokenizer

    from neuro.paths import DEMO_MODEL_DIR

    tok = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    mean_tokens = int(sum(len(tok(s.code)["input_ids"]) for s in chosen) / len(chosen)) + 1
    langs = len({s.lang for s in chosen})
    return path, len(chosen) // langs, langs, mean_tokens


def plan_part(names: list[str], layers: int, per_language: int) -> dict:
    from neuro.model.plan import plan_commands, read_config

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus, programs, languages, mean_tokens = corpus_slice(per_language, tmp)
        for name in names:
            model = random_copy(name, layers, tmp)
            plan = plan_commands(read_config(model), dtype="bfloat16", programs_per_language=programs,
                                 languages=languages, mean_tokens=mean_tokens, on_cpu=True)
            cache = tmp / f"cache-{name}"
            rows = {}
            for label, command in PLAN_COMMANDS.items():
                measured = run_command(model, command, corpus, cache)
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
    p.add_argument("--part", choices=["plan", "growth", "all"], default="all")
    p.add_argument("--configs", default="llama-3.1-8b,qwen2.5-coder-32b")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--tasks", type=int, default=4, help="demo-corpus tasks in the plan part's slice")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result: dict = {}
    if args.part in ("plan", "all"):
        result["plan"] = plan_part(args.configs.split(","), args.layers, args.tasks)
    if args.part in ("growth", "all"):
        result["growth"] = {"skipped": "not built yet"}
    print(json.dumps(result, indent=1) if args.json else result)


if __name__ == "__main__":
    main()
