"""Timing helpers shared by the benchmarks.

Each side of a comparison is timed in its own block (warm-up first, then ``repeats`` calls back to
back), never interleaved call by call, and summarised by the median, which shrugs off the odd
slow run on a shared machine.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

__all__ = ["time_block", "median", "environment", "run_sampled", "process_group", "process_memory"]


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


def process_group(pgid: int) -> list[int]:
    """Ids of the live processes in process group ``pgid`` (a command started in its own session)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def process_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes, from /proc/PID/smaps_rollup; (0, 0) once it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def run_sampled(command: list[str], *, interval: float = 0.1, **popen: Any) -> dict[str, Any]:
    """Run ``command`` in its own session; its wall time, CPU time and peak memory as a process tree.

    Every ``interval`` seconds the process group's /proc entries are read: the largest sum of RSS
    over the tree, the largest sum of PSS (shared pages counted once, split between the processes
    sharing them) and the largest RSS of one process (what ``/usr/bin/time -v`` reports). CPU time
    is this process's ``RUSAGE_CHILDREN`` difference: the command and every descendant it waited
    for (a descendant that outlives it is not counted).

    Parameters
    ----------
    command : list of str
        The command line.
    interval : float
        Seconds between samples.
    **popen
        Passed to :class:`subprocess.Popen` (``env``, ``cwd``).

    Returns
    -------
    dict
        ``wall_s``, ``user_s``, ``system_s``, ``tree_rss_mb``, ``tree_pss_mb``,
        ``largest_process_rss_mb``, ``processes`` (most at once), ``returncode``, ``stderr``.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen
    )
    peak_rss = peak_pss = peak_one = processes = 0
    while process.poll() is None:
        sizes = [process_memory(pid) for pid in process_group(process.pid)]
        peak_rss = max(peak_rss, sum(rss for rss, _ in sizes))
        peak_pss = max(peak_pss, sum(pss for _, pss in sizes))
        peak_one = max([peak_one, *(rss for rss, _ in sizes)])
        processes = max(processes, len(sizes))
        time.sleep(interval)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    error = process.stderr.read().decode(errors="replace") if process.stderr else ""
    return {
        "wall_s": wall,
        "user_s": after.ru_utime - before.ru_utime,
        "system_s": after.ru_stime - before.ru_stime,
        "tree_rss_mb": round(peak_rss / 2**20),
        "tree_pss_mb": round(peak_pss / 2**20),
        "largest_process_rss_mb": round(peak_one / 2**20),
        "processes": processes,
        "returncode": process.returncode,
        "stderr": error,
    }
