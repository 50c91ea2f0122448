"""Training augmentations: SpecAugment masks and mixup, as pure functions of an explicit generator.

Every random draw comes from a ``torch.Generator`` the caller owns, so a training run is
reproducible from its seed and a resumed run draws exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from adares.errors import ParameterError

__all__ = ["spec_augment", "mixup", "span_masks"]


def span_masks(lengths: Tensor, *, size: int, count: int, max_width: Tensor, generator: torch.Generator) -> Tensor:
    """Union of ``count`` random spans per item along an axis of ``size`` positions.

    Parameters
    ----------
    lengths : torch.Tensor [shape=(B,)], integer
        Positions available per item; spans are drawn inside ``[0, lengths[b])``.
    size : int
        Length of the axis (the padded length).
    count : int
        Spans per item.
    max_width : torch.Tensor [shape=(B,)], integer
        Widest span per item; each width is uniform in ``[0, max_width[b]]``.
    generator : torch.Generator

    Returns
    -------
    torch.Tensor [shape=(B, size)], bool
        True inside a span.
    """
    batch = lengths.shape[0]
    masked = torch.zeros(batch, size, dtype=torch.bool)
    positions = torch.arange(size)[None, :]
    lengths = lengths.to(torch.long).cpu()
    max_width = torch.minimum(max_width.to(torch.long).cpu(), lengths)
    for _ in range(count):
        width = torch.floor(torch.rand(batch, generator=generator) * (max_width + 1)).to(torch.long)
        start = torch.floor(torch.rand(batch, generator=generator) * (lengths - width + 1)).to(torch.long)
        masked |= (positions >= start[:, None]) & (positions < (start + width)[:, None])
    return masked


def spec_augment(
    log_mel: Tensor,
    lengths: Tensor,
    *,
    generator: torch.Generator,
    time_masks: int = 2,
    time_width: float = 0.1,
    freq_masks: int = 2,
    freq_width: int = 16,
) -> tuple[Tensor, Tensor]:
    """SpecAugment time and frequency masks, filled with each clip's minimum.

    The fill value matters to DiffRes: its guide loss finds the blanked frames as those whose
    energy sits at the clip's minimum and teaches the importance estimator to give them low
    scores. Time-mask widths are a fraction of each clip's valid length, so the masks cover the
    same duration at any hop.

    Parameters
    ----------
    log_mel : torch.Tensor [shape=(B, T, F)]
        Log-mel batch, time-major.
    lengths : torch.Tensor [shape=(B,)], integer
        Valid frames per item.
    generator : torch.Generator
        Source of every random draw.
    time_masks : int
        Time masks per clip.
    time_width : float
        Widest time mask, as a fraction of the clip's valid frames.
    freq_masks : int
        Frequency masks per clip.
    freq_width : int
        Widest frequency mask in mel bins.

    Returns
    -------
    augmented : torch.Tensor [shape=(B, T, F)]
    time_masked : torch.Tensor [shape=(B, T)], bool
        Frames blanked by a time mask.
    """
    if log_mel.dim() != 3:
        raise ParameterError(f"log_mel must be [B, T, F], got shape {tuple(log_mel.shape)}")
    if time_masks < 0 or freq_masks < 0 or freq_width < 0 or not 0.0 <= time_width <= 1.0:
        raise ParameterError("mask counts and widths must be non-negative, time_width in [0, 1]")
    batch, frames, bins = log_mel.shape
    lengths = lengths.to(torch.long).cpu()
    valid = (torch.arange(frames)[None, :] < lengths[:, None]).to(log_mel.device)
    floor = log_mel.masked_fill(~valid[:, :, None], float("inf")).amin(dim=(1, 2))
    time_masked = span_masks(
        lengths,
        size=frames,
        count=time_masks,
        max_width=torch.floor(lengths.to(torch.float64) * time_width).to(torch.long),
        generator=generator,
    ).to(log_mel.device)
    freq_masked = span_masks(
        torch.full((batch,), bins, dtype=torch.long),
        size=bins,
        count=freq_masks,
        max_width=torch.full((batch,), freq_width, dtype=torch.long),
        generator=generator,
    ).to(log_mel.device)
    blank = (time_masked & valid)[:, :, None] | freq_masked[:, None, :]
    augmented = torch.where(blank, floor[:, None, None], log_mel)
    return augmented, time_masked & valid


def mixup(
    feature: Tensor, targets: Tensor, lengths: Tensor, *, alpha: float, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Mix each item with another item of the batch (Zhang et al., 2018).

    Parameters
    ----------
    feature : torch.Tensor [shape=(B, ...) with time on axis -2]
        Classifier input; frames past ``lengths`` are zeroed before mixing.
    targets : torch.Tensor [shape=(B, K)]
        One-hot (or soft) targets.
    lengths : torch.Tensor [shape=(B,)], integer
        Valid frames per item.
    alpha : float
        Beta(alpha, alpha) concentration; 0 returns the inputs unchanged.
    generator : torch.Generator

    Returns
    -------
    feature, targets, lengths
        The mixed batch; each length is the longer of the two mixed items.
    """
    if alpha < 0:
        raise ParameterError(f"mixup alpha must be >= 0, got {alpha}")
    if alpha == 0:
        return feature, targets, lengths
    batch = feature.shape[0]
    # torch's Beta sampler takes no generator; seed numpy from ours to stay reproducible.
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(batch, generator=generator).to(feature.device)
    frames = feature.shape[-2]
    valid = torch.arange(frames, device=feature.device)[None, :] < lengths.to(feature.device)[:, None]
    shape = [batch] + [1] * (feature.dim() - 3) + [frames, 1]
    feature = feature * valid.reshape(shape).to(feature.dtype)
    mixed = lam * feature + (1.0 - lam) * feature[perm]
    return mixed, lam * targets + (1.0 - lam) * targets[perm], torch.maximum(lengths, lengths[perm.cpu()])
