"""Importance: how much each fine frame matters, as raw scores in ``(0, 1]``.

One abstraction serves extraction and training. An :class:`Importance` scores the fine frames
of one file of any length (:meth:`~Importance.score`) or of a zero-padded batch of short files
(:meth:`~Importance.score_batch`); the merge (:mod:`adares.functional.merge`) turns the raw
scores into output frames. Two kinds exist:

- :class:`FluxImportance`, the training-free spectral flux of the natural-log mel power
  (``--model flux``, and :class:`adares.diffres.FluxCompressor` in training);
- :class:`adares.compressor.Compressor`, a trained :class:`~adares.diffres.ImportanceEstimator`
  bundle that reads its own analysis of the audio (``--model default`` or a bundle folder).

:func:`adares.registry.resolve_importance` maps a model name to one of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from adares.frontend import MelFrontend
from adares.functional.importance import FLUX_FLOOR, flux_rise, normalise_flux, spectral_flux

__all__ = ["Importance", "FluxImportance", "FLUX_LOG_EPS", "natural_log_mel", "AudioChunks", "PowerBlocks"]

AudioChunks = Callable[[], Iterator[np.ndarray]]
"""A file's mono float32 samples at the front end's rate, in consecutive chunks of any size; each
call starts over from the beginning (a long file is read once per pass)."""

PowerBlocks = Callable[[], Iterator[Tensor]]
"""A file's fine linear mel power ``[t, F]``, in consecutive blocks of frames; each call starts over."""

FLUX_LOG_EPS = 1e-6
"""Added to the mel power before the natural log the flux is taken of, whatever log the user asked for."""


def natural_log_mel(power: Tensor) -> Tensor:
    """``ln(power + FLUX_LOG_EPS)``: the log-mel a training-free importance reads, any shape."""
    return torch.log(power + FLUX_LOG_EPS)


class Importance(ABC):
    """Raw importance of the fine frames a front end gives, in ``(0, 1]``.

    Attributes
    ----------
    name : str
        What the output metadata and the configuration hash record (``"flux"``, a bundle's name).
    sha256 : str or None
        Digest of the weights, for a trained importance; None for a heuristic.
    min_span_exponent : float
        The score cap the merge uses with this importance unless told otherwise (see
        :func:`adares.functional.merge.normalize_scores`); a bundle's card sets it.
    """

    name: str
    sha256: str | None = None
    min_span_exponent: float = 0.0

    @abstractmethod
    def score(self, samples: np.ndarray, power: Tensor, *, frontend: MelFrontend) -> Tensor:
        """Raw scores of one file.

        Parameters
        ----------
        samples : np.ndarray [shape=(N,)], float32
            Mono audio at ``frontend.sr``, any length.
        power : torch.Tensor [shape=(T, F)]
            ``frontend``'s linear mel power of ``samples``.
        frontend : MelFrontend
            The user's front end (centred or not).

        Returns
        -------
        torch.Tensor [shape=(T,)]
        """

    @abstractmethod
    def score_batch(
        self, *, waveform: Tensor, lengths: Tensor, power: Tensor, frames: Tensor, frontend: MelFrontend
    ) -> Tensor:
        """Raw scores of a zero-padded batch of short files; item ``b`` equals :meth:`score` of it alone.

        Parameters
        ----------
        waveform : torch.Tensor [shape=(B, N)]
            The audio, zero-padded to the longest item.
        lengths : torch.Tensor [shape=(B,)], int64
            Valid samples per item.
        power : torch.Tensor [shape=(B, T, F)]
            ``frontend``'s linear mel power of the batch.
        frames : torch.Tensor [shape=(B,)], int64
            Valid frames per item.
        frontend : MelFrontend
            The user's front end (centred).

        Returns
        -------
        torch.Tensor [shape=(B, T)]
            0 on padding frames.
        """

    @abstractmethod
    def score_long(self, *, audio: AudioChunks, power: PowerBlocks, num_samples: int, frontend: MelFrontend) -> Tensor:
        """Raw scores of one file of any length, read in passes over blocks; equal to :meth:`score`.

        Holds a few blocks and the ``T`` scores at a time, never the file's samples or its
        ``[T, F]`` power.

        Parameters
        ----------
        audio : AudioChunks
            The file's samples, for an importance that reads its own analysis.
        power : PowerBlocks
            ``frontend``'s power of the file, block by block.
        num_samples : int
            Samples in the file.
        frontend : MelFrontend
            The user's front end.

        Returns
        -------
        torch.Tensor [shape=(T,)]
        """


class FluxImportance(Importance):
    """The training-free baseline: positive spectral flux of the natural-log mel power.

    Parameters
    ----------
    floor : float
        Added to the normalised flux (see :func:`adares.functional.importance.spectral_flux`).
    """

    name = "flux"

    def __init__(self, *, floor: float = FLUX_FLOOR) -> None:
        self.floor = float(floor)

    def of_log_mel(self, log_mel: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Raw scores ``[B, T]`` of a natural-log mel ``[B, T, F]`` (what training modules call)."""
        return spectral_flux(log_mel, lengths, floor=self.floor)

    def score(self, samples: np.ndarray, power: Tensor, *, frontend: MelFrontend) -> Tensor:
        """Raw scores ``[T]`` of one file's mel power ``[T, F]``."""
        return self.of_log_mel(natural_log_mel(power)[None])[0]

    def score_batch(
        self, *, waveform: Tensor, lengths: Tensor, power: Tensor, frames: Tensor, frontend: MelFrontend
    ) -> Tensor:
        """Raw scores ``[B, T]`` of a padded batch's mel power ``[B, T, F]`` with ``frames`` valid."""
        return self.of_log_mel(natural_log_mel(power), frames)

    def score_long(self, *, audio: AudioChunks, power: PowerBlocks, num_samples: int, frontend: MelFrontend) -> Tensor:
        """Raw scores ``[T]``: the flux's rises block by block, normalised by the file's peak at the end."""
        rises = []
        previous = None
        for block in power():
            log_mel = natural_log_mel(block)[None]
            rises.append(flux_rise(log_mel, previous)[0])
            previous = log_mel[:, -1]
        return normalise_flux(torch.cat(rises)[None], floor=self.floor)[0]

    def __repr__(self) -> str:
        return f"FluxImportance(floor={self.floor:g})"
