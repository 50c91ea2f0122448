"""What a run reads: a folder, one audio file, or a corpus described in a file.

Besides a folder (searched recursively) or an audio file, ``adares extract IN OUT`` takes a
description of a corpus in the formats people already keep it in:

- a list of paths (``.txt`` or ``.lst``): one audio file per line, relative to the list's folder;
  blank lines and lines starting with ``#`` are skipped;
- a CSV (``.csv``) with a header naming ``id`` and ``path``, and optionally ``start`` and ``end``
  in seconds (a segment of the recording);
- a Kaldi ``wav.scp`` (a file of that name: ``<recording-id> <path>`` per line); when a
  ``segments`` file lies beside it (``<segment-id> <recording-id> <start> <end>``, an end of -1
  meaning the end of the recording), each segment is an input;
- a lhotse ``RecordingSet`` or ``CutSet`` manifest (``.jsonl`` or ``.jsonl.gz``), read as JSON
  lines (lhotse itself is not needed).

Every input has an id, which names its output (``<id>.npz``): a relative path of plain names,
never absolute and never with ``..``, unique within the run. Bad ids are refused, all of them
listed, before any work. Standard library only, like the rest of what the pipeline plans with.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from adares.errors import ParameterError

__all__ = ["InputItem", "LIST_SUFFIXES", "describes_corpus", "read_inputs"]

LIST_SUFFIXES = (".txt", ".lst")
"""Suffixes of a list of paths, one per line."""

_MANIFEST_SUFFIXES = (".jsonl", ".jsonl.gz")
_KALDI_NAME = "wav.scp"
_MAX_REPORTED = 5


@dataclass(frozen=True)
class InputItem:
    """One input of a run: an audio file, or a segment of one.

    Attributes
    ----------
    id : str
        Names the output (``<id>.npz``, a relative POSIX path without extension) and the
        manifest's record.
    path : pathlib.Path
        The audio file.
    start : float
        Seconds into the recording where the input begins (0 for a whole file).
    end : float or None
        Seconds into the recording where it ends; None for the end of the recording.
    channel : int or None
        The channel to take instead of mixing down (a lhotse source names one), if any.
    """

    id: str
    path: Path
    start: float = 0.0
    end: float | None = None
    channel: int | None = None

    @property
    def is_segment(self) -> bool:
        """Whether the input is a part of its recording rather than all of it."""
        return self.start > 0.0 or self.end is not None


def describes_corpus(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file describing a corpus (a list, a CSV, ``wav.scp``, a lhotse manifest)."""
    candidate = Path(path)
    if not candidate.is_file():
        return False
    name = candidate.name.lower()
    return (
        candidate.name == _KALDI_NAME
        or name.endswith(LIST_SUFFIXES)
        or name.endswith(".csv")
        or name.endswith(_MANIFEST_SUFFIXES)
    )


def read_inputs(path: str | os.PathLike[str]) -> list[InputItem]:
    """The inputs a corpus description lists, in its order, their ids checked.

    Parameters
    ----------
    path : str or os.PathLike
        A list (``.txt``, ``.lst``), a CSV, a Kaldi ``wav.scp`` or a lhotse manifest
        (``.jsonl``, ``.jsonl.gz``). Relative audio paths are taken relative to its folder.

    Returns
    -------
    list of InputItem

    Raises
    ------
    ParameterError
        If the file cannot be read, a line or row is malformed (its line number named), a
        segment's times are invalid, or an id would escape the output folder or names two
        inputs.
    """
    source = Path(path)
    name = source.name.lower()
    if source.name == _KALDI_NAME:
        items = list(_kaldi(source))
    elif name.endswith(LIST_SUFFIXES):
        items = list(_path_list(source))
    elif name.endswith(".csv"):
        items = list(_csv(source))
    elif name.endswith(_MANIFEST_SUFFIXES):
        items = list(_lhotse(source))
    else:
        raise ParameterError(
            f"{source}: not a corpus description (a folder, an audio file, a .txt/.lst list, a .csv, "
            "a Kaldi wav.scp or a lhotse .jsonl/.jsonl.gz manifest)"
        )
    if not items:
        raise ParameterError(f"{source}: lists no input")
    check_ids([item.id for item in items], where=str(source))
    return items


def check_ids(ids: Iterable[str], *, where: str) -> None:
    """Refuse ids that cannot name an output inside the output folder, or that repeat.

    Raises
    ------
    ParameterError
        Listing (up to a few of) the bad ids and why.
    """
    ids = list(ids)
    problems = [f"{value!r} {reason}" for value in ids if (reason := _id_problem(value))]
    repeated = [value for value, count in Counter(ids).items() if count > 1]
    problems += [f"{value!r} names more than one input" for value in repeated]
    if problems:
        shown = "; ".join(problems[:_MAX_REPORTED])
        more = f" (and {len(problems) - _MAX_REPORTED} more)" if len(problems) > _MAX_REPORTED else ""
        raise ParameterError(f"{where}: ids must name distinct outputs inside the output folder: {shown}{more}")


def _id_problem(value: str) -> str | None:
    if not value or not value.strip():
        return "is empty"
    if "\\" in value or "\x00" in value:
        return "holds a backslash or a NUL character"
    posix = PurePosixPath(value)
    if posix.is_absolute() or value.startswith("~"):
        return "is an absolute path"
    if any(part in ("..", ".") for part in value.split("/")) or "//" in value or value.endswith("/"):
        return "is not a plain relative path (no '.', '..' or empty parts)"
    return None


def _resolve(base: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def _lines(source: Path) -> Iterator[tuple[int, str]]:
    try:
        opener = gzip.open if source.name.lower().endswith(".gz") else open
        with opener(source, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                yield number, line.rstrip("\n")
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise ParameterError(f"{source}: cannot read it ({error})") from None


def _path_list(source: Path) -> Iterator[InputItem]:
    base = source.parent
    for _, line in _lines(source):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        relative = PurePosixPath(text.replace(os.sep, "/"))
        inside = not relative.is_absolute() and ".." not in relative.parts
        # A file beside or below the list keeps its folders in the id; one elsewhere, its name.
        identifier = relative.with_suffix("").as_posix() if inside else relative.stem
        yield InputItem(id=identifier, path=_resolve(base, text))


def _csv(source: Path) -> Iterator[InputItem]:
    base = source.parent
    try:
        with open(source, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            missing = [name for name in ("id", "path") if name not in columns]
            if missing:
                raise ParameterError(f"{source}: the header must name id and path (missing {', '.join(missing)})")
            for row in reader:
                line = reader.line_num
                row = {(key or "").strip(): (value or "").strip() for key, value in row.items()}
                if not row.get("path"):
                    raise ParameterError(f"{source}:{line}: no path")
                start = _seconds(row.get("start") or "0", where=f"{source}:{line}", name="start")
                end = _seconds(row["end"], where=f"{source}:{line}", name="end") if row.get("end") else None
                _check_segment(start, end, where=f"{source}:{line}")
                yield InputItem(id=row["id"], path=_resolve(base, row["path"]), start=start, end=end)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ParameterError(f"{source}: cannot read it ({error})") from None


def _kaldi(source: Path) -> Iterator[InputItem]:
    base = source.parent
    recordings: dict[str, Path] = {}
    for number, line in _lines(source):
        if not line.strip():
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            raise ParameterError(f"{source}:{number}: expected '<recording-id> <path>', got {line!r}")
        recording, location = fields[0], fields[1].strip()
        if location.endswith("|") or location.startswith(("ark:", "scp:")) or location == "-":
            raise ParameterError(
                f"{source}:{number}: {location!r} is a command or a Kaldi archive; adares reads audio files only"
            )
        if recording in recordings:
            raise ParameterError(f"{source}:{number}: recording id {recording!r} appears twice")
        recordings[recording] = _resolve(base, location)
    segments = source.with_name("segments")
    if not segments.is_file():
        yield from (InputItem(id=recording, path=path) for recording, path in recordings.items())
        return
    for number, line in _lines(segments):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{segments}:{number}"
        if len(fields) != 4:
            raise ParameterError(f"{where}: expected '<segment-id> <recording-id> <start> <end>', got {line!r}")
        segment, recording = fields[0], fields[1]
        if recording not in recordings:
            raise ParameterError(f"{where}: recording {recording!r} is not in {source.name}")
        start = _seconds(fields[2], where=where, name="start")
        end = _seconds(fields[3], where=where, name="end")
        end_or_none = None if end == -1.0 else end
        _check_segment(start, end_or_none, where=where)
        yield InputItem(id=segment, path=recordings[recording], start=start, end=end_or_none)


def _lhotse(source: Path) -> Iterator[InputItem]:
    base = source.parent
    for number, line in _lines(source):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ParameterError(f"{where}: not JSON ({error.msg})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ParameterError(f"{where}: not a lhotse recording or cut (no id)")
        if "recording" in entry:  # a cut: a segment of its recording
            recording = entry["recording"]
            start = _number(entry.get("start", 0.0), where=where, name="start")
            duration = _number(entry.get("duration"), where=where, name="duration")
            path, channels = _recording_path(recording, base=base, where=where)
            _check_segment(start, start + duration, where=where)
            channel = entry.get("channel")
            if isinstance(channel, int) and channel not in channels:
                raise ParameterError(f"{where}: channel {channel} is not among the recording's {channels}")
            # the cut's channel of the recording, as a channel of the file; a mono file is read as it is
            chosen = channels.index(channel) if isinstance(channel, int) and len(channels) > 1 else None
            yield InputItem(id=entry["id"], path=path, start=start, end=start + duration, channel=chosen)
        elif "sources" in entry:  # a recording: all its channels, mixed down
            path, _ = _recording_path(entry, base=base, where=where)
            yield InputItem(id=entry["id"], path=path)
        else:
            raise ParameterError(f"{where}: neither a lhotse recording (sources) nor a cut (recording)")


def _recording_path(recording: Any, *, base: Path, where: str) -> tuple[Path, list[int]]:
    sources = recording.get("sources") if isinstance(recording, dict) else None
    if not isinstance(sources, list) or len(sources) != 1 or not isinstance(sources[0], dict):
        raise ParameterError(f"{where}: adares reads recordings with exactly one source")
    origin = sources[0]
    if origin.get("type") != "file" or not isinstance(origin.get("source"), str):
        raise ParameterError(
            f"{where}: source type {origin.get('type')!r} is not a file; adares reads audio files only"
        )
    channels = origin.get("channels", [0])
    if not isinstance(channels, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in channels):
        raise ParameterError(f"{where}: the source's channels must be a list of integers, got {channels!r}")
    return _resolve(base, origin["source"]), channels


def _number(value: Any, *, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(f"{where}: {name} must be a number of seconds, got {value!r}")
    return float(value)


def _seconds(text: str, *, where: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ParameterError(f"{where}: {name} must be a number of seconds, got {text!r}") from None
    return _number(value, where=where, name=name)


def _check_segment(start: float, end: float | None, *, where: str) -> None:
    if start < 0.0:
        raise ParameterError(f"{where}: start must not be negative, got {start:g} s")
    if end is not None and end <= start:
        raise ParameterError(f"{where}: end ({end:g} s) must lie after start ({start:g} s)")
