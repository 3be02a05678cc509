"""The one table of Hugging Face module names: where each architecture keeps its blocks, FFN parts,
final norm. Everything else reaches modules through `Adapter`, `NeuronSite` and `LoadedModel`, so
supporting another architecture is one entry in `ADAPTERS` (tests/test_architecture.py checks both)."""

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

    `down` is the FFN output projection: its input is the neuron activation. `act` is the activation
    module: act(gate) > 0 is LAPE's "active". The FFN input projections, whose row n belongs to neuron
    n, are named by exactly one of: `gate` + `up` (gated FFN, a = act(gate x) * up x; the gradient of
    `up`'s output gives |a * dL/da| without holding `a`), `gate_up` (gated, both in one projection:
    gate rows [0, I), up rows [I, 2I)) or `fc_in` (non-gated, a = act(fc_in x)).
    """

    name: str
    blocks: str
    mlp: str
    down: str
    act: str
    gate: str | None = None
    up: str | None = None
    gate_up: str | None = None
    fc_in: str | None = None
    intermediate_size: Callable = _intermediate
    final_norm: str = "model.norm"  # the norm before the unembedding (the logit lens reads blocks through it)

    def __post_init__(self):
        # an entry that names an incomplete FFN would fail later, in fine-tuning: refuse it here
        if (self.gate is None) != (self.up is None):
            raise ValueError(f"adapter {self.name}: a gated FFN names both `gate` and `up`")
        if (self.up is not None) + (self.gate_up is not None) + (self.fc_in is not None) != 1:
            raise ValueError(f"adapter {self.name}: name the FFN input as gate+up, gate_up or fc_in")

    @property
    def gated(self) -> bool:
        return self.fc_in is None

    def block_prefix(self, layer: int) -> str:
        """Parameter / module name prefix of block `layer` (for `named_parameters`, `named_modules`)."""
        return f"{self.blocks}.{layer}."

    def ffn_prefix(self, layer: int) -> str:
        """Parameter / module name prefix of block `layer`'s FFN."""
        return f"{self.block_prefix(layer)}{self.mlp}."

    def site_label(self) -> str:
        """Where a neuron lives, for people: `<blocks>.{i}.<mlp>.<down> (input)`."""
        return f"{self.ffn_prefix('{i}')}{self.down} (input)"

    def blocks_of(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.blocks)

    def final_norm_of(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.final_norm)


_LLAMA_LIKE = dict(blocks="model.layers", mlp="mlp", down="down_proj", act="act_fn", gate="gate_proj", up="up_proj")

_GPT2_LIKE = dict(blocks="transformer.h", mlp="mlp", down="c_proj", act="act", fc_in="c_fc",
                  intermediate_size=_inner_or_4x, final_norm="transformer.ln_f")

ADAPTERS: dict[str, Adapter] = {
    "llama": Adapter("llama", **_LLAMA_LIKE),
    "mistral": Adapter("mistral", **_LLAMA_LIKE),
    "qwen2": Adapter("qwen2", **_LLAMA_LIKE),
    "qwen3": Adapter("qwen3", **_LLAMA_LIKE),
    "gemma": Adapter("gemma", **_LLAMA_LIKE),
    "gemma2": Adapter("gemma2", **_LLAMA_LIKE),
    "phi3": Adapter("phi3", blocks="model.layers", mlp="mlp", down="down_proj", act="activation_fn",
                    gate_up="gate_up_proj"),
    "gpt2": Adapter("gpt2", **_GPT2_LIKE),
    "gpt_bigcode": Adapter("gpt_bigcode", **_GPT2_LIKE),
    "gpt_neox": Adapter("gpt_neox", blocks="gpt_neox.layers", mlp="mlp", down="dense_4h_to_h", act="act",
                        fc_in="dense_h_to_4h", final_norm="gpt_neox.final_layer_norm"),
    "starcoder2": Adapter("starcoder2", blocks="model.layers", mlp="mlp", down="c_proj", act="act", fc_in="c_fc"),
}


def adapter_for(config) -> Adapter:
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise UnsupportedArchitecture(
            f"architecture {model_type!r} has no neuron adapter; supported: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[model_type]


@dataclass(frozen=True)
class NeuronSite:
    """The FFN modules of one block; the input projections not used by the architecture are None."""

    layer: int
    block: nn.Module
    mlp: nn.Module
    down: nn.Module
    act: nn.Module
    gate: nn.Module | None = None
    up: nn.Module | None = None
    gate_up: nn.Module | None = None
    fc_in: nn.Module | None = None


def neuron_sites(model: nn.Module, adapter: Adapter) -> list[NeuronSite]:
    sites = []
    for i, block in enumerate(adapter.blocks_of(model)):
        mlp = block.get_submodule(adapter.mlp)
        inputs = {part: mlp.get_submodule(getattr(adapter, part))
                  for part in ("gate", "up", "gate_up", "fc_in") if getattr(adapter, part) is not None}
        sites.append(NeuronSite(i, block, mlp, mlp.get_submodule(adapter.down), mlp.get_submodule(adapter.act),
                                **inputs))
    acts = [id(s.act) for s in sites]
    if len(set(acts)) != len(acts):  # one activation module shared by all blocks: cannot tell layers apart
        raise UnsupportedArchitecture(f"{adapter.name}: the FFN activation module is shared across blocks")
    return sites
