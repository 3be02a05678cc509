"""Export a finished training job's model as a Hugging Face folder: the base model with the job's saved
adaptation merged into its weights, and the tokenizer, loadable by `AutoModelForCausalLM.from_pretrained`
(or `load_model`) with no trace of this project.

One path for every task: each task module provides `adapted_model(job_dir) -> (model, tokenizer)`, the
merge that only it knows (neuron deltas, LoRA, chosen layers); writing the folder, the checks and the
background "export" job are shared here.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

from neuro.jobs.runner import TRAIN_STATE, JobInfo, JobRefused, create_job, launch, read_job, read_json

# job kind -> "module:function" returning (merged model, tokenizer) for a job folder
ADAPTED = {"finetune": "neuro.experiments.finetune:adapted_model", "transfer": "neuro.experiments.transfer:adapted_model"}

def _adapted(kind: str):
    module, name = ADAPTED[kind].split(":")
    return getattr(importlib.import_module(module), name)

def write_hf_folder(model, tokenizer, out: Path) -> Path:
    """save_pretrained into a temporary sibling folder, then rename it into place, so a killed export
    never leaves a half-written folder where a loader would look."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out

def export_model(job_dir: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a training job's adapted model (fine-tuning or transfer) as a Hugging Face folder at `out`.

    Refuses a job without a checkpoint and a checkpoint taken before the last step (a job that has not
    finished training), so an export is always of the trained model."""
    job_dir, out = Path(job_dir), Path(out)
    kind = (read_json(job_dir / "spec.json", {}) or {}).get("kind")
    if kind not in ADAPTED:
        raise ValueError(f"{job_dir} is not a fine-tuning or transfer job (kind {kind!r}); nothing to export")
    checkpoint = job_dir / "checkpoint"
    if not (checkpoint / "meta.json").is_file():
        raise FileNotFoundError(f"{job_dir} has no checkpoint (has the job finished?)")
    state = read_json(checkpoint / TRAIN_STATE)
    if isinstance(state, dict) and state.get("step", 0) < state.get("steps", 0):
        raise ValueError(f"{job_dir}: the checkpoint is from step {state['step']} of {state['steps']}; "
                         "resume the job and export it when it has finished")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty")
    model, tokenizer = _adapted(kind)(job_dir)
    return write_hf_folder(model, tokenizer, out)

def export_reason(job: JobInfo) -> str | None:
    """Why `job` cannot be exported (None: it can)."""
    if job.kind not in ADAPTED or job.state != "finished":
        return f"job {job.id} is not a finished fine-tuning or transfer job ({job.kind}, {job.state})"
    return None

def start_export(job: JobInfo, out: str | os.PathLike | None = None, root=None) -> JobInfo:
    """Export a finished job in the background (an "export" job); `out` defaults to `<job>/export`."""
    out = Path(out) if out else job.path / "export"
    reasons = [r for r in (export_reason(job),) if r]
    if out.exists() and any(out.iterdir()):
        reasons.append(f"{out} exists and is not empty")
    if reasons:
        raise JobRefused(reasons)
    params = {"job": str(job.path), "kind": job.kind, "out": str(out)}
    folder = create_job("export", params, label=f"export {job.id} -> {out}", root=root)
    launch(folder)
    return read_job(folder, reconcile=False)

def run_export(ctx, params: dict, loaded=None) -> dict:
    """Job entry point ("export")."""
    ctx.progress(0, 1, "exporting")
    out = export_model(params["job"], params["out"])
    ctx.progress(1, 1, "exported")
    return {"out": str(out), "files": sorted(p.name for p in out.iterdir())}
