"""The one table of Hugging Face module names: where each architecture keeps its blocks, FFN parts,
final norm. Everything else reaches modules through `Adapter`, `NeuronSite`, `HookSites` and `LoadedModel`, so
supporting another architecture is one entry in `ADAPTERS` (tests/test_architecture.py checks both)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict
from dataclasses import dataclass

from torch import nn

from neuro.model.errors import ModelLoadError
from neuro.model.hook_sites import HookSite, SiteKind, head_input


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

    def block_prefix(self, layer: int | str) -> str:
        """Parameter / module name prefix of block `layer` (for `named_parameters`, `named_modules`)."""
        return f"{self.blocks}.{layer}."

    def ffn_prefix(self, layer: int | str) -> str:
        """Parameter / module name prefix of block `layer`'s FFN (a str: a template such as '{i}')."""
        return f"{self.block_prefix(layer)}{self.mlp}."

    def site_label(self) -> str:
        """Where a neuron lives, for people: `<blocks>.{i}.<mlp>.<down> (input)`."""
        return f"{self.ffn_prefix('{i}')}{self.down} (input)"

    def blocks_of(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.blocks)

    def final_norm_of(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.final_norm)

    def hook_sites(self, model: nn.Module) -> HookSites:
        """The named places of `model` that hooks read (a neuron's activation, a block's output, ...)."""
        return HookSites(model, self)


class _Layout(TypedDict, total=False):
    """The `Adapter` fields several architectures share."""

    blocks: str
    mlp: str
    down: str
    act: str
    gate: str
    up: str
    fc_in: str
    intermediate_size: Callable
    final_norm: str


_LLAMA_LIKE = _Layout(blocks="model.layers", mlp="mlp", down="down_proj", act="act_fn", gate="gate_proj",
                      up="up_proj")

_GPT2_LIKE = _Layout(blocks="transformer.h", mlp="mlp", down="c_proj", act="act", fc_in="c_fc",
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


class HookSites:
    """The named hook sites of one model (`LoadedModel.hook_sites`), each resolved through the adapter with
    the hook kind its tensor needs: callers attach a function of the tensor (neuro.model.hook_sites).

    Block `layer`'s FFN computes a = act(pre) [* up] and writes down(a) into the residual stream; a is the
    neuron activation (see Adapter)."""

    def __init__(self, model: nn.Module, adapter: Adapter):
        self.model = model
        self.adapter = adapter
        self._sites = neuron_sites(model, adapter)

    def __len__(self) -> int:
        return len(self._sites)

    def _site(self, name: str, layer: int, module: nn.Module | None, kind: SiteKind) -> HookSite:
        if module is None:
            raise ValueError(f"{self.adapter.name} has no {name} site")
        return HookSite(name, layer, module, kind)

    def neuron_input(self, layer: int) -> HookSite:
        """The neuron activations a of block `layer` (batch, seq, neurons): the FFN output projection's input
        (a Linear's or GPT-2's Conv1D's alike)."""
        return self._site("neuron_input", layer, self._sites[layer].down, "input")

    def neuron_output(self, layer: int) -> HookSite:
        """down(a) (batch, seq, hidden): what the neurons write, before any dropout of the FFN."""
        return self._site("neuron_output", layer, self._sites[layer].down, "output")

    def act_input(self, layer: int) -> HookSite:
        """The pre-activation (gate x, or fc_in x for a non-gated FFN), the activation module's input."""
        return self._site("act_input", layer, self._sites[layer].act, "input")

    def act_output(self, layer: int) -> HookSite:
        """act(pre): LAPE's "active" is act_output > 0; for a non-gated FFN it is a itself."""
        return self._site("act_output", layer, self._sites[layer].act, "output")

    def up_output(self, layer: int) -> HookSite:
        """up x of a gated FFN with a separate up projection (a = act(gate x) * up x); none otherwise."""
        return self._site("up_output", layer, self._sites[layer].up, "output")

    def ffn_input(self, layer: int) -> HookSite:
        """The FFN's input x (the normed residual stream) of block `layer`."""
        return self._site("ffn_input", layer, self._sites[layer].mlp, "input")

    def block_output(self, layer: int) -> HookSite:
        """The residual stream after block `layer` (batch, seq, hidden): the model's
        output_hidden_states[layer + 1], except after the last block, which the model reports normed."""
        return self._site("block_output", layer, self._sites[layer].block, "output")

    def head_input(self) -> HookSite:
        """The unembedding head's input: the final hidden states, after the final norm (neuro.model.hook_sites
        .head_input)."""
        return head_input(self.model)

    def call_kwargs(self) -> HookSite:
        """The keyword arguments of the model's own forward (e.g. the KV cache a `generate` step passes)."""
        return HookSite("call_kwargs", None, self.model, "kwargs")
