"""Labelled folders as tensors: ``labels.csv`` reading and the cached fine log-mel of every clip.

A dataset folder holds a ``labels.csv`` (columns ``path,label,split``, splits ``train``,
``validation``, ``test``) and the clips it names. Its fine log-mel is computed once per front-end
configuration into one file (the safetensors layout: every clip's frames end to end, and their
lengths), keyed by a hash of the configuration and the audio files, so the runs of a benchmark
share one decoding. Training reads that file memory-mapped and pads one batch at a time, so a
corpus far larger than memory trains in the memory of its largest batch.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from adares.atomic import atomic_open
from adares.audio import load as load_audio
from adares.errors import ParameterError
from adares.frontend import MelFrontend

__all__ = ["SPLITS", "SpectrogramSet", "load_spectrograms", "read_labels"]

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True, eq=False)
class SpectrogramSet:
    """Fine log-mel spectrograms of a labelled folder, every clip's frames end to end.

    ``frames`` may be a memory-mapped file (what :func:`load_spectrograms` returns): batches are
    padded one at a time (:meth:`batch`), so the set never needs the memory of all its clips.

    Attributes
    ----------
    frames : torch.Tensor [shape=(sum(lengths), F)], float32
        Clip ``i``'s log-mel is ``frames[offsets[i] : offsets[i] + lengths[i]]``.
    lengths : torch.Tensor [shape=(N,)], int64
    labels : torch.Tensor [shape=(N,)], int64
        Index into ``classes``.
    splits : dict of str to torch.Tensor
        Clip indices of ``train``, ``validation`` and ``test``.
    classes : list of str
        Sorted class names.
    paths : list of str
        Clip paths relative to the folder.
    frontend : dict
        Front-end configuration the spectrograms were computed with.
    key : str
        Hash of the front end and the audio files (the cache key).
    """

    frames: Tensor
    lengths: Tensor
    labels: Tensor
    splits: dict[str, Tensor]
    classes: list[str]
    paths: list[str]
    frontend: dict[str, Any]
    key: str

    def __post_init__(self) -> None:
        if self.frames.ndim != 2 or self.lengths.ndim != 1 or len(self.labels) != len(self.lengths):
            raise ParameterError(
                f"frames must be [total frames, mels] and lengths and labels one per clip; got shapes "
                f"{tuple(self.frames.shape)}, {tuple(self.lengths.shape)} and {tuple(self.labels.shape)}"
            )
        if int(self.lengths.sum()) != self.frames.shape[0]:
            raise ParameterError(f"lengths add up to {int(self.lengths.sum())} frames, frames holds {len(self.frames)}")
        starts = torch.zeros(len(self.lengths), dtype=torch.int64)
        torch.cumsum(self.lengths[:-1], 0, out=starts[1:])
        object.__setattr__(self, "offsets", starts)

    @classmethod
    def from_padded(cls, log_mel: Tensor, lengths: Tensor, **fields: Any) -> SpectrogramSet:
        """A set from spectrograms padded into one tensor ``log_mel`` [N, T_max, F] (padding ignored).

        ``fields`` are the other attributes (``labels``, ``splits``, ``classes``, ``paths``,
        ``frontend``, ``key``).
        """
        frames = torch.cat([log_mel[item, :count] for item, count in enumerate(lengths.tolist())])
        return cls(frames=frames, lengths=lengths, **fields)

    @property
    def n_mels(self) -> int:
        """Mel bins per frame."""
        return int(self.frames.shape[1])

    def spectrogram(self, index: int) -> Tensor:
        """Clip ``index``'s log-mel ``[T, F]`` (a view of ``frames``)."""
        start = int(self.offsets[index])
        return self.frames[start : start + int(self.lengths[index])]

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Log-mel ``[B, T, F]`` padded to the longest item, lengths ``[B]`` and labels ``[B]``.

        Each clip is padded with its own minimum, so padding reads as the clip's silence.
        """
        lengths = self.lengths[indices]
        longest = int(lengths.max()) if len(indices) else 0
        steps = torch.arange(longest)
        # Past its end a row repeats the clip's last frame: one gather reads the batch, and the
        # minimum over a row is the clip's own.
        rows = self.offsets[indices][:, None] + torch.minimum(steps[None, :], (lengths - 1)[:, None])
        out = torch.index_select(self.frames, 0, rows.reshape(-1)).reshape(len(indices), longest, self.n_mels)
        minimum = out.amin(dim=(1, 2))
        for row, count in enumerate(lengths.tolist()):
            if count < longest:
                out[row, count:] = minimum[row]
        return out, lengths, self.labels[indices]

    @functools.cached_property
    def log_mel(self) -> Tensor:
        """Every clip padded into one tensor ``[N, T_max, F]`` (as :meth:`batch` pads).

        Holds the whole set in memory: for small sets; training reads :meth:`batch`.
        """
        return self.batch(torch.arange(len(self.lengths)))[0]


def read_labels(data_dir: str | os.PathLike[str]) -> list[tuple[str, str, str]]:
    """Read ``labels.csv`` (columns ``path,label,split``) of a dataset folder.

    Returns
    -------
    list of (path, label, split)
        ``path`` relative to ``data_dir``, as written in the file.

    Raises
    ------
    ParameterError
        If the file is missing, lacks a column, names an unknown split or a missing clip, or a
        split is empty.
    """
    root = Path(data_dir)
    table = root / "labels.csv"
    if not table.is_file():
        raise ParameterError(f"{root}: no labels.csv (expected columns path,label,split)")
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label", "split"} - set(reader.fieldnames or ())
        if missing:
            raise ParameterError(f"{table}: missing column(s) {', '.join(sorted(missing))}")
        rows = [(row["path"], row["label"], row["split"]) for row in reader]
    for path, _label, split in rows:
        if split not in SPLITS:
            raise ParameterError(f"{table}: split of {path!r} is {split!r}, expected one of {', '.join(SPLITS)}")
        if not (root / path).is_file():
            raise ParameterError(f"{table}: clip {path!r} does not exist")
    for split in SPLITS:
        if not any(row[2] == split for row in rows):
            raise ParameterError(f"{table}: the {split} split is empty")
    return rows


def _data_key(root: Path, rows: Sequence[tuple[str, str, str]], frontend: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(frontend, sort_keys=True).encode())
    for path, _label, _split in rows:
        stat = (root / path).stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _compute_log_mel(
    root: Path, paths: Sequence[str], frontend_config: dict[str, Any], *, progress: bool
) -> Iterator[Tensor]:
    """Each clip's log-mel ``[T, F]`` float32, one at a time."""
    frontend = MelFrontend(**frontend_config)
    sr = frontend_config["sr"]
    with torch.no_grad():
        for path in tqdm(paths, desc="log-mel", unit="clip", disable=not progress, leave=False):
            samples, _ = load_audio(root / path, sr=sr)
            log_mel, _frames = frontend(torch.from_numpy(np.ascontiguousarray(samples))[None])
            yield log_mel[0].to(torch.float32).contiguous()


def _write_spectrograms(handle: IO[bytes], spectrograms: Iterator[Tensor], *, key: str, scratch_dir: Path) -> None:
    """Write clips end to end in the safetensors layout (``lengths`` I64, ``log_mel`` F32), one at a time.

    The header needs the total length, so the frames go to an anonymous scratch file in
    ``scratch_dir`` first and are copied after it; memory holds one clip.
    """
    lengths, bins = [], 0
    with tempfile.TemporaryFile(dir=scratch_dir) as raw:
        for spectrogram in spectrograms:
            lengths.append(len(spectrogram))
            bins = spectrogram.shape[1]
            raw.write(spectrogram.numpy().tobytes())
        raw.seek(0)
        length_bytes = 8 * len(lengths)
        header = {
            "__metadata__": {"key": key},
            "lengths": {"dtype": "I64", "shape": [len(lengths)], "data_offsets": [0, length_bytes]},
            "log_mel": {
                "dtype": "F32",
                "shape": [sum(lengths), bins],
                "data_offsets": [length_bytes, length_bytes + 4 * sum(lengths) * bins],
            },
        }
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        handle.write(len(text).to_bytes(8, "little") + text)
        handle.write(np.asarray(lengths, dtype="<i8").tobytes())
        shutil.copyfileobj(raw, handle, 1 << 22)


def _map_spectrograms(path: Path) -> tuple[Tensor, Tensor]:
    """``log_mel`` [sum T, F] memory-mapped read-only, and ``lengths`` [N], of a file in the safetensors layout."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
    base = 8 + size
    tensors = {}
    for name, dtype in (("lengths", "<i8"), ("log_mel", "<f4")):
        entry = header[name]
        begin, _end = entry["data_offsets"]
        array = np.memmap(path, dtype=dtype, mode="r", offset=base + begin, shape=tuple(entry["shape"]))
        with warnings.catch_warnings():
            # Read-only on purpose: batches are copies, and a private writable map would count as our memory.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensors[name] = torch.from_numpy(array)
    return tensors["log_mel"], tensors["lengths"].clone()


def load_spectrograms(
    data_dir: str | os.PathLike[str],
    *,
    frontend: dict[str, Any],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> SpectrogramSet:
    """Decode a labelled folder and compute its fine log-mel, or read it from the cache.

    The log-mels are written to a file, one clip at a time, and read back memory-mapped: the
    set holds the clips' lengths and labels in memory, not their frames.

    Parameters
    ----------
    data_dir : str or os.PathLike
        Folder with ``labels.csv`` and the clips it names.
    frontend : dict
        :class:`~adares.frontend.MelFrontend` keyword arguments (``TrainConfig.frontend_config()``).
    cache_dir : str or os.PathLike, optional
        Where to keep ``logmel-<key>.safetensors``; the key hashes the front end and every clip's
        path, size and modification time, so a rebuilt dataset is never read stale. Without it
        the log-mels go to a temporary file (in ``TMPDIR``) that is removed at once and lives
        while the set is mapped.
    progress : bool
        Show a progress bar while computing.

    Returns
    -------
    SpectrogramSet
    """
    root = Path(data_dir)
    rows = read_labels(root)
    key = _data_key(root, rows, frontend)
    paths = [row[0] for row in rows]
    if cache_dir is not None:
        cached = Path(cache_dir) / f"logmel-{key[:20]}.safetensors"
        if not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(cached, "wb") as handle:
                spectrograms = _compute_log_mel(root, paths, frontend, progress=progress)
                _write_spectrograms(handle, spectrograms, key=key, scratch_dir=cached.parent)
        frames, lengths = _map_spectrograms(cached)
    else:
        with tempfile.TemporaryDirectory(prefix="adares-logmel-") as scratch:
            file = Path(scratch) / "logmel.safetensors"
            with open(file, "wb") as handle:
                spectrograms = _compute_log_mel(root, paths, frontend, progress=progress)
                _write_spectrograms(handle, spectrograms, key=key, scratch_dir=Path(scratch))
            frames, lengths = _map_spectrograms(file)  # the mapping outlives the removed file
    if len(lengths) != len(rows):
        raise ParameterError(f"{root}: the cached log-mels hold {len(lengths)} clips, labels.csv {len(rows)}")
    if int(lengths.min()) < 1:
        raise ParameterError(f"{root}: a clip gave no frames")
    classes = sorted({row[1] for row in rows})
    index = {name: i for i, name in enumerate(classes)}
    splits = {
        split: torch.tensor([i for i, row in enumerate(rows) if row[2] == split], dtype=torch.long) for split in SPLITS
    }
    return SpectrogramSet(
        frames=frames,
        lengths=lengths,
        labels=torch.tensor([index[row[1]] for row in rows], dtype=torch.long),
        splits=splits,
        classes=classes,
        paths=paths,
        frontend=dict(frontend),
        key=key,
    )
