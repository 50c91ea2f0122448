"""Where features go on disk: output paths, feature writers, and the JSONL manifest.

The manifest (:class:`Manifest`) is append-only: one JSON object per line, written and flushed as
each file finishes, so a run killed at any moment keeps the record of everything it completed. A
line cut short by the kill is ignored when reading, and the next run starts on a fresh line.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

from adares.atomic import atomic_open, atomic_write_text
from adares.errors import ParameterError
from adares.features import Features, require_finite

__all__ = [
    "FORMATS",
    "MANIFEST_NAME",
    "FAILURES_NAME",
    "output_paths",
    "write_features",
    "Manifest",
    "JsonlWriter",
    "read_jsonl",
    "rewrite_jsonl",
]

MANIFEST_NAME = "manifest.jsonl"
FAILURES_NAME = "failures.jsonl"
FORMATS = {"npz": ".npz", "hdf5": ".h5"}


def output_paths(sources: Sequence[PurePosixPath], *, format: str = "npz") -> dict[PurePosixPath, PurePosixPath]:
    """Map input paths (relative to the input folder) to output paths (relative to the output folder).

    The extension is replaced (``a/b.wav`` -> ``a/b.npz``), except when two inputs would share an
    output (``a/b.wav`` and ``a/b.flac``): then both keep their extension (``a/b.wav.npz``).

    Parameters
    ----------
    sources : sequence of PurePosixPath
        Relative input paths.
    format : str
        ``"npz"`` or ``"hdf5"``.

    Returns
    -------
    dict
        Input path -> output path, both relative.
    """
    suffix = _suffix(format)
    stems = Counter(source.with_suffix("") for source in sources)
    return {
        source: (
            source.with_suffix(suffix) if stems[source.with_suffix("")] == 1 else source.with_name(source.name + suffix)
        )
        for source in sources
    }


def write_features(features: Features, path: str | os.PathLike[str], *, format: str = "npz") -> None:
    """Write features atomically as ``.npz`` (default) or HDF5 (needs ``h5py``).

    The HDF5 layout mirrors the npz: datasets ``mel``, ``spans``, ``scores`` (when present) and
    the ``meta`` JSON string as a file attribute. Features holding NaN or Inf are refused
    (:func:`~adares.features.require_finite`), so no such file is ever written.
    """
    require_finite(features)
    _suffix(format)
    if format == "npz":
        features.save(path)
        return
    try:
        import h5py
    except ImportError:
        raise ParameterError("format 'hdf5' needs h5py: pip install 'adares[hdf5]'") from None
    with atomic_open(path, "wb") as handle, h5py.File(handle, "w") as h5:
        h5.create_dataset("mel", data=features.mel)
        h5.create_dataset("spans", data=features.spans)
        if features.scores is not None:
            h5.create_dataset("scores", data=features.scores)
        h5.attrs["meta"] = json.dumps(features.meta, sort_keys=True)


def _suffix(format: str) -> str:
    if format not in FORMATS:
        raise ParameterError(f"unknown output format {format!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[format]


class JsonlWriter:
    """Append JSON records to a file, one per line, each flushed as soon as it is written.

    If the file ends in a partial line (a killed writer), a newline is written first so the next
    record starts clean.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.jsonl`` file; created with its folder if missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = False
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                needs_newline = existing.read(1) != b"\n"
        self._handle: IO[str] | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if needs_newline:
            self._handle.write("\n")
            self._handle.flush()

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and flush it to the operating system."""
        if self._handle is None:
            raise ParameterError(f"{self.path} is closed")
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file, skipping blank lines and lines cut short by a kill.

    A missing file yields nothing.
    """
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - generator closes it below
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a partial line from a killed run: the file it describes was not finished
            if isinstance(record, dict):
                yield record


def rewrite_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Replace a JSONL file's content with ``records``, atomically."""
    atomic_write_text(path, "".join(json.dumps(record, sort_keys=True) + "\n" for record in records))


_DONE = ("ok", "skipped")
"""Statuses of a record that leave a finished feature file behind."""
_STATUSES = (*_DONE, "failed")


class Manifest:
    """The record of an output folder: ``manifest.jsonl``, one record per file and run.

    Holds every record read from the file and every record appended since, so the latest state
    of each source is known without reading the file back. Records are appended only while the
    manifest is open (``with manifest:``), each one flushed as it is written. The failure report
    beside it (``failures.jsonl``) gets each failed record as it is appended, and is reduced to
    the sources whose latest record is a failure by :meth:`compact_failures`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``manifest.jsonl`` file; a missing file is an empty manifest.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.failures_path = self.path.with_name(FAILURES_NAME)
        self.records: list[dict[str, Any]] = list(read_jsonl(self.path))
        self._writers: tuple[JsonlWriter, JsonlWriter] | None = None

    @classmethod
    def of(cls, folder: str | os.PathLike[str]) -> Manifest:
        """The manifest of an output folder."""
        return cls(Path(folder) / MANIFEST_NAME)

    def latest(self, *, config: str | None = None) -> dict[str, dict[str, Any]]:
        """The latest record of each source (ok, skipped or failed), in order of first appearance.

        Parameters
        ----------
        config : str, optional
            Consider only the records made with this configuration hash.
        """
        latest: dict[str, dict[str, Any]] = {}
        for record in self.records:
            source = record.get("source")
            if isinstance(source, str) and record.get("status") in _STATUSES:
                if config is None or record.get("config") == config:
                    latest[source] = record
        return latest

    def done(self, *, config: str | None = None) -> dict[str, dict[str, Any]]:
        """The sources whose latest record left a finished feature file (ok or skipped), with that record."""
        return {source: record for source, record in self.latest(config=config).items() if record["status"] in _DONE}

    def failure_report(self) -> list[dict[str, Any]]:
        """``source``, ``error`` and ``run`` of every source whose latest record is a failure."""
        return [
            {"source": source, "error": record.get("error"), "run": record.get("run")}
            for source, record in self.latest().items()
            if record["status"] == "failed"
        ]

    def clear(self) -> None:
        """Forget every record: empty the manifest and the failure report on disk."""
        rewrite_jsonl(self.path, [])
        rewrite_jsonl(self.failures_path, [])
        self.records = []

    def append(self, record: dict[str, Any]) -> None:
        """Append one record (flushed at once); a failed one goes to the failure report too."""
        if self._writers is None:
            raise ParameterError(f"{self.path} is not open for writing: append inside `with manifest:`")
        manifest, failures = self._writers
        manifest.write(record)
        self.records.append(record)
        if record.get("status") == "failed":
            failures.write({"source": record["source"], "error": record["error"], "run": record.get("run")})

    def compact_failures(self) -> None:
        """Rewrite the failure report from the latest state (files fixed since drop out)."""
        rewrite_jsonl(self.failures_path, self.failure_report())

    def __enter__(self) -> Manifest:
        manifest = JsonlWriter(self.path)
        try:
            self._writers = (manifest, JsonlWriter(self.failures_path))
        except BaseException:
            manifest.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writers is not None:
            for writer in self._writers:
                writer.close()
            self._writers = None
