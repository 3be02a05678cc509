"""PLS capture against its peers, side by side in one run, on the demo model and demo-corpus programs.

The statistic (neuro.instrument.statistics.CorpusStats): per neuron, per program the mean over its real tokens
(BOS, padding, special tokens excluded) of |a_t * g_t|, a = the input of the FFN's output projection and
g = d(the program's summed next-token cross-entropy)/da; PLS = its mean over a language's programs. Rows:

  torch-hooks      plain PyTorch: a forward pre-hook on each layer's output projection keeps its input and
                   calls retain_grad(); one backward of the batch's summed loss; reduce per program after it
  nnsight          nnsight's trace: `.input.save()` of each output projection, `.grad.save()` of each inside
                   `with loss.backward():`, reduced after the trace (skipped, with a message, when nnsight is
                   not installed: `pip install --no-deps nnsight`, never in the requirements)
  neuro            capture_statistics(loaded, snippets, gradients=True, units=False): the same statistic
  neuro+units      capture_statistics(loaded, snippets, gradients=True): its defaults (per-program units)
  neuro-1-by-1     the same, one program at a time (max_batch=1)
  neuro-page       syntax=True, top_k=16, units=True: what the Neurons page asks for, in the same pass

Every row gets the same token ids (neuro.instrument.tokens.encode) and the peers the same batches as the
project's capture (per language, by length: 4096 padded tokens, at most 32 programs). Each row runs in a
fresh process (its own peak RSS): load the model, one warm-up program per language, then the timed pass over
all programs; --repeats rounds over all rows, the fastest round of each counts (a busy machine slows every
row alike). Reported per row: tokens/s (every token of every program), seconds, peak RSS and the RSS before
the timed pass, the speed ratio to the faster peer (> 1: faster than it), and the largest relative
difference of its PLS from the torch-hooks row (|x - y| / max(|y|, 1e-4 * max |y|), over all entries).

    python bench/bench_peers.py            # a table
    python bench/bench_peers.py --json     # one JSON document
    python bench/bench_peers.py --profile  # plus a torch profile of the project's batched capture
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuro.code.corpus import load_corpus  # noqa: E402
from neuro.instrument.statistics import capture_statistics  # noqa: E402
from neuro.instrument.tokens import collate, encode, length_batches  # noqa: E402
from neuro.model.loading import LoadedModel, load_model  # noqa: E402
from neuro.paths import DEMO_CORPUS_FILE, DEMO_MODEL_DIR  # noqa: E402

BATCH_TOKENS, MAX_BATCH = 4096, 32  # capture_statistics' defaults: the peers batch the same way

ROWS = ("torch-hooks", "nnsight", "neuro", "neuro+units", "neuro-1-by-1", "neuro-page")

PEERS = ("torch-hooks", "nnsight")


def programs(n: int, corpus: Path = DEMO_CORPUS_FILE):
    """The first n programs of the corpus (the demo corpus interleaves its five languages)."""
    return load_corpus(corpus)[:n]


# --------------------------------------------------------------------------- the peers

def batches(loaded: LoadedModel, snippets, max_length: int):
    """(language index, ids, attention mask) per batch, as capture_statistics forms them."""
    langs = list(dict.fromkeys(s.lang for s in snippets))
    encoded = [encode(loaded, s.code, max_length) for s in snippets]
    out = []
    for li, lang in enumerate(langs):
        group = [i for i, s in enumerate(snippets) if s.lang == lang]
        for batch in length_batches([len(encoded[i].ids) for i in group], BATCH_TOKENS, MAX_BATCH):
            ids, mask = collate([encoded[group[j]] for j in batch], loaded.pad_id, loaded.device)
            out.append((li, ids, mask))
    return langs, out


def _real(loaded: LoadedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Real tokens: attended, and not one of the tokenizer's special tokens (BOS, ...)."""
    special = torch.tensor(sorted(set(loaded.tokenizer.all_special_ids)), device=ids.device)
    return (mask.bool() & ~torch.isin(ids, special)).float()


def _summed_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Every program's next-token cross-entropy summed over its targets, summed over the batch."""
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none")
    return (ce.view(ids.shape[0], -1) * mask[:, 1:]).sum()


def _per_program(real: torch.Tensor, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per program, the mean over its real tokens of |a * g|: (batch, neurons)."""
    weights = real / real.sum(1, keepdim=True).clamp(min=1)
    return torch.einsum("bt,btn->bn", weights, (a.float() * g.float()).abs())


def _pls(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return sums / np.maximum(counts, 1)[:, None, None]


def torch_hooks(loaded: LoadedModel, snippets, max_length: int) -> np.ndarray:
    """PLS with plain PyTorch hooks: keep each output projection's input, retain its gradient, one backward."""
    langs, work = batches(loaded, snippets, max_length)
    sites = loaded.sites()
    sums = np.zeros((len(langs), len(sites), loaded.n_neurons))
    counts = np.zeros(len(langs))
    kept: dict[int, torch.Tensor] = {}

    def keep(layer):
        def hook(module, args):
            args[0].retain_grad()
            kept[layer] = args[0]
        return hook

    handles = [site.down.register_forward_pre_hook(keep(site.layer)) for site in sites]
    try:
        for li, ids, mask in work:
            inputs = loaded.embeddings(ids).detach().requires_grad_(True)
            logits = loaded.model(inputs_embeds=inputs, attention_mask=mask, use_cache=False).logits
            _summed_loss(logits, ids, mask).backward()
            real = _real(loaded, ids, mask)
            for layer, a in kept.items():
                sums[li, layer] += _per_program(real, a.detach(), a.grad).sum(0).cpu().numpy()
            counts[li] += ids.shape[0]
            kept.clear()
    finally:
        for handle in handles:
            handle.remove()
    return _pls(sums, counts)


def _envoy(root, name: str):
    """nnsight's envoy of the module at a dotted path (ModuleList items by index)."""
    for part in name.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def nnsight_trace(loaded: LoadedModel, snippets, max_length: int) -> np.ndarray:
    """PLS with nnsight: save each output projection's input in a trace and its .grad in a backward trace."""
    from nnsight import NNsight

    langs, work = batches(loaded, snippets, max_length)
    names = {id(module): name for name, module in loaded.model.named_modules()}
    sites = loaded.sites()
    paths = [names[id(site.down)] for site in sites]  # the adapter's modules, by their paths in the model
    wrapped = NNsight(loaded.model)
    envoys = [_envoy(wrapped, path) for path in paths]
    sums = np.zeros((len(langs), len(sites), loaded.n_neurons))
    counts = np.zeros(len(langs))
    for li, ids, mask in work:
        inputs = loaded.embeddings(ids).detach().requires_grad_(True)
        acts, grads = [], []
        with wrapped.trace(inputs_embeds=inputs, attention_mask=mask, use_cache=False):
            for envoy in envoys:
                acts.append(envoy.input.save())
            loss = _summed_loss(wrapped.output.logits, ids, mask)
            with loss.backward():
                for a in reversed(acts):  # gradients arrive in reverse order of the forward
                    grads.append(a.grad.save())
        real = _real(loaded, ids, mask)
        for layer, (a, g) in enumerate(zip(acts, reversed(grads))):
            sums[li, layer] += _per_program(real, a.detach(), g).sum(0).cpu().numpy()
        counts[li] += ids.shape[0]
    return _pls(sums, counts)


def neuro_capture(**options):
    def run(loaded: LoadedModel, snippets, max_length: int) -> np.ndarray:
        stats = capture_statistics(loaded, snippets, gradients=True, max_length=max_length, **options)
        return stats.pls().astype(np.float64)
    return run


RUNNERS = {
    "torch-hooks": torch_hooks,
    "nnsight": nnsight_trace,
    "neuro": neuro_capture(units=False),
    "neuro+units": neuro_capture(),
    "neuro-1-by-1": neuro_capture(max_batch=1),
    "neuro-page": neuro_capture(syntax=True, top_k=16, units=True),
}


# --------------------------------------------------------------------------- one row, in its own process

def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def run_row(name: str, args, out: Path) -> dict:
    """Load, warm up on one program of each language, then time the whole pass (best of `args.repeats`, 1
    when the parent runs the rounds)."""
    if name == "nnsight" and importlib.util.find_spec("nnsight") is None:
        return {"row": name, "skipped": "nnsight is not installed (pip install --no-deps nnsight, for this "
                                        "benchmark only)"}
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    snippets = programs(args.programs)
    tokens = sum(len(encode(loaded, s.code, args.max_length).ids) for s in snippets)
    runner = RUNNERS[name]
    runner(loaded, snippets[:5], args.max_length)  # warm-up: one program of each language
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _rss_mb()
    best, pls = float("inf"), None
    for _ in range(args.repeats):
        start = time.perf_counter()
        pls = runner(loaded, snippets, args.max_length)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    np.save(out / f"{name}.npy", pls)
    # ru_maxrss is the kernel's high-water mark, updated lazily: never below what was measured directly
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, _rss_mb(), before)
    row = {"row": name, "programs": len(snippets), "tokens": tokens, "seconds": round(best, 3),
           "tokens_per_s": round(tokens / best, 1), "peak_rss_mb": round(peak, 1), "rss_before_mb": round(before, 1),
           "device": str(loaded.device), "threads": torch.get_num_threads()}
    if loaded.device.type == "cuda":
        row["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return row


def _child(name: str, args, out: Path) -> dict:
    command = [sys.executable, __file__, "--row", name, "--out", str(out), "--programs", str(args.programs),
               "--max-length", str(args.max_length), "--model", str(args.model)]
    command += ["--device", args.device] if args.device else []
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--dtype", args.dtype] if args.dtype else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"row": name, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def max_relative_difference(x: np.ndarray, reference: np.ndarray) -> float:
    floor = 1e-4 * float(np.abs(reference).max())
    return float((np.abs(x - reference) / np.maximum(np.abs(reference), floor)).max())


def compare(rows: list[dict], out: Path) -> list[dict]:
    """Ratios to the faster peer and the agreement of every row's PLS with the torch-hooks row."""
    timed = {r["row"]: r for r in rows if "tokens_per_s" in r}
    peers = [timed[p] for p in PEERS if p in timed]
    faster = max(peers, key=lambda r: r["tokens_per_s"]) if peers else None
    reference = np.load(out / "torch-hooks.npy") if "torch-hooks" in timed else None
    for row in timed.values():
        if faster is not None:
            row["ratio_to_faster_peer"] = round(row["tokens_per_s"] / faster["tokens_per_s"], 3)
            row["faster_peer"] = faster["row"]
        if reference is not None:
            row["max_rel_diff"] = max_relative_difference(np.load(out / f"{row['row']}.npy"), reference)
    return rows


def profile(args) -> str:
    """Where the project's batched capture spends its time: torch profiler, ops by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    snippets = programs(args.programs)
    RUNNERS["neuro"](loaded, snippets[:5], args.max_length)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if loaded.device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        RUNNERS["neuro"](loaded, snippets, args.max_length)
    sort = "self_cuda_time_total" if loaded.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=25)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--programs", type=int, default=120)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds over all rows, each row in a fresh process; a row's fastest round counts")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    p.add_argument("--model", default=str(DEMO_MODEL_DIR))
    p.add_argument("--device", help="default: cuda if available")
    p.add_argument("--dtype", help="default: float32 on CPU, bfloat16 on GPU")
    p.add_argument("--threads", type=int, help="torch CPU threads per row (default: torch's; 1 on a busy machine)")
    p.add_argument("--profile", action="store_true", help="also profile the project's batched capture")
    p.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one row in this process
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.row:
        print(json.dumps(run_row(args.row, args, Path(args.out))))
        return 0
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = set(names) - set(ROWS)
    if unknown:
        p.error(f"unknown rows: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory() as tmp:
        best: dict[str, dict] = {}
        for round_ in range(args.repeats):  # rounds over all rows: a busy machine slows every row alike
            for name in names:
                row = _child(name, args, Path(tmp))
                print(f"round {round_ + 1}, {name}: {row}", file=sys.stderr, flush=True)
                kept = best.get(name)
                if kept is None or row.get("tokens_per_s", 0) > kept.get("tokens_per_s", 0):
                    peak = max(row.get("peak_rss_mb", 0), (kept or {}).get("peak_rss_mb", 0))
                    best[name] = {**row, "peak_rss_mb": peak}
        rows = compare([best[name] for name in names], Path(tmp))
    report = {"model": str(args.model), "programs": args.programs, "max_length": args.max_length, "rows": rows}
    if args.profile:
        report["profile"] = profile(args)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    columns = ("row", "tokens_per_s", "seconds", "ratio_to_faster_peer", "peak_rss_mb", "rss_before_mb",
               "max_rel_diff")
    print(f"{args.model}: {args.programs} programs, max length {args.max_length}")
    print("  ".join(f"{c:>20}" for c in columns))
    for row in rows:
        if "skipped" in row or "error" in row:
            print(f"{row['row']:>20}  {row.get('skipped') or row.get('error')}")
            continue
        print("  ".join(f"{row.get(c, ''):>20}" if not isinstance(row.get(c), float) else f"{row[c]:>20.4g}"
                        for c in columns))
    if args.profile:
        print("\nprofile of the project's batched capture (neuro row):\n" + report["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
