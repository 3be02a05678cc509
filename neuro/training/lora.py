"""LoRA (peft) on chosen blocks, and the choice of its target modules (by name, through the adapter)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from neuro.model.loading import LoadedModel


def is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D (GPT-2 family): a linear layer whose weight is stored (in, out)."""
    return type(module).__name__ == "Conv1D"


def linear_modules(loaded: LoadedModel, layers: Sequence[int], ffn_only: bool = False) -> list[str]:
    """Full names of the linear layers (nn.Linear or Conv1D) inside the given blocks, or only inside
    their FFNs (`ffn_only`)."""
    adapter, names = loaded.adapter, []
    for layer in sorted(set(layers)):
        prefix = adapter.ffn_prefix(layer) if ffn_only else adapter.block_prefix(layer)
        for name, module in loaded.model.named_modules():
            if name.startswith(prefix) and (isinstance(module, nn.Linear) or is_conv1d(module)):
                names.append(name)
    return names


def lora_size(loaded: LoadedModel, targets: Sequence[str], rank: int) -> int:
    """Trainable parameters of rank-`rank` LoRA on these modules: rank x (in + out) each."""
    total = 0
    for name in targets:
        weight = loaded.model.get_submodule(name).weight
        total += rank * (weight.shape[0] + weight.shape[1])
    return total


def apply_lora(loaded: LoadedModel, targets: Sequence[str], rank: int):
    """Inject LoRA (peft) into exactly the named modules; the base model is modified in place.

    alpha = rank (scaling 1), no dropout. Returns the PeftModel (for saving and merging)."""
    from peft import LoraConfig, get_peft_model

    if not targets:
        raise ValueError("LoRA needs at least one target module")
    fan_in_fan_out = any(is_conv1d(loaded.model.get_submodule(n)) for n in targets)
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none", target_modules=list(targets),
                        fan_in_fan_out=fan_in_fan_out)
    return get_peft_model(loaded.model, config)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def merged_lora(loaded: LoadedModel, tensors: dict[str, torch.Tensor], targets: Sequence[str], rank: int) -> nn.Module:
    """`loaded`'s model with saved LoRA weights merged in (peft removed): what an export writes."""
    from peft import set_peft_model_state_dict

    peft_model = apply_lora(loaded, targets, rank)
    set_peft_model_state_dict(peft_model, tensors)
    return peft_model.merge_and_unload()
