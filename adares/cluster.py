"""Run the extract pipeline on a Dask cluster instead of a local process pool.

Dask is an optional extra (``pip install 'adares[dask]'``). The pipeline needs nothing Dask-specific:
it maps its per-batch tasks over ``distributed.Client.get_executor()``, a standard
:class:`concurrent.futures.Executor`. Dask retries a task whose worker died (``retries``); when the
retries are spent the pipeline records the files of that task as failed, with the reason.

Workers must read the inputs and write the outputs at the same paths as the client (a shared
filesystem: NFS, a cluster filesystem, or one machine). Only the client writes the manifest.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from adares.errors import ParameterError

__all__ = ["DaskRun", "dask_executor", "SCHEDULER_ENV"]

SCHEDULER_ENV = "ADARES_SCHEDULER"
"""Environment variable naming a Dask scheduler address, used when none is given (``scheduler``, ``--scheduler``)."""


@dataclass(frozen=True)
class DaskRun:
    """A connected Dask client, ready to take the pipeline's tasks.

    Attributes
    ----------
    executor : concurrent.futures.Executor
        The client's executor (tasks retried ``retries`` times on worker loss).
    threads : int
        Worker threads in the cluster when connected: how many tasks run at once.
    dashboard : str or None
        Address of Dask's dashboard.
    scheduler : str
        The scheduler's address.
    """

    executor: Any
    threads: int
    dashboard: str | None
    scheduler: str


@contextlib.contextmanager
def dask_executor(
    *,
    scheduler: str | None = None,
    local_workers: int | None = None,
    retries: int = 2,
    timeout_s: float = 30.0,
) -> Iterator[DaskRun]:
    """Connect to a Dask scheduler, or start a local cluster, and yield an executor over it.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``). Defaults to ``$ADARES_SCHEDULER``.
    local_workers : int, optional
        Start a local cluster with this many single-threaded worker processes on 127.0.0.1
        instead (with Dask's dashboard). Exactly one of ``scheduler`` (or the environment
        variable) and ``local_workers`` must be given.
    retries : int
        How many times Dask reruns a task whose worker died.
    timeout_s : float
        How long to wait for the scheduler.

    Yields
    ------
    DaskRun

    Raises
    ------
    ParameterError
        If Dask is not installed, both or neither of the two ways are given, or the scheduler
        cannot be reached.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ParameterError(
            "running on Dask needs the optional extra: pip install 'adares[dask]' (dask[distributed])"
        ) from None
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if (scheduler is None) == (local_workers is None):
        raise ParameterError(
            f"give either scheduler (--scheduler, or ${SCHEDULER_ENV}) or local_workers (--dask-workers), "
            "exactly one of them"
        )
    if retries < 0:
        raise ParameterError(f"retries must be non-negative, got {retries}")

    with contextlib.ExitStack() as stack:
        if local_workers is not None:
            if local_workers < 1:
                raise ParameterError(f"local_workers (--dask-workers) must be at least 1, got {local_workers}")
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=local_workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                )
            )
            client = stack.enter_context(Client(cluster, timeout=timeout_s))
            # Worker processes this run started (and restarts of them) are set up like the local
            # pool's; a cluster someone else runs keeps its own settings.
            client.register_plugin(_worker_setup(), name="adares-worker-setup")
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout=timeout_s))
            except (OSError, TimeoutError) as error:
                raise ParameterError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from None
        threads = sum(client.nthreads().values()) or 1
        yield DaskRun(
            executor=client.get_executor(retries=retries, pure=False),
            threads=threads,
            dashboard=client.dashboard_link,
            scheduler=str(client.scheduler.address),
        )


def _worker_setup() -> Any:
    """A Dask worker plugin giving each worker the settings of the local pool's workers."""
    from distributed import WorkerPlugin

    class WorkerSetup(WorkerPlugin):
        def setup(self, worker: Any) -> None:
            from adares.workers import keep_freed_memory, limit_threads

            limit_threads()
            keep_freed_memory()  # Dask's nanny asks for the opposite (MALLOC_TRIM_THRESHOLD_=65536)

    return WorkerSetup()
