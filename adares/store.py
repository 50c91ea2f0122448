"""Where features go on disk: output paths, feature writers, and the JSONL manifest.

The manifest (:class:`Manifest`) is append-only: one JSON object per line, written and flushed as
each file finishes, so a run killed at any moment keeps the record of everything it completed. A
line cut short by the kill is ignored when reading, and the next run starts on a fresh line.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from adares.atomic import atomic_open, atomic_write_text
from adares.errors import ParameterError
from adares.features import Features, load_features, require_finite
from adares.shards import Member, ShardWriter, npy_header, npy_member, read_member

__all__ = [
    "FORMATS",
    "DTYPES",
    "MANIFEST_NAME",
    "FAILURES_NAME",
    "output_paths",
    "write_features",
    "write_sample",
    "read_features",
    "feature_members",
    "Manifest",
    "JsonlWriter",
    "read_jsonl",
    "rewrite_jsonl",
]

MANIFEST_NAME = "manifest.jsonl"
FAILURES_NAME = "failures.jsonl"
FORMATS = {"npz": ".npz", "hdf5": ".h5", "shards": ".tar"}
"""Output formats and the suffix of each one's per-file output path (for shards, the path only
names the sample: the features go into a shard under ``shards/``)."""
DTYPES = ("float32", "float16")
"""Data types ``mel`` can be written in; spans stay int64 and scores float32."""
_ZIP64_FROM = 1 << 31
"""npz members from this size on are written with zip64 sizes."""


def output_paths(sources: Sequence[PurePosixPath], *, format: str = "npz") -> dict[PurePosixPath, PurePosixPath]:
    """Map input paths (relative to the input folder) to output paths (relative to the output folder).

    The extension is replaced (``a/b.wav`` -> ``a/b.npz``), except when two inputs would share an
    output (``a/b.wav`` and ``a/b.flac``): then both keep their extension (``a/b.wav.npz``).

    Parameters
    ----------
    sources : sequence of PurePosixPath
        Relative input paths.
    format : str
        ``"npz"``, ``"hdf5"`` or ``"shards"`` (``a/b.tar``: names the sample, whose key is
        :func:`~adares.shards.member_key` of the path without suffix).

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


def write_features(features: Any, path: str | os.PathLike[str], *, format: str = "npz", dtype: str = "float32") -> None:
    """Write features atomically as ``.npz`` (default) or HDF5 (needs ``h5py``).

    The HDF5 layout mirrors the npz: datasets ``mel``, ``spans``, ``scores`` (when present) and
    the ``meta`` JSON string as a file attribute. Features holding NaN or Inf are refused
    (:func:`~adares.features.require_finite`), so no such file is ever written.

    Parameters
    ----------
    features : Features or StreamedFeatures
        In memory, or a long file's features whose rows are computed while they are written
        (:class:`~adares.extractor.StreamedFeatures`: the ``mel`` array is written in pieces and
        never held whole).
    path : str or os.PathLike
        The file to write.
    format : str
        ``"npz"`` or ``"hdf5"`` (shards are written by :func:`write_sample`).
    dtype : str
        ``"float32"`` or ``"float16"`` for ``mel`` (half the size; the meta then records
        ``"dtype": "float16"``).
    """
    _check_dtype(dtype)
    if _suffix(format) == ".tar":
        raise ParameterError("format 'shards' writes samples into shards: use write_sample with a ShardWriter")
    streamed = not isinstance(features, Features)
    _require_finite(features)
    if format == "npz" and dtype == "float32" and not streamed:
        features.save(path)
        return
    if format == "npz":
        members, meta = feature_members(features, dtype=dtype)
        _write_npz(path, [*members, npy_member("meta.npy", np.array(json.dumps(meta, sort_keys=True)))])
        return
    try:
        import h5py
    except ImportError:
        raise ParameterError("format 'hdf5' needs h5py: pip install 'adares[hdf5]'") from None
    with atomic_open(path, "wb") as handle, h5py.File(handle, "w") as h5:
        if streamed:
            mel = h5.create_dataset("mel", shape=(features.num_frames, features.num_mels), dtype=dtype)
            first = 0
            for rows in _checked_rows(features, dtype=dtype):
                mel[first : first + len(rows)] = rows
                first += len(rows)
        else:
            h5.create_dataset("mel", data=_checked_mel(features, dtype=dtype))
        h5.create_dataset("spans", data=features.spans)
        if features.scores is not None:
            h5.create_dataset("scores", data=features.scores)
        h5.attrs["meta"] = json.dumps(_meta(features, dtype=dtype), sort_keys=True)


def write_sample(features: Any, writer: ShardWriter, *, key: str, dtype: str = "float32") -> None:
    """Append one file's features to a shard as a WebDataset sample (``<key>.mel.npy``, ...).

    Parameters
    ----------
    features : Features or StreamedFeatures
        As for :func:`write_features`; non-finite values are refused the same way.
    writer : ShardWriter
        The shards being written.
    key : str
        The sample's key (:func:`~adares.shards.member_key` of its output id).
    dtype : str
        ``"float32"`` or ``"float16"`` for ``mel``.
    """
    _check_dtype(dtype)
    _require_finite(features)
    members, meta = feature_members(features, dtype=dtype)
    text = json.dumps(meta, sort_keys=True).encode()
    writer.add(key, [*members, ("json", len(text), lambda: (text,))])


def feature_members(features: Any, *, dtype: str = "float32") -> tuple[list[Member], dict[str, Any]]:
    """The ``.npy`` members (``mel``, ``spans``, ``scores`` when present) of features, and their meta.

    A streamed ``mel`` is a header for its known shape followed by its rows, computed (and checked
    for non-finite values) as the member is written.
    """
    if isinstance(features, Features):
        members = [npy_member("mel.npy", _checked_mel(features, dtype=dtype))]
    else:
        header = npy_header((features.num_frames, features.num_mels), np.dtype(dtype))
        size = len(header) + features.num_frames * features.num_mels * np.dtype(dtype).itemsize

        def pieces() -> Iterator[Any]:
            yield header
            for rows in _checked_rows(features, dtype=dtype):
                yield memoryview(rows).cast("B")

        members = [("mel.npy", size, pieces)]
    members.append(npy_member("spans.npy", np.asarray(features.spans, dtype=np.int64)))
    if features.scores is not None:
        members.append(npy_member("scores.npy", np.asarray(features.scores, dtype=np.float32)))
    return members, _meta(features, dtype=dtype)


def read_features(root: Path, record: Mapping[str, Any]) -> Features:
    """The features a manifest record describes, in whichever layout they were written.

    Parameters
    ----------
    root : Path
        The output folder.
    record : mapping
        A record of its manifest: ``shard`` and ``member`` for shards, ``output`` otherwise.

    Raises
    ------
    FeatureFileError
        If the file or shard member is missing or corrupt.
    """
    if record.get("shard"):
        return Features(**read_member(Path(root) / record["shard"], record["member"]))
    return load_features(Path(root) / record["output"])


def _meta(features: Any, *, dtype: str) -> dict[str, Any]:
    return features.meta if dtype == "float32" else features.meta | {"dtype": dtype}


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ParameterError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def _require_finite(features: Any) -> None:
    """:func:`~adares.features.require_finite`, or for streamed features the scores (rows are checked as written)."""
    if isinstance(features, Features):
        require_finite(features)
    elif features.scores is not None:
        _require_finite_rows(features.scores[:, None], first_frame=0, meta=features.meta, name="scores")


def _checked_mel(features: Features, *, dtype: str) -> np.ndarray:
    with np.errstate(over="ignore"):  # values beyond float16's range are refused below, by frame
        mel = features.mel.astype(dtype, copy=False)
    if dtype != "float32":
        _require_finite_rows(mel, first_frame=0, meta=features.meta, dtype=dtype)
    return mel


def _checked_rows(features: Any, *, dtype: str) -> Iterator[np.ndarray]:
    """The rows of streamed features in ``dtype``, each piece checked for NaN and Inf."""
    first = 0
    for rows in features.rows():
        with np.errstate(over="ignore"):
            rows = np.ascontiguousarray(rows, dtype=dtype)
        _require_finite_rows(rows, first_frame=first, meta=features.meta, dtype=dtype)
        first += len(rows)
        yield rows
    if first != features.num_frames:
        raise ParameterError(f"streamed features gave {first} rows for {features.num_frames} spans")


def _require_finite_rows(
    rows: np.ndarray, *, first_frame: int, meta: dict[str, Any], dtype: str = "float32", name: str = "mel"
) -> None:
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(rows.sum(dtype=np.float32)):
            return
    bad = ~np.isfinite(rows)
    if not bad.any():
        return
    frame = first_frame + int(np.argmax(bad.any(axis=1)))
    source = meta.get("source")
    where = f" of {source}" if source else ""
    beyond = f" (values beyond {dtype}'s range: write float32)" if dtype != "float32" else ""
    raise ParameterError(
        f"features{where} hold non-finite values{beyond} in {name}, first at frame {frame}; refusing to write them"
    )


def _write_npz(path: str | os.PathLike[str], members: list[Member]) -> None:
    """An npz (a zip of ``.npy`` members, as ``np.savez`` writes it), each member written in pieces."""
    with atomic_open(path, "wb") as handle, zipfile.ZipFile(handle, "w", allowZip64=True) as archive:
        for name, size, pieces in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.file_size = size
            with archive.open(info, "w", force_zip64=size >= _ZIP64_FROM) as entry:
                for piece in pieces():
                    entry.write(piece)


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
