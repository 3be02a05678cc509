"""Export a finished training job's model as a Hugging Face folder: the base model with the job's saved
adaptation merged into its weights, and the tokenizer, loadable by `AutoModelForCausalLM.from_pretrained`
(or `load_model`) with no trace of this project.

Each training experiment knows how to merge its own checkpoint (`merge_finetuned`, `merge_transferred`);
the checks and the writing are shared here, and neuro.jobs (its registry of job kinds) picks the merge
for a job and runs exports as "export" jobs.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neuro.training.checkpoints import TRAIN_STATE
from neuro.training.records import Record


@dataclass(frozen=True)
class ExportConfig(Record):
    """An export job: the training job's folder, the folder to write, and the training job's kind."""

    job: str
    out: str
    kind: str = "finetune"  # exports from before transfer jobs existed do not say

    def label(self) -> str:
        return f"export {Path(self.job).name} -> {self.out}"


@dataclass(frozen=True)
class ExportResult(Record):
    out: str
    files: list[str]


def write_hf_folder(model, tokenizer, out: Path) -> Path:
    """save_pretrained into a temporary sibling folder, then rename it into place, so a killed export
    never leaves a half-written folder where a loader would look."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.export.tmp"  # unique: two exports never share it
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_adapted(adapted: Callable[[], tuple], checkpoint: Path, out: str | os.PathLike, *,
                   overwrite: bool = False) -> Path:
    """Write `adapted()` (model, tokenizer) as a Hugging Face folder at `out`.

    Refuses a missing checkpoint and one taken before the last step (a job that has not finished
    training), so an export is always of the trained model; checked before anything is loaded."""
    checkpoint, out = Path(checkpoint), Path(out)
    if not (checkpoint / "meta.json").is_file():
        raise FileNotFoundError(f"{checkpoint.parent} has no checkpoint (has the job finished?)")
    try:
        state = json.loads((checkpoint / TRAIN_STATE).read_text())
    except (OSError, ValueError):
        state = None
    if isinstance(state, dict) and state.get("step", 0) < state.get("steps", 0):
        raise ValueError(f"{checkpoint.parent}: the checkpoint is from step {state['step']} of {state['steps']}; "
                         "resume the job and export it when it has finished")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty")
    model, tokenizer = adapted()
    return write_hf_folder(model, tokenizer, out)
