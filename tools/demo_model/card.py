"""The model card (README.md + metrics.json in the model folder) from the steps' metrics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tools.demo_model.settings import BOS, EOS, PAD, write_json

REBUILD = """\
apt-get update && apt-get install -y golang-1.19-src openjdk-17-source libboost1.81-dev libstdc++-12-dev
python -m tools.demo_model fetch-js
python -m tools.demo_model build-corpus
python -m tools.demo_model train-tokenizer
python -m tools.demo_model pretokenize{parallel_step}
setsid nohup python -m tools.demo_model train --max-minutes {max_minutes:g} --max-tokens {max_tokens}{parallel_flags} \\
    > cache/demo_train/train.out 2>&1 &
# wait until cache/demo_train/train.log ends with "done: ..." (rerunning `train` resumes from the checkpoint)
python -m tools.demo_model evaluate
python -m tools.demo_model check-overlap
python -m tools.demo_model card"""


def rebuild_commands(tr: dict, parallel: dict | None) -> str:
    """The commands that rebuild this model, with the parallel-program step when its mix had one."""
    step = flags = ""
    if parallel and tr.get("parallel_share"):
        step = (f"\npython -m tools.demo_model parallel --layout {parallel['layout']} --tokens {parallel['tokens']}"
                f" --program-seed {parallel['seed']}")
        flags = f" --parallel-share {tr['parallel_share']:g} --parallel-layout {parallel['layout']}"
    return REBUILD.format(parallel_step=step, parallel_flags=flags, **tr)


LAYOUT_WORDS = {
    "pairs": "two renderings of one program side by side, each after a comment line naming its language",
    "all": "all five renderings of one program side by side, each after a comment line naming its language",
    "alone": "one rendering per document, the language rotating from program to program",
    "apart": "each program's five renderings as five separate documents",
}


def parallel_paragraph(tr: dict, parallel: dict | None) -> list[str]:
    """What the parallel-program share of the mix was, or nothing for a real-code-only model."""
    if not parallel or not tr.get("parallel_share"):
        return []
    return [
        f"**Parallel programs.** {tr['parallel_share']:.0%} of training rows (windows) were drawn from a second "
        f"stream of {parallel['tokens']:,} tokens in {parallel['documents']:,} documents written by "
        "`tools/parallel_programs`: small algorithms generated from a typed intermediate form and rendered "
        "idiomatically in all five languages with varied identifiers, comments and formatting (layout "
        f"`{parallel['layout']}`: {LAYOUT_WORDS.get(parallel['layout'], parallel['layout'])}). None comes from "
        "evaluation data; the same exclusion index dropped "
        f"{parallel['dropped_by_decontamination']} of {parallel['generated']:,} generated documents. Tokens per "
        "language in that stream: " + ", ".join(f"{k} {v:,}" for k, v in parallel["tokens_per_language"].items())
        + ".", ""]


def experiment_section(table: str | None) -> list[str]:
    """The recipe experiment's tables (`python -m tools.recipe_experiment`'s table.md, its own title dropped
    and its sections nested under this one), when there is one."""
    if not table:
        return []
    body = [line for line in table.strip().splitlines() if not line.startswith("# ")]
    body = ["#" + line if line.startswith("## ") else line for line in body]
    return ["## Recipe experiment", "",
            "Training mixes compared at equal compute (same architecture, tokenizer, tokens seen and batch); "
            "every figure below is measured on held-out data by `python -m tools.recipe_experiment`.",
            "", "\n".join(body).strip(), ""]


def render_card(m: dict) -> str:
    """Model card markdown from the collected metrics."""
    c, t, tr, ev, ov = m["corpus"], m["tokens"], m["train"], m["eval"], m["overlap"]
    parallel = m.get("parallel")
    lines = [
        "# Demo code model", "",
        "A small Llama-architecture causal language model trained from scratch on real code in five "
        "languages (C++, Go, Java, JavaScript, Python). It ships with the app so that every analysis "
        "runs offline on a laptop; it is a teaching and testing model, not a useful code generator. "
        "Built by `tools/demo_model`; every number below is written by that package.", "",
        "## Architecture", "",
        f"`LlamaForCausalLM`: {m['config']['num_hidden_layers']} layers, hidden {m['config']['hidden_size']}, "
        f"FFN (intermediate) {m['config']['intermediate_size']} (SiLU-gated), "
        f"{m['config']['num_attention_heads']} attention heads ({m['config']['num_key_value_heads']} key/value heads), "
        f"vocabulary {m['config']['vocab_size']}, tied input/output embeddings, RoPE, "
        f"max positions {m['config']['max_position_embeddings']} (trained at context {tr['ctx']}). "
        f"**{tr['params']:,} parameters.** Weights: `model.safetensors` stored in bfloat16 "
        f"({ev['weights_mb']} MB); `config.json` asks for float32, so `from_pretrained(folder)` "
        f"loads {ev['plain_load_dtype']}.", "",
        "## Tokenizer", "",
        f"Byte-level BPE (Hugging Face `tokenizers`), {t['vocab_size']} tokens, trained on the training "
        f"split of all five languages; special tokens `{BOS}` (bos, prepended by the tokenizer), "
        f"`{EOS}` (eos, ends each training file), `{PAD}`. Loads with `AutoTokenizer.from_pretrained` "
        "as a `PreTrainedTokenizerFast`; `return_offsets_mapping=True` gives character offsets "
        f"(checked on multi-byte text: {'ok' if ev['offsets_check']['offsets_ok'] else 'FAILED'}).", "",
        "## Training data", "",
        f"Each language capped at the same budget ({c['bytes_per_lang_budget'] / 1e6:g} MB), files "
        f"filtered (near-empty, generated, minified, bundled, over-long lines; C++ headers with "
        f"tree-sitter parse errors), deduplicated by content hash, and decontaminated: any file sharing "
        f"a window of {c['ngram']} normalized lines with one of {c['exclude_programs']} excluded programs "
        "(the app's parallel demo corpus and HumanEval-X) is dropped. "
        f"{c['val_frac']:.0%} of files per language, chosen by hash, are held out for validation. "
        "Files are drawn in random order, primary sources first (the Python standard library, the Debian "
        "source packages), then registry packages, each package capped at "
        f"{c['package_cap'] / 1e6:g} MB (the Python standard library alone is smaller than the budget, "
        "so installed PyPI packages top it up). Rejection counts cover the files examined until the "
        "budget was filled.", "",
        "| language | train files | train MB | val files | val MB | train tokens | rejected |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for lang, s in c["languages"].items():
        rej = ", ".join(f"{k} {v}" for k, v in sorted(s["rejected"].items()))
        lines.append(f"| {lang} | {s['train_files']} | {s['train_bytes'] / 1e6:.2f} | {s['val_files']} | "
                     f"{s['val_bytes'] / 1e6:.2f} | {t['train_tokens'][lang]:,} | {rej} |")
    lines += ["", "Sources and licenses (files and bytes kept, train + validation):", "",
              "| language | source | version | license | files | MB |", "|---|---|---|---|---:|---:|"]
    deb = {"golang-1.19-src": "golang-1.19-src", "openjdk-17-source": "openjdk-17-source",
           "boost-1.81": "libboost1.81-dev", "libstdc++-12": "libstdc++-12-dev"}
    for lang, s in c["languages"].items():
        for src, r in s["sources"].items():
            version = r.get("version") or c["debian_packages"].get(deb.get(src, ""), None) or (
                c["python_version"] if src == "cpython-stdlib" else "")
            lines.append(f"| {lang} | {src} | {version} | {r['license']} | {r['files']} | {r['bytes'] / 1e6:.2f} |")
    lines += [
        "", *parallel_paragraph(tr, parallel), "## Training", "",
        f"{tr['steps']:,} AdamW steps of {tr['batch_size']} x {tr['ctx']} tokens: **{tr['tokens_seen']:,} "
        f"tokens seen** (of a {t['train_tokens_total']:,}-token training stream, windows sampled at random), "
        f"peak learning rate {tr['lr']} with warmup and cosine decay, weight decay {tr['weight_decay']}. "
        f"Hardware: {tr['device_name']} ({tr['device']}, {tr['threads']} threads, shared with other work); "
        f"**wall time {tr['wall_minutes']} minutes** (limit {tr['max_minutes']:g}).", "",
        "## Validation", "",
        "Mean next-token cross-entropy (nats/token) on the held-out files of each language "
        f"(non-overlapping windows of {ev['ctx']} tokens), beside an add-one-smoothed unigram model fitted "
        "to the training split's token counts, on the same tokens.", "",
        "| language | tokens | model | unigram | gap | model bits/byte |", "|---|---:|---:|---:|---:|---:|",
    ]
    for lang, r in ev["languages"].items():
        lines.append(f"| {lang} | {r['tokens']:,} | {r['model_nats']:.3f} | {r['unigram_nats']:.3f} | "
                     f"{r['gap_nats']:.3f} | {r['model_bits_per_byte']:.3f} |")
    bar = "meets" if ev["passes_2_nat_bar"] else "does NOT meet"
    lines += [
        "", f"The model {bar} the bar of being at least 2 nats/token below the unigram baseline in every language.",
        "", f"Contamination check after training: {ov['overlap_count']} of {ov['files_checked']} corpus files "
        f"share a window of {ov['ngram']} normalized lines with the {ov['exclude_programs']} programs of "
        f"{len(ov['exclude_files'])} exclusion files present at that time.", "",
        "## Rebuild", "", "```bash", rebuild_commands(tr, parallel), "```", "",
        "`python -m tools.demo_model all` runs the same steps in one process. Intermediate files go to "
        "`cache/demo_train/`; `train` checkpoints there and resumes after an interruption. The npm "
        "packages are pinned; the Python top-up reads the PyPI packages installed in the running "
        "environment (versions above), and the exclusion files are whatever exists at build time, so a "
        "rebuild elsewhere can select slightly different files.", "",
        *experiment_section(m.get("experiment")),
        "## Limits", "",
        "Tiny and briefly trained: expect plausible-looking but mostly wrong code. Trained on library "
        "code (standard libraries, headers, npm packages), so it knows little about small stand-alone "
        "programs. Not for any use beyond demonstrating and testing the app.", "",
    ]
    return "\n".join(lines)


def card(args: argparse.Namespace) -> dict:
    """Write ``README.md`` and ``metrics.json`` into the model folder from the step metrics.

    With ``--from-folder`` the metrics come from the folder's own ``metrics.json`` (a shipped model whose
    work folder is gone), so only the card's text is rewritten, e.g. to add the recipe experiment.
    """
    work, out = Path(args.work_dir), Path(args.out_dir)
    if getattr(args, "from_folder", False):
        m = json.loads((out / "metrics.json").read_text())
        m["train"].setdefault("history", [])
    else:
        m = {name: json.loads((work / f"{fname}.json").read_text()) for name, fname in
             (("corpus", "corpus_stats"), ("tokens", "token_stats"), ("train", "train_metrics"),
              ("eval", "eval_metrics"), ("overlap", "overlap_check"))}
        layout = m["train"].get("parallel_layout")
        if layout and m["train"].get("parallel_share"):
            m["parallel"] = json.loads((work / f"parallel_{layout}_stats.json").read_text())
    m["config"] = json.loads((out / "config.json").read_text())
    experiment = Path(args.experiment) if getattr(args, "experiment", None) else None
    if experiment is not None:
        m["experiment"] = experiment.read_text()
    (out / "README.md").write_text(render_card(m))
    small = {k: v for k, v in m.items() if k not in ("config", "experiment")}
    history = m["train"].get("history") or []
    small["train"] = {k: v for k, v in m["train"].items() if k != "history"}
    if history:  # else the folder's own metrics already hold the loss curve
        small["train"]["loss_curve"] = [{k: h[k] for k in ("step", "tokens", "minutes", "loss")}
                                        for h in history[:: max(1, len(history) // 40)]]
    write_json(out / "metrics.json", small)
    return small
