"""What turns one decoded waveform into :class:`~adares.features.Features`.

An extractor couples the user's front end (the features they asked for) with an optional
:class:`~adares.importance.Importance` (which frames to merge). :class:`FineMelExtractor` keeps
the fine frames (``--model none``); :class:`MergingExtractor` merges the user's linear mel power by
the importance's scores before the log. :func:`adares.registry.resolve_extractor` builds the one a
model name asks for.

The corpus pipeline builds one extractor per worker process and reuses it for every file.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import soundfile
import torch

from adares import __version__
from adares.errors import ModelError, ParameterError
from adares.features import Features, uniform_spans
from adares.frontend import MelFrontend
from adares.functional.merge import (
    check_min_span_exponent,
    compress,
    merge_average_blocks,
    normalize_scores,
    output_lengths,
)
from adares.functional.merge import spans as merge_spans
from adares.importance import AudioChunks, Importance

__all__ = [
    "Extractor",
    "FineMelExtractor",
    "MergingExtractor",
    "StreamedFeatures",
    "AudioChunks",
    "BLOCK_FRAMES",
    "batch_power",
    "feature_meta",
    "fine_power",
    "power_blocks",
    "resolve_device",
    "versions",
]


class Extractor(Protocol):
    """Turns a waveform into features. ``name`` and ``sha256`` identify the compressor used."""

    frontend: MelFrontend
    name: str
    sha256: str | None
    batches: bool

    def __call__(self, samples: np.ndarray, *, meta: dict[str, Any] | None = None) -> Features: ...

    def batch(self, items: list[np.ndarray], *, metas: list[dict[str, Any] | None]) -> list[Features]: ...

    def stream(
        self, audio: AudioChunks, *, num_samples: int, meta: dict[str, Any] | None = None
    ) -> StreamedFeatures: ...


@dataclass(frozen=True, eq=False)
class StreamedFeatures:
    """The features of a long file, with the rows left to compute block by block.

    What :class:`~adares.features.Features` holds, except that ``mel`` is :meth:`rows`, a pass over
    the file that yields the rows in order; spans, scores and meta are small enough to hold.

    Attributes
    ----------
    num_mels : int
    spans : np.ndarray [shape=(T', 2)], int64
    scores : np.ndarray [shape=(T,)], float32, or None
    meta : dict
    rows : callable
        Each call yields ``np.ndarray [shape=(r, F)]`` float32 pieces, ``T'`` rows in all.
    """

    num_mels: int
    spans: np.ndarray
    scores: np.ndarray | None
    meta: dict[str, Any]
    rows: Callable[[], Iterator[np.ndarray]]

    @property
    def num_frames(self) -> int:
        """``T'``, the number of rows."""
        return int(self.spans.shape[0])


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when available; anything else must name an available torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ParameterError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device {device!r} requested but torch sees no CUDA device here")
    return resolved


class _Batching:
    """``batch()`` for extractors: one padded call for several short files when :attr:`batches`
    allows it, otherwise one call per file (the result is the same either way, tested)."""

    frontend: MelFrontend

    @property
    def batches(self) -> bool:
        """Whether :meth:`batch` applies (centred frames; Kaldi-style files go one by one)."""
        return self.frontend.center

    @torch.inference_mode()
    def batch(self, items: list[np.ndarray], *, metas: list[dict[str, Any] | None]) -> list[Features]:
        """Features of several short files; equal to calling the extractor on each.

        Parameters
        ----------
        items : list of np.ndarray [shape=(N_i,)]
            Float32 audio at ``frontend.sr``, short (the batch is padded to the longest).
        metas : list of dict or None
            Extra ``meta`` entries per item.
        """
        if not self.batches:
            return [self(samples, meta=meta) for samples, meta in zip(items, metas, strict=True)]  # type: ignore[operator]
        return self._batch(items, metas)

    def _batch(self, items: list[np.ndarray], metas: list[dict[str, Any] | None]) -> list[Features]:
        raise NotImplementedError


class FineMelExtractor(_Batching):
    """The fine log-mel without merging (``--model none``): uniform frames and spans.

    Parameters
    ----------
    frontend : MelFrontend
        The front end that defines the features.
    """

    name = "none"
    sha256: str | None = None

    def __init__(self, frontend: MelFrontend) -> None:
        self.frontend = frontend

    @torch.inference_mode()
    def __call__(self, samples: np.ndarray, *, meta: dict[str, Any] | None = None) -> Features:
        """Compute the fine log-mel of ``samples`` [N] (float32 at ``frontend.sr``)."""
        power = fine_power(self.frontend, samples)
        mel = self.frontend.log_mel(power).cpu().numpy()
        spans = uniform_spans(
            mel.shape[0],
            hop_samples=self.frontend.hop_samples,
            num_samples=len(samples),
            offset_samples=self.frontend.frame_offset_samples,
        )
        return Features(
            mel=mel, spans=spans, scores=None, meta=feature_meta(self, num_samples=len(samples), extra=meta)
        )

    def stream(self, audio: AudioChunks, *, num_samples: int, meta: dict[str, Any] | None = None) -> StreamedFeatures:
        """The fine log-mel of a file of any length, its rows computed block by block in :meth:`rows`.

        Parameters
        ----------
        audio : AudioChunks
            The file's samples (float32 at ``frontend.sr``); read once per call of ``rows``.
        num_samples : int
            Samples in the file.
        meta : dict, optional
            Extra ``meta`` entries.
        """
        frontend = self.frontend

        @torch.inference_mode()
        def rows() -> Iterator[np.ndarray]:
            for block in power_blocks(frontend, audio(), num_samples=num_samples):
                yield frontend.log_mel(block).cpu().numpy()

        spans = uniform_spans(
            frontend.num_frames(num_samples),
            hop_samples=frontend.hop_samples,
            num_samples=num_samples,
            offset_samples=frontend.frame_offset_samples,
        )
        return StreamedFeatures(
            num_mels=frontend.n_mels,
            spans=spans,
            scores=None,
            meta=feature_meta(self, num_samples=num_samples, extra=meta),
            rows=rows,
        )

    def _batch(self, items: list[np.ndarray], metas: list[dict[str, Any] | None]) -> list[Features]:
        power, frames, _, _ = batch_power(self.frontend, items)
        mel = self.frontend.log_mel(power).cpu().numpy()
        return [
            Features(
                mel=np.ascontiguousarray(mel[i, : int(frames[i])]),
                spans=uniform_spans(
                    int(frames[i]),
                    hop_samples=self.frontend.hop_samples,
                    num_samples=len(samples),
                    offset_samples=self.frontend.frame_offset_samples,
                ),
                scores=None,
                meta=feature_meta(self, num_samples=len(samples), extra=metas[i]),
            )
            for i, samples in enumerate(items)
        ]


BLOCK_FRAMES = 8192
"""Fine frames computed per block: 41 s at 5 ms, a few MB of spectrum instead of the whole file's."""


@torch.inference_mode()
def fine_power(frontend: MelFrontend, samples: np.ndarray, *, block_frames: int = BLOCK_FRAMES) -> torch.Tensor:
    """Linear mel power of a whole file, computed in blocks of frames (see :func:`power_blocks`).

    Parameters
    ----------
    frontend : MelFrontend
    samples : np.ndarray [shape=(N,)], float32
    block_frames : int
        Frames per block.

    Returns
    -------
    torch.Tensor [shape=(T, F)], float32, on the front end's device
    """
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    total = frontend.num_frames(len(samples))
    blocks = power_blocks(frontend, [samples], num_samples=len(samples), block_frames=block_frames)
    if total <= block_frames:
        return next(blocks)
    result = torch.empty(total, frontend.n_mels, dtype=torch.float32, device=_device(frontend))
    first = 0
    for block in blocks:
        result[first : first + block.shape[0]] = block
        first += block.shape[0]
    return result


@torch.inference_mode()
def power_blocks(
    frontend: MelFrontend, chunks: Iterable[np.ndarray], *, num_samples: int, block_frames: int = BLOCK_FRAMES
) -> Iterator[torch.Tensor]:
    """Linear mel power of a file of ``num_samples`` samples, ``block_frames`` frames at a time.

    Each block is computed from a slice of the waveform with a margin of whole hops on both
    sides, so every frame sees exactly the samples (or the edge padding) it would see in one
    call; a file of at most ``block_frames`` frames is one call. Only one block's samples and
    spectrum are held at a time, whatever the file's length.

    Parameters
    ----------
    frontend : MelFrontend
    chunks : iterable of np.ndarray [shape=(n_k,)], float32
        The samples in consecutive pieces of any size, ``Σ n_k = num_samples``.
    num_samples : int
    block_frames : int

    Yields
    ------
    torch.Tensor [shape=(t, F)], float32, on the front end's device
        Frames ``[k·block_frames, k·block_frames + t)``; together, all ``T`` frames in order.

    Raises
    ------
    ParameterError
        If the chunks hold fewer or more than ``num_samples`` samples.
    """
    device = _device(frontend)
    total = frontend.num_frames(num_samples)
    hop = frontend.hop_samples
    reader = _SampleWindow(chunks, num_samples=num_samples)
    if total <= block_frames:
        power, _ = frontend.power(torch.from_numpy(reader.take(0, num_samples)).to(device))
        reader.finish()
        yield power[0, :total]
        return
    margin = -(-max(frontend.n_fft, frontend.win_samples) // hop) + 1
    for first in range(0, total, block_frames):
        last = min(total, first + block_frames)
        start_frame = max(0, first - margin)
        segment = reader.take(start_frame * hop, min(num_samples, (last + margin) * hop + frontend.n_fft))
        power, _ = frontend.power(torch.from_numpy(segment).to(device))
        yield power[0, first - start_frame : last - start_frame]
    reader.finish()


class _SampleWindow:
    """Slices ``[start, end)`` of a signal that arrives in chunks, for non-decreasing ``start``."""

    def __init__(self, chunks: Iterable[np.ndarray], *, num_samples: int) -> None:
        self._chunks = iter(chunks)
        self._buffer = np.empty(0, dtype=np.float32)
        self._offset = 0  # sample index of _buffer[0]
        self._num_samples = num_samples

    def take(self, start: int, end: int) -> np.ndarray:
        if start > self._offset:
            self._buffer = self._buffer[start - self._offset :]
            self._offset = start
        pieces = [self._buffer]
        available = self._offset + len(self._buffer)
        while available < end:
            chunk = next(self._chunks, None)
            if chunk is None:
                raise ParameterError(f"the audio ended after {available} samples; {self._num_samples} were announced")
            chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
            pieces.append(chunk)
            available += len(chunk)
        if len(pieces) > 1:
            self._buffer = np.concatenate(pieces)
        return np.ascontiguousarray(self._buffer[start - self._offset : end - self._offset])

    def finish(self) -> None:
        extra = sum(len(np.asarray(chunk).reshape(-1)) for chunk in self._chunks)
        extra += self._offset + len(self._buffer) - self._num_samples
        if extra > 0:
            raise ParameterError(f"the audio holds {extra} samples more than the {self._num_samples} announced")


def _device(frontend: MelFrontend) -> torch.device:
    return next(iter(frontend.buffers())).device


@torch.inference_mode()
def batch_power(
    frontend: MelFrontend, items: list[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear mel power of several files in one call (zero-padded batch with lengths).

    Parameters
    ----------
    frontend : MelFrontend
    items : list of np.ndarray [shape=(N_i,)], float32

    Returns
    -------
    power : torch.Tensor [shape=(B, T_max, F)]
        Each item's frames first, then padding.
    frames : torch.Tensor [shape=(B,)], int64
        Valid frames per item.
    waveform : torch.Tensor [shape=(B, N_max)]
        The zero-padded audio, on the front end's device.
    lengths : torch.Tensor [shape=(B,)], int64
        Samples per item.
    """
    if not items:
        raise ParameterError("batch_power needs at least one item")
    device = _device(frontend)
    lengths = torch.tensor([len(samples) for samples in items], dtype=torch.int64)
    waveform = torch.zeros(len(items), int(lengths.max()), dtype=torch.float32)
    for row, samples in zip(waveform, items, strict=True):
        row[: len(samples)] = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    waveform, lengths = waveform.to(device), lengths.to(device)
    power, frames = frontend.power(waveform, lengths)
    return power, frames, waveform, lengths


@functools.cache
def versions() -> dict[str, str]:
    """The versions of what computes features: adares, torch, numpy, soundfile and its libsndfile, soxr.

    Recorded in every feature file's ``meta`` (a copy), so a feature file says what made it.
    """
    found = {"adares": __version__, "torch": torch.__version__, "numpy": np.__version__}
    for package in ("soundfile", "soxr"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    found["libsndfile"] = str(getattr(soundfile, "__libsndfile_version__", "unknown"))
    return found


def feature_meta(extractor: Extractor, *, num_samples: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``meta`` record of a feature file: every setting that produced it, and provenance."""
    frontend = extractor.frontend
    meta: dict[str, Any] = {
        "adares_version": __version__,
        "sr": frontend.sr,
        "hop_samples": frontend.hop_samples,
        "win_samples": frontend.win_samples,
        "frame_offset_samples": frontend.frame_offset_samples,
        "n_fft": frontend.n_fft,
        "n_mels": frontend.n_mels,
        "fmin": frontend.fmin,
        "fmax": frontend.fmax,
        "preset": frontend.preset,
        "log": frontend.log,
        "compressor": extractor.name,
        "compressor_sha256": extractor.sha256,
        "reduction": getattr(extractor, "reduction", None),
        "min_span_exponent": getattr(extractor, "min_span_exponent", None),
        "num_samples": int(num_samples),
        "versions": dict(versions()),
    }
    if extra:
        meta.update(extra)
    return meta


class MergingExtractor(_Batching):
    """Fine mel power merged by importance scores, then the log: variable-resolution features.

    The scores come from ``importance`` (a trained estimator reading its own analysis of the
    audio, or the spectral flux); the merge applies to the user's front end, whatever its
    number of mel bins, because both share the fine time grid.

    Parameters
    ----------
    frontend : MelFrontend
        The user's front end (defines the merged features).
    importance : adares.importance.Importance
        Raw scores per fine frame.
    reduction : float
        Fraction of frames merged away: T' = round((1 - reduction) T), at least 1.
    min_span_exponent : float, optional
        ``κ`` in ``[0, 1]``: every output frame spans at least ``(T/T')^κ`` fine frames (see
        :func:`~adares.functional.merge.normalize_scores`). Default: the importance's own
        (a bundle's card says it; 0 for the flux).
    """

    def __init__(
        self,
        frontend: MelFrontend,
        importance: Importance,
        *,
        reduction: float,
        min_span_exponent: float | None = None,
    ) -> None:
        self.frontend = frontend
        self.importance = importance
        self.reduction = float(reduction)
        self.min_span_exponent = check_min_span_exponent(
            importance.min_span_exponent if min_span_exponent is None else min_span_exponent
        )
        self.name = importance.name
        self.sha256 = importance.sha256

    @torch.inference_mode()
    def __call__(self, samples: np.ndarray, *, meta: dict[str, Any] | None = None) -> Features:
        """Compute merged features of ``samples`` [N] (float32 at ``frontend.sr``)."""
        power = fine_power(self.frontend, samples)
        raw = self.importance.score(samples, power, frontend=self.frontend).to(power.device, torch.float32)
        frames = power.shape[0]
        out_frames = output_lengths(torch.tensor([frames]), reduction=self.reduction).to(power.device)
        merged = compress(power[None], raw[None], out_frames=out_frames, min_span_exponent=self.min_span_exponent)
        count = int(merged.lengths[0])
        ranges = merge_spans(
            merged.scores,
            merged.lengths,
            hop_samples=self.frontend.hop_samples,
            num_samples=len(samples),
            offset_samples=self.frontend.frame_offset_samples,
        )
        return Features(
            mel=self.frontend.log_mel(merged.power[0, :count]).cpu().numpy(),
            spans=ranges[0, :count].cpu().numpy(),
            scores=merged.scores[0].cpu().numpy(),
            meta=feature_meta(self, num_samples=len(samples), extra=meta),
        )

    @torch.inference_mode()
    def stream(self, audio: AudioChunks, *, num_samples: int, meta: dict[str, Any] | None = None) -> StreamedFeatures:
        """Merged features of a file of any length, equal to calling the extractor on it.

        The importance scores the file in passes over blocks (:meth:`Importance.score_long`); the
        scores are normalised over the whole file, then :meth:`StreamedFeatures.rows` merges the
        power block by block (:func:`~adares.functional.merge.merge_average_blocks`). Memory holds
        a few blocks and a few numbers per fine frame, never the samples or the ``[T, F]`` power.

        Parameters
        ----------
        audio : AudioChunks
            The file's samples (float32 at ``frontend.sr``); read once per pass.
        num_samples : int
            Samples in the file.
        meta : dict, optional
            Extra ``meta`` entries.
        """
        frontend = self.frontend

        def power() -> Iterator[torch.Tensor]:
            return power_blocks(frontend, audio(), num_samples=num_samples)

        raw = self.importance.score_long(audio=audio, power=power, num_samples=num_samples, frontend=frontend)
        frames = frontend.num_frames(num_samples)
        if raw.shape != (frames,):
            raise ModelError(f"{self.name} gave {tuple(raw.shape)} scores for {frames} frames")
        count = int(output_lengths(torch.tensor([frames]), reduction=self.reduction)[0])
        scores = normalize_scores(raw[None].to(torch.float32), count, min_span_exponent=self.min_span_exponent)
        spans = merge_spans(
            scores,
            count,
            hop_samples=frontend.hop_samples,
            num_samples=num_samples,
            offset_samples=frontend.frame_offset_samples,
        )

        @torch.inference_mode()
        def rows() -> Iterator[np.ndarray]:
            for _, merged in merge_average_blocks(power(), scores[0], count):
                yield frontend.log_mel(merged).cpu().numpy()

        return StreamedFeatures(
            num_mels=frontend.n_mels,
            spans=spans[0].cpu().numpy(),
            scores=scores[0].cpu().numpy(),
            meta=feature_meta(self, num_samples=num_samples, extra=meta),
            rows=rows,
        )

    def _batch(self, items: list[np.ndarray], metas: list[dict[str, Any] | None]) -> list[Features]:
        power, frames, waveform, lengths = batch_power(self.frontend, items)
        raw = self.importance.score_batch(
            waveform=waveform, lengths=lengths, power=power, frames=frames, frontend=self.frontend
        )
        out_frames = output_lengths(frames, reduction=self.reduction).to(power.device)
        merged = compress(
            power,
            raw.to(power.device, torch.float32),
            out_frames=out_frames,
            lengths=frames,
            min_span_exponent=self.min_span_exponent,
        )
        ranges = (
            merge_spans(
                merged.scores,
                merged.lengths,
                hop_samples=self.frontend.hop_samples,
                num_samples=lengths,
                offset_samples=self.frontend.frame_offset_samples,
            )
            .cpu()
            .numpy()
        )
        mel = self.frontend.log_mel(merged.power).cpu().numpy()
        scores = merged.scores.cpu().numpy()
        features = []
        for i, samples in enumerate(items):
            count, fine = int(merged.lengths[i]), int(frames[i])
            features.append(
                Features(
                    mel=np.ascontiguousarray(mel[i, :count]),
                    spans=np.ascontiguousarray(ranges[i, :count]),
                    scores=np.ascontiguousarray(scores[i, :fine]),
                    meta=feature_meta(self, num_samples=len(samples), extra=metas[i]),
                )
            )
        return features
