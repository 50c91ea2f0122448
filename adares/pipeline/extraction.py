""":func:`extract`, step by step, and its :class:`Summary`.

Standard library only at import: :func:`extract` starts the workers' fork server before it
imports the planning and running modules (numpy, soundfile), so the server's own imports (torch)
run meanwhile.
"""

from __future__ import annotations

import concurrent.futures as cf
import errno
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adares.atomic import os_reason
from adares.errors import OutputError, OutputLockedError, ParameterError
from adares.extensions import AUDIO_EXTENSIONS
from adares.pipeline.config import ExtractConfig
from adares.pipeline.lock import OutputLock
from adares.units import to_samples
from adares.workers import fork_server, keep_freed_memory, worker_count

if TYPE_CHECKING:
    from adares.store import Manifest, ManifestEntry

__all__ = ["Summary", "extract"]


@dataclass
class Summary:
    """What a run did. ``exit_code`` is 0 when every file succeeded and 1 when some failed."""

    output_dir: str
    config_hash: str
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def real_time_factor(self) -> float:
        """Seconds of audio processed per second of wall time."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.stopped_early else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"real_time_factor": self.real_time_factor, "exit_code": self.exit_code}


def extract(
    input_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    config: ExtractConfig | None = None,
    extensions: Iterable[str] = AUDIO_EXTENSIONS,
    jobs: int | None = None,
    executor: cf.Executor | None = None,
    overwrite: bool = False,
    fail_fast: bool = False,
    batch_size: int | None = None,
    on_plan: Callable[[int, float], None] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    dedicated_process: bool = False,
) -> Summary:
    """Extract features for every audio file under ``input_path`` into ``output_dir``.

    Stages: lock the output folder -> discover the inputs -> resolve the configuration -> plan
    (skip what an earlier run finished with the same configuration) -> map small batches of
    files over an executor -> write each file's features atomically -> append a manifest record
    per file as it finishes -> summarise. Only this process writes the manifest and the failure
    report, in the order files finish, so a killed run keeps the record of every finished file
    and a rerun resumes. Files skipped are counted, not recorded again: a rerun with nothing to
    do leaves the manifest as it was. A run whose records outnumber the sources they describe
    twice over compacts the manifest at its end (:meth:`~adares.store.Manifest.compact`).

    Parameters
    ----------
    input_path : str or os.PathLike
        Folder of audio files (recursive), one audio file, or a file describing a corpus: a
        ``.txt``/``.lst`` list of paths, a CSV with ``id,path[,start,end]``, a Kaldi ``wav.scp``
        (with its ``segments``), a lhotse manifest (:mod:`adares.inputs`). A described input's id
        names its output, and a segment's spans are in its recording's samples.
    output_dir : str or os.PathLike
        Where the feature files, ``manifest.jsonl`` and ``failures.jsonl`` go. The input folder
        tree is mirrored.
    config : ExtractConfig, optional
        Front end, compressor, reduction and format. Default: ``ExtractConfig()``.
    extensions : iterable of str
        Audio file extensions to include.
    jobs : int, optional
        Worker processes for the local process pool (default: all cores). ``1`` runs in this
        process. Ignored when ``executor`` is given. The pool's fork server runs only while
        this function does.
    executor : concurrent.futures.Executor, optional
        Where to run the work instead of a local process pool, e.g. a Dask client's executor.
        Its workers must see ``input_path`` and ``output_dir`` at the same paths.
    overwrite : bool
        Recompute everything, even files already done, and replace outputs made with another
        configuration (the old manifest and failure report are cleared).
    fail_fast : bool
        Stop at the first file that fails (files already running finish and are recorded).
    batch_size : int, optional
        Files per task; by default chosen so every worker gets several tasks.
    on_plan : callable, optional
        Called once with (number of files to process, their total declared audio seconds; for
        more than :data:`~adares.pipeline.planning.DURATION_SAMPLE` files, estimated from a
        sample of their headers).
    on_record : callable, optional
        Called with each manifest record as it is written, and with a ``skipped`` record for
        each file done before (not written), first (progress display).
    dedicated_process : bool
        This process exists for the run (a command-line tool): it may then take process-wide
        settings for the work it does itself (glibc's allocator keeps freed buffers, as in the
        workers). Off by default, so a library caller's process keeps its own settings.

    Returns
    -------
    Summary

    Raises
    ------
    ConfigMismatchError
        If ``output_dir`` holds features made with another configuration and ``overwrite`` is off.
    ParameterError
        For invalid settings or a missing input.
    ModelError
        If the compressor cannot be loaded.
    OutputLockedError
        If another run is writing ``output_dir`` (it holds ``output_dir/.adares.lock``).
    OutputError
        If ``output_dir`` is full or not writable: the run stops at once, the message says how
        many files are done; a rerun once it is fixed resumes.
    """
    started = time.perf_counter()
    config = config or ExtractConfig()
    _check_without_torch(config, jobs=jobs)
    lock = OutputLock(output_dir)
    summary = Summary(output_dir=str(Path(output_dir)), config_hash="")
    try:
        if lock.folder.is_dir():
            lock.acquire()  # before anything starts: a second run on the folder is refused at once
        _extract(
            input_path,
            output_dir,
            config=config,
            extensions=extensions,
            jobs=jobs,
            executor=executor,
            overwrite=overwrite,
            fail_fast=fail_fast,
            batch_size=batch_size,
            on_plan=on_plan,
            on_record=on_record,
            dedicated_process=dedicated_process,
            lock=lock,
            summary=summary,
        )
    except OutputLockedError:
        raise
    except OutputError as error:
        raise _stopped(error, summary=summary) from None
    finally:
        lock.release()
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _extract(
    input_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    config: ExtractConfig,
    extensions: Iterable[str],
    jobs: int | None,
    executor: cf.Executor | None,
    overwrite: bool,
    fail_fast: bool,
    batch_size: int | None,
    on_plan: Callable[[int, float], None] | None,
    on_record: Callable[[dict[str, Any]], None] | None,
    dedicated_process: bool,
    lock: OutputLock,
    summary: Summary,
) -> None:
    if dedicated_process:
        keep_freed_memory()  # this process may run the work itself (jobs=1)
    workers = worker_count(jobs)
    with fork_server(start=executor is None and workers > 1):
        # Imported once the server is starting: these import numpy and soundfile while it imports torch.
        from adares.pipeline.planning import Corpus, resolve_configuration
        from adares.pipeline.running import Runner

        corpus = Corpus.find(input_path, output_dir, format=config.format, extensions=extensions)
        runner = Runner(config, workers=workers, executor=executor)
        if runner.owns_pool and corpus.may_have_work(overwrite=overwrite):
            runner.start_workers()  # the first worker resolves the configuration while this process plans
        try:
            tasks = corpus.tasks()
            if runner.described is not None and on_plan is not None:
                # while the workers start: the headers of the files a rerun will probably do
                corpus.declared_seconds(corpus.likely_todo(tasks, overwrite=overwrite))
            resolved = resolve_configuration(
                config, manifest=corpus.manifest, described=runner.described, overwrite=overwrite
            )
            corpus.prepare_output(config_hash=resolved.config_hash, overwrite=overwrite, lock=lock)
            summary.config_hash, summary.total = resolved.config_hash, len(tasks)
            skipped, todo = corpus.split(tasks, config_hash=resolved.config_hash)
            with corpus.manifest:
                record = _Recorder(
                    corpus.manifest,
                    summary,
                    stamp={
                        "run": uuid.uuid4().hex[:12],
                        "config": resolved.config_hash,
                        "request": resolved.request,
                    },
                    on_record=on_record,
                )
                for entry in skipped:
                    record.skip(entry)
                if on_plan is not None:
                    on_plan(len(todo), corpus.declared_seconds(todo))
                summary.stopped_early = runner.run(
                    todo, extractor=resolved.extractor, batch_size=batch_size, fail_fast=fail_fast, record=record
                )
            corpus.manifest.compact_failures()
            if record.written:
                corpus.manifest.compact()  # a run that wrote nothing leaves the file as it was
        finally:
            runner.close()


def _stopped(error: OutputError, *, summary: Summary) -> OutputError:
    """The error that stops a run on its output folder, in one line: the cause, how far the run
    got, and what to do."""
    code = error.errno
    cause = os_reason(OSError(code, os.strerror(code))) if code is not None else str(error)
    full = code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)
    advice = "rerun after freeing space to resume" if full else "rerun once it is writable to resume"
    if summary.total:
        advice = f"{summary.done + summary.skipped:,} of {summary.total:,} files are done, {advice}"
    return type(error)(f"cannot write to {summary.output_dir}: {cause}; {advice}", errno=code)


class _Recorder:
    """Stamps each file's record with the run, writes it to the manifest, and counts it in the summary."""

    def __init__(
        self,
        manifest: Manifest,
        summary: Summary,
        *,
        stamp: dict[str, Any],
        on_record: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.manifest, self.summary, self.stamp, self.on_record = manifest, summary, stamp, on_record
        self.written = 0

    def skip(self, entry: ManifestEntry) -> None:
        """Count a file done before; the progress callback is told, the manifest is not."""
        self.summary.skipped += 1
        if self.on_record is not None:
            from adares.pipeline.planning import skipped_record

            self.on_record(self.stamp | skipped_record(entry.record()))

    def __call__(self, entry: dict[str, Any]) -> None:
        entry = self.stamp | entry
        self.manifest.append(entry)
        self.written += 1
        summary = self.summary
        if entry["status"] == "failed":
            summary.failed += 1
            summary.failures.append({"source": entry["source"], "error": entry["error"]})
        elif entry["status"] == "ok":
            summary.done += 1
            summary.audio_seconds += entry.get("duration") or 0.0
        else:
            summary.skipped += 1
        if self.on_record is not None:
            self.on_record(entry)


def _check_without_torch(config: ExtractConfig, *, jobs: int | None) -> None:
    """Refuse at once the mistakes that need no torch to find, before any worker starts.

    The front end checks every setting, but in a worker, after importing torch; a hop or window
    that is not a whole number of samples, the likeliest typos, raise the front end's own error
    here. Only values given with their rate: the rest is left to the front end.
    """
    if jobs is not None and jobs < 1:
        raise ParameterError(f"jobs must be at least 1, got {jobs}")
    sr = config.frontend.get("sr")
    if isinstance(sr, bool) or not isinstance(sr, int) or sr < 1:
        return
    for key, name in (("hop", "hop"), ("win", "window")):
        if key in config.frontend:
            to_samples(config.frontend[key], sr=sr, name=name)
