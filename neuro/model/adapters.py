"""TODO docstring (neuro.model.adapters)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from neuro.model.errors import ModelLoadError


class UnsupportedArchitecture(ModelLoadError):
    pass

def _intermediate(config) -> int:
    return int(config.intermediate_size)

def _inner_or_4x(config) -> int:
    return int(getattr(config, "n_inner", None) or 4 * config.n_embd)

@dataclass(frozen=True)
class Adapter:
    """Where an architecture keeps its blocks and FFN parts (attribute names, dotted from the model).

    `down` is the FFN output projection: its input is the neuron activation. `up` (gated FFNs) is the
    projection whose output is multiplied by act(gate): its gradient gives |a * dL/da| without holding
    `a`. `act` is the activation module: act(gate) > 0 is LAPE's "active".
    """

    name: str
    blocks: str
    mlp: str
    down: str
    act: str
    up: str | None
    gated: bool
    intermediate_size: Callable = _intermediate
    final_norm: str = "model.norm"  # the norm before the unembedding (the logit lens reads blocks through it)

_LLAMA_LIKE = dict(blocks="model.layers", mlp="mlp", down="down_proj", act="act_fn", up="up_proj", gated=True)

_GPT2_LIKE = dict(blocks="transformer.h", mlp="mlp", down="c_proj", act="act", up=None, gated=False,
                  intermediate_size=_inner_or_4x, final_norm="transformer.ln_f")

ADAPTERS: dict[str, Adapter] = {
    "llama": Adapter("llama", **_LLAMA_LIKE),
    "mistral": Adapter("mistral", **_LLAMA_LIKE),
    "qwen2": Adapter("qwen2", **_LLAMA_LIKE),
    "qwen3": Adapter("qwen3", **_LLAMA_LIKE),
    "gemma": Adapter("gemma", **_LLAMA_LIKE),
    "gemma2": Adapter("gemma2", **_LLAMA_LIKE),
    "phi3": Adapter("phi3", blocks="model.layers", mlp="mlp", down="down_proj", act="activation_fn",
                    up=None, gated=True),
    "gpt2": Adapter("gpt2", **_GPT2_LIKE),
    "gpt_bigcode": Adapter("gpt_bigcode", **_GPT2_LIKE),
    "gpt_neox": Adapter("gpt_neox", blocks="gpt_neox.layers", mlp="mlp", down="dense_4h_to_h", act="act",
                        up=None, gated=False, final_norm="gpt_neox.final_layer_norm"),
    "starcoder2": Adapter("starcoder2", blocks="model.layers", mlp="mlp", down="c_proj", act="act",
                          up=None, gated=False),
}

def adapter_for(config) -> Adapter:
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise UnsupportedArchitecture(
            f"architecture {model_type!r} has no neuron adapter; supported: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[model_type]

def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj

@dataclass(frozen=True)
class NeuronSite:
    """The FFN modules of one block."""

    layer: int
    block: nn.Module
    down: nn.Module
    act: nn.Module
    up: nn.Module | None

def neuron_sites(model: nn.Module, adapter: Adapter) -> list[NeuronSite]:
    blocks = _get(model, adapter.blocks)
    sites = []
    for i, block in enumerate(blocks):
        mlp = _get(block, adapter.mlp)
        sites.append(NeuronSite(i, block, _get(mlp, adapter.down), _get(mlp, adapter.act),
                                _get(mlp, adapter.up) if adapter.up else None))
    acts = [id(s.act) for s in sites]
    if len(set(acts)) != len(acts):  # one activation module shared by all blocks: cannot tell layers apart
        raise UnsupportedArchitecture(f"{adapter.name}: the FFN activation module is shared across blocks")
    return sites
