"""DiffRes: a learned, differentiable temporal resolution for log-mel features, and its baselines.

:class:`DiffRes` scores every fine frame with a small residual CNN (:class:`ImportanceEstimator`),
normalises the scores to sum to the output length, and merges the frames with the overlap
weights of :mod:`adares.functional.merge` (linear power, averaged and max), adding a resolution
encoding that tells the classifier where each output frame came from. A guide loss teaches the
estimator to give blank frames (SpecAugment masks, silence) low scores.

Every module here shares one interface so that training and benchmarks can swap them:
``forward(log_mel [B, T, F], lengths=None, *, reduction=None) -> DiffResOutput``, with
``feature_channels`` planes in ``feature``. Baselines: :class:`FluxCompressor` (training-free
spectral-flux scores, the same merge), :class:`AvgPoolCompressor`, :class:`MaxPoolCompressor`
(uniform scores), :class:`ChangeHopCompressor` (keep uniformly spaced frames) and
:class:`Identity` (no compression).

Inputs are natural-log mel power. Merging happens on linear power, computed in the log domain
(:func:`adares.functional.merge.merge_log`), so log-mels that are not negative everywhere
(dB-scaled or unnormalised) neither overflow nor crash the guide loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adares.errors import ParameterError
from adares.functional import BLOCK_ELEMENTS
from adares.functional.importance import FLUX_FLOOR, flux_rise, normalise_flux
from adares.functional.merge import (
    _keep_fraction,
    _resolve_lengths,
    check_min_span_exponent,
    diffres_planes,
    merge_log,
    normalize_scores,
    output_lengths,
)
from adares.importance import FluxImportance

__all__ = [
    "DiffResOutput",
    "ImportanceEstimator",
    "DiffRes",
    "FluxCompressor",
    "AvgPoolCompressor",
    "MaxPoolCompressor",
    "ChangeHopCompressor",
    "Identity",
    "guide_loss",
    "uniform_scores",
    "input_sums",
    "standardisation",
]

_EPS = 1e-12  # added to merged power before the log, as the reference does
# Bound of |gain · logits| in a flux-based estimator: a correction of at most e^30 either way.
_MAX_LOG_CORRECTION = 30.0
# Added to the input variance when the estimator standardises (a silent clip has variance 0).
_STANDARDIZE_EPS = 1e-5


@dataclass
class DiffResOutput:
    """What a compressor returns.

    Attributes
    ----------
    feature : torch.Tensor [shape=(B, C, R, F)]
        Input to the classifier, ``C = feature_channels`` planes (DiffRes: averaged log-mel,
        max log-mel, resolution encoding); ``R = max_b T'_b``, rows past ``lengths[b]`` are 0.
    avg : torch.Tensor [shape=(B, R, F)]
        ``ln(Σ_i W[i, j]·exp(x_i) + 1e-12)``, a view of ``feature``. One-plane baselines put
        their plane here whatever it holds (selected frames, the max merge, the fine frames),
        so ``avg`` is always what a one-plane classifier reads.
    max : torch.Tensor [shape=(B, R, F)] or None
        ``ln((T/T')·max_i W[i, j]·exp(x_i) + 1e-12)``.
    resolution : torch.Tensor [shape=(B, R, F)] or None
        ``Σ_i W[i, j]·PE_i``.
    scores : torch.Tensor [shape=(B, T)]
        Normalised scores of the fine frames (sum ``lengths[b]``, each <= 1, 0 on padding).
    lengths : torch.Tensor [shape=(B,)], int64
        Output frames per item.
    guide_loss : torch.Tensor, scalar
        Add to the task loss (weight 1 in the paper); 0 for modules without parameters to guide.
    activeness : torch.Tensor, scalar
        Mean over items of the standard deviation of the scores of non-blank frames
        (a diagnostic of how selective the scores are; no gradient).
    """

    feature: Tensor
    avg: Tensor
    max: Tensor | None
    resolution: Tensor | None
    scores: Tensor
    lengths: Tensor
    guide_loss: Tensor
    activeness: Tensor

    def __getitem__(self, key: str) -> Tensor | None:
        """Dictionary-style access (``out["feature"]``), as the reference's dict output."""
        return getattr(self, key)


# --------------------------------------------------------------------------------------------
# pure functions


def guide_loss(
    log_mel: Tensor, scores: Tensor, lengths: Tensor | None = None, *, reduction: float, rtol: float = 1e-5
) -> tuple[Tensor, Tensor]:
    """Guide loss and activeness of DiffRes, robust to any log scale.

    Blank frames are the valid frames whose mean energy equals the energy of the item's minimum
    (the lowest log-mel value over its valid frames and bins, within ``rtol``): since no bin lies
    below the minimum, that means every bin sits at it, which is what SpecAugment time masks
    filled with the clip minimum, padding and digital silence look like. The test is
    ``max_f x[t, f] <= min + tol`` on the log values, so no ``exp`` can overflow on positive
    (dB-scaled, unnormalised) inputs. With ``g_b`` the mean score of item ``b``'s blank frames,
    the loss is the batch mean of ``g_b·[g_b > ½(1 - ρ)]``; items without blank frames add 0.

    The reference instead takes the frames whose mean energy is the lowest *frame* energy, so
    its loss always pushes at least the quietest frame down, blank or not; here a clip without
    blank frames costs nothing.

    Parameters
    ----------
    log_mel : torch.Tensor [shape=(B, T, F)]
        Log-mel (any log scale).
    scores : torch.Tensor [shape=(B, T)]
        Normalised scores.
    lengths : torch.Tensor [shape=(B,)], optional
        Valid frames per item.
    reduction : float
        ``ρ``, for the threshold ``½(1 - ρ)``.
    rtol : float
        Tolerance on the log values, relative to ``max(1, |minimum|)``.

    Returns
    -------
    loss : torch.Tensor, scalar
        Differentiable with respect to ``scores``.
    activeness : torch.Tensor, scalar
        Batch mean of the standard deviation of the other frames' scores (items with fewer than
        two such frames contribute 0); detached.
    """
    batch, frames = scores.shape
    lengths = _resolve_lengths(lengths, batch=batch, frames=frames, device=scores.device)
    mask = torch.arange(frames, device=scores.device)[None, :] < lengths[:, None]
    with torch.no_grad():
        loudest = log_mel.detach().amax(-1)
        lowest = torch.where(mask, log_mel.detach().amin(-1), float("inf")).amin(1, keepdim=True)
        blank = mask & (loudest <= lowest + rtol * lowest.abs().clamp_min(1.0))
    other = mask & ~blank

    blank_count = blank.sum(1)
    blank_mean = torch.where(blank, scores, 0.0).sum(1) / blank_count.clamp_min(1).to(scores.dtype)
    active = (blank_count > 0) & (blank_mean > 0.5 * (1.0 - reduction))
    loss = torch.where(active, blank_mean, 0.0).mean() if batch else scores.sum() * 0.0

    with torch.no_grad():
        count = other.sum(1).to(scores.dtype)
        mean = torch.where(other, scores, 0.0).sum(1) / count.clamp_min(1.0)
        spread = torch.where(other, (scores - mean[:, None]) ** 2, 0.0).sum(1) / (count - 1.0).clamp_min(1.0)
        std = torch.where(count >= 2, spread.sqrt(), 0.0)
        activeness = std.mean() if batch else std.sum()
    return loss, activeness


def uniform_scores(lengths: Tensor, out_frames: Tensor, frames: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Equal scores ``T'_b / T_b`` on every valid frame (uniform pooling), 0 on padding.

    Returns
    -------
    torch.Tensor [shape=(B, frames)]
    """
    mask = torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]
    value = out_frames.to(torch.float64) / lengths.to(torch.float64)
    return torch.where(mask, value[:, None], 0.0).to(dtype)


# --------------------------------------------------------------------------------------------
# the importance estimator


class _MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics ignore padded frames."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # noqa: D102
        if mask is None or not self.training:
            return super().forward(x)
        weight = mask.to(x.dtype)  # [B, 1, T]
        count = weight.sum()
        mean = (x * weight).sum((0, 2)) / count
        var = (((x - mean[None, :, None]) ** 2) * weight).sum((0, 2)) / count
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1.0).clamp_min(1.0)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), factor)
        out = (x - mean[None, :, None]) * torch.rsqrt(var[None, :, None] + self.eps)
        if self.affine:
            out = out * self.weight[None, :, None] + self.bias[None, :, None]
        return out


class _ResidualBlock(nn.Module):
    """``h = BN(ReLU(conv1(x)))``, ``out = BN(ReLU(conv2(h))) + h`` (the reference block)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, padding=padding)
        self.bn1 = _MaskedBatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, padding=padding)
        self.bn2 = _MaskedBatchNorm1d(out_channels)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:  # noqa: D102
        # Padded frames are zeroed before each convolution, exactly like the zero padding past
        # the end of a clip, so an item gives the same scores alone as inside a padded batch.
        h = self.bn1(F.relu(self.conv1(_masked(x, mask))), mask)
        return self.bn2(F.relu(self.conv2(_masked(h, mask))), mask) + h


def _masked(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask.to(x.dtype)


def input_sums(values: Tensor) -> tuple[Tensor, Tensor, int]:
    """Float64 sum and sum of squares of ``values`` and their count: what :func:`standardisation` needs.

    Sums of pieces add up to the sums of the whole (to float64 rounding), so a long input can be
    summed block by block.
    """
    return (
        values.sum(dtype=torch.float64),
        torch.linalg.vector_norm(values, dtype=torch.float64).square(),
        values.numel(),
    )


def standardisation(total: Tensor, squares: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Mean and inverse standard deviation (float64 scalars) from :func:`input_sums`.

    The variance gets ``1e-5`` added, so a constant input (silence) standardises to 0, not NaN.
    """
    size = max(1, count)
    mean = total / size
    variance = (squares / size - mean.square()).clamp_min(0.0)
    return mean, torch.rsqrt(variance + _STANDARDIZE_EPS)


class ImportanceEstimator(nn.Module):
    """Residual 1-D CNN over time giving a raw importance per fine frame (the paper's estimator).

    Five blocks with kernel 5 by default, channels halving from ``n_mels`` to 1
    (``128 -> 64 -> 32 -> 16 -> 8 -> 1``: 82,371 parameters, as the reference), for any number of
    mel bins (at least one channel per block). Padded frames are masked at every convolution and
    left out of the batch-norm statistics.

    Parameters
    ----------
    n_mels : int
        Mel bins of the input.
    kernel_size : int
        Odd kernel width of every convolution.
    num_blocks : int
        Residual blocks.
    channels : sequence of int, optional
        Output channels of each block (the last must be 1); default halving.
    standardize : bool
        Standardise each item's input to zero mean and unit variance over its valid frames and
        bins before the first convolution (the reference feeds the raw log-mel). A raw ln-mel has
        a mean near -8 and a spread near 4, and the first block's ReLU sits before its batch norm,
        so most first-layer channels start (and stay) dead; standardised input keeps them alive
        and makes the scores independent of the recording's level.
    flux_base : bool
        Start at the training-free flux and learn a correction: raw scores are the spectral flux's
        (:func:`~adares.functional.importance.spectral_flux` of the natural-log input, normalised by
        each item's peak) times ``exp(gain · logits)``, with the scalar ``gain`` starting at 0. A
        new estimator scores exactly as ``--model flux`` does, and training moves away from the
        flux only where the gradient says so (the network's weights get gradient once ``gain``
        has left 0). Raw scores then lie in ``(0, ∞)``; the merge normalises them.
    learn_sharpness : bool
        With :attr:`flux_base` only: raise the flux's scores to a learned power ``exp(log_sharpness)``
        before the correction, the scalar ``log_sharpness`` starting at 0 (the plain flux). Below 1
        the flux's peaks flatten towards uniform pooling, above 1 they sharpen; how sharp the
        scores may get is then learned rather than fixed by the flux's floor.
    flux_power : float
        With :attr:`flux_base` only: the power the flux's scores start at (``learn_sharpness``) or
        are held at (a fixed buffer ``log_sharpness``, not trained); 1 is the plain flux.
    """

    def __init__(
        self,
        n_mels: int,
        *,
        kernel_size: int = 5,
        num_blocks: int = 5,
        channels: Sequence[int] | None = None,
        standardize: bool = False,
        flux_base: bool = False,
        learn_sharpness: bool = False,
        flux_power: float = 1.0,
    ) -> None:
        super().__init__()
        if learn_sharpness and not flux_base:
            raise ParameterError("learn_sharpness needs flux_base: it sharpens the flux's scores")
        if isinstance(flux_power, bool) or not isinstance(flux_power, (int, float)) or not 0.0 < flux_power < math.inf:
            raise ParameterError(f"flux_power must be a positive number, got {flux_power!r}")
        if flux_power != 1.0 and not flux_base:
            raise ParameterError("flux_power needs flux_base: it is the power of the flux's scores")
        if isinstance(n_mels, bool) or not isinstance(n_mels, int) or n_mels < 1:
            raise ParameterError(f"n_mels must be a positive int, got {n_mels!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ParameterError(f"kernel_size must be odd and positive, got {kernel_size}")
        if channels is None:
            if num_blocks < 1:
                raise ParameterError(f"num_blocks must be at least 1, got {num_blocks}")
            channels = [max(1, n_mels >> k) for k in range(1, num_blocks)] + [1]
        channels = [int(c) for c in channels]
        if not channels or channels[-1] != 1 or min(channels) < 1:
            raise ParameterError(f"channels must be positive and end with 1, got {channels}")
        self.n_mels = n_mels
        self.kernel_size = kernel_size
        self.channels = tuple(channels)
        self.standardize = bool(standardize)
        self.flux_base = bool(flux_base)
        if self.flux_base:
            self.correction_gain = nn.Parameter(torch.zeros(()))
        self.learn_sharpness = bool(learn_sharpness)
        self.flux_power = float(flux_power)
        log_power = torch.tensor(math.log(self.flux_power))
        if self.learn_sharpness:
            self.log_sharpness = nn.Parameter(log_power)
        elif self.flux_power != 1.0:
            self.register_buffer("log_sharpness", log_power)
        widths = [n_mels, *channels]
        self.blocks = nn.ModuleList(
            _ResidualBlock(cin, cout, kernel_size) for cin, cout in zip(widths[:-1], widths[1:], strict=True)
        )

    @property
    def receptive_field(self) -> int:
        """Fine frames that influence one score (41 for the default)."""
        return 1 + 2 * len(self.blocks) * (self.kernel_size - 1)

    def input_statistics(self, log_mel: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-item mean and inverse standard deviation of the input, over valid frames and bins.

        What :attr:`standardize` subtracts and multiplies by; pass them to :meth:`forward` to score
        a long input in pieces with the statistics of the whole.

        Parameters
        ----------
        log_mel : torch.Tensor [shape=(B, T, n_mels)]
        lengths : torch.Tensor [shape=(B,)], optional

        Returns
        -------
        mean, inverse_std : torch.Tensor [shape=(B, 1, 1)]
        """
        _check_log_mel(log_mel, self.n_mels)
        batch, frames, _ = log_mel.shape
        if lengths is None:
            counts = [frames] * batch
        else:
            counts = _resolve_lengths(lengths, batch=batch, frames=frames, device=log_mel.device).tolist()
        # Item by item over its own valid frames, with float64 sums and no [T, F] temporary: the
        # same arithmetic alone as inside a padded batch, and a few bytes for an hour of frames.
        means, inverse_stds = [], []
        for item, count in enumerate(counts):
            mean, inverse_std = standardisation(*input_sums(log_mel[item, :count]))
            means.append(mean)
            inverse_stds.append(inverse_std)
        mean = torch.stack(means).to(log_mel.dtype).reshape(batch, 1, 1)
        return mean, torch.stack(inverse_stds).to(log_mel.dtype).reshape(batch, 1, 1)

    def forward(
        self,
        log_mel: Tensor,
        lengths: Tensor | None = None,
        *,
        statistics: tuple[Tensor, Tensor] | None = None,
        flux_peak: Tensor | None = None,
    ) -> Tensor:
        """Raw scores.

        Parameters
        ----------
        log_mel : torch.Tensor [shape=(B, T, n_mels)]
        lengths : torch.Tensor [shape=(B,)], optional
        statistics : (torch.Tensor, torch.Tensor) [shape=(B, 1, 1)], optional
            :meth:`input_statistics` to standardise with instead of those of ``log_mel`` (only
            used when :attr:`standardize` is set).
        flux_peak : torch.Tensor [shape=(B, 1)], optional
            The flux's peak to normalise by instead of that of ``log_mel`` (:meth:`flux_peak`; only
            used when :attr:`flux_base` is set): how a long input is scored in pieces.

        Returns
        -------
        torch.Tensor [shape=(B, T)]
            ``sigmoid`` of the network output, floored at the smallest normal float so it lies in
            ``(0, 1)``; with :attr:`flux_base`, the flux's scores times ``exp(gain · logits)``.
            0 on padding frames.
        """
        _check_log_mel(log_mel, self.n_mels)
        batch, frames, _ = log_mel.shape
        mask = None
        if lengths is not None:
            lengths = _resolve_lengths(lengths, batch=batch, frames=frames, device=log_mel.device)
            # A mask of ones changes nothing in evaluation (it multiplies each convolution's input
            # by 1); in training it also selects the batch-norm statistics' arithmetic, so it stays.
            if self.training or int(lengths.min()) < frames:
                mask = (torch.arange(frames, device=log_mel.device)[None, :] < lengths[:, None])[:, None, :]
        if not self.standardize:
            statistics = None
        elif statistics is None:
            statistics = self.input_statistics(log_mel, lengths)
        window = max(1, BLOCK_ELEMENTS // (batch * self.n_mels))
        if self.training or frames <= window:
            logits = self._logits(log_mel, mask, statistics)
        else:
            logits = torch.cat(list(self._windows(log_mel, mask, window, statistics)), dim=1)
        if self.flux_base:
            raw = self._flux_corrected(log_mel, lengths, logits, flux_peak)
        else:
            raw = torch.sigmoid(logits).clamp_min(torch.finfo(logits.dtype).tiny)
        return raw if mask is None else torch.where(mask[:, 0], raw, 0.0)

    def flux_peak(self, log_mel: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Each item's largest flux rise over its valid frames, ``[B, 1]``: what :attr:`flux_base` normalises by."""
        _check_log_mel(log_mel, self.n_mels)
        batch, frames, _ = log_mel.shape
        rise = flux_rise(log_mel.detach())
        if lengths is not None:
            lengths = _resolve_lengths(lengths, batch=batch, frames=frames, device=log_mel.device)
            rise = torch.where(torch.arange(frames, device=log_mel.device)[None, :] < lengths[:, None], rise, 0.0)
        return rise.amax(1, keepdim=True)

    def _flux_corrected(
        self, log_mel: Tensor, lengths: Tensor | None, logits: Tensor, flux_peak: Tensor | None
    ) -> Tensor:
        peak = self.flux_peak(log_mel, lengths) if flux_peak is None else flux_peak
        base = normalise_flux(flux_rise(log_mel.detach()), floor=FLUX_FLOOR, peak=peak)
        if hasattr(self, "log_sharpness"):  # a learned power, or a fixed one other than 1
            # base lies in [FLUX_FLOOR, 1], so any power of it is finite and positive.
            base = base ** self.log_sharpness.exp()
        # The correction's exponent is bounded so a runaway gain cannot overflow the raw scores.
        return base * torch.exp((self.correction_gain * logits).clamp(-_MAX_LOG_CORRECTION, _MAX_LOG_CORRECTION))

    def _logits(self, log_mel: Tensor, mask: Tensor | None, statistics: tuple[Tensor, Tensor] | None) -> Tensor:
        """Logits ``[B, T]`` of time-major ``log_mel`` ``[B, T, F]``."""
        x = log_mel
        if statistics is not None:
            mean, inverse_std = statistics
            x = (x - mean) * inverse_std  # on the contiguous time-major layout, before the transpose
        # channels-first for the convolutions, laid out once here rather than by the first one
        x = x.transpose(1, 2).contiguous()
        for block in self.blocks:
            x = block(x, mask)
        return x[:, 0]

    def _windows(
        self, log_mel: Tensor, mask: Tensor | None, window: int, statistics: tuple[Tensor, Tensor] | None
    ) -> Iterator[Tensor]:
        """Logits window by window, each with ``halo`` frames of context on both sides.

        In evaluation mode the network is local (batch norm is a fixed affine map), and every
        convolution's zero padding spoils ``kernel_size // 2`` frames at a window edge; with
        ``halo = (receptive_field - 1) / 2`` the frames kept are exact, and the activations held
        are a window's, whatever the input's length.
        """
        frames = log_mel.shape[1]
        halo = (self.receptive_field - 1) // 2
        for t0 in range(0, frames, window):
            t1 = min(frames, t0 + window)
            lo, hi = max(0, t0 - halo), min(frames, t1 + halo)
            part = None if mask is None else mask[:, :, lo:hi]
            yield self._logits(log_mel[:, lo:hi], part, statistics)[:, t0 - lo : t1 - lo]


def _check_log_mel(log_mel: Tensor, n_mels: int | None) -> None:
    if not isinstance(log_mel, Tensor) or log_mel.dim() != 3 or not log_mel.is_floating_point():
        shape = tuple(log_mel.shape) if isinstance(log_mel, Tensor) else type(log_mel).__name__
        raise ParameterError(f"log_mel must be a floating tensor [batch, frames, mels], got {shape}")
    if n_mels is not None and log_mel.shape[2] != n_mels:
        raise ParameterError(f"expected {n_mels} mel bins (time-major [B, T, F]), got shape {tuple(log_mel.shape)}")
    if log_mel.shape[1] < 1:
        raise ParameterError("log_mel has no frames")


# --------------------------------------------------------------------------------------------
# modules


class _Compressor(nn.Module):
    """Shared argument handling: ``n_mels``, default reduction, per-call override."""

    feature_channels = 1

    def __init__(self, n_mels: int, *, reduction: float = 0.5) -> None:
        super().__init__()
        if isinstance(n_mels, bool) or not isinstance(n_mels, int) or n_mels < 1:
            raise ParameterError(f"n_mels must be a positive int, got {n_mels!r}")
        _keep_fraction(reduction)
        self.n_mels = n_mels
        self.reduction = float(reduction)

    def _prepare(
        self, log_mel: Tensor, lengths: Tensor | None, reduction: float | None
    ) -> tuple[Tensor, Tensor, float]:
        _check_log_mel(log_mel, self.n_mels)
        rho = self.reduction if reduction is None else reduction
        batch, frames, _ = log_mel.shape
        lengths = _resolve_lengths(lengths, batch=batch, frames=frames, device=log_mel.device)
        return lengths, output_lengths(lengths, reduction=rho), rho

    def extra_repr(self) -> str:
        return f"n_mels={self.n_mels}, reduction={self.reduction}"


class _ScoreMerge(_Compressor):
    """Scores -> normalisation -> log-domain merge + resolution encoding -> three planes."""

    feature_channels = 3

    def __init__(
        self, n_mels: int, *, reduction: float = 0.5, eps: float = _EPS, min_span_exponent: float = 0.0
    ) -> None:
        super().__init__(n_mels, reduction=reduction)
        if not eps > 0:
            raise ParameterError(f"eps must be positive, got {eps}")
        self.eps = float(eps)
        self.min_span_exponent = check_min_span_exponent(min_span_exponent)

    def raw_scores(self, log_mel: Tensor, lengths: Tensor) -> Tensor:
        """Raw importance ``[B, T]`` in (0, 1]."""
        raise NotImplementedError

    def forward(
        self, log_mel: Tensor, lengths: Tensor | None = None, *, reduction: float | None = None
    ) -> DiffResOutput:
        """Compress a batch of log-mels.

        Parameters
        ----------
        log_mel : torch.Tensor [shape=(B, T, n_mels)]
            Natural-log mel power, time-major (any offset or scale works; see module doc).
        lengths : torch.Tensor [shape=(B,)], optional
            Valid frames per item; None means all ``T``.
        reduction : float, optional
            Override the module's ``ρ`` for this call (e.g. inference at another rate).

        Returns
        -------
        DiffResOutput
        """
        lengths, counts, rho = self._prepare(log_mel, lengths, reduction)
        raw = self.raw_scores(log_mel, lengths)
        scores = normalize_scores(raw, counts, lengths, min_span_exponent=self.min_span_exponent)
        loss, activeness = guide_loss(log_mel, scores, lengths, reduction=rho)

        # One buffer for the three planes, built in place without autograd: the peak memory of
        # an hour-long input is the input, this buffer and small blocks.
        feature = diffres_planes(log_mel, scores, counts, lengths, eps=self.eps)
        return DiffResOutput(
            feature=feature,
            avg=feature[:, 0],
            max=feature[:, 1],
            resolution=feature[:, 2],
            scores=scores,
            lengths=counts,
            guide_loss=loss,
            activeness=activeness,
        )


class DiffRes(_ScoreMerge):
    """Differentiable temporal resolution (Liu et al., AAAI 2024), O(T) and for any length.

    Parameters
    ----------
    n_mels : int
        Mel bins of the input log-mel.
    reduction : float
        ``ρ`` in ``[0, 1)``: ``T' = max(1, round((1 - ρ)·T))`` output frames
        (:func:`adares.functional.merge.output_lengths`).
    eps : float
        Added to merged power before the log (1e-12, as the reference).
    min_span_exponent : float
        ``κ`` in ``[0, 1]``: every output frame spans at least ``(T/T')^κ`` fine frames (0, the
        paper's setting, lets single fine frames through; see
        :func:`adares.functional.merge.normalize_scores`).
    kernel_size, num_blocks, channels, standardize, flux_base, learn_sharpness, flux_power
        Shape, input standardisation, flux base and its (learned or fixed) power of the
        :class:`ImportanceEstimator`.

    Examples
    --------
    >>> module = DiffRes(64, reduction=0.5)
    >>> out = module(torch.randn(2, 100, 64) - 5.0, torch.tensor([100, 71]))
    >>> out.feature.shape, out.lengths.tolist()
    (torch.Size([2, 3, 50, 64]), [50, 36])
    """

    def __init__(
        self,
        n_mels: int,
        *,
        reduction: float = 0.5,
        eps: float = _EPS,
        min_span_exponent: float = 0.0,
        kernel_size: int = 5,
        num_blocks: int = 5,
        channels: Sequence[int] | None = None,
        standardize: bool = False,
        flux_base: bool = False,
        learn_sharpness: bool = False,
        flux_power: float = 1.0,
    ) -> None:
        super().__init__(n_mels, reduction=reduction, eps=eps, min_span_exponent=min_span_exponent)
        self.estimator = ImportanceEstimator(
            n_mels,
            kernel_size=kernel_size,
            num_blocks=num_blocks,
            channels=channels,
            standardize=standardize,
            flux_base=flux_base,
            learn_sharpness=learn_sharpness,
            flux_power=flux_power,
        )

    def raw_scores(self, log_mel: Tensor, lengths: Tensor) -> Tensor:
        """The estimator's raw scores ``[B, T]``."""
        full = bool((lengths == log_mel.shape[1]).all())
        return self.estimator(log_mel, None if full else lengths)


class FluxCompressor(_ScoreMerge):
    """Training-free DiffRes: positive spectral flux as importance, the same merge, no parameters.

    The scores are those of :class:`adares.importance.FluxImportance`, the importance
    ``--model flux`` extracts with.

    Parameters
    ----------
    n_mels : int
    reduction : float
    eps : float
    floor : float
        Added to the normalised flux (see :func:`adares.functional.importance.spectral_flux`).
    min_span_exponent : float
        As :class:`DiffRes`.
    """

    def __init__(
        self,
        n_mels: int,
        *,
        reduction: float = 0.5,
        eps: float = _EPS,
        floor: float = FLUX_FLOOR,
        min_span_exponent: float = 0.0,
    ) -> None:
        super().__init__(n_mels, reduction=reduction, eps=eps, min_span_exponent=min_span_exponent)
        self.importance = FluxImportance(floor=floor)
        self.floor = self.importance.floor

    def raw_scores(self, log_mel: Tensor, lengths: Tensor) -> Tensor:
        """Spectral-flux raw scores ``[B, T]``."""
        return self.importance.of_log_mel(log_mel.detach(), lengths)

    def forward(
        self, log_mel: Tensor, lengths: Tensor | None = None, *, reduction: float | None = None
    ) -> DiffResOutput:
        """As :meth:`DiffRes.forward`; ``guide_loss`` is 0 (nothing to train)."""
        out = super().forward(log_mel, lengths, reduction=reduction)
        out.guide_loss = torch.zeros((), dtype=log_mel.dtype, device=log_mel.device)
        return out


class AvgPoolCompressor(_Compressor):
    """Uniform averaging to ``T'`` frames: the DiffRes average merge with equal scores.

    Frames are averaged on linear power with fractional overlaps at the window edges (area
    pooling), like every merge in adares; ``feature`` has one plane, the averaged log-mel.
    """

    def forward(
        self, log_mel: Tensor, lengths: Tensor | None = None, *, reduction: float | None = None
    ) -> DiffResOutput:
        """Compress; see :meth:`DiffRes.forward` for the arguments."""
        lengths, counts, _ = self._prepare(log_mel, lengths, reduction)
        scores = uniform_scores(lengths, counts, log_mel.shape[1], dtype=log_mel.dtype)
        average, _ = merge_log(log_mel, scores, counts, lengths)
        average = _finish(average, counts)
        return _simple_output(average[:, None], scores, counts, avg=average)


class MaxPoolCompressor(_Compressor):
    """Uniform max merge to ``T'`` frames: the DiffRes max merge with equal scores (one plane)."""

    def forward(
        self, log_mel: Tensor, lengths: Tensor | None = None, *, reduction: float | None = None
    ) -> DiffResOutput:
        """Compress; see :meth:`DiffRes.forward` for the arguments."""
        lengths, counts, _ = self._prepare(log_mel, lengths, reduction)
        scores = uniform_scores(lengths, counts, log_mel.shape[1], dtype=log_mel.dtype)
        _, maximum = merge_log(log_mel, scores, counts, lengths)
        maximum = _finish(maximum, counts)
        return _simple_output(maximum[:, None], scores, counts, avg=maximum, max=maximum)


class ChangeHopCompressor(_Compressor):
    """Keep ``T'`` uniformly spaced fine frames (a coarser hop): frame ``floor((j + ½)·T/T')``."""

    def forward(
        self, log_mel: Tensor, lengths: Tensor | None = None, *, reduction: float | None = None
    ) -> DiffResOutput:
        """Compress; see :meth:`DiffRes.forward` for the arguments."""
        lengths, counts, _ = self._prepare(log_mel, lengths, reduction)
        rows = int(counts.max())
        j = torch.arange(rows, device=log_mel.device)[None, :]
        # Integer arithmetic: floor((2j + 1)·T / (2T')), the centre of each uniform span.
        index = torch.div((2 * j + 1) * lengths[:, None], 2 * counts[:, None], rounding_mode="floor")
        valid = j < counts[:, None]
        index = torch.where(valid, index, 0)
        picked = log_mel.gather(1, index[:, :, None].expand(-1, -1, log_mel.shape[2]))
        picked = torch.where(valid[:, :, None], picked, 0.0)
        scores = uniform_scores(lengths, counts, log_mel.shape[1], dtype=log_mel.dtype)
        return _simple_output(picked[:, None], scores, counts, avg=picked)


class Identity(_Compressor):
    """No compression: the fine log-mel as one plane, all scores 1 (``reduction`` is ignored)."""

    def forward(
        self, log_mel: Tensor, lengths: Tensor | None = None, *, reduction: float | None = None
    ) -> DiffResOutput:
        """Pass through; see :meth:`DiffRes.forward` for the arguments."""
        lengths, _, _ = self._prepare(log_mel, lengths, None)
        frames = log_mel.shape[1]
        mask = torch.arange(frames, device=log_mel.device)[None, :] < lengths[:, None]
        fine = torch.where(mask[:, :, None], log_mel, 0.0)
        return _simple_output(fine[:, None], mask.to(log_mel.dtype), lengths, avg=fine)


def _finish(plane: Tensor, counts: Tensor) -> Tensor:
    valid = (torch.arange(plane.shape[1], device=plane.device)[None, :] < counts[:, None])[:, :, None]
    log_eps = torch.tensor(math.log(_EPS), dtype=plane.dtype, device=plane.device)
    return torch.where(valid, torch.logaddexp(plane, log_eps), 0.0)


def _simple_output(
    feature: Tensor, scores: Tensor, counts: Tensor, *, avg: Tensor, max: Tensor | None = None
) -> DiffResOutput:
    zero = torch.zeros((), dtype=feature.dtype, device=feature.device)
    return DiffResOutput(
        feature=feature,
        avg=avg,
        max=max,
        resolution=None,
        scores=scores,
        lengths=counts,
        guide_loss=zero,
        activeness=zero.clone(),
    )
