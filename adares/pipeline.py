"""``extract``: a corpus of audio files in, one feature file per input out.

Stages: discover the inputs -> plan (skip what an earlier run finished with the same
configuration) -> map small batches of files over an executor -> write each file's features
atomically -> append a manifest record per file as it finishes -> summarise.

The executor is any :class:`concurrent.futures.Executor`: a local process pool by default, or a
Dask cluster's (``distributed.Client.get_executor()``). Workers build their extractor once per
process and reuse it. Only this process writes the manifest and the failure report, in the order
files finish, so a killed run keeps the record of every finished file and a rerun resumes.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import itertools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from adares import __version__
from adares.atomic import remove_stale_temporaries
from adares.audio import AUDIO_EXTENSIONS, info, load
from adares.errors import AdaresError, AudioDecodeError, ConfigMismatchError, ParameterError
from adares.store import (
    FAILURES_NAME,
    MANIFEST_NAME,
    JsonlWriter,
    output_paths,
    read_jsonl,
    rewrite_jsonl,
    write_features,
)
from adares.units import to_samples
from adares.workers import limit_threads, local_pool, start_fork_server, worker_count

__all__ = ["ExtractConfig", "Summary", "extract", "discover", "ConfigMismatchError"]

_MAX_RETRIES = 2
"""How often a batch is resubmitted after its worker process died, before its files count as failed."""


@dataclass(frozen=True)
class ExtractConfig:
    """Everything that determines the content of the feature files.

    Parameters
    ----------
    frontend : dict
        Keyword arguments of :class:`~adares.frontend.MelFrontend` (sr, hop, win, n_fft, n_mels,
        fmin, fmax, log, preset).
    model : str
        ``"default"`` (the shipped DiffRes compressor), ``"none"`` (fine frames), ``"flux"``, a
        pretrained compressor name, or a bundle folder.
    reduction : float
        Fraction of frames merged away when a compressor runs (T' = round((1 - reduction) T)).
    format : str
        ``"npz"`` or ``"hdf5"``.
    channel : int or None
        Take this channel instead of mixing down.
    device : str
        Torch device for the workers (``cpu``, ``cuda``, ``auto``). Does not change the content.
    """

    frontend: dict[str, Any] = field(default_factory=dict)
    model: str = "default"
    reduction: float = 0.5
    format: str = "npz"
    channel: int | None = None
    device: str = "cpu"

    def build_extractor(self):  # noqa: ANN201 - Extractor protocol, imported lazily
        """Construct the front end and compressor (in the worker that will use them)."""
        from adares.registry import resolve_extractor
        from adares.frontend import MelFrontend

        frontend = MelFrontend(**self.frontend)
        return resolve_extractor(self.model, frontend=frontend, reduction=self.reduction, device=self.device)

    def identity(self, extractor: Any) -> dict[str, Any]:
        """The settings that define the output, resolved (defaults filled in, model hashed)."""
        return {
            "frontend": extractor.frontend.config(),
            "compressor": extractor.name,
            "compressor_sha256": extractor.sha256,
            "reduction": None if self.model == "none" else self.reduction,
            "format": self.format,
            "channel": self.channel,
        }

    def config_hash(self, extractor: Any) -> str:
        """Short sha256 of :meth:`identity`: equal hashes mean interchangeable outputs."""
        return _identity_hash(self.identity(extractor))


def _identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _request_hash(config: ExtractConfig) -> str:
    """Short sha256 of what a run asks for, computed without building anything (no torch).

    The settings as given (the device aside: it does not change the output), the adares version,
    and the size and modification time of every file of each folder the model name could mean
    (a shipped bundle or a path). A later run with the same request hash gets the same
    configuration hash; a manifest records both, so a rerun with nothing left to do need not
    import torch to resolve its configuration.
    """
    settings = asdict(config)
    settings.pop("device")
    return _identity_hash({"settings": settings, "adares": __version__, "model_files": _model_files(config.model)})


def _model_files(model: str) -> list[list[Any]]:
    """[path, size, mtime_ns] of the files a model name could load from (the test that resumed runs
    apply to their sources: a bundle replaced by one of the same size and time goes unnoticed)."""
    if model in ("none", "flux"):
        return []
    stamps = []
    for folder in (Path(model), Path(__file__).with_name("pretrained") / model):
        try:
            for file in sorted(entry for entry in folder.iterdir() if entry.is_file()):
                stat = file.stat()
                stamps.append([str(file.resolve()), stat.st_size, stat.st_mtime_ns])
        except OSError:  # not a folder, or changing under us: nothing to load from there now
            continue
    return stamps


def _hash_of_earlier_request(previous: Sequence[dict[str, Any]], *, request: str) -> str | None:
    """The configuration hash an earlier successful record resolved for the same request, if any."""
    for entry in reversed(previous):
        if entry.get("status") == "ok" and entry.get("request") == request and isinstance(entry.get("config"), str):
            return entry["config"]
    return None


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


@dataclass(frozen=True)
class _Task:
    source: str  # absolute
    output: str  # absolute
    source_rel: str
    output_rel: str
    size: int
    mtime_ns: int


def discover(
    input_path: str | os.PathLike[str],
    *,
    extensions: Iterable[str] = AUDIO_EXTENSIONS,
    exclude: str | os.PathLike[str] | None = None,
) -> list[PurePosixPath]:
    """Find audio files under ``input_path``, recursively, in a stable (sorted) order.

    Parameters
    ----------
    input_path : str or os.PathLike
        A folder (searched recursively) or a single file.
    extensions : iterable of str
        Extensions to include, case-insensitive, with or without the dot.
    exclude : path, optional
        A folder to skip (the output folder when it lies inside the input folder).

    Returns
    -------
    list of PurePosixPath
        Paths relative to ``input_path`` (for a single file: its name). Hidden files and folders
        (names starting with ``.``, such as macOS ``._x.wav`` companions) are skipped.

    Raises
    ------
    ParameterError
        If ``input_path`` does not exist.
    """
    root = Path(input_path)
    wanted = {("." + ext.lower().lstrip(".")) for ext in extensions}
    if root.is_file():
        return [PurePosixPath(root.name)]
    if not root.is_dir():
        raise ParameterError(f"input {str(root)!r} does not exist")
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: list[PurePosixPath] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() != excluded)
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in wanted:
                found.append(PurePosixPath((here / name).relative_to(root).as_posix()))
    return sorted(found)


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
) -> Summary:
    """Extract features for every audio file under ``input_path`` into ``output_dir``.

    Parameters
    ----------
    input_path : str or os.PathLike
        Folder of audio files (recursive), or one file.
    output_dir : str or os.PathLike
        Where the feature files, ``manifest.jsonl`` and ``failures.jsonl`` go. The input folder
        tree is mirrored.
    config : ExtractConfig, optional
        Front end, compressor, reduction and format. Default: ``ExtractConfig()``.
    extensions : iterable of str
        Audio file extensions to include.
    jobs : int, optional
        Worker processes for the local process pool (default: all cores). ``1`` runs in this
        process. Ignored when ``executor`` is given.
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
        Called once with (number of files to process, their total declared audio seconds).
    on_record : callable, optional
        Called with each manifest record as it is written (progress display).

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
    """
    started = time.perf_counter()
    config = config or ExtractConfig()
    out = Path(output_dir)
    if jobs is not None and jobs < 1:
        raise ParameterError(f"jobs must be at least 1, got {jobs}")
    _check_durations(config)
    workers = worker_count(jobs)
    own_pool = executor is None and workers > 1
    if own_pool:
        start_fork_server()  # its imports (torch) run while this process finds the files
    sources = discover(input_path, extensions=extensions, exclude=out)
    outputs = output_paths(sources, format=config.format)
    root = Path(input_path) if Path(input_path).is_dir() else Path(input_path).parent
    manifest_path, failures_path = out / MANIFEST_NAME, out / FAILURES_NAME
    previous = list(read_jsonl(manifest_path))
    pool: cf.Executor | None = executor
    starting: threading.Thread | None = None
    described: cf.Future | None = None
    if own_pool and _may_have_work(sources, previous, overwrite=overwrite):
        # Start the workers first. The first one builds the extractor, which validates every
        # setting and hashes the model, and sends back the resolved settings; meanwhile this
        # process, which never imports torch on this path, plans the run. Submitting blocks
        # until the fork server has imported its modules, hence the thread.
        pool = local_pool(workers)
        described = cf.Future()
        starting = threading.Thread(target=_warm_up_pool, args=(pool, workers, config, described), daemon=True)
        starting.start()
    try:
        tasks = [_make_task(root, out, source, outputs[source]) for source in sources]
        # While the workers start, read every header for the plan's audio hours (before the
        # configuration is known, so also those of files a resumed run will skip).
        declared = {t.source: _declared_seconds(t.source) for t in tasks} if described is not None else {}
        extractor, config_hash = None, None
        request = _request_hash(config)
        if described is not None:
            try:
                config_hash = _identity_hash(described.result())
            except cf.process.BrokenProcessPool:  # the worker died: validate here, and start afresh
                _shutdown(pool)
                pool = local_pool(workers)
        if config_hash is None and not overwrite:
            config_hash = _hash_of_earlier_request(previous, request=request)  # a rerun: resolved before
        if config_hash is None:
            # Built here once to validate every setting before any work starts, and to hash the model.
            extractor = config.build_extractor()
            config_hash = config.config_hash(extractor)
        summary = Summary(output_dir=str(out), config_hash=config_hash)
        _refuse_mixing(previous, config_hash=config_hash, out=out, overwrite=overwrite)

        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        if overwrite:
            rewrite_jsonl(manifest_path, [])
            rewrite_jsonl(failures_path, [])
            previous = []
        finished = _finished_sources(previous, config_hash=config_hash)
        run_id = uuid.uuid4().hex[:12]
        todo: list[_Task] = []
        written: list[dict[str, Any]] = []
        with JsonlWriter(manifest_path) as manifest, JsonlWriter(failures_path) as failures:

            def record(entry: dict[str, Any]) -> None:
                entry = {"run": run_id, "config": config_hash, "request": request} | entry
                manifest.write(entry)
                written.append(entry)
                if entry["status"] == "failed":
                    failures.write({"source": entry["source"], "error": entry["error"], "run": run_id})
                    summary.failed += 1
                    summary.failures.append({"source": entry["source"], "error": entry["error"]})
                elif entry["status"] == "ok":
                    summary.done += 1
                    summary.audio_seconds += entry.get("duration") or 0.0
                else:
                    summary.skipped += 1
                if on_record is not None:
                    on_record(entry)

            for task in tasks:
                done_before = finished.get(task.source_rel)
                if done_before is not None and _unchanged(done_before, task, out):
                    record(_skipped_record(done_before))
                else:
                    todo.append(task)
            summary.total = len(sources)
            if on_plan is not None:
                seconds = (declared[t.source] if t.source in declared else _declared_seconds(t.source) for t in todo)
                on_plan(len(todo), sum(seconds))

            if starting is not None:
                starting.join()
            if own_pool and pool is None and len(todo) > 1:
                pool = local_pool(workers)  # sources changed since the run the manifest records
            elif own_pool and pool is not None and not todo:
                _shutdown(pool)  # nothing left to do after all: let the warm-up finish quietly
                pool = None
            if pool is None and todo and extractor is None:
                extractor = config.build_extractor()  # the configuration came from the manifest
            summary.stopped_early, pool = _run_tasks(
                todo,
                config=config,
                pool=pool,
                own_pool=own_pool,
                workers=workers,
                batch_size=batch_size,
                fail_fast=fail_fast,
                local_extractor=extractor,
                record=record,
            )
    finally:
        if own_pool and pool is not None:
            _shutdown(pool)

    _compact_failures(failures_path, records=itertools.chain(previous, written))
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _check_durations(config: ExtractConfig) -> None:
    """Raise the front end's own error for a hop or window that is not a whole number of samples.

    The front end checks every setting, but in a worker, after importing torch (seconds); these
    two, the likeliest to be mistyped, need no torch and are checked here at once. Only values
    given with their rate: the rest is left to the front end.
    """
    sr = config.frontend.get("sr")
    if isinstance(sr, bool) or not isinstance(sr, int) or sr < 1:
        return
    for key, name in (("hop", "hop"), ("win", "window")):
        if key in config.frontend:
            to_samples(config.frontend[key], sr=sr, name=name)


def _refuse_mixing(previous: Sequence[dict[str, Any]], *, config_hash: str, out: Path, overwrite: bool) -> None:
    others = {r.get("config") for r in previous if r.get("status") == "ok" and r.get("config") != config_hash}
    if others and not overwrite:
        raise ConfigMismatchError(
            f"{out} already holds features made with another configuration (config {sorted(others)[0]}, "
            f"this run is {config_hash}); use another output folder, or --overwrite to replace them"
        )


def _may_have_work(sources: list[Path], previous: list[dict[str, Any]], *, overwrite: bool) -> bool:
    """Whether a run may have files to process, judged before the configuration is hashed.

    A cheap upper bound used only to start the workers early: a folder whose manifest already
    holds a successful record for as many sources as there are is probably a no-op rerun.
    """
    if overwrite:
        return bool(sources)
    ok = {entry.get("source") for entry in previous if entry.get("status") == "ok"}
    return len(ok) < len(sources)


def _finished_sources(previous: Sequence[dict[str, Any]], *, config_hash: str) -> dict[str, dict[str, Any]]:
    """The latest successful record of each source made with this configuration."""
    finished: dict[str, dict[str, Any]] = {}
    for entry in previous:
        source = entry.get("source")
        if not isinstance(source, str) or entry.get("config") != config_hash:
            continue
        if entry.get("status") == "ok":
            finished[source] = entry
        elif entry.get("status") == "failed":
            finished.pop(source, None)
    return finished


def _unchanged(entry: dict[str, Any], task: _Task, out: Path) -> bool:
    return (
        entry.get("output") == task.output_rel
        and entry.get("source_size") == task.size
        and entry.get("source_mtime_ns") == task.mtime_ns
        and (out / task.output_rel).is_file()
    )


def _skipped_record(done_before: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "source", "output", "duration", "fine_frames", "output_frames", "source_size", "source_mtime_ns")
    return {key: done_before.get(key) for key in keep} | {"status": "skipped", "seconds": 0.0}


def _make_task(root: Path, out: Path, source: PurePosixPath, output: PurePosixPath) -> _Task:
    path = root / source
    try:
        stat = path.stat()
        size, mtime_ns = stat.st_size, stat.st_mtime_ns
    except OSError:
        size, mtime_ns = -1, -1
    return _Task(
        source=str(path),
        output=str(out / output),
        source_rel=source.as_posix(),
        output_rel=output.as_posix(),
        size=size,
        mtime_ns=mtime_ns,
    )


def _declared_seconds(path: str) -> float:
    try:
        return info(path).duration
    except AdaresError:
        return 0.0


def _compact_failures(failures_path: Path, *, records: Iterable[dict[str, Any]]) -> None:
    """Keep in failures.jsonl only the files whose latest record is a failure (fixed files drop out).

    ``records`` is the whole manifest in order: the earlier runs' records, then this run's (kept
    in memory rather than read back, which took a second for a manifest of 45,000 lines).
    """
    latest: dict[str, dict[str, Any]] = {}
    for entry in records:
        if isinstance(entry.get("source"), str):
            latest[entry["source"]] = entry
    rewrite_jsonl(
        failures_path,
        [
            {"source": source, "error": entry.get("error"), "run": entry.get("run")}
            for source, entry in latest.items()
            if entry.get("status") == "failed"
        ],
    )


# --------------------------------------------------------------------------------------------
# Running the work


def _run_tasks(
    todo: list[_Task],
    *,
    config: ExtractConfig,
    pool: cf.Executor | None,
    own_pool: bool,
    workers: int,
    batch_size: int | None,
    fail_fast: bool,
    local_extractor: Any,
    record: Callable[[dict[str, Any]], None],
) -> tuple[bool, cf.Executor | None]:
    """Process ``todo``; return (stopped early by ``fail_fast``, the pool now in use)."""
    if not todo:
        return False, pool
    if pool is None:
        size = 1 if fail_fast else batch_size or _MAX_BATCH  # fail fast: not one file past the failure
        for first in range(0, len(todo), size):
            for entry in _process_tasks(todo[first : first + size], local_extractor, config):
                record(entry)
                if fail_fast and entry["status"] == "failed":
                    return True, pool
        return False, pool
    size = batch_size or max(1, min(_MAX_BATCH, len(todo) // (workers * 4)))
    batches = [todo[i : i + size] for i in range(0, len(todo), size)]
    return _drain(
        batches, pool=pool, own_pool=own_pool, workers=workers, config=config, fail_fast=fail_fast, record=record
    )


def _drain(
    batches: list[list[_Task]],
    *,
    pool: cf.Executor,
    own_pool: bool,
    workers: int,
    config: ExtractConfig,
    fail_fast: bool,
    record: Callable[[dict[str, Any]], None],
) -> tuple[bool, cf.Executor]:
    # Bounded in-flight work: a corpus of a million files must not become a million futures.
    pending = list(reversed(batches))
    attempts: dict[str, int] = {}
    in_flight: dict[cf.Future, list[_Task]] = {}
    limit = max(2, 4 * workers)
    stop = False
    while pending or in_flight:
        while pending and len(in_flight) < limit and not stop:
            batch = pending.pop()
            in_flight[pool.submit(_process_batch, batch, config)] = batch
        if not in_flight:
            break
        finished, _ = cf.wait(list(in_flight), return_when=cf.FIRST_COMPLETED)
        for future in finished:
            batch = in_flight.pop(future)
            error = future.exception()
            if error is None:
                for entry in future.result():
                    record(entry)
                    stop = stop or (fail_fast and entry["status"] == "failed")
                continue
            if own_pool and isinstance(error, cf.process.BrokenProcessPool):
                # A worker died (killed, out of memory, crashed in native code). The pool is unusable:
                # start a new one and retry the unfinished batches one file at a time, so a file
                # that kills its worker is isolated and the others still get done.
                batches_left = [batch] + [in_flight.pop(f) for f in list(in_flight)]
                pool.shutdown(wait=False, cancel_futures=True)
                pool = local_pool(workers)
                for lost in batches_left:
                    for task in lost:
                        attempts[task.source_rel] = attempts.get(task.source_rel, 0) + 1
                        if attempts[task.source_rel] > _MAX_RETRIES:
                            record(
                                _failure(
                                    task, "worker process died while processing this file (killed or out of memory)"
                                )
                            )
                        else:
                            pending.append([task])
                break
            for task in batch:
                record(_failure(task, f"worker failed: {_one_line(error)}"))
                stop = stop or fail_fast
    if stop:
        for future in in_flight:
            future.cancel()
    return stop, pool


def _shutdown(pool: cf.Executor) -> None:
    pool.shutdown(wait=True, cancel_futures=True)


_EXTRACTORS: dict[str, Any] = {}


def _worker_extractor(config: ExtractConfig) -> Any:
    """The extractor of this worker process, built on first use and kept (weights load once)."""
    limit_threads()
    key = json.dumps(asdict(config), sort_keys=True)
    extractor = _EXTRACTORS.get(key)
    if extractor is None:
        extractor = _EXTRACTORS[key] = config.build_extractor()
    return extractor


def _warm_up(config: ExtractConfig) -> None:
    _worker_extractor(config)


def _describe(config: ExtractConfig) -> dict[str, Any]:
    """Worker side of the start-up: build the extractor (raising on a bad setting), return its identity."""
    return config.identity(_worker_extractor(config))


def _warm_up_pool(pool: cf.Executor, workers: int, config: ExtractConfig, described: cf.Future) -> None:
    """Have one worker describe the extractor into ``described`` and the others build theirs.

    ``described`` gets the first outcome only: the describing task's, or the failure to start
    the workers (the run may have ended first and shut the pool down, or the server died or
    was stopped by Ctrl-C), which the planning thread takes as a broken pool. Nothing is raised
    here, so this thread never prints a traceback of its own.
    """

    def settle(result: Any = None, error: BaseException | None = None) -> None:
        with contextlib.suppress(cf.InvalidStateError):  # already settled by the other path
            if error is None:
                described.set_result(result)
            else:
                described.set_exception(error)

    def relay(future: cf.Future) -> None:
        error = future.exception()
        if error is None:
            settle(future.result())
        else:
            settle(error=error)

    try:
        pool.submit(_describe, config).add_done_callback(relay)
        for _ in range(workers - 1):
            pool.submit(_warm_up, config)
    except Exception as error:  # noqa: BLE001 - reported through `described`
        settle(error=cf.process.BrokenProcessPool(_one_line(error)))


_BATCH_MAX_SECONDS = 30.0
"""Files up to this long are computed together, in one front-end and estimator call per group."""
_BATCH_PADDING = 1.25
"""A group's longest file is at most this many times its shortest (bounds the padding computed)."""


_MAX_BATCH = 16
"""Most files per task sent to a worker (and per group when the run stays in this process)."""


def _process_batch(tasks: list[_Task], config: ExtractConfig) -> list[dict[str, Any]]:
    """Worker entry point: the records of ``tasks``, with this worker's extractor."""
    return _process_tasks(tasks, _worker_extractor(config), config)


def _process_tasks(tasks: list[_Task], extractor: Any, config: ExtractConfig) -> list[dict[str, Any]]:
    """One record per task, in order; each failure caught and recorded for its own file.

    Short files of similar length go through the extractor together (one call per group; equal
    to one call per file, tested); long files one by one, in blocks.
    """
    if len(tasks) < 2 or not getattr(extractor, "batches", False):
        return [_process_file(task, extractor, config) for task in tasks]
    records: list[dict[str, Any]] = [{}] * len(tasks)  # every slot is filled below
    short: list[tuple[int, Any, float]] = []  # (task index, samples, seconds spent loading)
    longest = _BATCH_MAX_SECONDS * extractor.frontend.sr
    for index, task in enumerate(tasks):
        started = time.perf_counter()
        samples, failure = _attempt(task, started, lambda task=task: _load(task, extractor, config))
        if failure is not None:
            records[index] = failure
        elif len(samples) > longest:
            records[index] = _process_file(task, extractor, config, samples=samples, started=started)
        else:
            short.append((index, samples, time.perf_counter() - started))
    for group in _similar_lengths(short):
        started = time.perf_counter()
        try:
            batch = extractor.batch(
                [samples for _, samples, _ in group], metas=[{"source": tasks[i].source_rel} for i, _, _ in group]
            )
        except Exception:  # noqa: BLE001 - retried file by file, so the error lands on its own file
            for index, samples, _ in group:
                records[index] = _process_file(tasks[index], extractor, config, samples=samples)
            continue
        share = (time.perf_counter() - started) / len(group)
        for (index, samples, load_seconds), features in zip(group, batch, strict=True):
            task = tasks[index]
            # Its own clock: loading, its share of the group's call, then the write.
            clock = time.perf_counter() - load_seconds - share

            def write(task: _Task = task, features: Any = features) -> None:
                write_features(features, task.output, format=config.format)

            _, failure = _attempt(task, clock, write)
            records[index] = failure or _ok_record(task, samples, features, extractor, clock)
    return records


def _similar_lengths(items: list[tuple[int, Any, float]]) -> list[list[tuple[int, Any, float]]]:
    """Group (index, samples, seconds) items by length so padding stays within ``_BATCH_PADDING``."""
    groups: list[list[tuple[int, Any, float]]] = []
    for item in sorted(items, key=lambda item: len(item[1])):
        if groups and len(item[1]) <= _BATCH_PADDING * max(1, len(groups[-1][0][1])):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _load(task: _Task, extractor: Any, config: ExtractConfig) -> Any:
    samples, _ = load(task.source, sr=extractor.frontend.sr, channel=config.channel)
    return samples


def _process_file(
    task: _Task, extractor: Any, config: ExtractConfig, *, samples: Any = None, started: float | None = None
) -> dict[str, Any]:
    """Load (unless ``samples`` are given), extract and write one file; a failure becomes its record."""
    started = time.perf_counter() if started is None else started

    def work() -> dict[str, Any]:
        audio = _load(task, extractor, config) if samples is None else samples
        features = extractor(audio, meta={"source": task.source_rel})
        write_features(features, task.output, format=config.format)
        return _ok_record(task, audio, features, extractor, started)

    record, failure = _attempt(task, started, work)
    return failure or record


def _attempt(task: _Task, started: float, work: Callable[[], Any]) -> tuple[Any, dict[str, Any] | None]:
    """Run ``work``; return (its result, None), or (None, the failure record naming the reason)."""
    try:
        return work(), None
    except AudioDecodeError as error:
        return None, _failure(task, error.reason, started)
    except AdaresError as error:
        return None, _failure(task, _one_line(error), started)
    except MemoryError:
        return None, _failure(task, "out of memory", started)
    except Exception as error:  # noqa: BLE001 - one file's bug must not stop the corpus; reported per file
        return None, _failure(task, f"internal error: {type(error).__name__}: {_one_line(error)}", started)


def _ok_record(task: _Task, samples: Any, features: Any, extractor: Any, started: float) -> dict[str, Any]:
    return _base_record(task) | {
        "status": "ok",
        "duration": len(samples) / extractor.frontend.sr,
        "fine_frames": features.num_frames if features.scores is None else len(features.scores),
        "output_frames": features.num_frames,
        "seconds": round(time.perf_counter() - started, 6),
    }


def _base_record(task: _Task) -> dict[str, Any]:
    return {
        "id": str(PurePosixPath(task.output_rel).with_suffix("")),
        "source": task.source_rel,
        "output": task.output_rel,
        "source_size": task.size,
        "source_mtime_ns": task.mtime_ns,
        "adares_version": __version__,
    }


def _failure(task: _Task, reason: str, started: float | None = None) -> dict[str, Any]:
    seconds = 0.0 if started is None else round(time.perf_counter() - started, 6)
    return _base_record(task) | {"status": "failed", "error": reason, "seconds": seconds}


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
