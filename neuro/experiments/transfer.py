"""Concept-layer-guided cross-lingual transfer for code summarization.

The model learns to write a one-sentence summary after code of ONE source language, with the
adaptation confined to chosen layers (default: the concept layers of neuro/analysis/layers.py, where programs
of different languages align); it is then asked to summarize code of the other languages it never
saw summarized (zero-shot). Choices to compare: concept layers, all layers, lower layers (as many of
the lowest layers as there are concept layers), or a custom list.

Prompt: `<code>` + PROMPT_CUE (`\\n\\nSummary:`) and the target ` <summary><eos>`; the loss counts the
summary tokens only. The cue is the same plain text for every language (no comment marker), so a model
adapted on one language meets the very same cue in every other: the prompts of two languages differ
only in their code. Adaptation: LoRA (peft) on every linear layer of the chosen blocks, or "full":
every parameter of the chosen blocks. By default comments (and Python docstrings) are removed from
the code first (neuro/code/comments.py, as for clone detection): the demo corpus states its summary in a
comment, which would turn summarization into copying.

Sides: the corpus's selection / evaluation split (neuro/code/split.py; `eval_fraction`, `split_seed`). The
concept layers are found on the selection side, the model adapts on the source language's
selection-side pairs, and it summarizes the evaluation-side programs of the source and target
languages (split by task when tasks are parallel, so an evaluated task's summary never appears in
training, in any language) greedily (no 3-gram repeated, a common guard against the loops small models
fall into); smoothed BLEU-4 and ROUGE-L per language (see metrics.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from neuro.code.comments import strip_comments
from neuro.code.corpus import LANGS, Snippet
from neuro.code.split import DEFAULT_EVAL_FRACTION, CorpusSplit, SplitParams, split_corpus
from neuro.experiments.metrics import rouge_l, sentence_bleu, sentence_rouge_l, smoothed_bleu4
from neuro.model.loading import LoadedModel
from neuro.progress import Progress
from neuro.training.batches import make_batches
from neuro.training.checkpoints import checkpoint_meta, load_tensors, load_weights, save_tensors
from neuro.training.context import TaskContext
from neuro.training.loop import TrainSummary, common_reasons, train
from neuro.training.lora import apply_lora, linear_modules, lora_size, merged_lora, trainable_parameters
from neuro.training.memory import estimate_training_bytes, memory_reason
from neuro.training.records import Record
from neuro.results.layers import concept_layers

LAYER_CHOICES = ("concept", "all", "lower", "custom")

METHODS = ("lora", "full")

# What follows the code in every prompt, whatever its language: plain text, no comment marker.
PROMPT_CUE = "\n\nSummary:"

PROMPT_FORMAT = "<code>" + PROMPT_CUE.replace("\n", "\\n") + " <summary>"


@dataclass(frozen=True)
class SummaryPair:
    id: str
    lang: str
    task: str
    code: str
    summary: str


def summary_pairs(snippets: Sequence[Snippet], strip: bool = True) -> list[SummaryPair]:
    """(code, summary) pairs of the snippets that have a summary."""
    out = []
    for s in snippets:
        if s.summary.strip():
            code = strip_comments(s.code, s.lang) if strip else s.code
            out.append(SummaryPair(s.id, s.lang, s.task, code, s.summary.strip()))
    return out


def _ids(loaded: LoadedModel, text: str) -> list[int]:
    return list(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(loaded: LoadedModel, pair: SummaryPair, max_code_tokens: int) -> list[int]:
    """[bos] + code tokens (cut to max_code_tokens) + PROMPT_CUE, tokenized apart so a long program
    never pushes the cue out. Nothing but the code depends on the language (pair.lang is not read)."""
    bos = [loaded.tokenizer.bos_token_id] if loaded.tokenizer.bos_token_id is not None else []
    return bos + _ids(loaded, pair.code.rstrip())[:max_code_tokens] + _ids(loaded, PROMPT_CUE)


def training_sequence(loaded: LoadedModel, pair: SummaryPair, max_code_tokens: int,
                      max_summary_tokens: int) -> tuple[list[int], list[int]]:
    """(ids, flags): flags mark the summary tokens and the end token, the only loss targets."""
    prompt = prompt_ids(loaded, pair, max_code_tokens)
    target = _ids(loaded, " " + pair.summary)[:max_summary_tokens]
    if loaded.tokenizer.eos_token_id is not None:
        target = target + [loaded.tokenizer.eos_token_id]
    return prompt + target, [0] * len(prompt) + [1] * len(target)


@torch.inference_mode()
def summarize(loaded: LoadedModel, pairs: Sequence[SummaryPair], *, max_code_tokens: int = 384,
              max_new_tokens: int = 40, no_repeat_ngram: int = 3, ctx=None, phase: str = "summarizing") -> list[str]:
    """Greedy summaries, one program at a time, cut at the first line break."""
    tok, out = loaded.tokenizer, []
    with loaded.lock:
        for i, pair in enumerate(pairs):
            ids = torch.tensor([prompt_ids(loaded, pair, max_code_tokens)], device=loaded.device)
            generated = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                              max_new_tokens=max_new_tokens, pad_token_id=loaded.pad_id,
                                              eos_token_id=tok.eos_token_id, no_repeat_ngram_size=no_repeat_ngram)
            text = tok.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)
            out.append(text.strip().split("\n")[0].strip())
            if ctx is not None:
                ctx.check()
                ctx.progress(i + 1, len(pairs), phase)
    return out


def score(pairs: Sequence[SummaryPair], predictions: Sequence[str]) -> dict[str, dict]:
    """BLEU-4 and ROUGE-L (x 100) per language."""
    by_lang: dict[str, tuple[list, list]] = {}
    for pair, pred in zip(pairs, predictions):
        refs, preds = by_lang.setdefault(pair.lang, ([], []))
        refs.append(pair.summary)
        preds.append(pred)
    return {lang: {"bleu4": smoothed_bleu4(refs, preds), "rouge_l": rouge_l(refs, preds), "n": len(refs)}
            for lang, (refs, preds) in by_lang.items()}


def middle_layers(n_layers: int) -> list[int]:
    """The middle third of the layers (at least one)."""
    start = n_layers // 3
    return list(range(start, max(start + 1, n_layers - n_layers // 3)))


def resolve_layers(choice: str, loaded: LoadedModel, snippets: Sequence[Snippet],
                   custom: Sequence[int] | None = None, store=None,
                   concept: Sequence[int] | None = None, progress: Progress | None = None) -> tuple[list[int], str]:
    """The layer list of a choice and a sentence saying where it came from. `concept`: concept layers
    the user set (the Layers page's override); otherwise the rule's, found on `snippets` (cached; the
    first time computed, reporting to `progress`)."""
    n = loaded.n_layers
    if choice == "all":
        return list(range(n)), f"all {n} layers"
    if choice == "custom":
        return sorted({int(x) for x in custom or []}), "chosen by the user"
    if concept:
        concept, note = sorted(int(x) for x in concept), "concept layers as set on the Layers page"
    else:
        concept = sorted(int(x) for x in concept_layers(loaded, snippets, cache=store, progress=progress))
        note = "concept layers (alignment peak, language ID fallen: the Layers page's rule)"
    if choice == "concept":
        return concept, note
    if choice == "lower":
        return list(range(len(concept))), f"the lowest {len(concept)} layers (as many as the concept layers)"
    raise ValueError(f"unknown layer choice {choice!r}; use one of {', '.join(LAYER_CHOICES)}")


@dataclass(frozen=True)
class TransferConfig(Record):
    """Everything a transfer job needs (its spec.json params through `to_json`)."""

    model: str
    source: str
    layers: list[int] = field(default_factory=list)
    layer_choice: str = "concept"
    layer_note: str = ""
    method: str = "lora"
    rank: int = 8
    steps: int = 150
    lr: float = 1e-3
    batch_size: int = 8
    max_code_tokens: int = 384
    max_summary_tokens: int = 48
    max_new_tokens: int = 40
    no_repeat_ngram: int = 3  # 0: plain greedy
    eval_fraction: float = DEFAULT_EVAL_FRACTION  # the selection / evaluation split (neuro/code/split.py)
    split_seed: int = 0
    seed: int = 0  # training (batch order, initialization)
    strip_comments: bool = True
    targets: list[str] = field(default_factory=list)  # empty: every language of the corpus
    eval_before: bool = True
    keep_samples: int = 6
    checkpoint_every: int = 0  # steps between checkpoints a stopped job resumes from (0: only the last step)
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False

    @property
    def split_params(self) -> SplitParams:
        return SplitParams(eval_fraction=self.eval_fraction, seed=self.split_seed)

    def label(self) -> str:
        return (f"{self.source} -> others: {self.layer_choice} layers {self.layers}, {self.method}, "
                f"{self.steps} steps, lr {self.lr:g}")


def plan_transfer(loaded: LoadedModel, split: CorpusSplit, source: str, layer_choice: str = "concept",
                  custom_layers: Sequence[int] | None = None, store=None,
                  concept_override: Sequence[int] | None = None, progress: Progress | None = None,
                  **options) -> TransferConfig:
    """A config whose layers are resolved on the split's selection side (concept layers found there,
    unless the user set them) and that records the split, so the run adapts on that side and evaluates
    on the other."""
    layers, note = resolve_layers(layer_choice, loaded, split.selection, custom_layers, store=store,
                                  concept=concept_override, progress=progress)
    options.update(eval_fraction=split.params.eval_fraction, split_seed=split.params.seed)
    return TransferConfig(model=loaded.source, source=source, layers=layers, layer_choice=layer_choice,
                          layer_note=note, **options)


def _targets(loaded: LoadedModel, config: TransferConfig) -> list[str]:
    return linear_modules(loaded, config.layers)


def trainable_count(loaded: LoadedModel, config: TransferConfig) -> int:
    if config.method == "lora":
        return lora_size(loaded, _targets(loaded, config), config.rank)
    prefixes = tuple(loaded.adapter.block_prefix(layer) for layer in config.layers)
    return sum(p.numel() for name, p in loaded.model.named_parameters() if name.startswith(prefixes))


def transfer_sides(snippets: Sequence[Snippet], config: TransferConfig
                   ) -> tuple[CorpusSplit, list[SummaryPair], list[SummaryPair]]:
    """(split, training pairs, evaluation pairs): the source language's selection-side pairs, and the
    evaluation-side pairs of the target languages and the source."""
    split = split_corpus(snippets, config.split_params)
    targets = set(config.targets) if config.targets else {s.lang for s in snippets}
    train_pairs = summary_pairs([s for s in split.selection if s.lang == config.source], config.strip_comments)
    eval_pairs = summary_pairs([s for s in split.evaluation if s.lang in targets | {config.source}],
                               config.strip_comments)
    order = {lang: i for i, lang in enumerate(LANGS)}
    return split, train_pairs, sorted(eval_pairs, key=lambda p: (order.get(p.lang, 99), p.task))


def validate_transfer(config: TransferConfig, loaded: LoadedModel, snippets: Sequence[Snippet],
                      memory_budget: int | None = None) -> list[str]:
    """Every reason to refuse this run (empty: fine)."""
    reasons = []
    if config.method not in METHODS:
        reasons.append(f"unknown method {config.method!r}; use one of {', '.join(METHODS)}")
    if config.layer_choice not in LAYER_CHOICES:
        reasons.append(f"unknown layer choice {config.layer_choice!r}")
    if not config.layers:
        reasons.append("no layers chosen to adapt")
    elif any(not 0 <= layer < loaded.n_layers for layer in config.layers):
        reasons.append(f"layers {config.layers} lie outside 0..{loaded.n_layers - 1}")
    if config.method == "lora" and config.rank < 1:
        reasons.append(f"the LoRA rank must be >= 1, got {config.rank}")
    reasons += common_reasons(config.steps, config.lr, weights_loaded=loaded.weights_loaded)
    if config.batch_size < 1:
        reasons.append(f"the batch size must be >= 1, got {config.batch_size}")
    try:
        _, train_pairs, eval_pairs = transfer_sides(snippets, config)
    except ValueError as err:  # an evaluated share outside (0, 1), or a corpus too small to split
        reasons.append(str(err))
    else:
        if not train_pairs:
            reasons.append(f"empty training set: no {config.source} programs with a summary on the selection "
                           "side of the split")
        if not any(p.lang != config.source for p in eval_pairs):
            reasons.append("nothing to evaluate zero-shot: the evaluation side of the split has no summarized "
                           "programs in another language")
    if not reasons:
        longest = config.max_code_tokens + config.max_summary_tokens + 16
        needed = estimate_training_bytes(loaded, trainable_count(loaded, config), config.batch_size * longest,
                                         full=config.method == "full", dtype=config.dtype, device=config.device)
        reason = memory_reason(needed, memory_budget, config.device)
        if reason:
            reasons.append(reason)
    return reasons


def adapt_layers(loaded: LoadedModel, config: TransferConfig):
    """Make only the chosen layers trainable (LoRA injected there, or their own parameters).
    Returns (trainable parameters, peft model or None)."""
    if config.method == "lora":
        peft_model = apply_lora(loaded, _targets(loaded, config), config.rank)
        return trainable_parameters(loaded.model), peft_model
    prefixes = tuple(loaded.adapter.block_prefix(layer) for layer in config.layers)
    for name, p in loaded.model.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
    return trainable_parameters(loaded.model), None


@dataclass(frozen=True, kw_only=True)
class TransferResult(TrainSummary):
    """A transfer run's result (result.json). scores: {lang: {"bleu4", "rouge_l", "n"} (x 100, after
    training), plus "bleu4_before" and "rouge_l_before" when evaluated before}; zero_shot_*: their mean over
    the languages other than the source; samples: a few summaries per language (see `_samples`)."""

    config: TransferConfig
    source: str
    layers: list[int]
    layer_choice: str
    method: str
    scores: dict[str, dict[str, float]]
    layer_note: str = ""
    zero_shot_bleu4: float | None = None
    zero_shot_rouge_l: float | None = None
    samples: list[dict] = field(default_factory=list)
    train_pairs: int | None = None
    eval_pairs: int | None = None
    split: dict | None = None  # CorpusSplit.summary()
    prompt: str = PROMPT_FORMAT
    device: str | None = None

    @classmethod
    def from_json(cls, data: Mapping) -> TransferResult:
        return super().from_json({**data, "config": TransferConfig.from_json(data["config"])})

    def zero_shot(self, metric: str) -> float | None:
        """The zero-shot mean of "bleu4" or "rouge_l"."""
        return {"bleu4": self.zero_shot_bleu4, "rouge_l": self.zero_shot_rouge_l}[metric]


def transfer(loaded: LoadedModel, snippets: Sequence[Snippet], config: TransferConfig, ctx: TaskContext,
             checkpoint=None, resume: Path | None = None) -> TransferResult:
    """Adapt on the source language's selection-side pairs, then summarize the evaluation-side programs
    of every language. `checkpoint(write)` saves a checkpoint folder that `write(folder)` fills (see
    tasks.train); `resume`: such a folder to continue from."""
    split, train_pairs, eval_pairs = transfer_sides(snippets, config)
    ctx.log(f"{len(train_pairs)} {config.source} training pairs; {len(eval_pairs)} evaluation pairs "
            f"({split.caption()}); layers {config.layers} ({config.layer_note})")
    gen = dict(max_code_tokens=config.max_code_tokens, max_new_tokens=config.max_new_tokens,
               no_repeat_ngram=config.no_repeat_ngram)
    saved = checkpoint_meta(resume)
    if "before" in saved:  # resumed: the summaries before training are in the checkpoint
        before = saved["before"]
    else:
        before = summarize(loaded, eval_pairs, ctx=ctx, phase="summarizing before training", **gen) \
            if config.eval_before else None
    torch.manual_seed(config.seed)
    params, peft_model = adapt_layers(loaded, config)
    if resume is not None:
        restore_layers(loaded, peft_model, resume)
    sequences = [training_sequence(loaded, p, config.max_code_tokens, config.max_summary_tokens) for p in train_pairs]
    longest = max(len(ids) for ids, _ in sequences)
    batches = make_batches(sequences, loaded.pad_id, loaded.device, batch_tokens=config.batch_size * longest,
                           max_batch=config.batch_size)
    meta = {"config": config.to_json(), "before": before}
    save = (lambda training: checkpoint(lambda folder: (save_layers(loaded, params, peft_model, folder, meta),
                                                        training(folder)))) if checkpoint else None
    report = train(loaded.model, params, batches, steps=config.steps, lr=config.lr, ctx=ctx, seed=config.seed,
                   checkpoint=save, checkpoint_every=config.checkpoint_every, resume=resume)
    after = summarize(loaded, eval_pairs, ctx=ctx, phase="summarizing after training", **gen)
    scores = score(eval_pairs, after)
    if before is not None:
        for lang, values in score(eval_pairs, before).items():
            scores[lang].update(bleu4_before=values["bleu4"], rouge_l_before=values["rouge_l"])
    samples = _samples(eval_pairs, after, before, config.keep_samples)
    zero_shot = [v for lang, v in scores.items() if lang != config.source]
    return TransferResult(
        config=config, source=config.source, layers=config.layers, layer_choice=config.layer_choice,
        layer_note=config.layer_note, method=config.method, train_pairs=len(train_pairs),
        eval_pairs=len(eval_pairs), split=split.summary(), prompt=PROMPT_FORMAT, device=str(loaded.device),
        **report.summary(), losses=report.losses, scores=scores,
        zero_shot_bleu4=sum(v["bleu4"] for v in zero_shot) / len(zero_shot) if zero_shot else None,
        zero_shot_rouge_l=sum(v["rouge_l"] for v in zero_shot) / len(zero_shot) if zero_shot else None,
        samples=samples)


def _samples(pairs, after, before, keep: int) -> list[dict]:
    out, seen = [], {}
    for i, pair in enumerate(pairs):
        if seen.get(pair.lang, 0) >= keep:
            continue
        seen[pair.lang] = seen.get(pair.lang, 0) + 1
        out.append({"lang": pair.lang, "task": pair.task, "reference": pair.summary, "prediction": after[i],
                    "before": before[i] if before is not None else None,
                    "bleu4": round(100 * sentence_bleu(pair.summary, after[i]), 2),
                    "rouge_l": round(100 * sentence_rouge_l(pair.summary, after[i]), 2),
                    "code": pair.code[:600]})
    return out


def save_layers(loaded: LoadedModel, params, peft_model, folder: Path, meta: dict) -> None:
    """The adapted layers' trainable state: LoRA weights (their targets follow from the config), or the
    chosen blocks' own parameters by name."""
    if peft_model is not None:
        from peft import get_peft_model_state_dict
        save_tensors(folder, get_peft_model_state_dict(peft_model), meta)
    else:
        names = {id(p): n for n, p in loaded.model.named_parameters()}
        save_tensors(folder, {names[id(p)]: p for p in params}, meta)


def restore_layers(loaded: LoadedModel, peft_model, folder: Path) -> None:
    """Load what `save_layers` wrote into the freshly adapted model (resuming a job)."""
    tensors, _ = load_tensors(folder)
    if peft_model is not None:
        from peft import set_peft_model_state_dict
        set_peft_model_state_dict(peft_model, tensors)
    else:
        load_weights(loaded.model, tensors)


def merge_transferred(base: LoadedModel, config: TransferConfig, checkpoint: Path) -> nn.Module:
    """`base` (a fresh copy of the job's model) with the checkpoint's adapted layers merged in, for export."""
    tensors, _ = load_tensors(checkpoint)
    if config.method == "lora":
        # the targets as training chose them (peft's own record may be shortened to name suffixes)
        return merged_lora(base, tensors, _targets(base, config), config.rank)
    load_weights(base.model, tensors)
    return base.model


def comparison_table(results: Mapping[str, TransferResult], metric: str = "bleu4") -> pd.DataFrame:
    """One row per run ({job id: result}), one column per evaluated language (metric after training),
    plus the zero-shot mean over the languages other than the source."""
    rows = []
    for job_id, r in results.items():
        row = {"layers": f"{r.layer_choice} {r.layers}", "source": r.source}
        for lang, values in r.scores.items():
            row[lang + (" (source)" if lang == r.source else "")] = round(values[metric], 2)
        zero_shot = r.zero_shot(metric)
        row["zero-shot mean"] = round(zero_shot, 2) if zero_shot is not None else None
        row.update({"method": r.method, "trainable_params": r.trainable_params, "steps": r.steps, "job": job_id})
        rows.append(row)
    return pd.DataFrame(rows)
