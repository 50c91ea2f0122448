"""The worker side of a run: each process's extractor, and the processing of a batch of files.

A worker builds its extractor once (the weights load once per process) and turns each task into
one manifest record: ``ok`` once the feature file is written, or ``failed`` with the reason in one
line. One file's failure, whatever it is, never stops the others. A run that stays in one process
uses the same functions.

With ``format="shards"`` a batch's files go into the batch's own shards, and a file's record says
``ok`` only once its shard is renamed into place. Files longer than :data:`LONG_SECONDS` are
decoded, computed and written in blocks (:meth:`~adares.extractor.Extractor.stream`), so memory
does not grow with a file's length; their records are those of the in-memory path.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

from adares import __version__
from adares.audio import load_or_stream
from adares.errors import AdaresError, AudioDecodeError, OutputError
from adares.pipeline.config import ExtractConfig
from adares.pipeline.planning import Task
from adares.shards import SHARDS_DIR, ShardWriter, member_key
from adares.store import output_id, write_features, write_sample
from adares.workers import limit_threads

__all__ = ["describe", "failure_record", "one_line", "prepare", "process_batch", "process_tasks"]

_BATCH_MAX_SECONDS = 30.0
"""Files up to this long are computed together, in one front-end and estimator call per group."""
_BATCH_PADDING = 1.25
"""A group's longest file is at most this many times its shortest (bounds the padding computed)."""
LONG_SECONDS = 600.0
"""Files whose header declares more than this many seconds are streamed: decoded, computed and
written in blocks, never held whole (the in-memory path is faster for the rest)."""

_EXTRACTORS: dict[str, Any] = {}


def _worker_extractor(config: ExtractConfig) -> Any:
    """The extractor of this worker process, built on first use and kept (weights load once)."""
    limit_threads()
    key = json.dumps(asdict(config), sort_keys=True)
    extractor = _EXTRACTORS.get(key)
    if extractor is None:
        extractor = _EXTRACTORS[key] = config.build_extractor()
    return extractor


def prepare(config: ExtractConfig) -> None:
    """Build this worker's extractor ahead of its first batch (returns nothing to send back)."""
    _worker_extractor(config)


def describe(config: ExtractConfig) -> dict[str, Any]:
    """Build this worker's extractor (raising on a bad setting) and return its identity."""
    return config.identity(_worker_extractor(config))


def process_batch(tasks: list[Task], config: ExtractConfig) -> list[dict[str, Any]]:
    """Worker entry point: the records of ``tasks``, with this worker's extractor."""
    return process_tasks(tasks, _worker_extractor(config), config)


def process_tasks(tasks: list[Task], extractor: Any, config: ExtractConfig) -> list[dict[str, Any]]:
    """One record per task, in order; each failure caught and recorded for its own file.

    Short files of similar length go through the extractor together (one call per group; equal
    to one call per file, tested); longer ones one by one; the longest in blocks.
    """
    output = _Output(config)
    if len(tasks) < 2 or not getattr(extractor, "batches", False):
        return output.settle([_process_file(task, extractor, config, output) for task in tasks])
    records: list[dict[str, Any]] = [{}] * len(tasks)  # every slot is filled below
    short: list[tuple[int, Any, float]] = []  # (task index, samples, seconds spent loading)
    longest = _BATCH_MAX_SECONDS * extractor.frontend.sr
    for index, task in enumerate(tasks):
        started = time.perf_counter()
        samples, failure = _attempt(task, started, lambda task=task: _load(task, extractor, config))
        if failure is not None:
            records[index] = failure
        elif isinstance(samples, tuple) or len(samples) > longest:
            records[index] = _process_file(task, extractor, config, output, samples=samples, started=started)
        else:
            short.append((index, samples, time.perf_counter() - started))
    for group in _similar_lengths(short):
        started = time.perf_counter()
        try:
            batch = extractor.batch(
                [samples for _, samples, _ in group],
                metas=[_meta(tasks[i], extractor.frontend.sr) for i, _, _ in group],
            )
        except Exception:  # noqa: BLE001 - retried file by file, so the error lands on its own file
            for index, samples, _ in group:
                records[index] = _process_file(tasks[index], extractor, config, output, samples=samples)
            continue
        share = (time.perf_counter() - started) / len(group)
        for (index, samples, load_seconds), features in zip(group, batch, strict=True):
            task = tasks[index]
            # Its own clock: loading, its share of the group's call, then the write.
            clock = time.perf_counter() - load_seconds - share

            def write(task: Task = task, features: Any = features) -> None:
                output.write(task, features)

            _, failure = _attempt(task, clock, write)
            records[index] = failure or _ok_record(task, len(samples), features, extractor, clock)
    return output.settle(records)


class _Output:
    """Where a batch's features go: a file each, or samples of the batch's own shards.

    :meth:`settle` completes the records: a file in a shard gets the shard and its member once the
    shard is renamed into place, or fails with its shard's error.
    """

    def __init__(self, config: ExtractConfig) -> None:
        self.config = config
        self.shards: ShardWriter | None = None
        self.keys: dict[str, str] = {}  # source -> member key, for shards

    def write(self, task: Task, features: Any) -> None:
        config = self.config
        offset = features.meta.get("offset_samples")
        if offset:  # a segment's spans are in its recording's samples
            features = dataclasses.replace(features, spans=features.spans + offset)
        if config.format != "shards":
            write_features(features, task.output, format=config.format, dtype=config.dtype)
            return
        if self.shards is None:
            folder = _output_folder(task) / SHARDS_DIR
            self.shards = ShardWriter(folder, max_files=config.shard_files, max_bytes=config.shard_bytes)
        key = member_key(output_id(task.output_rel))
        write_sample(features, self.shards, key=key, dtype=config.dtype)
        self.keys[task.source_rel] = key

    def settle(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.shards is None:
            return records
        self.shards.finish()
        for _, error in self.shards.failed:
            if isinstance(error, OutputError):  # OUT is full or unwritable: the run stops (issue 16, item 4)
                raise error
        where = {key: f"{SHARDS_DIR}/{path.name}" for path, keys in self.shards.finished for key in keys}
        errors = {key: error for keys, error in self.shards.failed for key in keys}
        settled = []
        for record in records:
            key = self.keys.get(record["source"])
            if record["status"] == "ok" and key in where:
                record = record | {"output": f"{where[key]}#{key}", "shard": where[key], "member": key}
            elif record["status"] == "ok":
                error = errors.get(key)
                reason = "its shard was not written" if error is None else _reason(error)
                record = _failed(record, f"shard not written: {reason}")
            settled.append(record)
        return settled


def _output_folder(task: Task) -> Path:
    """The run's output folder: ``task.output`` less its relative part."""
    return Path(task.output).parents[len(PurePosixPath(task.output_rel).parts) - 1]


def _write_streamed(task: Task, extractor: Any, output: _Output, audio: tuple, started: float) -> dict[str, Any]:
    """Extract and write a long file in blocks (``audio`` as :func:`adares.audio.stream` gives it);
    its record is the in-memory path's."""
    num_samples, chunks = audio
    features = extractor.stream(chunks, num_samples=num_samples, meta=_meta(task, extractor.frontend.sr))
    output.write(task, features)
    return _ok_record(task, num_samples, features, extractor, started)


def _similar_lengths(items: list[tuple[int, Any, float]]) -> list[list[tuple[int, Any, float]]]:
    """Group (index, samples, seconds) items by length so padding stays within ``_BATCH_PADDING``."""
    groups: list[list[tuple[int, Any, float]]] = []
    for item in sorted(items, key=lambda item: len(item[1])):
        if groups and len(item[1]) <= _BATCH_PADDING * max(1, len(groups[-1][0][1])):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _load(task: Task, extractor: Any, config: ExtractConfig) -> Any:
    """The input's samples, or for one over :data:`LONG_SECONDS` its blocks (a tuple)."""
    return load_or_stream(
        task.source,
        sr=extractor.frontend.sr,
        channel=config.channel if task.channel is None else task.channel,
        longer_than=LONG_SECONDS,
        start=task.start,
        end=task.end,
    )


def _meta(task: Task, sr: int) -> dict[str, Any]:
    """What a feature file's meta says of its input: the source, and for a segment where it lies."""
    meta: dict[str, Any] = {"source": task.source_rel}
    if task.recording is not None:
        meta["recording"] = task.recording
    if task.is_segment:
        meta |= {"start": task.start, "end": task.end, "offset_samples": _offset(task, sr)}
    return meta


def _offset(task: Task, sr: int) -> int:
    """The sample at ``sr`` where a segment begins in its recording: what its spans are shifted by."""
    return round(task.start * sr)


def _process_file(
    task: Task,
    extractor: Any,
    config: ExtractConfig,
    output: _Output,
    *,
    samples: Any = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Load (unless ``samples`` are given), extract and write one file; a failure becomes its record."""
    started = time.perf_counter() if started is None else started

    def work() -> dict[str, Any]:
        audio = _load(task, extractor, config) if samples is None else samples
        if isinstance(audio, tuple):
            return _write_streamed(task, extractor, output, audio, started)
        features = extractor(audio, meta=_meta(task, extractor.frontend.sr))
        output.write(task, features)
        return _ok_record(task, len(audio), features, extractor, started)

    record, failure = _attempt(task, started, work)
    return failure or record


def _attempt(task: Task, started: float, work: Callable[[], Any]) -> tuple[Any, dict[str, Any] | None]:
    """Run ``work``; return (its result, None), or (None, the failure record naming the reason)."""
    try:
        return work(), None
    except OutputError:  # OUT is full or unwritable: no file is to blame, the run stops (running.py; issue 16)
        raise
    except Exception as error:  # noqa: BLE001 - one file's bug must not stop the corpus; reported per file
        return None, failure_record(task, _reason(error), started)


def _reason(error: BaseException) -> str:
    """The one-line reason a file failed, for its record."""
    if isinstance(error, AudioDecodeError):
        return error.reason
    if isinstance(error, AdaresError):
        return one_line(error)
    if isinstance(error, MemoryError):
        return "out of memory"
    return f"internal error: {type(error).__name__}: {one_line(error)}"


def _failed(record: dict[str, Any], reason: str) -> dict[str, Any]:
    """An ok record turned into the failure of its file (its timing kept)."""
    keep = ("id", "source", "output", "source_size", "source_mtime_ns", "adares_version", "seconds")
    return {key: record[key] for key in keep if key in record} | {"status": "failed", "error": reason}


def _ok_record(task: Task, num_samples: int, features: Any, extractor: Any, started: float) -> dict[str, Any]:
    return _base_record(task) | {
        "status": "ok",
        "duration": num_samples / extractor.frontend.sr,
        "fine_frames": features.num_frames if features.scores is None else len(features.scores),
        "output_frames": features.num_frames,
        "seconds": round(time.perf_counter() - started, 6),
    }


def _base_record(task: Task) -> dict[str, Any]:
    record = {
        "id": output_id(task.output_rel),
        "source": task.source_rel,
        "output": task.output_rel,
        "source_size": task.size,
        "source_mtime_ns": task.mtime_ns,
        "adares_version": __version__,
    }
    if task.recording is not None:
        record["recording"] = task.recording
    if task.is_segment:
        record |= {"start": task.start, "end": task.end}
    return record


def failure_record(task: Task, reason: str, started: float | None = None) -> dict[str, Any]:
    seconds = 0.0 if started is None else round(time.perf_counter() - started, 6)
    return _base_record(task) | {"status": "failed", "error": reason, "seconds": seconds}


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
