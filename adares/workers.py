"""The local worker processes of ``extract``: how they start and how each one is set up.

Standard library only, so the process that plans a run can start the workers before it imports
anything heavy: the workers' own start-up (importing torch, the longest part of a short run) then
overlaps the planning (finding the files, reading the manifest and the headers).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Iterator

__all__ = [
    "end_with",
    "process_alive",
    "fork_server",
    "keep_freed_memory",
    "limit_threads",
    "local_pool",
    "start_fork_server",
    "stop_fork_server",
    "worker_count",
]

_OWNER_POLL_SECONDS = 1.0
"""How often a worker looks for its pool's owner where it cannot wait on a pidfd."""

_PRELOAD = ["adares.worker_server"]
"""Imported once by the fork server: the pipeline and torch, so every worker starts with them
loaded."""

_MMAP_THRESHOLD_BYTES = 16 << 20
"""Blocks at least this large are mapped from the kernel; smaller ones are reused from the heap."""
_TRIM_THRESHOLD_BYTES = 128 << 20
"""Free memory at the top of the heap is handed back to the kernel only beyond this much."""


def _context() -> multiprocessing.context.BaseContext:
    # forkserver: workers start from a clean, single-threaded server, never from a fork of this
    # process with torch's thread pools already running (a known source of deadlocks).
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def worker_count(jobs: int | None) -> int:
    """How many worker processes ``jobs`` means (None: one per core)."""
    return jobs or os.cpu_count() or 1


def start_fork_server() -> None:
    """Start the server that forks the workers now, so its imports run while this process plans.

    Returns at once; a pool made later by :func:`local_pool` uses this server. Harmless if the
    pool is never made (the server exits with this process). No-op without the forkserver start
    method (Windows, where workers are spawned).
    """
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        with _ctrl_c_ignored():  # inherited by the server for its whole life (see below)
            forkserver.ensure_running()


@contextlib.contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """Ignore SIGINT in this process for the block (in the main thread; elsewhere a no-op).

    A process started meanwhile inherits the disposition, and Python keeps an inherited SIGINT
    ignored. Ctrl-C reaches the whole process group; the fork server must not answer it: in the
    middle of importing torch it would print a traceback of its own, and the run, which does
    handle it, stops the server anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def stop_fork_server() -> None:
    """End the fork server now, also in the middle of its imports; for a process about to exit.

    A run that finds everything already done never uses the server it started early; left
    alone, the server would go on importing torch after the run returned, a core busy for
    nothing, with the command's output still open. A pool made later starts a new server.
    No-op where no server runs.
    """
    if _context().get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    # Private names of the standard library's server (3.10-3.14); missing, the server is left
    # to end by itself when this process exits.
    server = getattr(forkserver, "_forkserver", None)
    pid, stop = getattr(server, "_forkserver_pid", None), getattr(server, "_stop", None)
    if pid is None or stop is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    stop()  # closes its pipe, reaps it and forgets it, as the standard library's own tests do


@contextlib.contextmanager
def fork_server(*, start: bool = True) -> Iterator[None]:
    """Run the fork server for the block: started first, so its imports (torch) overlap the
    block's own work, and ended after, so no process is left behind importing or idle.

    A server already running when the block begins is used and left running.

    Parameters
    ----------
    start : bool
        False makes the block run without a server (a run whose work stays in this process or
        goes to another executor).
    """
    if not start or _context().get_start_method() != "forkserver":
        yield
        return
    from multiprocessing import forkserver

    already_running = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None) is not None
    start_fork_server()
    try:
        yield
    finally:
        if not already_running:
            stop_fork_server()


def local_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A process pool of ``workers`` processes, each set up by :func:`_init_worker`."""
    return cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=_context(), initializer=_init_worker, initargs=(os.getpid(),)
    )


def _init_worker(owner: int) -> None:
    # Ctrl-C reaches the whole process group; the run that owns the pool handles it for its
    # workers (it shuts the pool down), so a worker does not print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads()
    keep_freed_memory()
    end_with(owner)


def end_with(owner: int) -> threading.Thread:
    """End this process as soon as process ``owner`` has ended.

    A pool's workers wait for work on a queue whose writing end they hold themselves, and the
    fork server lives as long as any worker: when the process that made the pool is killed
    (SIGKILL, the out-of-memory killer), which gives it no chance to shut its pool down, they
    would wait forever. A daemon thread waits for ``owner`` (a pidfd on Linux, else a poll once
    a second) and then ends this process; the fork server follows once its workers are gone.

    Returns
    -------
    threading.Thread
        The waiting thread (already started).
    """
    watcher = threading.Thread(target=_exit_after, args=(owner,), name="adares-owner-watch", daemon=True)
    watcher.start()
    return watcher


def _exit_after(owner: int) -> None:
    try:
        handle = os.pidfd_open(owner)
    except (AttributeError, OSError):  # no pidfd here, or the owner is gone already
        while process_alive(owner):
            time.sleep(_OWNER_POLL_SECONDS)
    else:
        select.select([handle], [], [])  # readable once the owner has ended
        os.close(handle)
    os._exit(1)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (also when another user owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def limit_threads() -> None:
    """One torch thread in this process: the parallelism comes from processes."""
    # More threads per process only fight over the same cores.
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed buffers in this worker instead of unmapping them at once.

    A worker allocates and frees the same few multi-megabyte buffers (a group's STFT, power and
    mel) for every group of files. With glibc's adaptive thresholds they are returned to the
    kernel and mapped afresh, zero-filled page by page, for every group; fixed thresholds keep
    them in the heap, and a worker's memory stays bounded by its largest group. Only processes
    adares owns call this: its workers, and a run told that the calling process is its own
    (``extract(..., dedicated_process=True)``, as the ``adares`` command does, which may run the
    work itself with ``--jobs 1``), never a library caller's process otherwise.

    Returns
    -------
    bool
        Whether the settings were applied (False where the C library is not glibc).
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):  # None, or raises, where the C library is not glibc
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, _MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(m_trim_threshold, _TRIM_THRESHOLD_BYTES)
    )
