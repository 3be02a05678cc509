"""Compare demo-model variants trained on different data mixes (issue 26) and say whether one may replace the
shipped model.

For every model folder (same architecture and tokenizer as the shipped demo model) it measures:

1. held-out loss per language on the demo builder's validation streams (``<work-dir>/tokens/val_{lang}.bin``,
   bytes per token from ``<work-dir>/token_stats.json``), with ``tools.demo_model``'s own ``val_windows`` and
   ``window_nll``: nats per token and bits per byte, and each window's loss, so the difference from the
   baseline gets a paired interval (blocks of consecutive windows resampled together);
2. per corpus, through the project's CLI (``python -m neuro layers|clones eval --json``, read, not re-computed):
   language-ID probe and cross-language alignment per layer (per-language centring, as the Clones page), the
   concept layers chosen on the selection side, MAP@R and Recall@1 at the concept, first, last and
   mean-of-layers embeddings with task-bootstrap CIs, and the paired differences concept - first and
   concept - last;
3. with ``--transfer``: ``python -m neuro transfer`` with concept layers vs all layers on the demo corpus (small
   settings), zero-shot BLEU-4 / ROUGE-L before and after with their CIs.

Each model gets its own cache folder (``--cache``/<NAME>), so no model reads another's cached results. Writes
``<out>/results.json`` (everything) and ``<out>/table.md`` (one row per model per table, the verdict per model).

Replacement verdict for each non-baseline model (issue 26): (a) held-out loss no worse than the baseline in
every language (the upper end of the paired 95 % interval of the difference at most +0.02 nats/token), and
(b) on HumanEval-X, the 95 % CIs of concept - first AND concept - last cross-language MAP@R both lie above zero.

    python -m tools.recipe_experiment --model shipped=neuro/assets/demo_model --model mix=cache/mix/model \\
        --baseline shipped --out cache/recipe_experiment/run1 --transfer --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from neuro import atomic

REPO = Path(__file__).resolve().parent.parent
DEFAULT_WORK_DIR = REPO / "cache" / "demo_train"
DEFAULT_CACHE = REPO / "cache" / "recipe_experiment"
HUMANEVAL_X = REPO.parent / "shared" / "data" / "humaneval-x"
DEMO = "demo"  # the embedded demo corpus: no --corpus given to neuro
GATE_CORPUS = "humaneval-x"  # the corpus the verdict's clone criterion is read on
LOSS_MARGIN_NATS = 0.02  # "no worse": at most this much higher held-out loss, nats per token, per language
LOSS_BLOCK_WINDOWS = 8  # held-out loss intervals resample blocks of this many consecutive windows (same files)
SETTING = "cross-language"  # the clone setting reported (queries find their clones in the other languages)
CLONE_METHODS = {"concept": "concept layer", "first": "first layer", "last": "last layer", "mean": "mean of layers"}
DIFFERENCES = {"concept-first": "concept layer minus first layer", "concept-last": "concept layer minus last layer"}


class UsageError(ValueError):
    """A bad command line: printed as one line, exit status 2."""


def log(msg: str, started: float | None = None) -> None:
    """A progress line on stderr (elapsed since `started` when given)."""
    tail = f" [{time.time() - started:.1f} s elapsed]" if started is not None else ""
    print(f"recipe_experiment: {msg}{tail}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- arguments

def parse_pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """`NAME=VALUE` strings -> {name: value}; a malformed or repeated name is a usage error."""
    out: dict[str, str] = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        name, rest = name.strip(), rest.strip()
        if not sep or not name or not rest:
            raise UsageError(f"{what} must be NAME={'FOLDER' if what == '--model' else 'PATH'}, got {value!r}")
        if name in out:
            raise UsageError(f"{what} names {name!r} twice")
        out[name] = rest
    return out


def resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (Path.cwd() / p).resolve()


def check_models(models: dict[str, str], baseline: str) -> dict[str, Path]:
    """Model folders that exist and hold a config.json; the baseline among them."""
    if not models:
        raise UsageError("give at least one --model NAME=FOLDER")
    if baseline not in models:
        raise UsageError(f"unknown baseline {baseline!r}: the models are {', '.join(models)}")
    out = {}
    for name, folder in models.items():
        path = resolve(folder)
        if not path.is_dir():
            raise UsageError(f"model {name!r}: folder {folder} does not exist")
        if not (path / "config.json").is_file():
            raise UsageError(f"model {name!r}: {folder} holds no config.json (not a model folder)")
        out[name] = path
    return out


def default_corpora(humaneval_x: Path = HUMANEVAL_X) -> tuple[dict[str, Path | None], list[str]]:
    """The embedded demo corpus and HumanEval-X when it is there; notes for what was skipped."""
    corpora: dict[str, Path | None] = {DEMO: None}
    notes = []
    if humaneval_x.is_dir() and any(humaneval_x.iterdir()):
        corpora[GATE_CORPUS] = humaneval_x
    else:
        notes.append(f"corpus {GATE_CORPUS} skipped: {humaneval_x} is absent (the verdict's clone criterion "
                     "cannot be read without it)")
    return corpora, notes


def check_corpora(corpora: dict[str, str]) -> dict[str, Path | None]:
    out: dict[str, Path | None] = {}
    for name, path in corpora.items():
        if name == DEMO and path == DEMO:
            out[name] = None
            continue
        p = resolve(path)
        if not p.exists():
            raise UsageError(f"corpus {name!r}: {path} does not exist")
        out[name] = p
    return out


# ------------------------------------------------------------------------------------------------ held-out loss

def heldout_loss(folder: Path, work_dir: Path, ctx: int = 256, max_windows: int | None = 400) -> dict:
    """Per-language loss on the builder's validation streams, or {"skipped": reason}. Same windows and sums as
    `python -m tools.demo_model evaluate` (both call its `validation_nll`)."""
    from tools.demo_model import LANGS, validation_nll

    tokens, stats_file = work_dir / "tokens", work_dir / "token_stats.json"
    missing = [str(p) for p in [*(tokens / f"val_{lang}.bin" for lang in LANGS), stats_file] if not p.is_file()]
    if missing:
        return {"skipped": f"held-out loss not measured: {work_dir} lacks {', '.join(missing)} "
                           "(run `python -m tools.demo_model build-corpus train-tokenizer pretokenize` first)"}
    reason = tokenizer_mismatch(folder, work_dir)
    if reason:
        return {"skipped": f"held-out loss not measured: {reason}"}
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    rows = {}
    for lang, scored in validation_nll(model, work_dir, ctx, max_windows).items():
        per_token = scored.total / scored.tokens
        rows[lang] = {"tokens": scored.tokens, "nats_per_token": round(per_token, 4),
                      "bits_per_byte": round(per_token / math.log(2) / scored.bytes_per_token, 4),
                      "window_nats": [round(float(v) / ctx, 6) for v in scored.window_nats]}
    return {"ctx": ctx, "max_windows": max_windows, "languages": rows}


def loss_difference(base: dict, mine: dict, block: int = LOSS_BLOCK_WINDOWS) -> dict:
    """Held-out nats/token of one language, this model minus the baseline, with a paired 95 % interval.

    Both models scored the same windows, so the difference is taken window by window; consecutive windows come
    from the same source files, so blocks of `block` consecutive windows are resampled together (a block
    bootstrap). Without stored per-window losses (an older results.json) only the estimate is given."""
    from neuro.analysis.uncertainty import grouped_mean_bootstrap

    estimate = mine["nats_per_token"] - base["nats_per_token"]
    a, b = base.get("window_nats"), mine.get("window_nats")
    if not a or not b or len(a) != len(b):
        return {"estimate": estimate, "low": None, "high": None, "blocks": 0}
    diff = [y - x for x, y in zip(a, b, strict=True)]
    ci = grouped_mean_bootstrap(diff, [i // block for i in range(len(diff))], unit=f"block of {block} windows")
    drawn = not math.isnan(ci.low)  # one block: nothing to resample
    return {"estimate": ci.estimate, "low": ci.low if drawn else None, "high": ci.high if drawn else None,
            "blocks": ci.units}


def tokenizer_mismatch(folder: Path, work_dir: Path) -> str | None:
    """Why the validation streams (encoded by `<work>/tokenizer`) cannot be scored by this model, or None."""
    theirs, ours = work_dir / "tokenizer" / "tokenizer.json", folder / "tokenizer.json"
    if theirs.is_file() and ours.is_file():
        vocab = lambda p: json.loads(p.read_text())["model"].get("vocab")  # noqa: E731
        if vocab(theirs) != vocab(ours):
            return f"{folder} uses another tokenizer than {work_dir / 'tokenizer'} (bits per byte would be needed)"
    return None


# -------------------------------------------------------------------------------------------------- neuro's CLI

def neuro_cli(args: list[str], timeout: float | None = None) -> dict:
    """Run `python -m neuro ARGS --json` from the repository root; its JSON, or {"error": ...}."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "neuro", *args, "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    try:
        data = json.loads(out.stdout)
    except json.JSONDecodeError:
        data = None
    if out.returncode != 0 or not isinstance(data, dict):
        err = (data or {}).get("error") if isinstance(data, dict) else None
        return {"error": err or out.stderr.strip()[-2000:] or f"exit status {out.returncode}",
                "command": " ".join(cmd[1:])}
    return data


def common_args(folder: Path, corpus: Path | None, cache: Path, extra: list[str]) -> list[str]:
    return ["--model", str(folder), *(["--corpus", str(corpus)] if corpus else []), "--cache", str(cache), *extra]


def layers_row(summary: dict) -> dict:
    """The layers command's figures the table needs: probe accuracy, alignment (with the default centring, which
    must be the Clones page's per-language centring), the concept layers."""
    center = summary.get("center")
    aligned = {r["layer"]: r for r in summary.get("alignment_by_center", []) if r.get("center") == center}
    layers = []
    for r in summary["layers"]:
        a = aligned.get(r["layer"], r)
        layers.append({"layer": r["layer"], "lang_id_acc": r.get("lang_id_acc"), "align_acc": a.get("align_acc"),
                       "align_mrr": a.get("align_mrr"), "align_cka": r.get("align_cka")})
    acc = [r["lang_id_acc"] for r in layers if r["lang_id_acc"] is not None]
    return {"center": center, "clones_page_centring": center == "language", "concept_layers": summary["concept_layers"],
            "rule": summary.get("rule"), "per_layer": layers,
            "probe_acc_range": [min(acc), max(acc)] if acc else None, "split": summary.get("split")}


def clones_row(summary: dict, setting: str = SETTING) -> dict:
    """MAP@R and Recall@1 with CIs at the concept / first / last / mean-of-layers embeddings, and the paired
    differences concept - first and concept - last, as `clones eval --json` prints them."""
    methods = {}
    for key, method in CLONE_METHODS.items():
        rows = [r for r in summary["intervals"] if r["method"] == method and r["setting"] == setting]
        methods[key] = {r["metric"]: {"estimate": r["estimate"], "low": r["low"], "high": r["high"],
                                      "layer": r["layer"]} for r in rows}
    diffs = {}
    for key, comparison in DIFFERENCES.items():
        rows = [r for r in summary["differences"] if r["comparison"] == comparison and r["setting"] == setting]
        diffs[key] = {r["metric"]: {k: r[k] for k in ("estimate", "low", "high", "covers_zero", "verdict")}
                      for r in rows}
    return {"setting": setting, "layer": summary["layer"], "concept_layers": summary["concept_layers"],
            "center": summary.get("center"), "evaluated_programs": summary.get("evaluated_programs"),
            "evaluated_tasks": summary.get("evaluated_tasks"), "bootstrap": summary.get("bootstrap"),
            "methods": methods, "differences": diffs}


def transfer_row(summary: dict) -> dict:
    """Per run (concept, all): zero-shot BLEU-4 / ROUGE-L after training with CIs, before training (mean over the
    languages other than the source), the change with its paired CI (neuro's `zero_shot_change` on the job's
    result), and the concept - all comparisons the command printed."""
    from neuro.experiments.intervals import interval_summary
    from neuro.experiments.transfer import zero_shot_change
    from neuro.jobs.folders import find_job
    from neuro.jobs.kinds import job_result

    runs = []
    for job in summary["jobs"]:
        r = job.get("result")
        if r is None:
            runs.append({"job": job.get("id"), "state": job.get("state"), "error": job.get("error")})
            continue
        full = job_result(find_job(job["path"]))
        row = {"job": job["id"], "state": job["state"], "layer_choice": r["layer_choice"], "layers": r["layers"],
               "source": r["source"], "steps": r.get("steps"), "trainable_params": r.get("trainable_params"),
               "eval_pairs": r.get("eval_pairs"), "eval_total": r.get("eval_total")}
        others = [lang for lang in r["scores"] if lang != r["source"]]
        for metric in ("bleu4", "rouge_l"):
            before = [r["scores"][lang].get(metric + "_before") for lang in others]
            row[metric] = {"after": r[f"zero_shot_{metric}"], "after_ci": r.get(f"zero_shot_{metric}_ci"),
                           "before": sum(before) / len(before) if others and None not in before else None,
                           "change": interval_summary(zero_shot_change(full, metric)) if full is not None else None}
        runs.append(row)
    return {"runs": runs, "comparisons": summary.get("comparisons"),
            "trainable_params": summary.get("trainable_params"), "split": summary.get("split")}


# ------------------------------------------------------------------------------------------------------ verdict

def verdict(baseline: dict, model: dict, margin: float = LOSS_MARGIN_NATS, gate: str = GATE_CORPUS) -> dict:
    """Whether `model` may replace `baseline` (both results.json model entries), with every reason it may not.
    (a) held-out nats/token at most `margin` above the baseline's in every language (the upper end of the paired
    95 % interval of the difference, where per-window losses are stored; else the estimate); (b) on `gate`, the
    CIs of concept - first and concept - last MAP@R both above zero. Also returns the loss differences per
    language (`loss_differences`), which the table and the --json summary read."""
    reasons, passed, differences = [], [], {}
    base_loss, loss = baseline.get("heldout", {}), model.get("heldout", {})
    if "languages" not in base_loss or "languages" not in loss:
        reasons.append("(a) held-out loss not measured for "
                       + ("the baseline" if "languages" not in base_loss else "this model"))
    else:
        worse, deltas = [], []
        for lang, base in base_loss["languages"].items():
            mine = loss["languages"].get(lang)
            if mine is None:
                worse.append(f"{lang} not measured")
                continue
            d = differences[lang] = loss_difference(base, mine)
            bound = d["estimate"] if d["high"] is None else d["high"]
            text = f"{lang} {_ci(d, 4, signed=True)}"
            deltas.append(text)
            if bound > margin + 1e-12:
                worse.append(text)
        intervals = bool(differences) and all(d["high"] is not None for d in differences.values())
        what = "its 95 % interval's upper end" if intervals else "the estimate"
        if worse:
            reasons.append(f"(a) held-out loss may be worse than the baseline's by more than {margin} nats/token "
                           f"({what}; differences in nats/token): " + ", ".join(worse))
        else:
            passed.append(f"(a) held-out loss within +{margin} nats/token of the baseline in every language "
                          f"({what}; differences in nats/token): " + ", ".join(deltas))
    clones = model.get("corpora", {}).get(gate, {}).get("clones")
    if not clones or "differences" not in clones:
        reasons.append(f"(b) clone MAP@R on {gate} not measured")
    else:
        for key in DIFFERENCES:
            d = clones["differences"].get(key, {}).get("map_at_r")
            if d is None or d.get("low") is None:
                reasons.append(f"(b) {key} MAP@R on {gate} not measured")
            elif d["low"] <= 0:
                reasons.append(f"(b) {key} MAP@R on {gate} {d['estimate']:+.4f} [{d['low']:+.4f}, "
                               f"{d['high']:+.4f}]: the CI does not exclude zero on the positive side")
            else:
                passed.append(f"(b) {key} MAP@R on {gate} {d['estimate']:+.4f} [{d['low']:+.4f}, "
                              f"{d['high']:+.4f}] above zero")
    return {"replace": not reasons, "reasons": reasons, "passed": passed, "loss_differences": differences}


# -------------------------------------------------------------------------------------------------------- table

def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(d: dict | None, digits: int = 3, signed: bool = False) -> str:
    if not d or d.get("estimate") is None:
        return "–"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    low, high = d.get("low"), d.get("high")
    interval = f" [{fmt.format(low)}, {fmt.format(high)}]" if low is not None and high is not None else ""
    return fmt.format(d["estimate"]) + interval


def per_layer_md(models: dict, corpora: list[str]) -> list[str]:
    """Markdown lines: centred cross-language MRR at every layer, one table per corpus (where a peak sits)."""
    out: list[str] = []
    for corpus in corpora:
        rows = {name: lay for name, m in models.items()
                if "per_layer" in (lay := (m.get("corpora", {}).get(corpus, {}).get("layers") or {}))}
        if not rows:
            continue
        if not out:
            out += ["", "## Alignment per layer", "",
                    "Cross-language MRR after per-language centring (the Clones page's), as in the tables above, at "
                    "every layer; **bold**: the model's concept layers."]
        layers = sorted({r["layer"] for lay in rows.values() for r in lay["per_layer"]})
        out += ["", f"Corpus `{corpus}`:", "", "| model | " + " | ".join(f"L{i}" for i in layers) + " |",
                "|---|" + "---:|" * len(layers)]
        for name, lay in rows.items():
            per = {r["layer"]: r["align_mrr"] for r in lay["per_layer"]}
            cells = [("–" if i not in per else f"**{_f(per[i])}**" if i in lay["concept_layers"] else _f(per[i]))
                     for i in layers]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def table_md(results: dict) -> str:
    """Markdown: held-out loss, one table per corpus, the transfer table, the verdicts."""
    models, baseline = results["models"], results["baseline"]
    langs = sorted({lang for m in models.values() for lang in m.get("heldout", {}).get("languages", {})})
    out = [f"# Recipe experiment (baseline: {baseline})", "",
           f"Written by `python -m tools.recipe_experiment` at {results['finished']}."]
    out += ["", "## Held-out loss (nats/token; bits/byte in parentheses)", ""]
    if langs:
        out += [f"Validation streams of `{results['work_dir']}` (context {results['ctx']}, at most "
                f"{results['eval_windows']} windows per language). \"No worse\" means at most "
                f"+{results['loss_margin_nats']} nats/token above the baseline in every language.", ""]
        out += ["| model | " + " | ".join(langs) + " |", "|---|" + "---:|" * len(langs)]
        for name, m in models.items():
            rows = m.get("heldout", {}).get("languages", {})
            out.append(f"| {name} | " + " | ".join(
                f"{rows[lang]['nats_per_token']:.4f} ({rows[lang]['bits_per_byte']:.3f})" if lang in rows else "–"
                for lang in langs) + " |")
    differences = {n: v["loss_differences"] for n, v in results.get("verdicts", {}).items()
                   if v.get("loss_differences")}
    if differences:
        out += ["", f"Difference from {baseline} (nats/token), paired 95 % interval over blocks of "
                    f"{LOSS_BLOCK_WINDOWS} consecutive windows (the same windows for every model):", "",
                "| model | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
        for name, by_lang in differences.items():
            out.append(f"| {name} | " + " | ".join(_ci(by_lang.get(lang), 4, signed=True) for lang in langs) + " |")
    for name, m in models.items():
        if "skipped" in m.get("heldout", {}):
            out.append(f"\n{name}: {m['heldout']['skipped']}")
    for corpus in results["corpora"]:
        out += ["", f"## Corpus `{corpus}`", "",
                f"Probe: language-ID accuracy per layer (min-max over layers). Alignment: cross-language MRR after "
                f"per-language centring (the Clones page's), at the clone layer (the middle concept layer), the first "
                f"and the last layer; concept layers chosen on the selection side. MAP@R: {SETTING} clone retrieval "
                "on the evaluation side, 95 % task-bootstrap CIs; differences are paired.", "",
                "| model | probe acc (range) | align concept | align first | align last | concept layers | "
                "MAP@R concept | MAP@R first | MAP@R last | MAP@R mean | concept-first | concept-last |",
                "|---|---|---:|---:|---:|---|---|---|---|---|---|---|"]
        for name, m in models.items():
            c = m.get("corpora", {}).get(corpus, {})
            lay, clo = c.get("layers") or {}, c.get("clones") or {}
            cells = [name]
            if "per_layer" in lay:
                per = {r["layer"]: r["align_mrr"] for r in lay["per_layer"]}
                lo, hi = lay["probe_acc_range"] or (None, None)
                at = clo.get("layer", lay["concept_layers"][len(lay["concept_layers"]) // 2]
                             if lay["concept_layers"] else None)
                cells += [f"{_f(lo)}–{_f(hi)}", f"{_f(per.get(at))} (L{at})", _f(per.get(0)),
                          _f(per.get(max(per))), str(lay["concept_layers"])]
            else:
                cells += ["–"] * 5
            if "methods" in clo:
                cells += [_ci(clo["methods"][k].get("map_at_r")) for k in CLONE_METHODS]
                cells += [_ci(clo["differences"][k].get("map_at_r"), signed=True) for k in DIFFERENCES]
            else:
                cells += ["–"] * 6
            out.append("| " + " | ".join(cells) + " |")
        for name, m in models.items():
            c = m.get("corpora", {}).get(corpus, {})
            for step in ("layers", "clones"):
                if (c.get(step) or {}).get("error"):
                    out.append(f"\n{name} {step} failed: {c[step]['error'].splitlines()[-1]}")
    out += per_layer_md(models, results["corpora"])
    if results.get("transfer_settings"):
        s = results["transfer_settings"]
        out += ["", "## Transfer (concept layers vs all layers)", "",
                f"`python -m neuro transfer` on the demo corpus: source {s['source']}, LoRA, {s['steps']} steps, seed "
                f"{s['seed']}, {s['eval_programs']} evaluation programs, {s['max_new_tokens']} new tokens. Zero-shot "
                "mean over the languages other than the source (x 100), 95 % CIs over evaluation tasks; change = "
                "after - before, paired.", "",
                "| model | layers | BLEU-4 before | BLEU-4 after | BLEU-4 change | ROUGE-L before | ROUGE-L after | "
                "ROUGE-L change |", "|---|---|---:|---|---|---:|---|---|"]
        for name, m in models.items():
            t = m.get("transfer") or {}
            if "error" in t:
                out.append(f"| {name} | failed: {t['error'].splitlines()[-1]} |" + " |" * 6)
                continue
            for run in t.get("runs", []):
                if "bleu4" not in run:
                    out.append(f"| {name} | {run.get('state')} |" + " – |" * 6)
                    continue
                cells = [name, f"{run['layer_choice']} {run['layers']}"]
                for metric in ("bleu4", "rouge_l"):
                    v = run[metric]
                    after = {"estimate": v["after"], **{k: (v["after_ci"] or {}).get(k) for k in ("low", "high")}}
                    cells += [_f(v["before"], 2), _ci(after, 2), _ci(v["change"], 2, signed=True)]
                out.append("| " + " | ".join(cells) + " |")
    out += ["", "## Verdict", "",
            f"Replace the shipped model only if (a) held-out loss is at most +{results['loss_margin_nats']} "
            f"nats/token above the baseline's in every language (the upper end of the paired 95 % interval) and "
            f"(b) on {GATE_CORPUS} the 95 % CIs of concept - first and concept - last {SETTING} MAP@R both lie "
            "above zero.", ""]
    verdicts = results.get("verdicts", {})
    if not verdicts:
        out.append("(only the baseline was measured)")
    for name, v in verdicts.items():
        out.append(f"- **{name}: {'replace' if v['replace'] else 'keep the baseline'}**")
        out += [f"  - fails {r}" for r in v["reasons"]] + [f"  - passes {p}" for p in v["passed"]]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------------- driver

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.recipe_experiment", description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", metavar="NAME=FOLDER", help="a model folder; repeat per model")
    p.add_argument("--baseline", required=True, metavar="NAME", help="the model the others are judged against")
    p.add_argument("--corpus", action="append", metavar="NAME=PATH",
                   help=f"a corpus (Snippet JSONL, folder of sources or HumanEval-X); repeat. Default: {DEMO} (the "
                        f"embedded demo corpus) and {GATE_CORPUS} ({HUMANEVAL_X}, skipped when absent)")
    p.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR), help="the demo builder's work folder (validation "
                                                                      "streams)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="cache root: each model's results in <cache>/<NAME>")
    p.add_argument("--reuse", action="append", default=None,
                   help="an earlier run's results.json (repeat for several): what it measured for a model of the same "
                        "name and folder (held-out loss, each finished corpus, transfer) is kept, the rest measured")
    p.add_argument("--out", required=True, help="folder for results.json and table.md")
    p.add_argument("--transfer", action="store_true", help="also run the transfer comparison (concept vs all)")
    p.add_argument("--transfer-source", default="python")
    p.add_argument("--transfer-steps", type=int, default=20)
    p.add_argument("--transfer-eval-programs", type=int, default=20)
    p.add_argument("--transfer-max-new-tokens", type=int, default=20)
    p.add_argument("--transfer-seed", type=int, default=0)
    p.add_argument("--ctx", type=int, default=256, help="held-out loss: tokens per window (the training context)")
    p.add_argument("--eval-windows", type=int, default=400, help="held-out loss: max windows per language "
                                                                  "(400: as `tools.demo_model evaluate`)")
    p.add_argument("--limit", type=int, help="passed to neuro: use only the first N programs of each corpus")
    p.add_argument("--eval-fraction", type=float, help="passed to neuro: share of tasks evaluated")
    p.add_argument("--json", action="store_true", help="print a compact summary on stdout")
    return p


def neuro_extra(args) -> list[str]:
    extra = []
    if args.limit:
        extra += ["--limit", str(args.limit)]
    if args.eval_fraction is not None:
        extra += ["--eval-fraction", str(args.eval_fraction)]
    return extra


def timed(results: dict, key: str, started: float, fn):
    """Run `fn()`, record its wall time under results["timings"][key], log start and end."""
    log(f"{key} ...", started)
    t0 = time.time()
    value = fn()
    results["timings"][key] = round(time.time() - t0, 1)
    status = "failed: " + value["error"].splitlines()[-1] if isinstance(value, dict) and value.get("error") else \
        ("skipped" if isinstance(value, dict) and value.get("skipped") else "done")
    log(f"{key} {status} in {results['timings'][key]:.1f} s", started)
    return value


def run(args) -> dict:
    started = time.time()
    models = check_models(parse_pairs(args.model, "--model"), args.baseline)
    notes: list[str] = []
    if args.corpus:
        corpora = check_corpora(parse_pairs(args.corpus, "--corpus"))
    else:
        corpora, notes = default_corpora()
    for note in notes:
        log(note)
    out, cache_root, work = resolve(args.out), resolve(args.cache), resolve(args.work_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {"baseline": args.baseline, "work_dir": str(work), "ctx": args.ctx, "eval_windows": args.eval_windows,
               "loss_margin_nats": LOSS_MARGIN_NATS, "corpora": {k: str(v) if v else "embedded demo corpus"
                                                                for k, v in corpora.items()},
               "notes": notes, "neuro_args": neuro_extra(args), "timings": {}, "models": {}, "verdicts": {},
               "transfer_settings": None, "finished": None}
    if args.transfer:
        results["transfer_settings"] = {"source": args.transfer_source, "steps": args.transfer_steps,
                                        "seed": args.transfer_seed, "eval_programs": args.transfer_eval_programs,
                                        "max_new_tokens": args.transfer_max_new_tokens, "corpus": DEMO}
    extra = neuro_extra(args)
    previous = {}
    for path in args.reuse or []:
        previous.update(json.loads(resolve(path).read_text())["models"])
    for name, folder in models.items():
        cache = cache_root / name
        entry, reused = reusable_parts(previous.get(name), folder, list(corpora), args.transfer)
        results["models"][name] = entry = {"folder": str(folder), "cache": str(cache), **entry}
        if reused:
            log(f"{name}: reused from an earlier run: {', '.join(reused)}")
        if "heldout" not in entry:
            entry["heldout"] = timed(results, f"{name}: held-out loss", started,
                                     lambda: heldout_loss(folder, work, args.ctx, args.eval_windows))
            if "skipped" in entry["heldout"]:
                log(entry["heldout"]["skipped"])
            save(out, results)
        for corpus, path in corpora.items():
            if corpus in entry["corpora"]:
                continue
            base = common_args(folder, path, cache, extra)
            raw = timed(results, f"{name}: layers on {corpus}", started, lambda: neuro_cli(["layers", *base]))
            c = entry["corpora"][corpus] = {"layers": raw if "error" in raw else layers_row(raw)}
            if "error" not in raw and raw.get("center") != "language":
                log(f"warning: layers centred by {raw.get('center')!r}, not per language as the Clones page")
            raw_clones = timed(results, f"{name}: clones eval on {corpus}", started,
                               lambda: neuro_cli(["clones", "eval", *base]))
            c["clones"] = raw_clones if "error" in raw_clones else clones_row(raw_clones)
            c["raw"] = {"layers": raw, "clones": raw_clones}
            save(out, results)
        if args.transfer and "transfer" not in entry:
            targs = ["transfer", *common_args(folder, None, cache, extra), "--source", args.transfer_source,
                     "--layers", "concept", "--layers", "all", "--steps", str(args.transfer_steps),
                     "--seeds", str(args.transfer_seed), "--eval-programs", str(args.transfer_eval_programs),
                     "--max-new-tokens", str(args.transfer_max_new_tokens)]
            raw = timed(results, f"{name}: transfer concept vs all", started, lambda: neuro_cli(targs))
            entry["transfer"] = raw if "error" in raw else transfer_row(raw)
            save(out, results)
    for name in models:
        if name != args.baseline:
            v = results["verdicts"][name] = verdict(results["models"][args.baseline], results["models"][name])
            log(f"verdict {name}: {'replace' if v['replace'] else 'keep the baseline'}; "
                + "; ".join(v["reasons"] or v["passed"]))
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    results["wall_s"] = round(time.time() - started, 1)
    save(out, results)
    (out / "table.md").write_text(table_md(results))
    log(f"wrote {out / 'results.json'} and {out / 'table.md'}", started)
    return results


def reusable_parts(old: dict | None, folder: Path, corpora: list[str], transfer: bool) -> tuple[dict, list[str]]:
    """What an earlier run measured for the same model folder and may be kept: its held-out loss, each corpus
    whose layers and clones both finished, and its transfer comparison when one is asked for. An interrupted
    run so resumes where it stopped instead of measuring everything again. Returns the entry and the parts'
    names."""
    entry: dict = {"corpora": {}}
    reused: list[str] = []
    if not old or old.get("folder") != str(folder):
        return entry, reused
    if has_window_losses(old.get("heldout", {})):
        entry["heldout"] = old["heldout"]
        reused.append("held-out loss")
    for corpus in corpora:
        part = old.get("corpora", {}).get(corpus)
        if part and not any("error" in part.get(k, {"error": "missing"}) for k in ("layers", "clones")):
            entry["corpora"][corpus] = part
            reused.append(corpus)
    if transfer and old.get("transfer") and "error" not in old["transfer"]:
        entry["transfer"] = old["transfer"]
        reused.append("transfer")
    return entry, reused


def has_window_losses(heldout: dict) -> bool:
    """A stored held-out loss that paired intervals can use (per-window losses in every language), or one that
    was skipped for a reason (measuring again would skip again)."""
    if "skipped" in heldout:
        return True
    rows = heldout.get("languages") or {}
    return bool(rows) and all(r.get("window_nats") for r in rows.values())


def save(out: Path, results: dict) -> None:
    """results.json, rewritten after every step (atomically) so an interrupted run keeps what it measured."""
    atomic.write_text(out / "results.json", json.dumps(results, indent=1, default=str))


def compact(results: dict) -> dict:
    """The --json summary: per model the held-out nats, per corpus the concept layers, MAP@R and differences."""
    models = {}
    for name, m in results["models"].items():
        rows = m["heldout"].get("languages", {})
        row: dict = {"heldout_nats": {k: v["nats_per_token"] for k, v in rows.items()} or m["heldout"].get("skipped")}
        if results["verdicts"].get(name, {}).get("loss_differences"):
            row["heldout_minus_baseline"] = results["verdicts"][name]["loss_differences"]
        for corpus, c in m["corpora"].items():
            clo = c.get("clones") or {}
            row[corpus] = {"concept_layers": (c.get("layers") or {}).get("concept_layers"),
                           "map_at_r": {k: v.get("map_at_r", {}).get("estimate")
                                        for k, v in clo.get("methods", {}).items()},
                           "differences": {k: v.get("map_at_r") for k, v in clo.get("differences", {}).items()},
                           "errors": [s for s in ("layers", "clones") if (c.get(s) or {}).get("error")]}
        if m.get("transfer"):
            row["transfer"] = m["transfer"].get("error") or {
                r["layer_choice"]: {"bleu4": r["bleu4"]["after"], "rouge_l": r["rouge_l"]["after"]}
                for r in m["transfer"]["runs"] if "bleu4" in r}
        models[name] = row
    return {"out": results.get("out"), "baseline": results["baseline"], "models": models,
            "verdicts": {k: {"replace": v["replace"], "reasons": v["reasons"]} for k, v in results["verdicts"].items()},
            "timings": results["timings"], "wall_s": results.get("wall_s")}


def failed(results: dict) -> bool:
    """Whether any step of any model ended in an error (the exit status is then 1)."""
    for m in results["models"].values():
        steps = [s for c in m["corpora"].values() for s in (c.get("layers"), c.get("clones"))] + [m.get("transfer")]
        if any(isinstance(s, dict) and s.get("error") for s in steps):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        results = run(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        if args.json:
            print(json.dumps({"error": str(err)}))
        return 2
    results["out"] = str(resolve(args.out))
    if args.json:
        print(json.dumps(compact(results), indent=1, default=str))
    else:
        print((resolve(args.out) / "table.md").read_text())
    return 1 if failed(results) else 0


if __name__ == "__main__":
    sys.exit(main())
