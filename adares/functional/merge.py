"""The DiffRes merge as pure tensor functions: score normalisation, overlap weights, merges, spans.

Fine frames ``i = 0..T-1`` carry scores ``0 <= s_i <= 1`` with ``sum(s) = T'``. With
``c_i = s_0 + ... + s_i`` (``c_{-1} = 0``), fine frame ``i`` occupies ``[c_{i-1}, c_i)`` on the
output axis and output frame ``j`` is ``[j, j + 1)``; the weight of ``i`` in ``j`` is their overlap
``W[i, j]``. Because ``s_i <= 1`` a fine frame touches at most two output frames, so ``W`` has at most
``2T`` non-zeros and every merge is a scatter over those pairs: O(T·F) time and memory, never a
``T x T'`` matrix (the reference implementation builds it densely).

Conventions shared by every function here:

- time-major tensors: features ``[B, T, F]``, scores ``[B, T]``, ``lengths`` ``[B]`` int64
  (``None`` means all ``T`` frames are valid);
- ``out_frames`` is an int or a per-item ``[B]`` tensor; a count above an item's length is
  clamped to it (all scores 1, nothing to merge), and outputs are padded to the largest count
  (``R = max_b T'_b`` rows), padding rows 0 (spans: -1);
- positions ``c`` and weights are computed in float64 whatever the input dtype: at an hour of
  5 ms frames a float32 cumulative sum is off by several hundredths of a frame;
- large inputs are processed in blocks of fine frames, so temporaries stay at a few tens of MB
  (the exception: the max merge with autograd, whose backward needs the whole scatter at once).

All functions are differentiable with respect to the features and the scores, except
:func:`spans` (integer sample indices) and :func:`output_lengths`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from typing import NamedTuple

import torch
from torch import Tensor

from adares.errors import ParameterError
from adares.functional import BLOCK_ELEMENTS

__all__ = [
    "output_lengths",
    "normalize_scores",
    "overlap_weights",
    "merge_average",
    "merge_max",
    "merge_log",
    "diffres_planes",
    "positional_table",
    "resolution_encoding",
    "spans",
    "compress",
    "Compressed",
    "check_reduction",
    "check_min_span_exponent",
    "merge_average_blocks",
]

# Raw scores below this are raised to it, so an item whose scores all underflow still normalises.
_RAW_FLOOR = 1e-12
# Slack allowed on score bounds checked at the boundary (scores are >= 0 and <= 1).
_SCORE_SLACK = 1e-6


# --------------------------------------------------------------------------------------------
# validation and shapes


def _check_features(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ParameterError(f"{name} must be a floating tensor [batch, frames, features], got {shape}")
    if x.shape[1] < 1:
        raise ParameterError(f"{name} has no frames")


def _check_scores(scores: Tensor, name: str = "scores") -> None:
    if not isinstance(scores, Tensor) or scores.dim() != 2 or not scores.is_floating_point():
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ParameterError(f"{name} must be a floating tensor [batch, frames], got {shape}")
    if scores.shape[1] < 1:
        raise ParameterError(f"{name} has no frames")


def _resolve_lengths(lengths: Tensor | None, *, batch: int, frames: int, device: torch.device) -> Tensor:
    """Valid frames per item as int64 ``[B]``, checked to lie in ``[1, frames]``."""
    if lengths is None:
        return torch.full((batch,), frames, dtype=torch.int64, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != (batch,) or lengths.is_floating_point() or lengths.is_complex():
        raise ParameterError(f"lengths must be an integer tensor of shape ({batch},), got {tuple(lengths.shape)}")
    lengths = lengths.to(torch.int64)
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > frames):
        raise ParameterError(f"lengths must lie in [1, {frames}] (the padded frame count), got {lengths.tolist()}")
    return lengths


def _resolve_out_frames(out_frames: int | Tensor, lengths: Tensor) -> Tensor:
    """Output frames per item as int64 ``[B]``, at least 1 and clamped to each item's length."""
    if isinstance(out_frames, bool):
        raise ParameterError(f"out_frames must be an int or an integer tensor, got {out_frames!r}")
    if isinstance(out_frames, int):
        counts = torch.full_like(lengths, out_frames)
    else:
        counts = torch.as_tensor(out_frames, device=lengths.device)
        if counts.is_floating_point() or counts.is_complex():
            raise ParameterError(f"out_frames must hold integers, got dtype {counts.dtype}")
        counts = counts.to(torch.int64)
        if counts.dim() == 0:
            counts = counts.expand_as(lengths)
        if counts.shape != lengths.shape:
            raise ParameterError(
                f"out_frames must be an int or have shape {tuple(lengths.shape)}, got {tuple(counts.shape)}"
            )
    if counts.numel() and int(counts.min()) < 1:
        raise ParameterError(f"out_frames must be at least 1, got {counts.tolist()}")
    return torch.minimum(counts, lengths)


def _frame_mask(lengths: Tensor, frames: int) -> Tensor:
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def _scores_float64(scores: Tensor, mask: Tensor) -> Tensor:
    """Scores as float64 with padding zeroed, after checking they lie in [0, 1]."""
    s = torch.where(mask, scores.to(torch.float64), 0.0)
    if s.numel():
        low, high = float(s.detach().min()), float(s.detach().max())
        if not (math.isfinite(low) and math.isfinite(high)) or low < 0.0 or high > 1.0 + _SCORE_SLACK:
            raise ParameterError(
                f"scores must lie in [0, 1] (normalised, see normalize_scores), got values in [{low}, {high}]"
            )
    return s


# --------------------------------------------------------------------------------------------
# output length and score normalisation


def output_lengths(lengths: Tensor | int, *, reduction: float) -> Tensor:
    """Output frame counts for a reduction ``ρ``: ``T' = max(1, round((1 - ρ) · T))``.

    The rounding is half up, ``floor((1 - ρ) · T + 1/2)``, computed exactly in integers with
    ``1 - ρ`` taken as the decimal the user wrote (``0.3`` is exactly 3/10, via
    :class:`fractions.Fraction` with denominators up to 10**6). Python's and torch's ``round``
    round halves to even and would make ``T = 5, ρ = 0.5`` give 2 rather than 3, and float
    products such as ``0.7 * 5`` land on either side of 3.5.

    Parameters
    ----------
    lengths : torch.Tensor [shape=(B,)] of int, or int
        Fine frames per item.
    reduction : float
        ``ρ`` in ``[0, 1)``: the fraction of frames removed.

    Returns
    -------
    torch.Tensor, int64, same shape as ``lengths``
        Output frames per item, at least 1 and at most the input length.

    Raises
    ------
    ParameterError
        If ``reduction`` is outside ``[0, 1)`` or a length is negative.

    Examples
    --------
    >>> output_lengths(torch.tensor([5, 3, 1, 1000]), reduction=0.5).tolist()
    [3, 2, 1, 500]
    """
    keep = _keep_fraction(reduction)
    counts = torch.as_tensor(lengths)
    if counts.is_floating_point() or counts.is_complex():
        raise ParameterError(f"lengths must be integers, got dtype {counts.dtype}")
    counts = counts.to(torch.int64)
    if counts.numel() and int(counts.min()) < 0:
        raise ParameterError(f"lengths must be non-negative, got {counts.tolist()}")
    rounded = torch.div(2 * keep.numerator * counts + keep.denominator, 2 * keep.denominator, rounding_mode="floor")
    return torch.minimum(rounded.clamp_min(1), counts.clamp_min(1))


def check_reduction(reduction: float) -> float:
    """``reduction`` as a float, checked: a number in ``[0, 1)``, the fraction of fine frames removed.

    The one range every part of adares accepts (0 keeps every frame).

    Raises
    ------
    ParameterError
        If it is not a finite number in ``[0, 1)``.
    """
    _keep_fraction(reduction)
    return float(reduction)


def check_min_span_exponent(exponent: float) -> float:
    """``exponent`` as a float, checked: a number in ``[0, 1]`` (see :func:`normalize_scores`).

    Raises
    ------
    ParameterError
        If it is not a finite number in ``[0, 1]``.
    """
    if isinstance(exponent, bool) or not isinstance(exponent, (int, float)) or not 0.0 <= exponent <= 1.0:
        raise ParameterError(
            f"min_span_exponent must be a number in [0, 1] (0: single fine frames may stay unmerged; "
            f"1: uniform pooling), got {exponent!r}"
        )
    return float(exponent)


def _keep_fraction(reduction: float) -> Fraction:
    if isinstance(reduction, bool) or not isinstance(reduction, (int, float)) or not math.isfinite(reduction):
        raise ParameterError(f"reduction must be a number in [0, 1), got {reduction!r}")
    if not 0.0 <= reduction < 1.0:
        raise ParameterError(f"reduction must lie in [0, 1) (the fraction of frames removed), got {reduction}")
    return 1 - Fraction(repr(float(reduction))).limit_denominator(10**6)


def normalize_scores(
    raw: Tensor, out_frames: int | Tensor, lengths: Tensor | None = None, *, min_span_exponent: float = 0.0
) -> Tensor:
    """Scale raw importance so each item's scores sum to exactly ``T'`` with none above a cap.

    Capped water-filling: find ``λ`` with ``Σ_i min(c, λ·raw_i) = T'``. Sorting the raw scores
    in decreasing order, the ``k`` largest are capped at ``c`` and the rest scaled by
    ``λ = (T' - k·c) / Σ_uncapped raw``; ``k`` is the smallest count for which the first uncapped
    score stays at or below ``c``. Solved for every item at once (a sort and a suffix sum, no
    loop). The map is monotone, so the order of the scores is kept.

    The cap is ``c = (T'/T)^κ`` with ``κ = min_span_exponent``: a score is the share of an output
    frame a fine frame fills, so every output frame spans at least ``(T/T')^κ`` fine frames. ``κ = 0``
    (``c = 1``, the DiffRes paper's normalisation) lets the most important fine frames pass
    unmerged; ``κ = 1`` gives every frame ``T'/T``, uniform pooling; ``κ = 0.5`` keeps the finest
    output frame at the geometric mean of one fine frame and the average output frame (2 fine
    frames at ``ρ = 0.75``, about 1.4 at ``ρ = 0.5``).

    Parameters
    ----------
    raw : torch.Tensor [shape=(B, T)], floating
        Non-negative importance (typically in (0, 1]); values below 1e-12 count as 1e-12, so an
        item whose scores all underflow comes out uniform. Padding frames are ignored.
    out_frames : int or torch.Tensor [shape=(B,)], integer
        Target sum ``T'`` per item, clamped to the item's length (``T' >= T`` gives all ones).
    lengths : torch.Tensor [shape=(B,)], integer, optional
        Valid frames per item; None means all ``T``.
    min_span_exponent : float
        ``κ`` in ``[0, 1]``: the cap on every score is ``(T'_b/T_b)^κ``.

    Returns
    -------
    torch.Tensor [shape=(B, T)], dtype of ``raw``
        Scores in ``(0, c_b]`` on valid frames summing to ``T'_b`` (to float rounding), 0 on
        padding. Differentiable with respect to ``raw``: the gradient flows through ``λ`` to the
        uncapped scores; capped scores are the constant ``c_b``.

    Raises
    ------
    ParameterError
        On bad shapes, non-finite or negative raw scores, bad ``out_frames``/``lengths``, or a
        ``min_span_exponent`` outside ``[0, 1]``.
    """
    _check_scores(raw, "raw")
    batch, frames = raw.shape
    lengths = _resolve_lengths(lengths, batch=batch, frames=frames, device=raw.device)
    counts = _resolve_out_frames(out_frames, lengths)
    exponent = check_min_span_exponent(min_span_exponent)
    mask = _frame_mask(lengths, frames)
    # Water-filling with cap c and target T' is c times water-filling with cap 1 and target T'/c
    # (at most T: the cap is never below the uniform score T'/T). c = 1 exactly when κ = 0.
    cap = (counts.to(torch.float64) / lengths.clamp_min(1).to(torch.float64)) ** exponent
    target = torch.minimum(counts.to(torch.float64) / cap, lengths.to(torch.float64))

    r = torch.where(mask, raw.to(torch.float64), 1.0)
    if r.numel():
        low, high = float(r.detach().min()), float(r.detach().max())
        if not (math.isfinite(low) and math.isfinite(high)):
            # Unreachable from audio adares loaded: load() and MelFrontend refuse NaN, Inf and
            # samples whose power would overflow, so the estimator's input is finite.
            raise ParameterError(
                f"raw scores must be finite, got values in [{low}, {high}]: the importance estimator's input or "
                "weights hold NaN or Inf; pass audio through adares.load or MelFrontend (both refuse non-finite "
                "and out-of-range samples) and reload the compressor bundle if its weights were changed"
            )
        if low < 0.0:
            raise ParameterError(f"raw scores must be non-negative, got values in [{low}, {high}]")
    r = torch.where(mask, r.clamp_min(_RAW_FLOOR), 0.0)

    with torch.no_grad():
        ordered, order = torch.sort(r, dim=1, descending=True)
        # suffix[b, k] = sum of the scores ranked k and below (padding ranks last, adding 0).
        suffix = torch.flip(torch.cumsum(torch.flip(ordered, [1]), 1), [1])
        rank = torch.arange(frames, device=raw.device)
        fits = (target[:, None] - rank[None, :]) * ordered <= suffix
        # The first k that fits exists and is below the target: at k = ceil(target) - 1 the test
        # reads a * r <= r + (rest >= 0) with a in (0, 1].
        capped_count = torch.argmax(fits.to(torch.uint8), dim=1)
        ranks = torch.empty_like(order).scatter_(1, order, rank.expand_as(order).contiguous())
        capped = ranks < capped_count[:, None]

    uncapped_sum = torch.where(capped, 0.0, r).sum(1)
    lam = (target - capped_count.to(torch.float64)) / uncapped_sum
    scores = torch.where(capped, 1.0, (lam[:, None] * r).clamp(max=1.0)) * cap[:, None]
    return torch.where(mask, scores, 0.0).to(raw.dtype)


# --------------------------------------------------------------------------------------------
# overlap weights (sparse form)


class _Pairs(NamedTuple):
    """The non-zeros of ``W``: fine frame ``i`` gives ``weights[b, i, k]`` to output frame
    ``rows[b, i, k]``, ``k = 0, 1``. Pairs without overlap (and padding frames) have weight 0
    and still point at a row of their own item, so a scatter never leaves the item's rows."""

    rows: Tensor  # [B, T, 2] int64, in [0, T'_b)
    weights: Tensor  # [B, T, 2] float64
    counts: Tensor  # [B] int64, output frames per item
    lengths: Tensor  # [B] int64
    num_rows: int  # R = max output frames


def _pairs(scores: Tensor, out_frames: int | Tensor, lengths: Tensor | None) -> _Pairs:
    _check_scores(scores)
    batch, frames = scores.shape
    lengths = _resolve_lengths(lengths, batch=batch, frames=frames, device=scores.device)
    counts = _resolve_out_frames(out_frames, lengths)
    mask = _frame_mask(lengths, frames)
    s = _scores_float64(scores, mask)
    end = torch.cumsum(s, 1)
    # The start of frame i is the end of frame i - 1 exactly (not end - s), so frames tile the axis.
    start = torch.nn.functional.pad(end[:, :-1], (1, 0))
    first = torch.floor(start).detach()
    split = torch.minimum(end, first + 1.0)
    weights = torch.stack([split - start, end - split], dim=-1)
    rows = torch.stack([first, first + 1.0], dim=-1).to(torch.int64)
    # Rounding can push the last frame's end a hair past T'; that sliver is dropped.
    keep = (weights > 0) & (rows < counts[:, None, None]) & mask[:, :, None]
    rows = torch.minimum(rows, counts[:, None, None] - 1)
    weights = torch.where(keep, weights, 0.0)
    num_rows = int(counts.max()) if batch else 0
    return _Pairs(rows, weights, counts, lengths, num_rows)


def overlap_weights(scores: Tensor, out_frames: int | Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The non-zeros of the overlap matrix ``W``, two per fine frame.

    Parameters
    ----------
    scores : torch.Tensor [shape=(B, T)]
        Normalised scores (see :func:`normalize_scores`), each in [0, 1].
    out_frames : int or torch.Tensor [shape=(B,)]
        Output frames per item.
    lengths : torch.Tensor [shape=(B,)], optional
        Valid fine frames per item.

    Returns
    -------
    rows : torch.Tensor [shape=(B, T, 2)], int64
        Output frame of each pair; ``-1`` where the pair carries no weight.
    weights : torch.Tensor [shape=(B, T, 2)], float64
        ``W[i, rows[b, i, k]]``; 0 where ``rows`` is -1. Differentiable with respect to ``scores``.
    """
    pairs = _pairs(scores, out_frames, lengths)
    return torch.where(pairs.weights > 0, pairs.rows, -1), pairs.weights


def _block_frames(batch: int, features: int) -> int:
    return max(1, BLOCK_ELEMENTS // max(1, 2 * batch * features))


def _scatter(
    pairs: _Pairs,
    source: Callable[[int, int], Tensor],
    out: Tensor,
    base: Tensor,
    *,
    reduce: str,
    whole: bool = False,
) -> Tensor:
    """Scatter ``source(t0, t1) -> [B, t1 - t0, 2, F]`` into rows ``base[b] + rows`` of ``out``.

    ``out`` is 2-D ``[N, F]``; ``base[b]`` is the row of item ``b``'s output frame 0 in it, so
    the target can be a plane of a larger buffer. ``reduce`` is ``"sum"`` (``index_add_``) or
    ``"amax"`` (``scatter_reduce``). Blocks of fine frames bound the temporaries; ``whole``
    forces one block and an out-of-place amax (autograd cannot go through a chain of in-place
    maxima: each step's backward needs that step's result). Returns the filled tensor (``out``
    itself, except for a whole amax).
    """
    batch, frames = pairs.rows.shape[:2]
    features = out.shape[1]
    flat_rows = pairs.rows + base[:, None, None]
    block = frames if whole else _block_frames(batch, features)
    for t0 in range(0, frames, block):
        t1 = min(frames, t0 + block)
        index = flat_rows[:, t0:t1].reshape(-1)
        values = source(t0, t1).reshape(-1, features)
        if reduce == "sum":
            out.index_add_(0, index, values)
        elif whole:
            out = out.scatter_reduce(0, index[:, None].expand(-1, features), values, reduce="amax")
        else:
            out.scatter_reduce_(0, index[:, None].expand(-1, features), values, reduce="amax")
    return out


def _row_mask(pairs: _Pairs) -> Tensor:
    return _frame_mask(pairs.counts, pairs.num_rows)[:, :, None]


def _item_base(pairs: _Pairs, *, stride: int, offset: int = 0) -> Tensor:
    return torch.arange(pairs.rows.shape[0], device=pairs.rows.device) * stride + offset


def _needs_whole(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _log_ratio(pairs: _Pairs, dtype: torch.dtype) -> Tensor:
    """``ln(T/T')`` per item, ``[B, 1, 1]``: the reference's scale of the max merge."""
    return torch.log(pairs.lengths.to(torch.float64) / pairs.counts.to(torch.float64)).to(dtype)[:, None, None]


# --------------------------------------------------------------------------------------------
# merges


def merge_average(x: Tensor, scores: Tensor, out_frames: int | Tensor, lengths: Tensor | None = None) -> Tensor:
    """Averaged merge ``y_j = Σ_i W[i, j]·x_i`` by scatter-add.

    Apply it to linear power and take the log afterwards (or use :func:`merge_log` on log
    features, which does both stably).

    Parameters
    ----------
    x : torch.Tensor [shape=(B, T, F)]
        Fine frames (linear power for DiffRes). Padding frames may hold anything.
    scores : torch.Tensor [shape=(B, T)]
        Normalised scores, each in [0, 1], summing to ``T'`` per item.
    out_frames : int or torch.Tensor [shape=(B,)]
        Output frames per item.
    lengths : torch.Tensor [shape=(B,)], optional
        Valid fine frames per item.

    Returns
    -------
    torch.Tensor [shape=(B, R, F)], dtype of ``x``
        Merged frames, ``R = max_b T'_b``; rows past an item's ``T'_b`` are 0.
    """
    _check_features(x)
    pairs = _pairs(scores, out_frames, lengths)
    _check_match(x, scores)
    weights = pairs.weights.to(x.dtype)
    idle = weights <= 0

    def source(t0: int, t1: int) -> Tensor:
        values = x[:, t0:t1, None, :] * weights[:, t0:t1, :, None]
        # An idle pair must add exactly 0, also where x is not finite (padding garbage).
        return values.masked_fill_(idle[:, t0:t1, :, None], 0.0)

    batch, features = x.shape[0], x.shape[2]
    out = x.new_zeros(batch * pairs.num_rows, features)
    _scatter(pairs, source, out, _item_base(pairs, stride=pairs.num_rows), reduce="sum")
    return out.view(batch, pairs.num_rows, features)


def merge_max(x: Tensor, scores: Tensor, out_frames: int | Tensor, lengths: Tensor | None = None) -> Tensor:
    """Score-weighted max merge of the reference: ``y_j = (T/T') · max_i W[i, j]·x_i``.

    The maximum runs over the fine frames that overlap output frame ``j`` (``W[i, j] > 0``), by
    ``scatter_reduce(reduce="amax")``; ``T/T'`` is per item (its length over its output length).

    Parameters
    ----------
    x : torch.Tensor [shape=(B, T, F)]
        Fine frames (linear power for DiffRes).
    scores, out_frames, lengths
        As in :func:`merge_average`.

    Returns
    -------
    torch.Tensor [shape=(B, R, F)], dtype of ``x``
        Rows past an item's ``T'_b`` are 0.
    """
    _check_features(x)
    pairs = _pairs(scores, out_frames, lengths)
    _check_match(x, scores)
    weights = pairs.weights.to(x.dtype)
    idle = weights <= 0

    def source(t0: int, t1: int) -> Tensor:
        values = x[:, t0:t1, None, :] * weights[:, t0:t1, :, None]
        return values.masked_fill_(idle[:, t0:t1, :, None], float("-inf"))  # never wins a maximum

    batch, features = x.shape[0], x.shape[2]
    tracked = _needs_whole(x, scores)
    out = x.new_full((batch * pairs.num_rows, features), float("-inf"))
    base = _item_base(pairs, stride=pairs.num_rows)
    out = _scatter(pairs, source, out, base, reduce="amax", whole=tracked).view(batch, pairs.num_rows, features)
    ratio = _log_ratio(pairs, x.dtype).exp()
    if tracked:
        return torch.where(_row_mask(pairs), out * ratio, 0.0)
    # Without autograd, in place: every [T', F] copy of an hour-long input is a large allocation.
    return out.mul_(ratio).masked_fill_(~_row_mask(pairs), 0.0)


def _log_scatter(
    log_x: Tensor,
    pairs: _Pairs,
    *,
    total: Tensor,
    total_base: Tensor,
    peak: Tensor,
    peak_base: Tensor,
    tracked: bool,
) -> tuple[Tensor, Tensor]:
    """Fill ``peak`` (initially -inf) with ``max_i (ln W[i, j] + log_x_i)`` and ``total``
    (initially 0) with ``Σ_i exp(ln W[i, j] + log_x_i - peak_j)``; see :func:`_scatter` for the
    row layout. Returns ``(total, peak)`` (``peak`` is a new tensor when ``tracked``)."""
    dtype = log_x.dtype
    positive = pairs.weights > 0
    # log W; the inner where keeps log(0) (and its infinite derivative) out of the graph.
    log_w = torch.where(positive, torch.log(torch.where(positive, pairs.weights, 1.0)), float("-inf")).to(dtype)
    idle = ~positive
    features = log_x.shape[2]

    def shifted(t0: int, t1: int) -> Tensor:
        values = log_x[:, t0:t1, None, :] + log_w[:, t0:t1, :, None]
        return values.masked_fill_(idle[:, t0:t1, :, None], float("-inf"))  # also where log_x is NaN

    peak = _scatter(pairs, shifted, peak, peak_base, reduce="amax", whole=tracked)
    # The shift cancels in the average, so it carries no gradient. A row nothing reaches holds
    # -inf; a 0 shift there makes exp(-inf - 0) a clean 0 rather than NaN.
    shift = peak.detach()
    shift_rows = pairs.rows + peak_base[:, None, None]

    def relative(t0: int, t1: int) -> Tensor:
        rows = shift_rows[:, t0:t1]
        offset = shift.index_select(0, rows.reshape(-1)).view(*rows.shape, features).nan_to_num_(neginf=0.0)
        # In place: two block-sized temporaries rather than four (autograd allows it here).
        return shifted(t0, t1).sub_(offset).exp_()

    total = _scatter(pairs, relative, total, total_base, reduce="sum")
    return total, peak


def merge_log(
    log_x: Tensor, scores: Tensor, out_frames: int | Tensor, lengths: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Both merges of ``exp(log_x)``, in the log domain, safe for any input range.

    Returns ``ln Σ_i W[i, j]·exp(log_x_i)`` and ``ln((T/T')·max_i W[i, j]·exp(log_x_i))``,
    i.e. ``ln merge_average(exp(log_x))`` and ``ln merge_max(exp(log_x))``, without ever forming
    ``exp(log_x)``: the maximum is ``max_i (ln W[i, j] + log_x_i)``, and the sum is taken
    relative to that maximum, row by row and bin by bin (log-sum-exp per output frame). So
    positive log-mels (dB-scaled, unnormalised) neither overflow, nor underflow against a
    loud frame elsewhere in the clip, which a single per-clip shift would allow.

    Parameters
    ----------
    log_x : torch.Tensor [shape=(B, T, F)]
        Log features (natural log of power for DiffRes).
    scores, out_frames, lengths
        As in :func:`merge_average`.

    Returns
    -------
    average : torch.Tensor [shape=(B, R, F)]
    maximum : torch.Tensor [shape=(B, R, F)]
        Rows past an item's ``T'_b`` are 0 in both.
    """
    _check_features(log_x, "log_x")
    pairs = _pairs(scores, out_frames, lengths)
    _check_match(log_x, scores)
    batch, features, rows = log_x.shape[0], log_x.shape[2], pairs.num_rows
    tracked = _needs_whole(log_x, scores)
    base = _item_base(pairs, stride=rows)
    total, peak = _log_scatter(
        log_x,
        pairs,
        total=log_x.new_zeros(batch * rows, features),
        total_base=base,
        peak=log_x.new_full((batch * rows, features), float("-inf")),
        peak_base=base,
        tracked=tracked,
    )
    total, peak = total.view(batch, rows, features), peak.view(batch, rows, features)
    valid = _row_mask(pairs)
    # On valid rows total >= 1 (the maximum contributes exp(0)), so the log is finite.
    if tracked:
        average = torch.where(valid, peak.detach() + torch.log(torch.where(valid, total, 1.0)), 0.0)
        return average, torch.where(valid, peak + _log_ratio(pairs, log_x.dtype), 0.0)
    # In place (the average first: it reads the peak); every [T', F] copy counts at an hour.
    average = total.log_().add_(peak).masked_fill_(~valid, 0.0)
    return average, peak.add_(_log_ratio(pairs, log_x.dtype)).masked_fill_(~valid, 0.0)


def _check_match(x: Tensor, scores: Tensor) -> None:
    if x.shape[:2] != scores.shape:
        raise ParameterError(
            f"features [B, T, F] = {tuple(x.shape)} and scores [B, T] = {tuple(scores.shape)} disagree on B or T"
        )


# --------------------------------------------------------------------------------------------
# resolution encoding


def positional_table(
    frames: int, dim: int, *, start: int = 0, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> Tensor:
    """Transformer sinusoidal position table, for any number of positions.

    ``pe[i, 2k] = sin(p / 10000^(2k/dim))`` and ``pe[i, 2k+1] = cos(p / 10000^(2k/dim))`` with
    ``p = start + i``; the angles are formed in float64, since at position 720,000 a float32
    angle is off by several hundredths of a radian.

    Parameters
    ----------
    frames : int
        Number of positions.
    dim : int
        Channels (odd widths drop the last cosine).
    start : int
        Position of the first row.

    Returns
    -------
    torch.Tensor [shape=(frames, dim)]
    """
    if dim < 1:
        raise ParameterError(f"dim must be at least 1, got {dim}")
    position = torch.arange(start, start + frames, dtype=torch.float64, device=device)[:, None]
    inverse = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64, device=device) * (-math.log(10000.0) / dim))
    angle = position * inverse[None, :]
    table = torch.empty(frames, dim, dtype=torch.float64, device=device)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return table.to(dtype)


class _TableRotation:
    """Blocks of :func:`positional_table` by rotating one base block.

    ``sin((t0 + k)·ω) = sin(kω)·cos(t0·ω) + cos(kω)·sin(t0·ω)`` (and the cosine alike): the base
    block and the rotation are exact to the output dtype, so every block costs a few multiply-adds
    instead of fresh float64 sines (which dominated the encoding's time on long inputs).
    """

    def __init__(self, frames: int, dim: int, *, dtype: torch.dtype, device: torch.device) -> None:
        self.dim, self.dtype, self.device = dim, dtype, device
        exponent = torch.arange(0, dim, 2, dtype=torch.float64, device=device) * (-math.log(10000.0) / dim)
        self.inverse = torch.exp(exponent)
        angle = torch.arange(frames, dtype=torch.float64, device=device)[:, None] * self.inverse[None, :]
        self.sin, self.cos = torch.sin(angle).to(dtype), torch.cos(angle).to(dtype)

    def __call__(self, t0: int, t1: int) -> Tensor:
        start = float(t0) * self.inverse
        c0, s0 = torch.cos(start).to(self.dtype), torch.sin(start).to(self.dtype)
        base_sin, base_cos = self.sin[: t1 - t0], self.cos[: t1 - t0]
        table = torch.empty(t1 - t0, self.dim, dtype=self.dtype, device=self.device)
        table[:, 0::2] = base_sin * c0 + base_cos * s0
        half = self.dim // 2
        table[:, 1::2] = (base_cos * c0 - base_sin * s0)[:, :half]
        return table


def _resolution_scatter(pairs: _Pairs, dim: int, out: Tensor, base: Tensor) -> Tensor:
    weights = pairs.weights.to(out.dtype)
    frames = pairs.rows.shape[1]
    block = min(frames, _block_frames(pairs.rows.shape[0], dim))
    rotate = _TableRotation(block, dim, dtype=out.dtype, device=out.device)

    def source(t0: int, t1: int) -> Tensor:
        return rotate(t0, t1)[None, :, None, :] * weights[:, t0:t1, :, None]

    return _scatter(pairs, source, out, base, reduce="sum")


def resolution_encoding(
    scores: Tensor,
    out_frames: int | Tensor,
    dim: int,
    lengths: Tensor | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Where each output frame sits on the fine grid: ``Σ_i W[i, j]·PE_i``.

    ``PE`` is :func:`positional_table` of the fine-frame indices, generated block by block, so
    no fixed maximum length exists and no ``[T, dim]`` table is held.

    Parameters
    ----------
    scores, out_frames, lengths
        As in :func:`merge_average`.
    dim : int
        Width of the encoding (the mel bins, for stacking with the merged mel).
    dtype : torch.dtype, optional
        Output dtype; default that of ``scores``.

    Returns
    -------
    torch.Tensor [shape=(B, R, dim)]
        Rows past an item's ``T'_b`` are 0.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ParameterError(f"dim must be a positive int, got {dim!r}")
    pairs = _pairs(scores, out_frames, lengths)
    batch, rows = scores.shape[0], pairs.num_rows
    out = torch.zeros(batch * rows, dim, dtype=dtype or scores.dtype, device=scores.device)
    _resolution_scatter(pairs, dim, out, _item_base(pairs, stride=rows))
    return out.view(batch, rows, dim)


# --------------------------------------------------------------------------------------------
# the three DiffRes planes


def diffres_planes(
    log_x: Tensor, scores: Tensor, out_frames: int | Tensor, lengths: Tensor | None = None, *, eps: float = 1e-12
) -> Tensor:
    """The DiffRes feature: ``ln(avg + eps)``, ``ln(max + eps)`` and the resolution encoding.

    Planes, per output frame ``j`` (the reference's formulas, computed as in :func:`merge_log`):
    ``ln(Σ_i W[i, j]·exp(x_i) + eps)``, ``ln((T/T')·max_i W[i, j]·exp(x_i) + eps)`` and
    ``Σ_i W[i, j]·PE_i`` with ``dim = F``. Without autograd every plane is built in place in the
    one output buffer, so an hour of frames costs the output and small blocks, not copies.

    Parameters
    ----------
    log_x : torch.Tensor [shape=(B, T, F)]
        Natural-log power.
    scores, out_frames, lengths
        As in :func:`merge_average`.
    eps : float
        Added to the merged power before the log.

    Returns
    -------
    torch.Tensor [shape=(B, 3, R, F)], dtype of ``log_x``
        Rows past an item's ``T'_b`` are 0 in every plane.
    """
    _check_features(log_x, "log_x")
    _check_match(log_x, scores)
    if not eps > 0:
        raise ParameterError(f"eps must be positive, got {eps}")
    log_eps = torch.tensor(math.log(eps), dtype=log_x.dtype, device=log_x.device)
    if _needs_whole(log_x, scores):
        average, maximum = merge_log(log_x, scores, out_frames, lengths)
        valid = _row_mask(_pairs(scores, out_frames, lengths))
        resolution = resolution_encoding(scores, out_frames, log_x.shape[2], lengths, dtype=log_x.dtype)
        planes = [torch.where(valid, torch.logaddexp(p, log_eps), 0.0) for p in (average, maximum)]
        return torch.stack([*planes, resolution], dim=1)

    pairs = _pairs(scores, out_frames, lengths)
    batch, features, rows = log_x.shape[0], log_x.shape[2], pairs.num_rows
    feature = log_x.new_empty(batch, 3, rows, features)
    feature[:, 0] = 0.0
    feature[:, 1] = float("-inf")
    feature[:, 2] = 0.0
    flat = feature.view(batch * 3 * rows, features)
    base = _item_base(pairs, stride=3 * rows)
    _log_scatter(log_x, pairs, total=flat, total_base=base, peak=flat, peak_base=base + rows, tracked=False)
    average, maximum = feature[:, 0], feature[:, 1]
    average.log_().add_(maximum)  # the average first: it reads the peak
    maximum.add_(_log_ratio(pairs, log_x.dtype))
    invalid = ~_row_mask(pairs)
    for plane in (average, maximum):
        torch.logaddexp(plane, log_eps, out=plane)
        plane.masked_fill_(invalid, 0.0)
    _resolution_scatter(pairs, features, flat, base + 2 * rows)
    return feature


# --------------------------------------------------------------------------------------------
# spans


def spans(
    scores: Tensor,
    out_frames: int | Tensor,
    lengths: Tensor | None = None,
    *,
    hop_samples: int,
    num_samples: int | Tensor,
    offset_samples: int = 0,
) -> Tensor:
    """The ``[start, end)`` sample range of every output frame.

    Output frame ``j`` covers ``[B(j), B(j+1))`` in fine-frame coordinates, with ``B(0) = 0``,
    ``B(T') = T`` and ``B(j) = i + (j - c_{i-1}) / s_i`` for ``c_{i-1} <= j < c_i`` (docs/design.md).
    Fine frame ``i`` is centred: it covers ``[(i - ½)h, (i + ½)h) + offset``, so coordinate ``u``
    is sample ``offset + floor((u - ½)·h + ½)`` (half up: with uniform scores and ``T' = T`` this
    is exactly :func:`adares.features.uniform_spans`). Boundaries are clipped to
    ``[0, num_samples]``, the first start is 0 and the last end is ``num_samples``, so the spans
    tile the signal. Where rounding or clipping would leave a span empty, boundaries are pushed
    apart by whole samples (possible whenever ``num_samples >= T'``).

    Parameters
    ----------
    scores, out_frames, lengths
        As in :func:`merge_average`.
    hop_samples : int
        Hop ``h`` of the fine frames in samples.
    num_samples : int or torch.Tensor [shape=(B,)]
        Signal length ``N`` per item.
    offset_samples : int
        Sample position of fine frame 0's centre (for a block of a longer signal).

    Returns
    -------
    torch.Tensor [shape=(B, R, 2)], int64
        Consecutive, non-overlapping ranges covering ``[0, N_b)``; padding rows are -1.
    """
    if isinstance(hop_samples, bool) or not isinstance(hop_samples, int) or hop_samples < 1:
        raise ParameterError(f"hop_samples must be a positive int, got {hop_samples!r}")
    pairs = _pairs(scores, out_frames, lengths)  # validates scores, lengths and out_frames
    batch, frames = scores.shape
    device = scores.device
    total = torch.as_tensor(num_samples, device=device)
    if total.is_floating_point() or total.is_complex():
        raise ParameterError(f"num_samples must be integers, got dtype {total.dtype}")
    total = total.to(torch.int64).expand(batch) if total.dim() == 0 else total.to(torch.int64)
    if total.shape != (batch,) or (batch and int(total.min()) < 0):
        raise ParameterError(f"num_samples must be a non-negative int or have shape ({batch},)")

    mask = _frame_mask(pairs.lengths, frames)
    s = _scores_float64(scores.detach(), mask)
    end = torch.cumsum(s, 1)
    start = torch.nn.functional.pad(end[:, :-1], (1, 0))
    num_rows = pairs.num_rows
    # Interior boundaries j = 1..R-1: the fine frame i with c_{i-1} <= j < c_i is the first
    # whose end exceeds j.
    targets = torch.arange(1, num_rows, dtype=torch.float64, device=device).expand(batch, -1).contiguous()
    index = torch.searchsorted(end.contiguous(), targets, right=True).clamp(max=frames - 1)
    local = (targets - start.gather(1, index)) / s.gather(1, index).clamp_min(torch.finfo(torch.float64).tiny)
    coordinate = index.to(torch.float64) + local.clamp(0.0, 1.0)
    coordinate = torch.cat(
        [
            torch.zeros(batch, 1, dtype=torch.float64, device=device),
            coordinate,
            torch.zeros(batch, 1, dtype=torch.float64, device=device),
        ],
        dim=1,
    )
    position = torch.arange(num_rows + 1, device=device)[None, :]
    last = position == pairs.counts[:, None]
    coordinate = torch.where(last, pairs.lengths[:, None].to(torch.float64), coordinate)

    bounds = torch.floor((coordinate - 0.5) * hop_samples + 0.5).to(torch.int64) + offset_samples
    bounds = torch.minimum(bounds.clamp_min(0), total[:, None])
    bounds[:, 0] = 0
    bounds = torch.where(last, total[:, None], bounds)
    # Non-empty where possible: at least one sample per span from the left, room for the
    # remaining spans from the right; both are strictly increasing, so their minimum is too.
    bounds = torch.cummax(bounds - position, dim=1).values + position
    bounds = torch.minimum(bounds, total[:, None] - (pairs.counts[:, None] - position))
    bounds = torch.cummax(bounds.clamp(min=0), dim=1).values
    bounds = torch.minimum(bounds, total[:, None])

    out = torch.stack([bounds[:, :-1], bounds[:, 1:]], dim=-1)
    return torch.where(_frame_mask(pairs.counts, num_rows)[:, :, None], out, -1)


def merge_average_blocks(blocks: Iterable[Tensor], scores: Tensor, out_frames: int) -> Iterator[tuple[int, Tensor]]:
    """:func:`merge_average` of one long item whose fine frames arrive in blocks.

    Gives exactly the rows :func:`merge_average` gives for the whole item (the same products,
    added to each row in the same order), while holding only a block and the rows it touches.

    Parameters
    ----------
    blocks : iterable of torch.Tensor [shape=(t_k, F)]
        The item's fine frames (linear power), consecutive, ``Σ t_k = T``.
    scores : torch.Tensor [shape=(T,)]
        Normalised scores of all ``T`` frames, summing to ``out_frames``.
    out_frames : int
        ``T'``.

    Yields
    ------
    first : int
        Index of the first output row of the piece.
    rows : torch.Tensor [shape=(r, F)], dtype of the blocks
        Finished output rows ``first .. first + r - 1``; together, all ``T'`` rows in order.

    Raises
    ------
    ParameterError
        If the blocks do not add up to ``T`` frames or their widths differ.
    """
    if scores.dim() != 1:
        raise ParameterError(f"scores must be 1-D [frames], got shape {tuple(scores.shape)}")
    pairs = _pairs(scores[None], out_frames, None)
    rows, weights = pairs.rows[0], pairs.weights[0]  # [T, 2]
    frames, count = scores.shape[0], int(pairs.counts[0])
    done = 0  # rows [0, done) are out
    pending: Tensor | None = None  # rows [done, done + len(pending))
    t0 = 0
    for block in blocks:
        t1 = t0 + block.shape[0]
        if t1 > frames or block.dim() != 2 or (pending is not None and block.shape[1] != pending.shape[1]):
            raise ParameterError(f"blocks must be [frames, bins] and add up to the {frames} frames of the scores")
        if pending is None:
            pending = block.new_zeros(0, block.shape[1])
        # rows this block touches: up to its last frame's second row
        last = int(rows[t1 - 1, 1]) if t1 > t0 else done
        if last + 1 - done > pending.shape[0]:
            pending = torch.cat([pending, pending.new_zeros(last + 1 - done - pending.shape[0], pending.shape[1])])
        weight = weights[t0:t1].to(block.dtype)
        values = block[:, None, :] * weight[:, :, None]
        values.masked_fill_((weight <= 0)[:, :, None], 0.0)
        pending.index_add_(0, (rows[t0:t1] - done).reshape(-1), values.reshape(-1, block.shape[1]))
        t0 = t1
        # rows before the next frame's first row are complete
        finished = (int(rows[t0, 0]) if t0 < frames else count) - done
        if finished > 0:
            yield done, pending[:finished]
            pending, done = pending[finished:], done + finished
    if t0 != frames:
        raise ParameterError(f"blocks must add up to the {frames} frames of the scores, got {t0}")


# --------------------------------------------------------------------------------------------
# pipeline for inference code


class Compressed(NamedTuple):
    """Result of :func:`compress`."""

    power: Tensor
    """[B, R, F] merged linear power, rows past ``lengths[b]`` 0."""
    scores: Tensor
    """[B, T] normalised scores (sum ``lengths[b]`` per item, each <= 1)."""
    lengths: Tensor
    """[B] int64 output frames per item."""


def compress(
    power: Tensor,
    scores_raw: Tensor,
    *,
    out_frames: int | Tensor,
    lengths: Tensor | None = None,
    min_span_exponent: float = 0.0,
) -> Compressed:
    """Normalise raw scores and merge linear power with them: the inference path in one call.

    The scores and the merge are decoupled: ``power`` may have another number of mel bins than
    the features the raw scores were estimated from, as long as both share the fine time grid.

    Parameters
    ----------
    power : torch.Tensor [shape=(B, T, F)]
        Linear power to merge.
    scores_raw : torch.Tensor [shape=(B, T)]
        Raw importance (e.g. :class:`adares.diffres.ImportanceEstimator` output).
    out_frames : int or torch.Tensor [shape=(B,)]
        Output frames per item (see :func:`output_lengths`).
    lengths : torch.Tensor [shape=(B,)], optional
        Valid fine frames per item.
    min_span_exponent : float
        Caps the scores (see :func:`normalize_scores`).

    Returns
    -------
    Compressed
        ``(power [B, R, F], scores [B, T], lengths [B])``.
    """
    _check_features(power, "power")
    _check_match(power, scores_raw)
    batch, frames = scores_raw.shape
    lengths = _resolve_lengths(lengths, batch=batch, frames=frames, device=power.device)
    counts = _resolve_out_frames(out_frames, lengths)
    scores = normalize_scores(scores_raw, counts, lengths, min_span_exponent=min_span_exponent)
    return Compressed(merge_average(power, scores, counts, lengths), scores, counts)
