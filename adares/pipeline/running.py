"""Running a run's tasks: in this process, on a caller's executor, or on a local process pool.

Tasks go out in small batches, with a bounded number in flight, so a corpus of a million files
never becomes a million futures. Records come back to this process, which alone writes the
manifest, in the order files finish. A local pool whose worker died (killed, out of memory,
crashed in native code) is replaced, and its unfinished files are retried one by one, so a file
that kills its worker is isolated and the others still get done. An output folder that is full or
not writable (:class:`~adares.errors.OutputError`, from a worker or from the manifest) stops the
run at once: what is in flight is cancelled, and the error goes to the caller.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from adares.errors import OutputError
from adares.pipeline.config import ExtractConfig
from adares.pipeline.planning import Task
from adares.pipeline.worker import describe, failure_record, one_line, prepare, process_batch, process_tasks
from adares.workers import local_pool

__all__ = ["Runner"]

_MAX_RETRIES = 2
"""How often a file is resubmitted after its worker process died, before it counts as failed."""
_MAX_BATCH = 16
"""Most files per task sent to a worker (and per group when the run stays in this process)."""

Record = Callable[[dict[str, Any]], None]


class Runner:
    """Where a run's tasks go, and the local pool's life when the run owns one.

    Parameters
    ----------
    config : ExtractConfig
        What the tasks compute.
    workers : int
        Worker processes of the local pool, or tasks in flight on ``executor``.
    executor : concurrent.futures.Executor, optional
        A caller's executor. Without one, the run owns a local process pool when ``workers`` is
        more than one, and otherwise works in this process.
    """

    def __init__(self, config: ExtractConfig, *, workers: int, executor: cf.Executor | None = None) -> None:
        self.config = config
        self.workers = workers
        self.owns_pool = executor is None and workers > 1
        self.pool: cf.Executor | None = executor
        self.described: cf.Future | None = None
        """The first worker's :meth:`ExtractConfig.identity`, once :meth:`start_workers` ran."""
        self._starting: threading.Thread | None = None

    def start_workers(self) -> None:
        """Start the local pool now: every worker builds its extractor, the first describes it.

        Submitting blocks until the fork server has imported its modules, hence the thread: the
        caller plans the run meanwhile.
        """
        self.pool = local_pool(self.workers)
        self.described = cf.Future()
        self._starting = threading.Thread(
            target=_warm_up, args=(self.pool, self.workers, self.config, self.described), daemon=True
        )
        self._starting.start()

    def run(self, todo: list[Task], *, extractor: Any, batch_size: int | None, fail_fast: bool, record: Record) -> bool:
        """Process ``todo``, recording each file as it finishes; whether ``fail_fast`` stopped it early.

        ``extractor`` is used when the work stays in this process; None builds one if needed.

        Raises
        ------
        OutputError
            If the output folder is full or not writable (the files in flight are not recorded).
        """
        if self._starting is not None:
            self._starting.join()
        if self.owns_pool:
            self._fit_pool(len(todo))
        if not todo:
            return False
        if self.pool is None:
            if extractor is None:
                extractor = self.config.build_extractor()  # the configuration came from the manifest
            return self._run_here(todo, extractor, batch_size=batch_size, fail_fast=fail_fast, record=record)
        size = batch_size or max(1, min(_MAX_BATCH, len(todo) // (self.workers * 4)))
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        return self._drain(self.pool, batches, fail_fast=fail_fast, record=record)

    def close(self) -> None:
        """Shut the run's own pool down (cancelling what has not started); a caller's executor is left alone."""
        if self.owns_pool and self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def _fit_pool(self, files: int) -> None:
        """Have a working local pool when it is worth it: more than one file, or workers already started."""
        if self.pool is not None and _broke(self.described):
            self.close()  # the first worker died while starting: a new pool below, if worth it
        if self.pool is None and files > 1:
            self.pool = local_pool(self.workers)  # sources changed since the run the manifest records
        elif self.pool is not None and not files:
            self.close()  # nothing left to do after all: let the warm-up finish quietly

    def _run_here(
        self, todo: list[Task], extractor: Any, *, batch_size: int | None, fail_fast: bool, record: Record
    ) -> bool:
        size = 1 if fail_fast else batch_size or _MAX_BATCH  # fail fast: not one file past the failure
        for first in range(0, len(todo), size):
            for entry in process_tasks(todo[first : first + size], extractor, self.config):
                record(entry)
                if fail_fast and entry["status"] == "failed":
                    return True
        return False

    def _drain(self, pool: cf.Executor, batches: list[list[Task]], *, fail_fast: bool, record: Record) -> bool:
        """Keep a bounded number of batches in flight until all are recorded (or ``fail_fast`` stops)."""
        pending = list(reversed(batches))
        attempts: dict[str, int] = {}
        in_flight: dict[cf.Future, list[Task]] = {}
        limit = max(2, 4 * self.workers)
        stop = False
        try:
            while pending or in_flight:
                while pending and len(in_flight) < limit and not stop:
                    batch = pending.pop()
                    in_flight[pool.submit(process_batch, batch, self.config)] = batch
                if not in_flight:
                    break
                finished, _ = cf.wait(list(in_flight), return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    batch = in_flight.pop(future)
                    error = future.exception()
                    if isinstance(error, OutputError):
                        raise error
                    if error is None:
                        for entry in future.result():
                            record(entry)
                            stop = stop or (fail_fast and entry["status"] == "failed")
                        continue
                    if self.owns_pool and isinstance(error, BrokenProcessPool):
                        lost = [batch] + [in_flight.pop(f) for f in list(in_flight)]
                        pool.shutdown(wait=False, cancel_futures=True)
                        pool = self.pool = local_pool(self.workers)
                        pending += self._retries([task for tasks in lost for task in tasks], attempts, record)
                        break
                    for task in batch:
                        record(failure_record(task, f"worker failed: {one_line(error)}"))
                        stop = stop or fail_fast
        except OutputError:
            for future in in_flight:
                future.cancel()  # a caller's executor too: nothing more is written to a folder that refuses
            raise
        if stop:
            for future in in_flight:
                future.cancel()
        return stop

    @staticmethod
    def _retries(lost: list[Task], attempts: dict[str, int], record: Record) -> list[list[Task]]:
        """The files of a dead worker's batches as batches of one; a file out of retries is recorded failed."""
        retry = []
        for task in lost:
            attempts[task.source_rel] = attempts.get(task.source_rel, 0) + 1
            if attempts[task.source_rel] > _MAX_RETRIES:
                record(failure_record(task, "worker process died while processing this file (killed or out of memory)"))
            else:
                retry.append([task])
        return retry


def _broke(described: cf.Future | None) -> bool:
    """Whether the warm-up ended with the pool broken (a worker died, or it could not start)."""
    return described is not None and described.done() and isinstance(described.exception(), BrokenProcessPool)


def _warm_up(pool: cf.Executor, workers: int, config: ExtractConfig, described: cf.Future) -> None:
    """Have one worker describe the extractor into ``described`` and the others build theirs.

    ``described`` gets the first outcome only: the describing task's, or the failure to start
    the workers (the run may have ended first and shut the pool down, or the server died or
    was stopped by Ctrl-C), which the planning thread takes as a broken pool. Nothing is raised
    here, so this thread never prints a traceback of its own.
    """

    def relay(future: cf.Future) -> None:
        error = future.exception()
        if error is None:
            _settle(described, result=future.result())
        else:
            _settle(described, error=error)

    try:
        pool.submit(describe, config).add_done_callback(relay)
        for _ in range(workers - 1):
            pool.submit(prepare, config)
    except Exception as error:  # noqa: BLE001 - reported through `described`
        _settle(described, error=BrokenProcessPool(one_line(error)))


def _settle(future: cf.Future, *, result: Any = None, error: BaseException | None = None) -> None:
    """Give ``future`` its outcome unless it already has one (the other path got there first)."""
    with contextlib.suppress(cf.InvalidStateError):
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
