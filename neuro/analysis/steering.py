"""Steering generation with language neurons: scale the target language's selected neurons (and/or the
source's) while the model continues a prompt, and read the language of each continuation.

The causal test of "these neurons carry a language": on prompts in the source language from the EVALUATION
side of the split, a dose-response sweep over factors gives the share of continuations detected as the target
and as the source (intervals over evaluation tasks), and the cost, the next-token loss on the held-out source
programs, beside the same sweep on controls matched on importance (same layer, same score decile: several
draws, `neuro.instrument.ablation.matched_like`). Language detection: `neuro.code.syntax.detect_language`
(tree-sitter parse errors plus lexical cues, with its confidence) on the dedented continuation, with each
grammar's parse-error share kept beside it.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from neuro.analysis.generation import GenerationParams, complete, prompt_of
from neuro.analysis.uncertainty import Interval, Spread, grouped_mean_bootstrap, monte_carlo_p
from neuro.code.corpus import Snippet
from neuro.code.syntax import Detection, detect_language
from neuro.instrument.ablation import NeuronSet, as_layer_map, matched_like, program_loss_pass
from neuro.instrument.intervention import Intervention, intervened
from neuro.model.loading import LoadedModel
from neuro.progress import Progress

DEFAULT_FACTORS = (0.0, 1.0, 2.0, 4.0, 8.0)
STEER_PARAMS = GenerationParams(max_new_tokens=48)  # greedy; a few lines are enough to tell a language
NONE = "none"  # the "language" of an empty continuation

Detector = Callable[[str], Detection]


@dataclass(frozen=True)
class SteerSpec:
    """A sweep: prompts in `source`, the `target`'s neurons scaled by each of `factors`, the source's neurons
    scaled by `source_factor` throughout (1: untouched, 0: suppressed), `draws` matched controls."""

    source: str
    target: str
    factors: tuple[float, ...] = DEFAULT_FACTORS
    source_factor: float = 1.0
    draws: int = 3
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "factors", tuple(float(f) for f in self.factors))
        if self.source == self.target:
            raise ValueError(f"source and target are both {self.source!r}: steering needs two languages")
        if not self.factors or not all(math.isfinite(f) for f in self.factors):
            raise ValueError("factors must be finite numbers (e.g. 0,1,2,4,8)")
        if len(set(self.factors)) != len(self.factors):
            raise ValueError("factors repeat")
        if not math.isfinite(self.source_factor):
            raise ValueError("source_factor must be finite")
        if self.draws < 0:
            raise ValueError("draws must be >= 0")


def steering_interventions(target: NeuronSet, factor: float, source: NeuronSet | None = None,
                           source_factor: float = 1.0) -> list[Intervention]:
    """The target's neurons scaled by `factor`, the source's by `source_factor` (left out where it is 1)."""
    out = [Intervention(_pairs(target), "scale", float(factor))]
    if source is not None and source_factor != 1.0:
        out.append(Intervention(_pairs(source), "scale", float(source_factor)))
    return out


def _pairs(neurons: NeuronSet) -> tuple[tuple[int, int], ...]:
    return tuple((layer, int(n)) for layer, idx in as_layer_map(neurons).items() for n in idx)


def continuation_language(text: str, detect: Detector = detect_language) -> Detection:
    """The detected language of a continuation (dedented: a function body alone is indented), or NONE for an
    empty one."""
    body = textwrap.dedent(text).strip("\n")
    if not body.strip():
        return Detection(NONE, 0.0, {}, {})
    return detect(body)


@dataclass(frozen=True)
class Condition:
    """One steered set: the selected neurons (draw 0) or one matched control draw."""

    control: str  # "selected" or "matched"
    draw: int
    target: dict[int, np.ndarray]
    source: dict[int, np.ndarray] | None


def plan_steering(target: NeuronSet, scores: Mapping[str, np.ndarray], spec: SteerSpec,
                  source: NeuronSet | None = None) -> list[Condition]:
    """The selected sets, then `spec.draws` controls: per draw, neurons matched to the target's (same layer,
    same decile of the target's score) and, where the source is steered too, to the source's (of its
    score), avoiding both selected sets. Draw d is the same whatever the number of draws."""
    target = as_layer_map(target)
    steered = source is not None and spec.source_factor != 1.0 and any(len(v) for v in as_layer_map(source).values())
    source = as_layer_map(source) if steered and source is not None else None  # steered implies a source
    conditions = [Condition("selected", 0, target, source)]
    rng = np.random.default_rng([spec.seed, 7])
    for d in range(spec.draws):
        t = matched_like(target, scores[spec.target], rng, _union(target, source))
        s = matched_like(source, scores[spec.source], rng, _union(target, source, t)) if source is not None else None
        conditions.append(Condition("matched", d, t, s))
    return conditions


def _union(*sets: NeuronSet | None) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for group in sets:
        for layer, idx in as_layer_map(group or {}).items():
            out.setdefault(layer, []).extend(int(n) for n in idx)
    return out


@dataclass(frozen=True, eq=False)
class SteeringResult:
    """Every continuation and every held-out loss of a sweep.

    prompts: id, unit (task) of each prompt; programs: id, unit of each held-out source program;
    generations: control, draw, factor, prompt (row of `prompts`), completion, lang, confidence,
    error_target, error_source (parse-error shares under those grammars); losses: control, draw, factor,
    then one column per held-out program; base_losses: the programs' losses with nothing changed."""

    spec: SteerSpec
    prompts: pd.DataFrame
    programs: pd.DataFrame
    generations: pd.DataFrame
    losses: pd.DataFrame
    base_losses: np.ndarray
    neurons: dict  # {"target": n, "source": n or 0}

    @property
    def draws(self) -> int:
        return int((self.generations["control"] == "matched").any() and
                   self.generations.loc[self.generations["control"] == "matched", "draw"].nunique())

    def _indicator(self, control: str, factor: float, lang: str) -> np.ndarray:
        """(draws, prompts) 1 where the continuation was detected as `lang`."""
        g = self.generations[(self.generations["control"] == control) & (self.generations["factor"] == factor)]
        table = (g["lang"] == lang).astype(float).to_numpy().reshape(-1, len(self.prompts))
        return table

    def share(self, control: str, factor: float, lang: str, **kwargs) -> Interval:
        """Share of prompts continued in `lang` (for controls: the mean over draws per prompt), with a bootstrap
        interval over evaluation tasks."""
        per_prompt = self._indicator(control, factor, lang).mean(axis=0)
        return grouped_mean_bootstrap(per_prompt, self.prompts["unit"].tolist(), unit="task", **kwargs)

    def draw_shares(self, factor: float, lang: str) -> np.ndarray:
        return self._indicator("matched", factor, lang).mean(axis=1)

    def loss_change(self, control: str, factor: float, **kwargs) -> Interval:
        """Mean change of the held-out source programs' loss (nats), over draws for controls, with an interval
        over tasks."""
        rows = self.losses[(self.losses["control"] == control) & (self.losses["factor"] == factor)]
        values = rows[self.programs["id"].tolist()].to_numpy().mean(axis=0) - self.base_losses
        return grouped_mean_bootstrap(values, self.programs["unit"].tolist(), unit="task", **kwargs)

    def table(self, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
        """One row per (control, factor): shares detected as target and as source, the loss change (each with a
        95 % interval), and for the selected neurons the Monte Carlo p of their target share against the
        draws' (one-sided, greater) and the draws' spread."""
        rows = []
        kw = dict(n_resamples=n_resamples, seed=seed)
        controls = ["selected"] + (["matched"] if self.draws else [])
        for control in controls:
            for factor in self.spec.factors:
                t = self.share(control, factor, self.spec.target, **kw)
                s = self.share(control, factor, self.spec.source, **kw)
                c = self.loss_change(control, factor, **kw)
                row = {"control": control, "factor": factor,
                       "target share": t.estimate, "target low": t.low, "target high": t.high,
                       "source share": s.estimate, "source low": s.low, "source high": s.high,
                       "loss change": c.estimate, "loss low": c.low, "loss high": c.high}
                if control == "selected" and self.draws:
                    draws = self.draw_shares(factor, self.spec.target)
                    row["p vs matched"] = monte_carlo_p(t.estimate, draws, "greater")
                elif control == "matched":
                    row["draw sd"] = Spread.of(self.draw_shares(factor, self.spec.target), unit="draw").sd
                rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> dict:
        table = self.table()
        return {"from": self.spec.source, "to": self.spec.target, "factors": list(self.spec.factors),
                "source_factor": self.spec.source_factor, "draws": self.draws, "seed": self.spec.seed,
                "prompts": len(self.prompts), "held_out_programs": len(self.programs),
                "tasks": int(self.prompts["unit"].nunique()), "neurons": self.neurons,
                "base_loss": float(self.base_losses.mean()) if len(self.base_losses) else math.nan,
                "p_floor": 1 / (1 + self.draws) if self.draws else None,
                "sweep": table.replace({np.nan: None}).to_dict(orient="records")}

    def text(self) -> str:
        table = self.table()
        lines = [f"steering {self.spec.source} -> {self.spec.target}: {self.neurons['target']} target neurons scaled"
                 + (f", {self.neurons['source']} source neurons x{self.spec.source_factor:g}"
                    if self.neurons.get("source") else "")
                 + f"; {len(self.prompts)} evaluation prompts ({self.prompts['unit'].nunique()} tasks), "
                   f"{self.draws} matched draws"]
        for r in table.to_dict(orient="records"):
            line = (f"  {r['control']:<9} x{r['factor']:<5g} target {r['target share']:.2f} [{r['target low']:.2f}, "
                    f"{r['target high']:.2f}]  source {r['source share']:.2f} [{r['source low']:.2f}, "
                    f"{r['source high']:.2f}]  loss {r['loss change']:+.3f} [{r['loss low']:+.3f}, "
                    f"{r['loss high']:+.3f}]")
            if r["control"] == "selected" and "p vs matched" in r:
                line += f"  p {r['p vs matched']:.3g}"
            lines.append(line)
        lines.append("shares: continuations detected as that language (95 % interval over tasks); loss: change of "
                     "the held-out source programs' mean next-token loss; p: (1 + draws at least as high) / "
                     "(1 + draws), one-sided")
        return "\n".join(lines)


def steering_prompts(snippets: Sequence[Snippet], source: str) -> tuple[list[Snippet], list[str]]:
    """The source-language snippets that give a prompt (the code up to its first function's body), and those
    prompts."""
    chosen, prompts = [], []
    for s in snippets:
        if s.lang != source:
            continue
        try:
            prompts.append(prompt_of(s))
        except ValueError:
            continue
        chosen.append(s)
    if not chosen:
        raise ValueError(f"no {source} program on the evaluation side gives a prompt")
    return chosen, prompts


def generate_and_detect(loaded: LoadedModel, prompts: Sequence[str], interventions: Sequence[Intervention],
                        spec: SteerSpec, params: GenerationParams = STEER_PARAMS,
                        detect: Detector = detect_language) -> pd.DataFrame:
    """Greedy continuations of `prompts` with `interventions` applied, and the detected language of each."""
    with intervened(loaded, *interventions):
        completions = complete(loaded, list(prompts), params)
    rows = []
    for i, texts in enumerate(completions):
        found = continuation_language(texts[0], detect)
        rows.append({"prompt": i, "completion": texts[0], "lang": found.lang, "confidence": float(found.confidence),
                     "error_target": float(found.error_rates.get(spec.target, math.nan)),
                     "error_source": float(found.error_rates.get(spec.source, math.nan))})
    return pd.DataFrame(rows)


def sweep_steps(loaded: LoadedModel, snippets: Sequence[Snippet], spec: SteerSpec, conditions: Sequence[Condition], *,
                params: GenerationParams = STEER_PARAMS, detect: Detector = detect_language, max_length: int = 512):
    """(prompts' snippets, held-out programs, [(control, draw, factor) per step], step(i) -> (generations, losses)):
    step 0 is the base loss pass (nothing changed), then one step per condition and factor."""
    chosen, prompts = steering_prompts(snippets, spec.source)
    held_out = [s for s in snippets if s.lang == spec.source]
    run = program_loss_pass(loaded, held_out, max_length=max_length)
    labels = [(c.control, c.draw, f) for c in conditions for f in spec.factors]
    by_label = {(c.control, c.draw): c for c in conditions}

    def step(index: int) -> tuple[pd.DataFrame | None, np.ndarray]:
        if index == 0:
            return None, run()
        control, draw, factor = labels[index - 1]
        c = by_label[(control, draw)]
        ivs = steering_interventions(c.target, factor, c.source, spec.source_factor)
        generations = generate_and_detect(loaded, prompts, ivs, spec, params, detect)
        with intervened(loaded, *ivs):
            return generations, run()
    return chosen, held_out, labels, step


def assemble(spec: SteerSpec, chosen: Sequence[Snippet], held_out: Sequence[Snippet], labels, results,
             conditions: Sequence[Condition]) -> SteeringResult:
    """The SteeringResult from each step's (generations, losses), step 0 the base."""
    base = np.asarray(results[0][1], dtype=np.float64)
    frames, loss_rows = [], []
    for (control, draw, factor), (generations, losses) in zip(labels, results[1:]):
        frames.append(generations.assign(control=control, draw=draw, factor=factor))
        loss_rows.append({"control": control, "draw": draw, "factor": factor,
                          **dict(zip([s.id for s in held_out], np.asarray(losses, dtype=np.float64)))})
    generations = pd.concat(frames, ignore_index=True)[["control", "draw", "factor", "prompt", "completion", "lang",
                                                        "confidence", "error_target", "error_source"]]
    selected = conditions[0]
    neurons = {"target": sum(len(v) for v in selected.target.values()),
               "source": sum(len(v) for v in selected.source.values()) if selected.source else 0}
    return SteeringResult(spec, pd.DataFrame({"id": [s.id for s in chosen], "unit": [s.task or s.id for s in chosen]}),
                          pd.DataFrame({"id": [s.id for s in held_out], "unit": [s.task or s.id for s in held_out]}),
                          generations, pd.DataFrame(loss_rows), base, neurons)


def steering_sweep(loaded: LoadedModel, snippets: Sequence[Snippet], spec: SteerSpec, target: NeuronSet,
                   scores: Mapping[str, np.ndarray], *, source: NeuronSet | None = None,
                   params: GenerationParams = STEER_PARAMS, detect: Detector = detect_language, max_length: int = 512,
                   progress: Progress | None = None) -> SteeringResult:
    """The dose-response sweep (module docstring) on `snippets`, the evaluation side of the split: one base
    loss pass, then per condition (selected, each matched draw) and factor one generation over the source's
    prompts and one loss pass over its programs. `scores`: {language: (layers, width)} the score the groups
    were selected by (the matched controls' deciles)."""
    conditions = plan_steering(target, scores, spec, source)
    chosen, held_out, labels, step = sweep_steps(loaded, snippets, spec, conditions, params=params, detect=detect,
                                                 max_length=max_length)
    results = []
    for i in range(1 + len(labels)):
        results.append(step(i))
        if progress:
            progress(i + 1, 1 + len(labels))
    return assemble(spec, chosen, held_out, labels, results, conditions)


@dataclass(frozen=True)
class SteeredPrompt:
    """One prompt continued with nothing changed and with the target's neurons at each factor."""

    prompt: str
    before: pd.Series  # completion, lang, confidence, error_target, error_source
    after: pd.DataFrame  # one row per factor

    def summary(self) -> dict:
        return {"prompt": self.prompt, "before": self.before.to_dict(),
                "after": self.after.replace({np.nan: None}).to_dict(orient="records")}


def steer_prompt(loaded: LoadedModel, prompt: str, spec: SteerSpec, target: NeuronSet, *,
                 source: NeuronSet | None = None, params: GenerationParams = STEER_PARAMS,
                 detect: Detector = detect_language) -> SteeredPrompt:
    """One prompt: its continuation unchanged and with the target's neurons scaled by each factor."""
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    before = generate_and_detect(loaded, [prompt], [], spec, params, detect).iloc[0]
    rows = [generate_and_detect(loaded, [prompt], steering_interventions(target, f, source, spec.source_factor), spec,
                                params, detect).assign(factor=f) for f in spec.factors]
    return SteeredPrompt(prompt, before.drop("prompt"), pd.concat(rows, ignore_index=True).drop(columns="prompt"))
