"""Timing helpers shared by the benchmarks.

Each side of a comparison is timed in its own block (warm-up first, then ``repeats`` calls back to
back), never interleaved call by call, and summarised by the median, which shrugs off the odd
slow run on a shared machine.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["time_block", "median", "environment"]


def time_block(fn: Callable[[], Any], *, repeats: int = 7, warmup: int = 2) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn``, after ``warmup`` untimed calls.

    Parameters
    ----------
    fn : callable
        Called with no arguments; its result is discarded (but kept alive until the next call
        is timed, so freeing it is not charged to the following run).
    repeats : int
        Timed calls, at least 1.
    warmup : int
        Untimed calls first (allocator, caches, lazy initialisation).

    Returns
    -------
    list of float
        Seconds per timed call, in call order.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()  # a collection landing in one run would distort that run alone
    try:
        times = []
        result = None
        for _ in range(repeats):
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
            del result
    finally:
        if was_enabled:
            gc.enable()
    return times


def median(times: list[float]) -> float:
    """Median of a list of timings (seconds)."""
    return statistics.median(times)


def environment() -> dict[str, Any]:
    """Versions and machine facts worth recording next to timings."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    for name in ("numpy", "torch", "librosa", "scipy"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        info[name] = getattr(module, "__version__", "unknown")
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info
