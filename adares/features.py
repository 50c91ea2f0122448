"""Variable-resolution features: merged log-mel frames with the exact sample span of each frame.

A :class:`Features` holds what one audio file became: ``mel`` (one row per output frame),
``spans`` (the ``[start, end)`` sample range each row covers, integers so times never drift),
the importance ``scores`` of the fine frames when a compressor ran, and ``meta`` (every setting
that produced them). On disk it is one ``.npz`` with the keys ``mel``, ``spans``, ``scores``
(when present) and ``meta`` (a JSON string), as docs/design.md specifies.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adares.atomic import atomic_open
from adares.errors import FeatureFileError, ParameterError

# Feature files up to this size (mel bytes) are assembled in memory before the one write.
_BUFFERED_BYTES = 16 << 20

__all__ = ["Features", "load_features", "uniform_spans", "require_finite"]


@dataclass(frozen=True, eq=False)
class Features:
    """Features of one audio file, with the time span of every frame.

    Parameters
    ----------
    mel : np.ndarray [shape=(T', F)], float32
        Log-mel frames (merged when a compressor ran, fine otherwise).
    spans : np.ndarray [shape=(T', 2)], int64
        ``[start, end)`` of each frame in samples at ``meta["sr"]``; consecutive and non-empty.
    scores : np.ndarray [shape=(T,)], float32, or None
        Normalised importance of the fine frames (sums to T'); None without a compressor.
    meta : dict
        Settings and provenance: at least ``sr``; ``hop_samples``, ``num_samples`` and the rest
        when written by the pipeline.

    Raises
    ------
    ParameterError
        If shapes or spans are inconsistent.
    """

    mel: np.ndarray
    spans: np.ndarray
    scores: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mel = np.asarray(self.mel, dtype=np.float32)
        spans = np.asarray(self.spans, dtype=np.int64)
        scores = None if self.scores is None else np.asarray(self.scores, dtype=np.float32)
        if mel.ndim != 2:
            raise ParameterError(f"mel must be 2-D [frames, mels], got shape {mel.shape}")
        if spans.shape != (mel.shape[0], 2):
            raise ParameterError(f"spans must have shape ({mel.shape[0]}, 2) to match mel, got {spans.shape}")
        if len(spans) and (np.any(spans[:, 1] < spans[:, 0]) or np.any(spans[1:, 0] != spans[:-1, 1])):
            raise ParameterError("spans must be consecutive [start, end) ranges with end >= start")
        if scores is not None and scores.ndim != 1:
            raise ParameterError(f"scores must be 1-D [fine frames], got shape {scores.shape}")
        if "sr" not in self.meta:
            raise ParameterError("meta must record the sampling rate 'sr' to give spans a time")
        object.__setattr__(self, "mel", mel)
        object.__setattr__(self, "spans", spans)
        object.__setattr__(self, "scores", scores)

    @property
    def sr(self) -> int:
        """Sampling rate of ``spans`` in Hz."""
        return int(self.meta["sr"])

    @property
    def num_frames(self) -> int:
        """Number of output frames T'."""
        return int(self.mel.shape[0])

    @property
    def num_mels(self) -> int:
        """Number of mel bins F."""
        return int(self.mel.shape[1])

    @property
    def num_samples(self) -> int:
        """Length of the source audio in samples at ``sr``."""
        return int(self.meta.get("num_samples", self.spans[-1, 1] if len(self.spans) else 0))

    @property
    def duration(self) -> float:
        """Length of the source audio in seconds."""
        return self.num_samples / self.sr

    def times(self) -> np.ndarray:
        """Start and end of each frame in seconds.

        Returns
        -------
        np.ndarray [shape=(T', 2)], float64
            ``spans / sr``, computed from integers, so no error accumulates along the file.
        """
        return self.spans / float(self.sr)

    def frame_durations(self) -> np.ndarray:
        """Duration of each frame in seconds, ``np.ndarray [shape=(T',)]``."""
        return (self.spans[:, 1] - self.spans[:, 0]) / float(self.sr)

    def frame_at(self, seconds: float | np.ndarray) -> np.ndarray:
        """Index of the frame whose span contains each time (clipped to the valid range).

        Parameters
        ----------
        seconds : float or np.ndarray
            Times in seconds.

        Returns
        -------
        np.ndarray of int64, the shape of ``seconds``
        """
        samples = np.floor(np.asarray(seconds, dtype=np.float64) * self.sr)
        index = np.searchsorted(self.spans[:, 1], samples, side="right")
        return np.clip(index, 0, self.num_frames - 1).astype(np.int64)

    def to_uniform(self, *, hop_samples: int | None = None) -> np.ndarray:
        """Expand back to a uniform frame grid: each grid frame takes the row covering its centre.

        Parameters
        ----------
        hop_samples : int or None
            Grid hop in samples; defaults to the fine hop the features were computed at.

        Returns
        -------
        np.ndarray [shape=(1 + num_samples // hop_samples, F)], float32
        """
        hop = int(hop_samples if hop_samples is not None else self.meta.get("hop_samples", 0))
        if hop <= 0:
            raise ParameterError("hop_samples is needed: meta does not record the fine hop")
        offset = int(self.meta.get("frame_offset_samples", 0))
        centres = offset + hop * np.arange(1 + self.num_samples // hop)
        index = np.searchsorted(self.spans[:, 1], centres, side="right")
        return self.mel[np.clip(index, 0, self.num_frames - 1)]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the features to ``path`` as ``.npz``, atomically (temporary name, then rename).

        Raises
        ------
        ParameterError
            If ``mel`` or ``scores`` hold NaN or Inf (see :func:`require_finite`); nothing is written.
        """
        require_finite(self)
        arrays: dict[str, np.ndarray] = {"mel": self.mel, "spans": self.spans}
        if self.scores is not None:
            arrays["scores"] = self.scores
        arrays["meta"] = np.array(json.dumps(self.meta, sort_keys=True))
        if self.mel.nbytes > _BUFFERED_BYTES:
            with atomic_open(path, "wb") as handle:
                np.savez(handle, **arrays)
            return
        # A small file is assembled in memory and written in one call: the zip writer's many
        # small writes and seeks on a real file cost more than the data (measured: ~0.3 ms a file).
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        with atomic_open(path, "wb") as handle:
            handle.write(buffer.getbuffer())

    def __repr__(self) -> str:
        return (
            f"Features(frames={self.num_frames}, mels={self.num_mels}, duration={self.duration:.3f} s, "
            f"scores={'yes' if self.scores is not None else 'no'}, "
            f"compressor={self.meta.get('compressor', 'none')!r})"
        )


def require_finite(features: Features) -> None:
    """Refuse features that hold NaN or Inf: the last check before any write, whatever made them.

    Parameters
    ----------
    features : Features

    Raises
    ------
    ParameterError
        Naming the source (``meta["source"]``), the array, how many values are non-finite and the
        first frame that holds one.
    """
    for name, values in (("mel", features.mel), ("scores", features.scores)):
        if values is None:
            continue
        # A sum is cheap and any NaN or Inf makes it non-finite; the exact test runs only then.
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(values.sum()):
                continue
        bad = ~np.isfinite(values)
        if not bad.any():
            continue  # finite values whose sum overflowed
        first = int(np.argmax(bad.reshape(len(values), -1).any(axis=1)))
        source = features.meta.get("source")
        where = f" of {source}" if source else ""
        raise ParameterError(
            f"features{where} hold non-finite values: {int(bad.sum())} NaN or Inf of {values.size} in {name}, "
            f"first at frame {first}; refusing to write them"
        )


def load_features(path: str | os.PathLike[str]) -> Features:
    """Read a feature file written by :meth:`Features.save` or ``adares extract``, in either layout.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npz`` file, an HDF5 file (``.h5`` or ``.hdf5``, written with ``format="hdf5"``;
        reading it needs ``h5py``), or one sample of a shard, ``SHARD.tar#KEY`` (written with
        ``format="shards"``; the key is the manifest record's ``member``).

    Returns
    -------
    Features

    Raises
    ------
    FeatureFileError
        If the file is missing, corrupt, or not an adares feature file (it lacks ``mel``,
        ``spans`` or ``meta``); the message names the path and the reason.
    """
    shard, hash_, key = str(path).partition(".tar#")
    if hash_ and key:
        from adares.shards import read_member  # the shard reader builds on this module

        return Features(**read_member(shard + ".tar", key))
    hdf5 = os.path.splitext(path)[1].lower() in _HDF5_SUFFIXES
    try:
        return _read_hdf5(path) if hdf5 else _read_npz(path)
    except FeatureFileError:
        raise
    except FileNotFoundError:
        raise FeatureFileError(f"{path}: file not found") from None
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile, EOFError) as error:
        # json.JSONDecodeError is a ValueError; h5py reports a corrupt file as an OSError.
        reason = " ".join(str(error).split()) or type(error).__name__
        raise FeatureFileError(f"{path}: cannot read feature file ({reason})") from None


_HDF5_SUFFIXES = (".h5", ".hdf5")


def _read_npz(path: str | os.PathLike[str]) -> Features:
    with np.load(path, allow_pickle=False) as data:
        _require_keys(path, arrays=data.files, attributes=data.files)
        meta = json.loads(str(data["meta"]))
        scores = data["scores"] if "scores" in data.files else None
        return Features(mel=data["mel"], spans=data["spans"], scores=scores, meta=meta)


def _read_hdf5(path: str | os.PathLike[str]) -> Features:
    """The HDF5 layout of ``adares.store.write_features``: datasets ``mel``, ``spans``, ``scores``
    (when present), and ``meta`` (a JSON string) as a file attribute."""
    try:
        import h5py  # optional: only HDF5 files need it
    except ImportError:
        raise FeatureFileError(f"{path}: reading an HDF5 feature file needs h5py: pip install 'adares[hdf5]'") from None
    with h5py.File(path, "r") as h5:
        _require_keys(path, arrays=h5.keys(), attributes=h5.attrs.keys())
        scores = np.asarray(h5["scores"]) if "scores" in h5 else None
        meta = json.loads(h5.attrs["meta"])
        return Features(mel=np.asarray(h5["mel"]), spans=np.asarray(h5["spans"]), scores=scores, meta=meta)


def _require_keys(path: str | os.PathLike[str], *, arrays: Any, attributes: Any) -> None:
    """Raise FeatureFileError naming what an adares feature file must hold and this one lacks."""
    missing = ({"mel", "spans"} - set(arrays)) | ({"meta"} - set(attributes))
    if missing:
        raise FeatureFileError(f"{path}: not an adares feature file (missing {', '.join(sorted(missing))})")


def uniform_spans(num_frames: int, *, hop_samples: int, num_samples: int, offset_samples: int = 0) -> np.ndarray:
    """Spans of an unmerged, uniform frame grid.

    Frame ``i`` is centred on sample ``offset_samples + i * hop_samples`` and covers half a hop on
    each side, clipped to ``[0, num_samples)``; the first frame starts at 0 and the last ends at
    ``num_samples``, so the spans tile the file.

    Returns
    -------
    np.ndarray [shape=(num_frames, 2)], int64
    """
    if num_frames < 1:
        raise ParameterError(f"num_frames must be at least 1, got {num_frames}")
    centres = offset_samples + hop_samples * np.arange(num_frames, dtype=np.int64)
    bounds = np.clip(centres - hop_samples // 2, 0, num_samples)
    bounds = np.append(bounds, num_samples)
    bounds[0] = 0
    bounds = np.maximum.accumulate(bounds)
    return np.stack([bounds[:-1], bounds[1:]], axis=1)
