"""Hook sites and the one context that owns their hooks.

A site is a place an analysis reads or rewrites one of the model's tensors: a neuron's activation (the
input of the FFN's output projection), a block's output hidden state, ... The named sites of a model come
from its adapter (`neuro.model.adapters.HookSites`, `LoadedModel.hook_sites`), each with the hook kind the
place needs (a forward pre-hook for a module's input, a forward hook for its output), so callers hand a site
a function of the tensor and never see a module, a pre-hook's argument tuple or a block's output tuple.
`hooks_held` (`LoadedModel.hooks`) takes the model's lock, attaches the hooks and removes them (and
releases the lock) on exit, even on error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]
"""Sees the site's tensor; a tensor it returns replaces it (None: the tensor goes on unchanged)."""

KwargsFn = Callable[[dict], None]
"""Sees a call's keyword arguments (read only)."""

SiteKind = Literal["input", "output", "kwargs"]


def _input_hook(fn: HookFn):
    """A forward pre-hook giving `fn` the module's first input, positional or (a module called by keyword)
    the first keyword argument."""
    def hook(module, args, kwargs):
        key = None
        if args:
            tensor = args[0]
        else:
            key = next(iter(kwargs))
            tensor = kwargs[key]
        new = fn(tensor)
        if new is None:
            return None
        if key is None:
            return (new,) + tuple(args[1:]), kwargs
        return args, {**kwargs, key: new}
    return hook


def _output_hook(fn: HookFn):
    """A forward hook giving `fn` the module's output tensor; a block's (hidden, extras...) tuple is
    unwrapped here, once, and rewrapped when `fn` replaces the hidden state."""
    def hook(module, args, output):
        tensor = output[0] if isinstance(output, tuple) else output
        new = fn(tensor)
        if new is None:
            return None
        return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new
    return hook


def _kwargs_hook(fn: KwargsFn):
    def hook(module, args, kwargs):
        fn(kwargs)
    return hook


@dataclass(frozen=True, eq=False)
class HookSite:
    """One named place in one model: `module`'s input ("input"), output ("output") or keyword arguments
    ("kwargs"); `layer` is None for a site outside the blocks."""

    name: str
    layer: int | None
    module: nn.Module
    kind: SiteKind

    def attach(self, fn: HookFn | KwargsFn) -> RemovableHandle:
        """Register `fn` here (see HookFn); the caller removes the handle (`hooks_held` does)."""
        if self.kind == "output":
            return self.module.register_forward_hook(_output_hook(fn))
        wrap = _input_hook if self.kind == "input" else _kwargs_hook
        return self.module.register_forward_pre_hook(wrap(fn), with_kwargs=True)


Attachment = tuple[HookSite, "HookFn | KwargsFn"]


def head_input(model: nn.Module) -> HookSite:
    """The unembedding head's input (batch, seq, hidden): the final hidden states after the final norm (the
    model's output_hidden_states[-1]). Found by transformers' own `get_output_embeddings`, so it needs no
    adapter and applies to any causal LM: a fresh copy built from a config (neuro.model.plan), a
    peft-wrapped model in training. `HookSites.head_input` is the same site of a loaded model."""
    return HookSite("head_input", None, model.get_output_embeddings(), "input")


def cut_positions(hidden: torch.Tensor) -> torch.Tensor:
    """For the head-input site: the head reads zero positions, so the model makes no (batch x sequence x
    vocabulary) logits; the hidden states are still computed (callers keep them, or only read inner sites)."""
    return hidden[..., :0, :]


@contextmanager
def hooks_held(lock, attachments: Iterable[Attachment], *, inference: bool = False) -> Iterator[list[RemovableHandle]]:
    """Inside: `lock` held, every (site, fn) attached (in order: hooks on one site run in that order) and,
    with `inference`, torch.inference_mode on. On exit, even on error, every hook is removed and the lock
    released. `lock` is the model's RLock, so a caller that holds it across several passes (statistics,
    path attribution) nests this freely; another thread waits."""
    with lock:
        handles: list[RemovableHandle] = []
        try:
            for site, fn in attachments:
                handles.append(site.attach(fn))
            with torch.inference_mode() if inference else nullcontext():
                yield handles
        finally:
            for handle in handles:
                handle.remove()
