"""The registry of job kinds: for each, its typed config and result, what the worker runs, how a start is
validated, and (training kinds) how its checkpoint merges into an exportable model.

neuro.jobs sits above the experiments, so the registry holds the experiments' functions themselves;
experiments never import neuro.jobs, they are handed a TaskContext. A new kind is one entry in KINDS.
Results read back from a job folder come out typed (`job_result`), never as the raw JSON.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from neuro.experiments.export import ExportConfig, ExportResult, export_adapted
from neuro.experiments.finetune import FinetuneConfig, FinetuneResult, finetune, merge_finetuned, validate_finetune
from neuro.experiments.transfer import (
    TransferConfig,
    TransferResult,
    merge_transferred,
    transfer,
    validate_transfer,
)
from neuro.jobs.analyses import AnalysisConfig, AnalysisResult, run_ablation, run_statistics, validate_analysis
from neuro.jobs.folders import JobContext, JobInfo, find_job, read_json
from neuro.model.loading import LoadedModel, load_model
from neuro.training.loop import load_job_model
from neuro.training.records import Record


C = TypeVar("C", bound=Record)  # a kind's config
R = TypeVar("R", bound=Record)  # a kind's result


class JobConfig(Protocol):
    """What starting a job reads of its config: the JSON saved in spec.json and the job's label."""

    def to_json(self) -> dict[str, Any]: ...

    def label(self) -> str: ...


@dataclass(frozen=True)
class JobKind(Generic[C, R]):
    """One kind of job.

    run(config, ctx, loaded) -> result: what the worker runs (`loaded`: a model to use instead of loading
    the config's, for a foreground run). validate(config, loaded, snippets, memory_budget) -> every
    reason to refuse a start (empty: fine). merge(base, config, checkpoint) -> `base` with the job's
    checkpoint merged into its weights; None for a kind that trains nothing to export.
    """

    name: str
    title: str  # in messages: "a finished fine-tuning job"
    config: type[C]  # spec.json params; also has label()
    result: type[R]  # result.json
    run: Callable[..., R]
    validate: Callable[..., list[str]]
    merge: Callable[[LoadedModel, C, Path], Any] | None = None


def _train(task: Callable[..., R], config, ctx: JobContext, loaded=None) -> R:
    """A training experiment as a job: on the job's saved corpus, a fresh copy of the config's model (or
    `loaded`), checkpoints in the job's folder and resumed from there when the job was resumed."""
    snippets = ctx.snippets()
    ctx.progress(0, 1, "loading the model")
    loaded = load_job_model(config, loaded)
    ctx.log(f"model {loaded.source} on {loaded.device}")
    return task(loaded, snippets, config, ctx, checkpoint=ctx.save_checkpoint, resume=ctx.resume_from)


def _run_export(config: ExportConfig, ctx: JobContext, loaded=None) -> ExportResult:
    ctx.progress(0, 1, "exporting")
    out = export_model(config.job, config.out)
    ctx.progress(1, 1, "exported")
    return ExportResult(out=str(out), files=sorted(p.name for p in out.iterdir()))


def _validate_export(config: ExportConfig, loaded=None, snippets=None, memory_budget=None) -> list[str]:
    reasons = [r for r in (export_reason(find_job(config.job)),) if r]
    out = Path(config.out)
    if out.exists() and any(out.iterdir()):
        reasons.append(f"{out} exists and is not empty")
    return reasons


FINETUNE = JobKind("finetune", "fine-tuning", FinetuneConfig, FinetuneResult, partial(_train, finetune),
                   validate_finetune, merge_finetuned)
TRANSFER = JobKind("transfer", "transfer", TransferConfig, TransferResult, partial(_train, transfer),
                   validate_transfer, merge_transferred)
EXPORT = JobKind("export", "export", ExportConfig, ExportResult, _run_export, _validate_export)

# cached analyses too long for a page to wait on (neuro/jobs/analyses.py): their results land in the result cache
STATISTICS = JobKind("statistics", "per-program statistics", AnalysisConfig, AnalysisResult, run_statistics,
                     validate_analysis)
ABLATION = JobKind("ablation", "ablation", AnalysisConfig, AnalysisResult, run_ablation, validate_analysis)

KINDS: dict[str, JobKind[Any, Any]] = {kind.name: kind for kind in (FINETUNE, TRANSFER, EXPORT, STATISTICS, ABLATION)}


def job_config(job: JobInfo) -> Record:
    """The job's typed config (its kind's config class) from spec.json."""
    return KINDS[job.kind].config.from_json(job.params)


def job_result(job: JobInfo) -> Record | None:
    """The job's typed result, None while it has none (or one this version cannot read)."""
    return _read_result(job, KINDS.get(job.kind))


def _read_result(job: JobInfo, kind: JobKind[Any, R] | None) -> R | None:
    """The job's result.json read as `kind`'s result type."""
    data = read_json(job.path / "result.json")
    if not isinstance(data, dict) or kind is None:
        return None
    try:
        return kind.result.from_json(data)
    except (TypeError, KeyError, ValueError):  # a result without a required field: not this kind's
        return None


def finished_results(jobs: Sequence[JobInfo], kind: JobKind[Any, R]) -> dict[str, R]:
    """{job id: typed result} of the finished jobs of `kind`, in the order given."""
    out: dict[str, R] = {}
    for job in jobs:
        if job.kind == kind.name and job.state == "finished" and (result := _read_result(job, kind)) is not None:
            out[job.id] = result
    return out


def _exportable() -> str:
    return " or ".join(kind.title for kind in KINDS.values() if kind.merge is not None)


def export_reason(job: JobInfo) -> str | None:
    """Why `job` cannot be exported (None: it can)."""
    kind = KINDS.get(job.kind)
    if kind is None or kind.merge is None or job.state != "finished":
        return f"job {job.id} is not a finished {_exportable()} job ({job.kind}, {job.state})"
    return None


def export_config(job: JobInfo, out: str | os.PathLike | None = None) -> ExportConfig:
    """An export of `job` to `out` (default: `<job>/export`)."""
    return ExportConfig(job=str(job.path), kind=job.kind, out=str(Path(out) if out else job.path / "export"))


def _exportable_spec(job_dir: str | os.PathLike) -> tuple[JobKind[Any, Any], Callable[..., Any], dict]:
    """The job folder's kind, the kind's merge and the spec; ValueError when the kind has nothing to export."""
    spec = read_json(Path(job_dir) / "spec.json", {}) or {}
    name = spec.get("kind")
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None or kind.merge is None:
        raise ValueError(f"{job_dir} is not a {_exportable()} job (kind {spec.get('kind')!r}); nothing to export")
    return kind, kind.merge, spec


def adapted_model(job_dir: str | os.PathLike):
    """(model, tokenizer): a fresh CPU copy of the job's base model with its checkpoint merged in by the
    job's kind."""
    kind, merge, spec = _exportable_spec(job_dir)
    config = kind.config.from_json(spec.get("params", {}))
    base = load_model(config.model, device="cpu", dtype=config.dtype, trust_remote_code=config.trust_remote_code)
    return merge(base, config, Path(job_dir) / "checkpoint"), base.tokenizer


def export_model(job_dir: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a training job's adapted model as a Hugging Face folder at `out` (see export_adapted for
    what is refused)."""
    _exportable_spec(job_dir)  # refused before any check on the checkpoint
    return export_adapted(lambda: adapted_model(job_dir), Path(job_dir) / "checkpoint", out, overwrite=overwrite)
