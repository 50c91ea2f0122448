"""Where features go on disk: output paths, feature writers, and the JSONL manifest.

The manifest (:class:`Manifest`) is append-only: one JSON object per line, written and flushed as
something happens to a file, so a run killed at any moment keeps the record of everything it
completed. A line cut short by the kill is ignored when reading, and the next run starts on a
fresh line; a line the disk refuses is removed again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import numpy as np

from adares.atomic import atomic_open, atomic_write_text, output_errors
from adares.errors import FeatureFileError, ParameterError
from adares.features import Features, load_features, require_finite
from adares.shards import SHARDS_DIR, Member, ShardWriter, npy_header, npy_member, read_member, shard_keys

__all__ = [
    "FORMATS",
    "DTYPES",
    "MANIFEST_NAME",
    "FAILURES_NAME",
    "output_paths",
    "named_output_paths",
    "write_features",
    "write_sample",
    "read_features",
    "feature_members",
    "output_id",
    "stored_file",
    "remove_unrecorded_shards",
    "Manifest",
    "ManifestEntry",
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


def named_output_paths(ids: Sequence[str], *, format: str = "npz") -> dict[PurePosixPath, PurePosixPath]:
    """Map the ids of a described corpus (:func:`adares.inputs.read_inputs`) to output paths: ``<id><suffix>``.

    Unlike :func:`output_paths`, nothing is replaced: an id's dots are part of its name.
    """
    suffix = _suffix(format)
    return {PurePosixPath(identifier): PurePosixPath(identifier + suffix) for identifier in ids}


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


def output_id(output: str) -> str:
    """The id of a file's features: its output path relative to the output folder, without suffix."""
    return str(PurePosixPath(output).with_suffix(""))


def stored_file(record: Mapping[str, Any]) -> str:
    """The file that holds a record's features, relative to the output folder (its shard, for shards)."""
    return record.get("shard") or record["output"]


def remove_unrecorded_shards(folder: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> int:
    """Delete the shards under ``folder`` that no record names, or that hold a sample no record
    names: those whose run was killed after the rename and before all their records were written,
    unreadable ones, or ones an overwrite made obsolete. Their files are redone (a record naming a
    deleted shard no longer counts as done), so no unrecorded sample stays in the folder's shards.
    A sample whose record names another shard (its source changed and was redone) does not count.

    Returns
    -------
    int
        How many shards were removed.
    """
    shards = Path(folder) / SHARDS_DIR
    if not shards.is_dir():
        return 0
    named: set[str] = set()
    members: set[str] = set()
    for record in records:
        if record.get("shard"):
            named.add(record["shard"])
            members.add(record.get("member"))
    removed = 0
    for shard in shards.glob("*.tar"):
        try:
            keep = f"{SHARDS_DIR}/{shard.name}" in named and shard_keys(shard) <= members
        except FeatureFileError:  # unreadable: its samples are redone like those of a partial one
            keep = False
        if not keep:
            shard.unlink(missing_ok=True)
            removed += 1
    return removed


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
    """Append JSON records to a file, one per line, each written to the operating system at once.

    Each line goes out in one system call; if the disk takes only part of it (full), the part is
    cut off again, so the file never ends in a partial line this writer wrote. If the file ends
    in a partial line (a killed writer), a newline is written first so the next record starts
    clean.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.jsonl`` file; created with its folder if missing.

    Raises
    ------
    OutputError
        If the folder is full or not writable (on opening or on any write).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with output_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
            self._fd: int | None = os.open(self.path, flags, 0o666)
        try:
            size = os.fstat(self._fd).st_size
            if size and os.pread(self._fd, 1, size - 1) != b"\n":
                self._write(b"\n")
        except BaseException:
            self.close()
            raise

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        self.write_line(json.dumps(record, sort_keys=True))

    def write_line(self, line: str) -> None:
        """Append one line of JSON (without its newline)."""
        self._write((line + "\n").encode("utf-8"))

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise ParameterError(f"{self.path} is closed")
        with output_errors(self.path):
            start = os.fstat(self._fd).st_size
            try:
                written = os.write(self._fd, data)
                while written < len(data):  # the disk took part of it: the next write says why
                    more = os.write(self._fd, data[written:])
                    if not more:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
                    written += more
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)  # no partial line left behind
                raise

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file, skipping blank lines and lines cut short by a kill.

    A missing file yields nothing.
    """
    for _, record in _read_lines(path):
        yield record


def _read_lines(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (line without its newline, record) of each JSON object line of a JSONL file, one at a time."""
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
                yield line, record


def rewrite_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Replace a JSONL file's content with ``records``, atomically."""
    atomic_write_text(path, "".join(json.dumps(record, sort_keys=True) + "\n" for record in records))


_DONE = ("ok", "skipped")
"""Statuses of a record that leave a finished feature file behind (``skipped``: written by earlier versions)."""
_STATUSES = (*_DONE, "failed")


class ManifestEntry(NamedTuple):
    """What planning needs of a source's latest record, and the record's line as written.

    Kept instead of the parsed record: a corpus of millions of files holds its state in a
    fraction of the memory of as many dicts, and a record is parsed again only when asked for.
    """

    seq: int
    """Position of the record among those read and appended (later is newer)."""
    source: str
    status: str
    config: Any
    output: Any
    source_size: Any
    source_mtime_ns: Any
    request: Any
    line: str

    def record(self) -> dict[str, Any]:
        """The record as written."""
        return json.loads(self.line)


class Manifest:
    """The record of an output folder: ``manifest.jsonl``, one record per file each time something
    happens to it (done, failed, or done again).

    Reading keeps only the latest record of each source (per configuration) in memory, read line by
    line: the state of every input, never the whole history at once. Records are appended only
    while the manifest is open (``with manifest:``), each line written whole by one system call
    (a write the disk refuses leaves no partial line) and flushed to the operating system at once;
    the files are opened on the first append, so a run that writes nothing leaves them untouched.
    The failure report beside it (``failures.jsonl``) gets each failed record as it is appended,
    and is reduced to the sources whose latest record is a failure by :meth:`compact_failures`.
    Records superseded by newer ones are dropped by :meth:`compact`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``manifest.jsonl`` file; a missing file is an empty manifest.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.failures_path = self.path.with_name(FAILURES_NAME)
        self._latest: dict[tuple[str, Any], ManifestEntry] = {}
        self._lines = 0
        self._ok_configs: set[Any] = set()
        self._open = False
        self._writers: tuple[JsonlWriter, JsonlWriter] | None = None
        for line, record in _read_lines(self.path):
            self._add(line, record)

    @classmethod
    def of(cls, folder: str | os.PathLike[str]) -> Manifest:
        """The manifest of an output folder."""
        return cls(Path(folder) / MANIFEST_NAME)

    def __len__(self) -> int:
        """Number of file records the file holds (read and appended), superseded ones included."""
        return self._lines

    @property
    def superseded(self) -> int:
        """Number of file records a newer record of the same source and configuration replaced."""
        return self._lines - len(self._latest)

    def entries(self, *, config: str | None = None) -> dict[str, ManifestEntry]:
        """The latest record of each source as a :class:`ManifestEntry`, in order of first appearance.

        Parameters
        ----------
        config : str, optional
            Consider only the records made with this configuration hash.
        """
        latest: dict[str, ManifestEntry] = {}
        for (source, entry_config), entry in self._latest.items():
            if config is None:
                if source not in latest or latest[source].seq < entry.seq:
                    latest[source] = entry
            elif entry_config == config:
                latest[source] = entry
        return latest

    def finished(self, *, config: str | None = None) -> dict[str, ManifestEntry]:
        """The sources whose latest record left a finished feature file, with that :class:`ManifestEntry`."""
        return {source: entry for source, entry in self.entries(config=config).items() if entry.status in _DONE}

    def latest(self, *, config: str | None = None) -> dict[str, dict[str, Any]]:
        """The latest record of each source (ok, skipped or failed), in order of first appearance.

        Parameters
        ----------
        config : str, optional
            Consider only the records made with this configuration hash.
        """
        return {source: entry.record() for source, entry in self.entries(config=config).items()}

    def done(self, *, config: str | None = None) -> dict[str, dict[str, Any]]:
        """The sources whose latest record left a finished feature file (ok or skipped), with that record."""
        return {source: entry.record() for source, entry in self.finished(config=config).items()}

    def configs(self) -> set[Any]:
        """The configuration hashes of every successful record read or appended."""
        return set(self._ok_configs)

    def config_of(self, request: str) -> str | None:
        """The configuration hash the newest successful record of this request hash names, if any."""
        found = None
        for entry in self._latest.values():
            if entry.status == "ok" and entry.request == request and isinstance(entry.config, str):
                if found is None or found.seq < entry.seq:
                    found = entry
        return None if found is None else found.config

    def failure_report(self) -> list[dict[str, Any]]:
        """``source``, ``error`` and ``run`` of every source whose latest record is a failure."""
        report = []
        for source, entry in self.entries().items():
            if entry.status == "failed":
                record = entry.record()
                report.append({"source": source, "error": record.get("error"), "run": record.get("run")})
        return report

    def clear(self) -> None:
        """Forget every record: empty the manifest and the failure report on disk."""
        rewrite_jsonl(self.path, [])
        rewrite_jsonl(self.failures_path, [])
        self._latest, self._lines, self._ok_configs = {}, 0, set()

    def append(self, record: dict[str, Any]) -> None:
        """Append one record (flushed at once); a failed one goes to the failure report too.

        Raises
        ------
        OutputError
            If the folder is full or not writable; the file is left without a partial line.
        """
        if not self._open:
            raise ParameterError(f"{self.path} is not open for writing: append inside `with manifest:`")
        if self._writers is None:
            manifest = JsonlWriter(self.path)
            try:
                self._writers = (manifest, JsonlWriter(self.failures_path))
            except BaseException:
                manifest.close()
                raise
        manifest, failures = self._writers
        line = json.dumps(record, sort_keys=True)
        manifest.write_line(line)
        self._add(line, record)
        if record.get("status") == "failed":
            failures.write({"source": record["source"], "error": record["error"], "run": record.get("run")})

    def compact(self, *, force: bool = False) -> bool:
        """Rewrite the file atomically with the latest record of each source and configuration only.

        Done when superseded records outnumber the others (the file is then at most twice the
        state it holds), or always with ``force``. :meth:`latest`, :meth:`done` and
        :meth:`failure_report` answer the same before and after. Not while open for writing.

        Returns
        -------
        bool
            Whether the file was rewritten.
        """
        if self._open:
            raise ParameterError(f"{self.path} is open for writing: compact it after `with manifest:`")
        if not force and self.superseded <= len(self._latest):
            return False
        # sources in order of first appearance, each source's records in their order: what the
        # file says of every source is unchanged
        rank: dict[str, int] = {}
        for source, _ in self._latest:
            rank.setdefault(source, len(rank))
        entries = sorted(self._latest.values(), key=lambda entry: (rank[entry.source], entry.seq))
        atomic_write_text(self.path, "".join(entry.line + "\n" for entry in entries))
        self._latest = {(entry.source, entry.config): entry._replace(seq=seq) for seq, entry in enumerate(entries)}
        self._lines = len(entries)
        return True

    def compact_failures(self) -> None:
        """Rewrite the failure report from the latest state (files fixed since drop out); left as it
        is when that changes nothing."""
        text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in self.failure_report())
        try:
            if self.failures_path.read_text(encoding="utf-8") == text:
                return
        except (OSError, UnicodeDecodeError):
            pass  # missing or unreadable: written below
        atomic_write_text(self.failures_path, text)

    def _add(self, line: str, record: dict[str, Any]) -> None:
        source, status = record.get("source"), record.get("status")
        if not isinstance(source, str) or status not in _STATUSES:
            return  # not a file's record
        config = record.get("config")
        config = sys.intern(config) if isinstance(config, str) else config
        request = record.get("request")
        # a key keeps its first position: entries() lists sources in order of first appearance
        self._latest[(source, config)] = ManifestEntry(
            seq=self._lines,
            source=source,
            status=sys.intern(status),
            config=config,
            output=record.get("output"),
            source_size=record.get("source_size"),
            source_mtime_ns=record.get("source_mtime_ns"),
            request=sys.intern(request) if isinstance(request, str) else request,
            line=line,
        )
        self._lines += 1
        if status == "ok":
            self._ok_configs.add(config)

    def __enter__(self) -> Manifest:
        self._open = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._open = False
        if self._writers is not None:
            for writer in self._writers:
                writer.close()
            self._writers = None
