"""The worker side of a run: each process's extractor, and the processing of a batch of files.

A worker builds its extractor once (the weights load once per process) and turns each task into
one manifest record: ``ok`` once the feature file is written, or ``failed`` with the reason in one
line. One file's failure, whatever it is, never stops the others. A run that stays in one process
uses the same functions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import PurePosixPath
from typing import Any

from adares import __version__
from adares.audio import load
from adares.errors import AdaresError, AudioDecodeError
from adares.pipeline.config import ExtractConfig
from adares.pipeline.planning import Task
from adares.store import write_features
from adares.workers import limit_threads

__all__ = ["describe", "failure_record", "one_line", "prepare", "process_batch", "process_tasks"]

_BATCH_MAX_SECONDS = 30.0
"""Files up to this long are computed together, in one front-end and estimator call per group."""
_BATCH_PADDING = 1.25
"""A group's longest file is at most this many times its shortest (bounds the padding computed)."""

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

            def write(task: Task = task, features: Any = features) -> None:
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


def _load(task: Task, extractor: Any, config: ExtractConfig) -> Any:
    samples, _ = load(task.source, sr=extractor.frontend.sr, channel=config.channel)
    return samples


def _process_file(
    task: Task, extractor: Any, config: ExtractConfig, *, samples: Any = None, started: float | None = None
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


def _attempt(task: Task, started: float, work: Callable[[], Any]) -> tuple[Any, dict[str, Any] | None]:
    """Run ``work``; return (its result, None), or (None, the failure record naming the reason)."""
    try:
        return work(), None
    except AudioDecodeError as error:
        return None, failure_record(task, error.reason, started)
    except AdaresError as error:
        return None, failure_record(task, one_line(error), started)
    except MemoryError:
        return None, failure_record(task, "out of memory", started)
    except Exception as error:  # noqa: BLE001 - one file's bug must not stop the corpus; reported per file
        return None, failure_record(task, f"internal error: {type(error).__name__}: {one_line(error)}", started)


def _ok_record(task: Task, samples: Any, features: Any, extractor: Any, started: float) -> dict[str, Any]:
    return _base_record(task) | {
        "status": "ok",
        "duration": len(samples) / extractor.frontend.sr,
        "fine_frames": features.num_frames if features.scores is None else len(features.scores),
        "output_frames": features.num_frames,
        "seconds": round(time.perf_counter() - started, 6),
    }


def _base_record(task: Task) -> dict[str, Any]:
    return {
        "id": str(PurePosixPath(task.output_rel).with_suffix("")),
        "source": task.source_rel,
        "output": task.output_rel,
        "source_size": task.size,
        "source_mtime_ns": task.mtime_ns,
        "adares_version": __version__,
    }


def failure_record(task: Task, reason: str, started: float | None = None) -> dict[str, Any]:
    seconds = 0.0 if started is None else round(time.perf_counter() - started, 6)
    return _base_record(task) | {"status": "failed", "error": reason, "seconds": seconds}


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
