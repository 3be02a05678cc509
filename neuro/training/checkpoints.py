"""Checkpoint files: trainable tensors with a JSON meta (safetensors), and the training loop's own state.

TRAIN_STATE is the file that makes a checkpoint resumable (see loop.save_training_state); the job
machinery reads it to tell whether, and from which step, a stopped job can continue.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

TRAIN_STATE = "train_state.json"  # in a checkpoint: the training step and what resuming needs


def save_tensors(folder: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(folder / "weights.safetensors"))
    (folder / "meta.json").write_text(json.dumps(meta, indent=1, default=str))


def checkpoint_meta(folder: Path | None) -> dict:
    """The meta.json a checkpoint holds: what its task saved beside the tensors ({} for none)."""
    try:
        return json.loads((Path(folder) / "meta.json").read_text()) if folder is not None else {}
    except (OSError, ValueError):
        return {}


def load_tensors(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    return load_file(str(folder / "weights.safetensors")), json.loads((folder / "meta.json").read_text())


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved weights (a subset of the model's, by name) into `model`; unknown names are an error,
    so a checkpoint of another model never half-loads silently."""
    unexpected = model.load_state_dict(tensors, strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"the checkpoint holds weights this model lacks: {', '.join(unexpected[:5])}")


def load_pretrained_weights(model: nn.Module, folder: Path) -> None:
    """Load a `save_pretrained` folder's safetensors files (one or sharded) into `model` in place."""
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    for file in files:
        load_weights(model, load_file(str(file)))
