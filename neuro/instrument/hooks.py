"""Hook plumbing shared by every capture: hooks that are always removed, and forward passes that stop
at the last block anyone reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from neuro.model.loading import LoadedModel


@contextmanager
def hooked(register: Callable[[list], None]) -> Iterator[None]:
    """Run `register(handles)` and guarantee every handle it appended is removed afterwards."""
    handles: list = []
    try:
        register(handles)
        yield
    finally:
        for handle in handles:
            handle.remove()


class _StopForward(Exception):
    """Raised by a block hook to end a forward pass early (nothing above that block is needed)."""


def forward_until(loaded: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, last_layer: int | None) -> None:
    """Run the model on `ids`, stopping after block `last_layer` (None: the whole model): hooks on the
    blocks up to it see their inputs and outputs, and the blocks above (and the unembedding) cost nothing."""
    sites = loaded.sites()
    stop_at = len(sites) - 1 if last_layer is None else last_layer

    def stop(hidden):
        raise _StopForward

    handle = loaded.hook_sites.block_output(stop_at).attach(stop) if stop_at < len(sites) - 1 else None
    try:
        loaded.model(input_ids=ids, attention_mask=mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        if handle is not None:
            handle.remove()


@contextmanager
def checkpointed_blocks(loaded: LoadedModel, enabled: bool = True) -> Iterator[None]:
    """Inside, every block's forward is activation-checkpointed (torch.utils.checkpoint, non-reentrant):
    a forward+backward keeps only each block's input and recomputes one block at a time in the backward.
    For any architecture (the blocks' own `forward`, wrapped and restored in `finally`); module hooks
    inside a block run again during the recomputation, so statistics hooks must not count twice
    (neuro.instrument.statistics sets `replaying` around the backward)."""
    if not enabled:
        yield
        return
    from functools import partial

    from torch.utils.checkpoint import checkpoint

    blocks = list(loaded.blocks)
    originals = [block.forward for block in blocks]
    try:
        for block, forward in zip(blocks, originals):
            block.forward = partial(checkpoint, forward, use_reentrant=False)
        yield
    finally:
        for block in blocks:
            block.__dict__.pop("forward", None)
