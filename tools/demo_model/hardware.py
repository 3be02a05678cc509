"""The machine the model trains on: CPU threads to use beside other work, and a readable device name."""

from __future__ import annotations

import os
from pathlib import Path


def pick_threads(cpus: int, own: int) -> int:
    """CPU threads for the next stretch of training: fewer when other processes load the machine.

    ``own`` is the number of threads this process runs now (counted in the load average). Two
    threads that must synchronise every operation slow down badly when another process holds a
    core, so a busy machine gets one thread.
    """
    others = max(0.0, os.getloadavg()[0] - own)
    return max(1, min(cpus, int(cpus - others + 0.5)))


def device_name(device: str) -> str:
    """Human-readable accelerator or CPU name."""
    import platform

    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"
