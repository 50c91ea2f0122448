"""Planning a run: the input files, the configuration, and what an earlier run already finished.

A run's output folder carries its own history (:class:`~adares.store.Manifest`): a file whose
latest record, made with this run's configuration, says it was finished, and whose source has
the same size and modification time, is skipped. A folder holds the features of one
configuration only; another is refused unless the caller asks to overwrite.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from adares.atomic import remove_stale_temporaries
from adares.audio import info
from adares.errors import AdaresError, ConfigMismatchError
from adares.pipeline.config import ExtractConfig, identity_hash
from adares.pipeline.discovery import discover
from adares.store import Manifest, output_paths

__all__ = ["Corpus", "Resolved", "Task", "resolve_configuration"]


@dataclass(frozen=True)
class Task:
    """One input file and where its features go: what a worker needs to process it."""

    source: str  # absolute
    output: str  # absolute
    source_rel: str
    output_rel: str
    size: int
    mtime_ns: int


@dataclass
class Corpus:
    """The input files of a run, the output folder, and the folder's record of earlier runs.

    Make it with :meth:`find`; :meth:`tasks` then looks at each file (its size and time).
    """

    root: Path
    out: Path
    outputs: dict[PurePosixPath, PurePosixPath]
    manifest: Manifest
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

        Raises
        ------
        ParameterError
            If ``input_path`` does not exist or ``format`` is unknown.
        """
        out = Path(output_dir)
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
        return len(self.manifest.done()) < len(self.outputs)

    def tasks(self) -> list[Task]:
        """One task per input, in discovery order, with the size and time of its source now."""
        return [_make_task(self.root, self.out, source, output) for source, output in self.outputs.items()]

    def read_durations(self, tasks: Iterable[Task]) -> None:
        """Read the declared duration of each file from its header (for the plan's audio hours)."""
        for task in tasks:
            self._seconds[task.source] = _declared_seconds(task.source)

    def declared_seconds(self, tasks: Iterable[Task]) -> float:
        """Total declared audio duration of ``tasks`` (headers read now unless already read)."""
        return sum(
            self._seconds[task.source] if task.source in self._seconds else _declared_seconds(task.source)
            for task in tasks
        )

    def prepare_output(self, *, config_hash: str, overwrite: bool) -> None:
        """Make the output folder ready for this configuration.

        Refuses a folder holding another configuration's features unless ``overwrite``; creates
        the folder; removes the temporary files of a killed run; with ``overwrite``, clears the
        manifest and the failure report.

        Raises
        ------
        ConfigMismatchError
            If the folder holds features made with another configuration and ``overwrite`` is off.
        """
        records = self.manifest.records
        others = {r.get("config") for r in records if r.get("status") == "ok" and r.get("config") != config_hash}
        if others and not overwrite:
            raise ConfigMismatchError(
                f"{self.out} already holds features made with another configuration (config {sorted(others)[0]}, "
                f"this run is {config_hash}); use another output folder, or pass overwrite=True (--overwrite) "
                "to replace them"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out)
        if overwrite:
            self.manifest.clear()

    def split(self, tasks: Sequence[Task], *, config_hash: str) -> tuple[list[dict[str, Any]], list[Task]]:
        """The records of the files an earlier run finished with this configuration and that are
        unchanged since (to record as skipped), and the tasks left to do; both in task order."""
        finished = self.manifest.done(config=config_hash)
        skipped: list[dict[str, Any]] = []
        todo: list[Task] = []
        for task in tasks:
            done_before = finished.get(task.source_rel)
            if done_before is not None and self._unchanged(done_before, task):
                skipped.append(_skipped_record(done_before))
            else:
                todo.append(task)
        return skipped, todo

    def _unchanged(self, entry: dict[str, Any], task: Task) -> bool:
        return (
            entry.get("output") == task.output_rel
            and entry.get("source_size") == task.size
            and entry.get("source_mtime_ns") == task.mtime_ns
            and (self.out / task.output_rel).is_file()
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
        for entry in reversed(manifest.records):
            if entry.get("status") == "ok" and entry.get("request") == request and isinstance(entry.get("config"), str):
                return Resolved(entry["config"], request)
    extractor = config.build_extractor()
    return Resolved(config.config_hash(extractor), request, extractor)


def _make_task(root: Path, out: Path, source: PurePosixPath, output: PurePosixPath) -> Task:
    path = root / source
    try:
        stat = path.stat()
        size, mtime_ns = stat.st_size, stat.st_mtime_ns
    except OSError:
        size, mtime_ns = -1, -1
    return Task(
        source=str(path),
        output=str(out / output),
        source_rel=source.as_posix(),
        output_rel=output.as_posix(),
        size=size,
        mtime_ns=mtime_ns,
    )


def _skipped_record(done_before: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "source", "output", "duration", "fine_frames", "output_frames", "source_size", "source_mtime_ns")
    return {key: done_before.get(key) for key in keep} | {"status": "skipped", "seconds": 0.0}


def _declared_seconds(path: str) -> float:
    try:
        return info(path).duration
    except AdaresError:
        return 0.0
