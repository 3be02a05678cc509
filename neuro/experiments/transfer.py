"""Concept-layer-guided cross-lingual transfer for code summarization.

The model learns to write a one-sentence summary after code of ONE source language, with the
adaptation confined to chosen layers (default: the concept layers of neuro/analysis/layers.py, where programs
of different languages align); it is then asked to summarize code of the other languages it never
saw summarized (zero-shot). Choices to compare: concept layers, all layers, lower layers (the lowest
layers below the concept layers, never one of them: as many as there are concept layers where that many lie
below, else all that do), or a custom list. The choices differ in trainable parameters (all layers train
more): each run reports its count (`trainable_params`), and `trainable_count` gives it before a run.

Seeds (seeds.py): a run's seed picks which pairs share a batch, the batches' order and LoRA's
initialisation; a comparison runs each layer choice with the same seeds (`plan_transfer_runs`), and
`compare_transfer` reports the zero-shot scores' mean +- sd over seeds and concept minus each other
choice per seed. Each score also carries an interval over evaluation tasks (intervals.py): BLEU-4 here is
the mean of sentence scores (CodeXGLUE's smoothed BLEU), so resampling tasks resamples exactly what it
averages.

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

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from neuro.code.comments import strip_comments
from neuro.code.corpus import LANGS, Snippet
from neuro.code.split import DEFAULT_EVAL_FRACTION, CorpusSplit, SplitParams, split_corpus
from neuro.analysis.uncertainty import Interval
from neuro.experiments.intervals import (
    interval_from_summary,
    interval_summary,
    language_intervals,
    mean_of_languages_interval,
)
from neuro.experiments.subsets import evaluated_text, stratified_subset
from neuro.experiments.metrics import rouge_l, sentence_bleu, sentence_rouge_l, smoothed_bleu4
from neuro.experiments.transfer_scores import METRICS, LanguageScores, Metric, ProgramScores, SummarySample
from neuro.experiments.seeds import (
    DEFAULT_SEEDS,
    Run,
    SeedComparison,
    check_seeds,
    compare,
    new_comparison_id,
    seeded_batches,
)
from neuro.model.loading import LoadedModel
from neuro.choices import LayerChoice, TransferMethod, choices
from neuro.params import param
from neuro.progress import Progress
from neuro.training.checkpoints import checkpoint_meta, load_tensors, load_weights, save_tensors
from neuro.training.context import TaskContext, declare_phases
from neuro.training.loop import TrainSummary, common_reasons, train
from neuro.training.lora import apply_lora, linear_modules, lora_size, merged_lora, trainable_parameters
from neuro.training.memory import estimate_training_bytes, memory_reason
from neuro.training.records import Record
from neuro.results.layers import concept_layers

LAYER_CHOICES = choices(LayerChoice)

METHODS = choices(TransferMethod)

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


def score(pairs: Sequence[SummaryPair], predictions: Sequence[str]) -> dict[str, LanguageScores]:
    """BLEU-4 and ROUGE-L (x 100) per language (no scores before training, no intervals yet)."""
    by_lang: dict[str, tuple[list, list]] = {}
    for pair, pred in zip(pairs, predictions):
        refs, preds = by_lang.setdefault(pair.lang, ([], []))
        refs.append(pair.summary)
        preds.append(pred)
    return {lang: LanguageScores(bleu4=smoothed_bleu4(refs, preds), rouge_l=rouge_l(refs, preds), n=len(refs))
            for lang, (refs, preds) in by_lang.items()}


def middle_layers(n_layers: int) -> list[int]:
    """The middle third of the layers (at least one)."""
    start = n_layers // 3
    return list(range(start, max(start + 1, n_layers - n_layers // 3)))


def lower_layers(concept: Sequence[int]) -> list[int]:
    """The lowest layers, disjoint from the concept layers: as many as there are concept layers, from those
    below the first concept layer (fewer when fewer lie below; none when the concept layers start at 0)."""
    if not concept:
        return []
    first = min(int(x) for x in concept)
    return list(range(min(len(set(concept)), first)))


def resolve_layers(choice: LayerChoice, loaded: LoadedModel, snippets: Sequence[Snippet],
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
        # the rule's own sentence is on the Layers page: on a model where language ID never falls (the demo) the
        # choice rests on alignment alone, so this note must not say it fell
        note = "concept layers (the Layers page's rule: near the peak of cross-language alignment)"
    if choice == "concept":
        return concept, note
    if choice == "lower":
        lower = lower_layers(concept)
        if not lower:
            return [], f"no layer lies below the concept layers {concept}"
        fewer = "" if len(lower) == len(concept) else f"; only {len(lower)} lie below them"
        return lower, f"the lowest {len(lower)} layers, below the concept layers {concept} (as many as them{fewer})"
    raise ValueError(f"unknown layer choice {choice!r}; use one of {', '.join(LAYER_CHOICES)}")


@dataclass(frozen=True)
class TransferConfig(Record):
    """Everything a transfer job needs (its spec.json params through `to_json`)."""

    model: str
    source: str
    layers: list[int] = field(default_factory=list)
    layer_choice: LayerChoice = "concept"
    layer_note: str = ""
    method: TransferMethod = "lora"
    rank: int = param(8, low=1, high=256, label="LoRA rank", help="LoRA's rank on every adapted projection")
    steps: int = param(150, low=0, high=1_000_000, label="Steps", help="optimizer steps")
    lr: float = param(1e-3, low=0.0, step=1e-4, fmt="%.1e", label="Learning rate",
                      help="1e-3 suits LoRA; adapting all weights of the layers wants about 1e-4.")
    batch_size: int = param(8, low=1, label="Pairs per batch", help="(code, summary) pairs per training batch")
    max_code_tokens: int = 384
    max_summary_tokens: int = 48
    max_new_tokens: int = param(40, low=1, label="Summary tokens", help="tokens generated per summary at most")
    no_repeat_ngram: int = 3  # 0: plain greedy
    eval_fraction: float = DEFAULT_EVAL_FRACTION  # the selection / evaluation split (neuro/code/split.py)
    split_seed: int = 0
    seed: int = 0  # everything random in the run: which pairs share a batch, batch order, LoRA initialisation
    seeds: list[int] = field(default_factory=list)  # the seeds of the comparison this run belongs to
    comparison: str = ""  # an id shared by the runs started together (layer choices x seeds)
    strip_comments: bool = True
    targets: list[str] = field(default_factory=list)  # empty: every language of the corpus
    eval_before: bool = True
    keep_samples: int = 6
    checkpoint_every: int = 0  # steps between checkpoints a stopped job resumes from (0: only the last step)
    eval_programs: int = 0  # summarize this many evaluation-side programs (0: all; see subsets.py)
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False

    @property
    def split_params(self) -> SplitParams:
        return SplitParams(eval_fraction=self.eval_fraction, seed=self.split_seed)

    def label(self) -> str:
        return (f"{self.source} -> others: {self.layer_choice} layers {self.layers}, {self.method}, "
                f"{self.steps} steps, lr {self.lr:g}, seed {self.seed}")


def plan_transfer(loaded: LoadedModel, split: CorpusSplit, source: str, layer_choice: LayerChoice = "concept",
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


def plan_transfer_runs(loaded: LoadedModel, split: CorpusSplit, source: str, choices: Sequence[LayerChoice],
                       seeds: Sequence[int] = DEFAULT_SEEDS, custom_layers: Sequence[int] | None = None,
                       comparison: str | None = None, **options) -> list[TransferConfig]:
    """One config per (layer choice, seed): runs = choices x seeds, every choice with the same seeds, under
    one comparison id. The layers of each choice are resolved once (they do not depend on the seed)."""
    seeds = check_seeds(seeds)
    if len(set(choices)) < len(choices):
        raise ValueError(f"a layer choice is listed twice: {', '.join(choices)}")
    comparison = comparison or new_comparison_id()
    out = []
    for choice in choices:
        first = plan_transfer(loaded, split, source, choice, custom_layers, seed=seeds[0], seeds=list(seeds),
                              comparison=comparison, **options)
        out += [first] + [replace(first, seed=seed) for seed in seeds[1:]]
    return out


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
    evaluation-side pairs of the target languages and the source (`config.eval_programs` of them when set:
    a stratified subset, see subsets.py; `evaluation_total` counts them all)."""
    split, train_pairs, eval_pairs = _sides(snippets, config)
    return split, train_pairs, stratified_subset(eval_pairs, config.eval_programs)


def _sides(snippets: Sequence[Snippet], config: TransferConfig):
    split = split_corpus(snippets, config.split_params)
    targets = set(config.targets) if config.targets else {s.lang for s in snippets}
    train_pairs = summary_pairs([s for s in split.selection if s.lang == config.source], config.strip_comments)
    eval_pairs = summary_pairs([s for s in split.evaluation if s.lang in targets | {config.source}],
                               config.strip_comments)
    order = {lang: i for i, lang in enumerate(LANGS)}
    return split, train_pairs, sorted(eval_pairs, key=lambda p: (order.get(p.lang, 99), p.task))


def evaluation_total(snippets: Sequence[Snippet], config: TransferConfig, split: CorpusSplit | None = None) -> int:
    """How many evaluation-side pairs there are before `config.eval_programs` takes a subset (counted without
    stripping comments, which never changes the count, so a page can ask on every rerun). `split`: the
    corpus's split with the config's parameters, when the caller has it."""
    split = split if split is not None else split_corpus(snippets, config.split_params)
    langs = (set(config.targets) if config.targets else {s.lang for s in snippets}) | {config.source}
    return sum(1 for s in split.evaluation if s.lang in langs and s.summary.strip())


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
    if config.eval_programs < 0:
        reasons.append(f"the number of programs to evaluate must be >= 0 (0: all), got {config.eval_programs}")
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
    """A transfer run's result (result.json). scores: per language, BLEU-4 and ROUGE-L (x 100) after (and
    before) training with their intervals over evaluation tasks; zero_shot_*: their mean over the languages
    other than the source; samples: a few summaries per language (see `_samples`); per_program: every evaluated
    program's scores (the intervals' input). The typed fields are written as the JSON they always were
    (transfer_scores.py), so results of older jobs load."""

    config: TransferConfig
    source: str
    layers: list[int]
    layer_choice: LayerChoice
    method: TransferMethod
    scores: dict[str, LanguageScores]
    layer_note: str = ""
    zero_shot_bleu4: float | None = None
    zero_shot_rouge_l: float | None = None
    samples: list[SummarySample] = field(default_factory=list)
    train_pairs: int | None = None
    eval_pairs: int | None = None
    eval_total: int | None = None  # evaluation-side pairs before `config.eval_programs` took a subset
    split: dict | None = None  # CorpusSplit.summary()
    prompt: str = PROMPT_FORMAT
    device: str | None = None
    seed: int | None = None
    per_program: list[ProgramScores] = field(default_factory=list)
    zero_shot_bleu4_ci: Interval | None = None  # evaluation tasks resampled
    zero_shot_rouge_l_ci: Interval | None = None

    @classmethod
    def from_json(cls, data: Mapping) -> TransferResult:
        typed = {"config": TransferConfig.from_json(data["config"]),
                 "scores": {lang: LanguageScores.from_json(v) for lang, v in data["scores"].items()},
                 "samples": [SummarySample.from_json(v) for v in data.get("samples", [])],
                 "per_program": [ProgramScores.from_json(v) for v in data.get("per_program", [])],
                 **{f"zero_shot_{m}_ci": interval_from_summary(data.get(f"zero_shot_{m}_ci")) for m in METRICS}}
        return super().from_json({**data, **typed})

    def to_json(self) -> dict:
        out = super().to_json()
        out.update(scores={lang: v.to_json() for lang, v in self.scores.items()},
                   samples=[v.to_json() for v in self.samples], per_program=[v.to_json() for v in self.per_program],
                   **{f"zero_shot_{m}_ci": interval_summary(self.zero_shot_ci(m)) for m in METRICS})
        return out

    def zero_shot(self, metric: Metric) -> float | None:
        """The zero-shot mean of "bleu4" or "rouge_l"."""
        return self.zero_shot_bleu4 if metric == "bleu4" else self.zero_shot_rouge_l

    def zero_shot_ci(self, metric: Metric) -> Interval | None:
        return self.zero_shot_bleu4_ci if metric == "bleu4" else self.zero_shot_rouge_l_ci


def transfer(loaded: LoadedModel, snippets: Sequence[Snippet], config: TransferConfig, ctx: TaskContext,
             checkpoint=None, resume: Path | None = None) -> TransferResult:
    """Adapt on the source language's selection-side pairs, then summarize the evaluation-side programs
    of every language. `checkpoint(write)` saves a checkpoint folder that `write(folder)` fills (see
    tasks.train); `resume`: such a folder to continue from."""
    split, train_pairs, eval_pairs = transfer_sides(snippets, config)
    total = evaluation_total(snippets, config, split)
    ctx.log(f"{len(train_pairs)} {config.source} training pairs; {len(eval_pairs)} of {total} evaluation pairs "
            f"({split.caption()}); layers {config.layers} ({config.layer_note})")
    gen = dict(max_code_tokens=config.max_code_tokens, max_new_tokens=config.max_new_tokens,
               no_repeat_ngram=config.no_repeat_ngram)
    declare_phases(ctx, transfer_phases(config, len(eval_pairs)))
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
    batches = seeded_batches(sequences, loaded.pad_id, loaded.device, batch_tokens=config.batch_size * longest,
                             seed=config.seed, max_batch=config.batch_size)
    meta = {"config": config.to_json(), "before": before}

    def save_with_layers(training: Callable[[Path], None]) -> Path:
        def write(folder: Path) -> None:
            save_layers(loaded, params, peft_model, folder, meta)
            training(folder)
        return checkpoint(write)

    save = save_with_layers if checkpoint else None
    report = train(loaded.model, params, batches, steps=config.steps, lr=config.lr, ctx=ctx, seed=config.seed,
                   checkpoint=save, checkpoint_every=config.checkpoint_every, resume=resume)
    after = summarize(loaded, eval_pairs, ctx=ctx, phase="summarizing after training", **gen)
    scores = score(eval_pairs, after)
    if before is not None:
        for lang, values in score(eval_pairs, before).items():
            scores[lang] = replace(scores[lang], bleu4_before=values.bleu4, rouge_l_before=values.rouge_l)
    samples = _samples(eval_pairs, after, before, config.keep_samples)
    zero_shot = [v for lang, v in scores.items() if lang != config.source]
    items = program_scores(eval_pairs, after, before)
    others = [lang for lang in scores if lang != config.source]
    cis: dict[str, dict[str, Interval]] = {}
    zero_shot_ci: dict[str, Interval] = {}
    for metric in METRICS:
        value = lambda item, m=metric: item.score(m)  # noqa: E731
        cis[metric] = language_intervals(items, value, seed=config.seed)
        if others:
            zero_shot_ci[metric] = mean_of_languages_interval(items, value, others, seed=config.seed)
    scores = {lang: replace(v, bleu4_ci=cis["bleu4"].get(lang), rouge_l_ci=cis["rouge_l"].get(lang))
              for lang, v in scores.items()}
    return TransferResult(
        config=config, source=config.source, layers=config.layers, layer_choice=config.layer_choice,
        layer_note=config.layer_note, method=config.method, train_pairs=len(train_pairs),
        eval_pairs=len(eval_pairs), eval_total=total, split=split.summary(), prompt=PROMPT_FORMAT,
        device=str(loaded.device),
        **report.summary(), losses=report.losses, scores=scores,
        zero_shot_bleu4=sum(v.bleu4 for v in zero_shot) / len(zero_shot) if zero_shot else None,
        zero_shot_rouge_l=sum(v.rouge_l for v in zero_shot) / len(zero_shot) if zero_shot else None,
        samples=samples, seed=config.seed, per_program=items, zero_shot_bleu4_ci=zero_shot_ci.get("bleu4"),
        zero_shot_rouge_l_ci=zero_shot_ci.get("rouge_l"))


def transfer_phases(config: TransferConfig, n_eval: int) -> list[tuple[str, float]]:
    """The run's phases weighted by expected model passes: summarizing is up to 1 + max_new_tokens passes per
    evaluated program (greedy decoding), a training step about three (forward + backward) per pair in its
    batch. Summarizing before training is skipped (weight 0) when `eval_before` is off."""
    summarize_passes = n_eval * (1 + config.max_new_tokens)
    return [("summarizing before training", summarize_passes if config.eval_before else 0),
            ("training", 3 * config.steps * config.batch_size), ("summarizing after training", summarize_passes)]


def zero_shot_change(r: TransferResult, metric: Metric) -> Interval | None:
    """The zero-shot mean's change (after - before) of `metric`, with its interval over evaluation tasks
    (paired: each program's after minus its own before, tasks resampled); None without scores before."""
    items = [it for it in r.per_program if it.before(metric) is not None]
    others = sorted({it.lang for it in items} - {r.source})
    if not items or not others:
        return None
    change = lambda it: it.score(metric) - it.before(metric)  # noqa: E731
    return mean_of_languages_interval(items, change, others, seed=r.config.seed)


def program_scores(pairs: Sequence[SummaryPair], after: Sequence[str],
                   before: Sequence[str] | None) -> list[ProgramScores]:
    """Per evaluated program: its sentence BLEU-4 and ROUGE-L (x 100) after (and before) training; their means
    per language are the scores `score` reports."""
    out = []
    for i, pair in enumerate(pairs):
        was = None if before is None else before[i]
        out.append(ProgramScores(
            id=pair.id, lang=pair.lang, task=pair.task, bleu4=100 * sentence_bleu(pair.summary, after[i]),
            rouge_l=100 * sentence_rouge_l(pair.summary, after[i]),
            bleu4_before=None if was is None else 100 * sentence_bleu(pair.summary, was),
            rouge_l_before=None if was is None else 100 * sentence_rouge_l(pair.summary, was)))
    return out


def _samples(pairs: Sequence[SummaryPair], after: Sequence[str], before: Sequence[str] | None,
             keep: int) -> list[SummarySample]:
    out: list[SummarySample] = []
    seen: dict[str, int] = {}
    for i, pair in enumerate(pairs):
        if seen.get(pair.lang, 0) >= keep:
            continue
        seen[pair.lang] = seen.get(pair.lang, 0) + 1
        out.append(SummarySample(lang=pair.lang, task=pair.task, reference=pair.summary, prediction=after[i],
                                 before=before[i] if before is not None else None,
                                 bleu4=round(100 * sentence_bleu(pair.summary, after[i]), 2),
                                 rouge_l=round(100 * sentence_rouge_l(pair.summary, after[i]), 2),
                                 code=pair.code[:600]))
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


def _ci_text(ci: Interval | None) -> str | None:
    """'[low, high]' to 2 decimals; None without an interval (none kept, or one unit: NaN bounds)."""
    return f"[{ci.low:.2f}, {ci.high:.2f}]" if ci is not None and not math.isnan(ci.low) else None


def comparison_table(results: Mapping[str, TransferResult], metric: Metric = "bleu4") -> pd.DataFrame:
    """One row per run ({job id: result}), one column per evaluated language (metric after training),
    plus the zero-shot mean over the languages other than the source."""
    rows = []
    for job_id, r in results.items():
        row: dict[str, object] = {"layers": f"{r.layer_choice} {r.layers}", "source": r.source}
        for lang, values in r.scores.items():
            row[lang + (" (source)" if lang == r.source else "")] = round(values.score(metric), 2)
        zero_shot = r.zero_shot(metric)
        row["zero-shot mean"] = round(zero_shot, 2) if zero_shot is not None else None
        row["zero-shot CI"] = _ci_text(r.zero_shot_ci(metric))
        delta = zero_shot_change(r, metric)
        row["zero-shot Δ (after - before)"] = round(delta.estimate, 2) if delta else None
        row["Δ CI"] = _ci_text(delta)
        row["evaluated"] = evaluated_text(r.eval_pairs, r.eval_total)
        row.update({"seed": r.config.seed, "method": r.method, "trainable_params": r.trainable_params,
                    "steps": r.steps, "job": job_id})
        rows.append(row)
    return pd.DataFrame(rows)


def arm_name(r: TransferResult) -> str:
    """A run's arm in a comparison: its layer choice (a custom list named by its layers)."""
    return f"custom {r.layers}" if r.layer_choice == "custom" else r.layer_choice


def comparison_key(r: TransferResult) -> str:
    """Runs started together share the config's comparison id; older runs group by source, method, steps
    and split."""
    c = r.config
    return c.comparison or f"{c.source}|{c.method}|{c.steps}|{c.eval_fraction}|{c.split_seed}"


def compare_transfer(results: Mapping[str, TransferResult], metric: Metric = "bleu4", reference: str = "concept"
                     ) -> dict[str, SeedComparison]:
    """{comparison key: the layer choices compared over seeds} on the zero-shot mean of `metric` (higher is
    better): per choice mean +- sd over seeds (with each run's trainable-parameter count), and `reference`
    minus each other choice per seed, with the interval over evaluation tasks of the per-task difference
    (the languages other than the source)."""
    groups: dict[str, list[Run]] = {}
    sources: dict[str, str] = {}
    for job_id, r in results.items():
        value = r.zero_shot(metric)
        if value is None:
            continue
        key = comparison_key(r)
        sources[key] = r.source
        groups.setdefault(key, []).append(Run(arm_name(r), r.config.seed, value, r.per_program, r.trainable_params,
                                              job_id))
    label = {"bleu4": "BLEU-4", "rouge_l": "ROUGE-L"}[metric]

    def item_value(item: ProgramScores) -> float:
        return item.score(metric)

    return {key: compare(runs, metric=f"zero-shot {label} (mean over the languages other than {sources[key]})",
                         reference=reference, item_value=item_value,
                         item_filter=partial(_not_in, sources[key]))
            for key, runs in groups.items()}


def _not_in(source: str, item: ProgramScores) -> bool:
    """An evaluated program in a language other than the source (the zero-shot languages)."""
    return item.lang != source
