"""Data-parallel corpus statistics under torchrun (torch.distributed: nccl on GPUs, gloo on CPUs).

Each rank captures a shard of the corpus (snippet i goes to rank i % world); the accumulators are
summed with all_reduce and the top-k examples merged from an all_gather, so every rank ends with the
statistics of the whole corpus, equal to a single process's up to floating-point summation order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from neuro.code.corpus import Snippet
from neuro.instrument.statistics import CorpusStats, capture_statistics
from neuro.model.loading import LoadedModel


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_from_env() -> str | None:
    """Join the process group torchrun describes; returns this rank's device ("cuda:N" or "cpu")."""
    rank, size = world()
    if size <= 1:
        return None
    use_cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


def finish(wait: bool = True) -> None:
    """Leave the process group, together (`wait`): a rank that exits while another still uses gloo
    aborts it (SIGABRT, "terminate called without an active exception"). After an error other ranks may
    never reach the barrier, so then just leave."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def _all_sum(array: np.ndarray | None, device: torch.device) -> np.ndarray | None:
    if array is None:
        return None
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def reduce_statistics(stats: CorpusStats, device: torch.device | str = "cpu") -> CorpusStats:
    """Sum every rank's shard statistics (all ranks receive the result)."""
    device = torch.device(device)
    summed: dict[str, Any] = {name: _all_sum(getattr(stats, name), device) for name in CorpusStats.SUMMED}
    top_values, top_ids = stats.top_values, stats.top_ids
    if top_values is not None:
        gathered_v = [torch.empty_like(torch.from_numpy(top_values)).to(device) for _ in range(dist.get_world_size())]
        gathered_i = [torch.empty_like(torch.from_numpy(top_ids)).to(device) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered_v, torch.from_numpy(top_values).to(device))
        dist.all_gather(gathered_i, torch.from_numpy(top_ids).to(device))
        values = torch.cat(gathered_v, dim=1)
        ids = torch.cat(gathered_i, dim=1)
        best, order = values.topk(top_values.shape[1], dim=1)
        top_values, top_ids = best.cpu().numpy(), ids.gather(1, order).cpu().numpy()
    return CorpusStats(stats.languages, meta=dict(stats.meta), top_values=top_values, top_ids=top_ids,
                       unit_lang=stats.unit_lang, **summed)


def distributed_statistics(loaded: LoadedModel, snippets: Sequence[Snippet], **kwargs) -> CorpusStats:
    """`capture_statistics` over this rank's shard, then reduced across ranks."""
    rank, size = world()
    languages = kwargs.pop("languages", None) or list(dict.fromkeys(s.lang for s in snippets))
    shard_stats = capture_statistics(loaded, snippets, shard=(rank, size), languages=languages, **kwargs)
    return reduce_statistics(shard_stats, loaded.device if dist.get_backend() == "nccl" else "cpu")
