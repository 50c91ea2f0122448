"""Labelled folders as tensors: ``labels.csv`` reading and the cached fine log-mel of every clip.

A dataset folder holds a ``labels.csv`` (columns ``path,label,split``, splits ``train``,
``validation``, ``test``) and the clips it names. Its fine log-mel is computed once per front-end
configuration and cached as a safetensors file keyed by a hash of the configuration and the
audio files, so the runs of a benchmark share one decoding.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
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
    """Fine log-mel spectrograms of a labelled folder, padded into one tensor.

    Attributes
    ----------
    log_mel : torch.Tensor [shape=(N, T_max, F)], float32
        Padded with each clip's minimum past its length.
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

    log_mel: Tensor
    lengths: Tensor
    labels: Tensor
    splits: dict[str, Tensor]
    classes: list[str]
    paths: list[str]
    frontend: dict[str, Any]
    key: str

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Log-mel ``[B, T, F]`` trimmed to the longest item, lengths ``[B]`` and labels ``[B]``."""
        lengths = self.lengths[indices]
        longest = int(lengths.max()) if len(indices) else 0
        return self.log_mel[indices, :longest], lengths, self.labels[indices]


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
) -> list[Tensor]:
    frontend = MelFrontend(**frontend_config)
    sr = frontend_config["sr"]
    spectrograms = []
    with torch.no_grad():
        for path in tqdm(paths, desc="log-mel", unit="clip", disable=not progress, leave=False):
            samples, _ = load_audio(root / path, sr=sr)
            log_mel, _frames = frontend(torch.from_numpy(np.ascontiguousarray(samples))[None])
            spectrograms.append(log_mel[0].to(torch.float32).contiguous())
    return spectrograms


def load_spectrograms(
    data_dir: str | os.PathLike[str],
    *,
    frontend: dict[str, Any],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> SpectrogramSet:
    """Decode a labelled folder and compute its fine log-mel, or read it from the cache.

    Parameters
    ----------
    data_dir : str or os.PathLike
        Folder with ``labels.csv`` and the clips it names.
    frontend : dict
        :class:`~adares.frontend.MelFrontend` keyword arguments (``TrainConfig.frontend_config()``).
    cache_dir : str or os.PathLike, optional
        Where to keep ``<key>.safetensors``; the key hashes the front end and every clip's path,
        size and modification time, so a rebuilt dataset is never read stale.
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
    cached = Path(cache_dir) / f"logmel-{key[:20]}.safetensors" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        tensors = load_tensors(cached.read_bytes())
        flat, lengths = tensors["log_mel"], tensors["lengths"]
        spectrograms = list(torch.split(flat, lengths.tolist()))
    else:
        spectrograms = _compute_log_mel(root, paths, frontend, progress=progress)
        lengths = torch.tensor([len(s) for s in spectrograms], dtype=torch.long)
        if cached is not None:
            blob = save_tensors({"log_mel": torch.cat(spectrograms), "lengths": lengths}, metadata={"key": key})
            with atomic_open(cached, "wb") as handle:
                handle.write(blob)
    if int(lengths.min()) < 1:
        raise ParameterError(f"{root}: a clip gave no frames")
    classes = sorted({row[1] for row in rows})
    index = {name: i for i, name in enumerate(classes)}
    bins = spectrograms[0].shape[1]
    padded = torch.empty(len(spectrograms), int(lengths.max()), bins, dtype=torch.float32)
    for item, spectrogram in enumerate(spectrograms):
        padded[item, : len(spectrogram)] = spectrogram
        padded[item, len(spectrogram) :] = spectrogram.min()
    splits = {
        split: torch.tensor([i for i, row in enumerate(rows) if row[2] == split], dtype=torch.long) for split in SPLITS
    }
    return SpectrogramSet(
        log_mel=padded,
        lengths=lengths,
        labels=torch.tensor([index[row[1]] for row in rows], dtype=torch.long),
        splits=splits,
        classes=classes,
        paths=paths,
        frontend=dict(frontend),
        key=key,
    )
