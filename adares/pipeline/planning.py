"""Planning a run: the input files, the configuration, and what an earlier run already finished.

A run's output folder carries its own history (:class:`~adares.store.Manifest`): a file whose
latest record, made with this run's configuration, says it was finished, and whose source has
the same size and modification time, is skipped (and not recorded again: the manifest grows only
when something happens to a file). A folder holds the features of one configuration only;
another is refused unless the caller asks to overwrite. Only the run holding the folder's lock
(:class:`~adares.pipeline.lock.OutputLock`) prepares and writes it.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import random
from collections.abc import Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from adares.atomic import output_errors, remove_stale_temporaries
from adares.audio import info
from adares.errors import AdaresError, ConfigMismatchError
from adares.inputs import InputItem, describes_corpus, read_inputs
from adares.pipeline.config import ExtractConfig, identity_hash
from adares.pipeline.discovery import discover
from adares.pipeline.lock import OutputLock
from adares.store import (
    Manifest,
    ManifestEntry,
    named_output_paths,
    output_id,
    output_paths,
    remove_unrecorded_shards,
    stored_file,
)

__all__ = ["DURATION_SAMPLE", "Corpus", "Resolved", "Task", "resolve_configuration", "skipped_record"]

DURATION_SAMPLE = 2000
"""Most headers read for a plan's audio duration: beyond, a fixed random sample of this many files,
scaled to the count (a header costs a fraction of a millisecond; a million would take minutes)."""


@dataclass(frozen=True)
class Task:
    """One input and where its features go: what a worker needs to process it.

    An input of a described corpus (:mod:`adares.inputs`) is named by its id (``source_rel``),
    and may be a segment (``start``, ``end`` in seconds) or one ``channel`` of its recording.
    """

    source: str  # the audio file: absolute, or relative to the working folder
    output: str  # absolute
    source_rel: str  # the manifest's key: the path under the input folder, or the input's id
    output_rel: str
    size: int
    mtime_ns: int
    start: float = 0.0
    end: float | None = None
    channel: int | None = None
    recording: str | None = None  # the audio file as the corpus description names it

    @property
    def is_segment(self) -> bool:
        """Whether the input is a part of its recording rather than all of it."""
        return self.start > 0.0 or self.end is not None


@dataclass
class Corpus:
    """The input files of a run, the output folder, and the folder's record of earlier runs.

    Make it with :meth:`find`; :meth:`tasks` then looks at each file (its size and time).
    """

    root: Path
    out: Path
    outputs: dict[PurePosixPath, PurePosixPath]
    manifest: Manifest
    items: dict[str, InputItem] | None = None  # by id, for a described corpus
    _seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def find(
        cls,
        input_path: str | os.PathLike[str],
        output_dir: str | os.PathLike[str],
        *,
        format: str,
        extensions: Iterable[str],
    ) -> Corpus:
        """Discover the inputs and their output paths, and read the output folder's manifest.

        ``input_path`` is a folder, an audio file, or a file describing a corpus (a list, a CSV,
        a Kaldi ``wav.scp``, a lhotse manifest: :func:`adares.inputs.read_inputs`), whose ids
        name the outputs.

        Raises
        ------
        ParameterError
            If ``input_path`` does not exist, ``format`` is unknown, or a described corpus has a
            malformed entry or an id that would escape the output folder or repeat.
        """
        out = Path(output_dir)
        if describes_corpus(input_path):
            items = {item.id: item for item in read_inputs(input_path)}
            outputs = named_output_paths(list(items), format=format)
            return cls(root=Path(input_path).parent, out=out, outputs=outputs, manifest=Manifest.of(out), items=items)
        outputs = output_paths(discover(input_path, extensions=extensions, exclude=out), format=format)
        root = Path(input_path) if Path(input_path).is_dir() else Path(input_path).parent
        return cls(root=root, out=out, outputs=outputs, manifest=Manifest.of(out))

    def may_have_work(self, *, overwrite: bool) -> bool:
        """Whether the run may have files to process, judged before the configuration is known.

        A cheap upper bound used only to start the workers early: a folder whose manifest already
        shows as many finished sources as there are inputs is probably a rerun with nothing to do.
        """
        if overwrite:
            return bool(self.outputs)
        return len(self.manifest.finished()) < len(self.outputs)

    def tasks(self) -> list[Task]:
        """One task per input, in discovery order, with the size and time of its source now."""
        root, out = str(self.root), str(self.out)
        if self.items is not None:
            return [
                _described_task(self.items[source.as_posix()], out, output) for source, output in self.outputs.items()
            ]
        return [_make_task(root, out, source, output) for source, output in self.outputs.items()]

    def likely_todo(self, tasks: Sequence[Task], *, overwrite: bool) -> list[Task]:
        """The tasks an earlier run did not finish unchanged, whatever its configuration: the files
        to do, judged before the configuration is known (a folder holds one configuration)."""
        if overwrite:
            return list(tasks)
        finished = self.manifest.finished()
        return [task for task in tasks if not self._finished_unchanged(finished.get(task.source_rel), task)]

    def declared_seconds(self, tasks: Sequence[Task]) -> float:
        """Total declared audio duration of ``tasks``, from their headers (read once, kept).

        Up to :data:`DURATION_SAMPLE` files, exact; beyond, estimated from a fixed random sample
        of that many, so a plan never reads every header of a large corpus.
        """
        if len(tasks) <= DURATION_SAMPLE:
            return sum(self._declared(task) for task in tasks)
        sample = random.Random(len(tasks)).sample(range(len(tasks)), DURATION_SAMPLE)
        return sum(self._declared(tasks[index]) for index in sample) * len(tasks) / DURATION_SAMPLE

    def _declared(self, task: Task) -> float:
        if task.end is not None:  # a segment with an end: no header to read
            return task.end - task.start
        seconds = self._seconds.get(task.source)
        if seconds is None:
            seconds = self._seconds[task.source] = _declared_seconds(task.source)
        return max(0.0, seconds - task.start)

    def prepare_output(self, *, config_hash: str, overwrite: bool, lock: OutputLock | None = None) -> None:
        """Make the output folder ready for this configuration.

        Refuses a folder holding another configuration's features unless ``overwrite``; creates
        the folder; takes ``lock`` if not yet held (the folder did not exist when the run began:
        a manifest another run wrote meanwhile is read again); removes the temporary files of a
        killed run; with ``overwrite``, clears the manifest and the failure report.

        Raises
        ------
        ConfigMismatchError
            If the folder holds features made with another configuration and ``overwrite`` is off.
        OutputLockedError
            If another run holds ``lock``.
        OutputError
            If the folder cannot be created or written.
        """
        self._refuse_other_configuration(config_hash, overwrite=overwrite)
        with output_errors(self.out):
            self.out.mkdir(parents=True, exist_ok=True)
        if lock is not None and not lock.held:
            lock.acquire()
            if self.manifest.path.exists():
                self.manifest = Manifest(self.manifest.path)
                self._refuse_other_configuration(config_hash, overwrite=overwrite)
        with output_errors(self.out):
            remove_stale_temporaries(self.out)
            if overwrite:
                self.manifest.clear()
            remove_unrecorded_shards(self.out, (entry.record() for entry in self.manifest.entries().values()))

    def _refuse_other_configuration(self, config_hash: str, *, overwrite: bool) -> None:
        others = self.manifest.configs() - {config_hash}
        if others and not overwrite:
            raise ConfigMismatchError(
                f"{self.out} already holds features made with another configuration "
                f"(config {sorted(map(str, others))[0]}, this run is {config_hash}); use another output folder, "
                "or pass overwrite=True (--overwrite) to replace them"
            )

    def split(self, tasks: Sequence[Task], *, config_hash: str) -> tuple[list[ManifestEntry], list[Task]]:
        """The manifest entries of the files an earlier run finished with this configuration and
        that are unchanged since (skipped: counted, not recorded again), and the tasks left to do;
        both in task order."""
        finished = self.manifest.finished(config=config_hash)
        skipped: list[ManifestEntry] = []
        todo: list[Task] = []
        for task in tasks:
            entry = finished.get(task.source_rel)
            if self._finished_unchanged(entry, task):
                skipped.append(entry)
            else:
                todo.append(task)
        return skipped, todo

    def _finished_unchanged(self, entry: ManifestEntry | None, task: Task) -> bool:
        # the size and time first: they rule out most changed files without parsing the record
        if entry is None or entry.source_size != task.size or entry.source_mtime_ns != task.mtime_ns:
            return False
        if entry.output == task.output_rel:  # a file of its own: no need to parse the record either
            return os.path.isfile(task.output)
        return self._unchanged(entry.record(), task)

    def _unchanged(self, entry: dict[str, Any], task: Task) -> bool:
        return (
            (
                entry.get("output") == task.output_rel
                or ("shard" in entry and entry.get("id") == output_id(task.output_rel))
            )
            and entry.get("source_size") == task.size
            and entry.get("source_mtime_ns") == task.mtime_ns
            and (self.out / stored_file(entry)).is_file()
        )


@dataclass(frozen=True)
class Resolved:
    """The configuration a run computes, identified.

    Attributes
    ----------
    config_hash : str
        :meth:`ExtractConfig.config_hash` of the resolved settings.
    request : str
        :meth:`ExtractConfig.request_hash` of the settings as given.
    extractor : object or None
        The extractor, when it had to be built in this process to find the hash.
    """

    config_hash: str
    request: str
    extractor: Any = None


def resolve_configuration(
    config: ExtractConfig, *, manifest: Manifest, described: cf.Future | None, overwrite: bool
) -> Resolved:
    """Find the configuration hash of a run, the cheapest way that is sure.

    In order: from a worker that built the extractor and described it (``described``; a worker
    that died is no answer); from an earlier successful record of the same request (not with
    ``overwrite``); else by building the extractor here, which validates every setting.

    Raises
    ------
    ParameterError, ModelError
        For a setting the extractor refuses, whether a worker or this process built it.
    """
    request = config.request_hash()
    if described is not None:
        try:
            return Resolved(identity_hash(described.result()), request)
        except BrokenProcessPool:
            pass  # the worker died: resolved below, and the run starts new workers
    if not overwrite:
        earlier = manifest.config_of(request)
        if earlier is not None:
            return Resolved(earlier, request)
    extractor = config.build_extractor()
    return Resolved(config.config_hash(extractor), request, extractor)


def _size_and_time(path: str) -> tuple[int, int]:
    """A source's size and modification time, what resume compares; (-1, -1) when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


def _make_task(root: str, out: str, source: PurePosixPath, output: PurePosixPath) -> Task:
    # strings, not paths: this runs once per input of a corpus of any size
    source_rel, output_rel = source.as_posix(), output.as_posix()
    path = os.path.join(root, source_rel)
    size, mtime_ns = _size_and_time(path)
    return Task(
        source=path,
        output=os.path.join(out, output_rel),
        source_rel=source_rel,
        output_rel=output_rel,
        size=size,
        mtime_ns=mtime_ns,
    )


def _described_task(item: InputItem, out: str, output: PurePosixPath) -> Task:
    path = str(item.path)
    size, mtime_ns = _size_and_time(path)
    output_rel = output.as_posix()
    return Task(
        source=path,
        output=os.path.join(out, output_rel),
        source_rel=item.id,
        output_rel=output_rel,
        size=size,
        mtime_ns=mtime_ns,
        start=item.start,
        end=item.end,
        channel=item.channel,
        recording=path,
    )


def skipped_record(done_before: dict[str, Any]) -> dict[str, Any]:
    """What the progress callback is told of a file skipped as done before (never written to the manifest)."""
    keep = ("id", "source", "output", "duration", "fine_frames", "output_frames", "source_size", "source_mtime_ns")
    keep += ("shard", "member") if "shard" in done_before else ()
    return {key: done_before.get(key) for key in keep} | {"status": "skipped", "seconds": 0.0}


def _declared_seconds(path: str) -> float:
    try:
        return info(path).duration
    except AdaresError:
        return 0.0
