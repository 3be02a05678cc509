"""Cached analyses that take minutes, run as background jobs: the page that asked stays usable (and can be left),
the job can be cancelled (a resumable pass keeps its finished chunks, so a resumed job goes on from them), and
the result lands in the cache the page reads (`Recipe.get(..., compute=False)`).

"statistics": the per-program scores a selection's chance level and universal-neuron stability come from
(CHANCE, UNIVERSALITY; a forward and backward pass over the selection programs when the cached statistics
lack them). "ablation": ABLATION of a selection (one forward pass over the evaluation programs per ablated set).
The job's corpus is the selection programs followed by the evaluation programs (`n_selection` of them first),
saved with the job, so the job hits the same cache keys as the page without re-splitting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from neuro.analysis.selectivity import LapeParams, SelectionParams, select_neurons
from neuro.choices import SelectionMethod
from neuro.cost import Meter
from neuro.model.loading import LoadedModel, load_model
from neuro.results.statistics import ABLATION, CHANCE, STATS, UNIVERSALITY
from neuro.training.records import Record


@dataclass(frozen=True)
class AnalysisConfig(Record):
    """A cached analysis of one selection rule on a model: which model, which rule, which programs."""

    model: str
    method: SelectionMethod = "pls"  # validate_analysis refuses another read from a spec.json
    params: dict = field(default_factory=dict)
    n_selection: int = 0
    draws: int = 0  # ablation: matched draws per group
    uniform_draws: int = 0
    trust_remote_code: bool = False
    corpus: str = ""  # the corpus hash the page asked for (what a page matches a job by)

    def label(self) -> str:
        score = self.params.get("score", self.method)
        extra = f", {self.draws} matched + {self.uniform_draws} uniform draws" if self.draws else ""
        return f"{self.method} ({score}){extra}"

    def selection_params(self) -> SelectionParams | LapeParams:
        return (SelectionParams if self.method == "pls" else LapeParams)(**self.params)


@dataclass(frozen=True)
class AnalysisResult(Record):
    """What the job computed (the numbers themselves are in the result cache)."""

    kind: str
    programs: int


def validate_analysis(config: AnalysisConfig, loaded=None, snippets=None, memory_budget=None) -> list[str]:
    reasons = []
    if not snippets:
        reasons.append("no programs to analyse")
    elif not 0 < config.n_selection <= len(snippets):
        reasons.append(f"n_selection must lie in 1..{len(snippets)}, got {config.n_selection}")
    if config.method not in ("pls", "lape"):
        reasons.append(f"unknown selection method {config.method!r}")
    else:
        try:
            config.selection_params()
        except (TypeError, ValueError) as err:
            reasons.append(f"selection parameters: {err}")
    return reasons


def _open(config: AnalysisConfig, ctx, loaded: LoadedModel | None):
    snippets = ctx.snippets()
    ctx.progress(0, 1, "loading the model")
    loaded = loaded or load_model(config.model, trust_remote_code=bool(config.trust_remote_code))
    ctx.log(f"model {loaded.source} on {loaded.device}")
    return loaded, snippets[:config.n_selection], snippets[config.n_selection:]


def _reporter(ctx, phase: str):
    def report(done: int, total: int) -> None:
        ctx.check()  # a cancel stops at the next report; finished chunks stay in the cache
        ctx.progress(done, total, phase)
    return report


def run_statistics(config: AnalysisConfig, ctx, loaded: LoadedModel | None = None) -> AnalysisResult:
    loaded, selection, _ = _open(config, ctx, loaded)
    params = config.selection_params()
    report = _reporter(ctx, "per-program scores (forward and backward pass over the selection programs)")
    with Meter("statistics", loaded, len(selection), to_exit=True) as meter:  # the pass, permutations, halvings
        CHANCE.get(loaded, selection, method=config.method, params=params, progress=meter.wrap(report))
        ctx.progress(0, 1, "chance level and split-half stability of the universal neurons")
        UNIVERSALITY.get(loaded, selection, method=config.method, params=params, progress=_reporter(ctx, "stability"))
    ctx.progress(1, 1, "done")
    return AnalysisResult(kind="statistics", programs=len(selection))


def ablation_passes(counts: dict[str, int], draws: int, uniform_draws: int) -> int:
    """Forward passes an ablation runs: the unablated one, each non-empty group with its matched and uniform
    draws, and the universal group's top-mean control."""
    groups = sum(1 for n in counts.values() if n)
    return 1 + groups * (1 + draws + uniform_draws) + (1 if counts.get("universal") else 0)


def run_ablation(config: AnalysisConfig, ctx, loaded: LoadedModel | None = None) -> AnalysisResult:
    loaded, selection_programs, evaluation = _open(config, ctx, loaded)
    ctx.progress(0, 1, "statistics of the selection programs")
    stats = STATS.get(loaded, selection_programs, progress=_reporter(ctx, "statistics of the selection programs"))
    selection = select_neurons(stats, config.method, config.selection_params())
    passes = ablation_passes(selection.counts_by_language(), config.draws, config.uniform_draws)
    report = _reporter(ctx, "ablation (one forward pass over the evaluation programs per ablated set)")
    with Meter("forward", loaded, passes * len(evaluation)) as meter:
        ABLATION.get(loaded, evaluation, selection=selection, draws=config.draws, uniform_draws=config.uniform_draws,
                     progress=meter.wrap(report))
    return AnalysisResult(kind="ablation", programs=len(evaluation))
