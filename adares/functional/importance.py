"""Training-free importance of fine frames.

The positive spectral flux (how much energy appears from one frame to the next) marks onsets
and transients: on short clips it recovers most of what uniform pooling loses (see
diffres-method.md), which makes it the baseline a learned importance must beat.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adares.errors import ParameterError
from adares.functional import BLOCK_ELEMENTS

__all__ = ["spectral_flux", "flux_rise", "normalise_flux", "FLUX_FLOOR"]

FLUX_FLOOR = 0.05
"""Share every frame keeps in :func:`spectral_flux`, so steady frames stay mergeable rather than invisible."""


def spectral_flux(log_mel: Tensor, lengths: Tensor | None = None, *, floor: float = FLUX_FLOOR) -> Tensor:
    """Raw importance from the positive spectral flux of a log-mel, in ``(0, 1]``.

    Per frame ``t``: the mean over mel bins of ``max(0, x_t - x_{t-1})`` (0 for frame 0),
    divided by the item's largest value over its valid frames, plus ``floor``, clipped to 1.
    The floor keeps steady frames mergeable rather than invisible: every frame keeps a share.

    Parameters
    ----------
    log_mel : torch.Tensor [shape=(B, T, F)], floating
        Log-mel frames, time-major.
    lengths : torch.Tensor [shape=(B,)], integer, optional
        Valid frames per item; None means all ``T``.
    floor : float
        Added to every normalised flux value, in ``(0, 1]``.

    Returns
    -------
    torch.Tensor [shape=(B, T)]
        Raw scores in ``[floor, 1]`` on valid frames (``floor`` everywhere for a steady item),
        0 on padding frames. Not differentiable (computed without autograd); meant for inference
        and baselines.

    Raises
    ------
    ParameterError
        On a bad shape, bad ``lengths`` or a ``floor`` outside ``(0, 1]``.
    """
    _check_log_mel(log_mel)
    _check_floor(floor)
    batch, frames, _ = log_mel.shape
    if lengths is None:
        lengths = torch.full((batch,), frames, dtype=torch.int64, device=log_mel.device)
    else:
        lengths = torch.as_tensor(lengths, device=log_mel.device)
        if lengths.shape != (batch,) or lengths.is_floating_point():
            raise ParameterError(f"lengths must be an integer tensor of shape ({batch},)")
        if batch and (int(lengths.min()) < 1 or int(lengths.max()) > frames):
            raise ParameterError(f"lengths must lie in [1, {frames}], got {lengths.tolist()}")
    mask = torch.arange(frames, device=log_mel.device)[None, :] < lengths[:, None]
    # The step into the first padding frame (and beyond) is not a frame of the item.
    flux = torch.where(mask, flux_rise(log_mel), 0.0)
    return torch.where(mask, normalise_flux(flux, floor=floor), 0.0)


def flux_rise(log_mel: Tensor, previous: Tensor | None = None) -> Tensor:
    """Per frame, the mean over mel bins of ``max(0, x_t - x_{t-1})``: the unnormalised flux.

    Frame 0 rises from ``previous`` (the frame before a block of a longer input), or by 0
    without one. Non-finite rises count as 0. The same value per frame whatever the blocks, so a
    long input can be scored block by block (:func:`normalise_flux` then needs the whole).

    Parameters
    ----------
    log_mel : torch.Tensor [shape=(B, T, F)], floating
    previous : torch.Tensor [shape=(B, F)], optional

    Returns
    -------
    torch.Tensor [shape=(B, T)]
    """
    _check_log_mel(log_mel)
    batch, frames, bins = log_mel.shape
    flux = log_mel.new_zeros(batch, frames)
    # Blocks of frames: the frame differences of an hour-long input would be another [T, F] copy.
    block = max(1, BLOCK_ELEMENTS // max(1, batch * bins))
    with torch.no_grad():
        if previous is not None:
            flux[:, 0] = (log_mel[:, 0] - previous).clamp_min_(0.0).mean(-1)
        for t0 in range(1, frames, block):
            t1 = min(frames, t0 + block)
            flux[:, t0:t1] = (log_mel[:, t0:t1] - log_mel[:, t0 - 1 : t1 - 1]).clamp_min_(0.0).mean(-1)
    return torch.nan_to_num_(flux, nan=0.0, posinf=0.0)


def normalise_flux(flux: Tensor, *, floor: float = FLUX_FLOOR, peak: Tensor | None = None) -> Tensor:
    """Raw scores from the rises of :func:`flux_rise`: divided by each item's peak, plus ``floor``, at most 1.

    Parameters
    ----------
    flux : torch.Tensor [shape=(B, T)]
        Non-negative rises of every frame of each item (padding frames 0).
    floor : float
        In ``(0, 1]``.
    peak : torch.Tensor [shape=(B, 1)], optional
        Each item's largest rise, when ``flux`` is a piece of a longer input; default: ``flux``'s own.

    Returns
    -------
    torch.Tensor [shape=(B, T)]
        In ``[floor, 1]``; ``floor`` everywhere for an item without any rise.
    """
    _check_floor(floor)
    peak = flux.amax(1, keepdim=True) if peak is None else peak
    normalised = torch.where(peak > 0, flux / peak.clamp_min(torch.finfo(flux.dtype).tiny), 0.0)
    return (normalised + floor).clamp(max=1.0)


def _check_log_mel(log_mel: Tensor) -> None:
    if not isinstance(log_mel, Tensor) or log_mel.dim() != 3 or not log_mel.is_floating_point():
        raise ParameterError("log_mel must be a floating tensor [batch, frames, mels]")
    if log_mel.shape[1] < 1:
        raise ParameterError("log_mel has no frames")


def _check_floor(floor: float) -> None:
    if not 0.0 < floor <= 1.0:
        raise ParameterError(f"floor must lie in (0, 1], got {floor}")
