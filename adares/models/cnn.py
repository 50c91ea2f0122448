"""A compact 1-D CNN classifier over (compressed) log-mel features.

Time is the convolution axis and mel bins are the input channels: on clips of a second or two this
is the cheapest backbone that still learns keywords, pitch and drum patterns, so every
configuration of the accuracy benchmark trains quickly on a CPU. The classifier cost is linear
in the number of frames, which is the quantity a compressor trades against accuracy.

Variable-length batches are exact: padded frames are zeroed after every layer, so a clip gives the
same logits alone as inside a padded batch (in evaluation mode).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from adares.errors import ParameterError

__all__ = ["ConvClassifier", "frame_mask", "masked_mean", "masked_max", "pooled_lengths"]


def frame_mask(lengths: Tensor, *, max_len: int) -> Tensor:
    """Boolean mask of the valid frames.

    Parameters
    ----------
    lengths : torch.Tensor [shape=(B,)], integer
        Valid frames per item.
    max_len : int
        Padded length T.

    Returns
    -------
    torch.Tensor [shape=(B, T)], bool
        True where ``t < lengths[b]``.
    """
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over time of the valid frames.

    Parameters
    ----------
    x : torch.Tensor [shape=(B, C, T)]
    mask : torch.Tensor [shape=(B, T)], bool

    Returns
    -------
    torch.Tensor [shape=(B, C)]
    """
    weights = mask.to(x.dtype)[:, None, :]
    return (x * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Maximum over time of the valid frames.

    Parameters
    ----------
    x : torch.Tensor [shape=(B, C, T)]
    mask : torch.Tensor [shape=(B, T)], bool

    Returns
    -------
    torch.Tensor [shape=(B, C)]
    """
    return x.masked_fill(~mask[:, None, :], float("-inf")).amax(-1)


def pooled_lengths(lengths: Tensor, *, factor: int) -> Tensor:
    """Valid frames after a max pooling of size and stride ``factor`` with ``ceil_mode``."""
    return torch.div(lengths + factor - 1, factor, rounding_mode="floor")


class ConvClassifier(nn.Module):
    """Conv1d blocks over time (mel bins x input channels as channels), then mean+max pooling.

    Each block is ``Conv1d(k, same padding) -> BatchNorm -> ReLU``; after every ``pool_every``
    blocks the time axis is max-pooled by 2. The head is dropout and a linear layer over the
    concatenated masked mean and max over time.

    How the input channels enter: ``in_channels`` feature planes of ``n_mels`` bins (for DiffRes:
    averaged merge, max merge, resolution encoding) either are stacked into
    ``in_channels * n_mels`` channels of the first convolution (``plane_mode="stack"``), which
    multiplies that layer's cost by ``in_channels``, or are mixed into one plane by a learned
    per-bin linear combination (``plane_mode="mix"``: ``y_f = Σ_c w_cf x_cf + b_f``,
    ``in_channels * n_mels`` MACs per frame). Either way :mod:`torch.utils.flop_counter` counts
    the cost (the mix is an einsum, which it sees as a batched matrix product).

    Parameters
    ----------
    n_mels : int
        Mel bins F of the input.
    n_classes : int
        Number of output classes.
    in_channels : int
        Feature planes C (1 for a log-mel, 3 for the DiffRes feature).
    plane_mode : {"stack", "mix"}
        How several planes enter (see above); ignored for one plane.
    widths : sequence of int
        Output channels of each convolution block.
    kernel_size : int
        Odd temporal kernel size.
    pool_every : int
        Max-pool time by 2 after this many blocks (0: never).
    dropout : float
        Dropout before the linear head.
    """

    def __init__(
        self,
        *,
        n_mels: int,
        n_classes: int,
        in_channels: int = 1,
        plane_mode: str = "stack",
        widths: Sequence[int] = (64, 64, 128, 128),
        kernel_size: int = 3,
        pool_every: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (("n_mels", n_mels), ("n_classes", n_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        if not widths or any(int(w) < 1 for w in widths):
            raise ParameterError(f"widths must be a non-empty list of positive integers, got {widths!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ParameterError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if pool_every < 0:
            raise ParameterError(f"pool_every must be >= 0, got {pool_every}")
        if not 0.0 <= dropout < 1.0:
            raise ParameterError(f"dropout must be in [0, 1), got {dropout}")
        if plane_mode not in ("stack", "mix"):
            raise ParameterError(f"plane_mode must be stack or mix, got {plane_mode!r}")
        self.n_mels = n_mels
        self.n_classes = n_classes
        self.in_channels = in_channels
        self.widths = tuple(int(w) for w in widths)
        self.kernel_size = kernel_size
        self.pool_every = pool_every
        self.plane_mode = plane_mode
        mixing = plane_mode == "mix" and in_channels > 1
        if mixing:
            # Starts as the first plane alone (the averaged log-mel for DiffRes).
            weight = torch.zeros(in_channels, n_mels)
            weight[0] = 1.0
            self.plane_weight = nn.Parameter(weight)
            self.plane_bias = nn.Parameter(torch.zeros(n_mels))
        else:
            self.register_parameter("plane_weight", None)
            self.register_parameter("plane_bias", None)
        channels = (1 if mixing else in_channels) * n_mels
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for width in self.widths:
            # The bias is redundant before batch norm.
            self.convs.append(nn.Conv1d(channels, width, kernel_size, padding=kernel_size // 2, bias=False))
            self.norms.append(nn.BatchNorm1d(width))
            channels = width
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * channels, n_classes)

    def config(self) -> dict:
        """Constructor arguments, JSON-serialisable, so the model can be rebuilt."""
        return {
            "n_mels": self.n_mels,
            "n_classes": self.n_classes,
            "in_channels": self.in_channels,
            "plane_mode": self.plane_mode,
            "widths": list(self.widths),
            "kernel_size": self.kernel_size,
            "pool_every": self.pool_every,
            "dropout": self.dropout.p,
        }

    def embed(self, feature: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The pooled embedding before the head.

        Parameters
        ----------
        feature : torch.Tensor [shape=(B, C, T, F) or (B, T, F)]
            Feature planes, time-major; (B, T, F) means C = 1.
        lengths : torch.Tensor [shape=(B,)], integer, optional
            Valid frames per item; all T when omitted.

        Returns
        -------
        torch.Tensor [shape=(B, 2 * widths[-1])]
        """
        if feature.dim() == 3:
            feature = feature[:, None]
        if feature.dim() != 4:
            raise ParameterError(f"feature must be [B, C, T, F] or [B, T, F], got shape {tuple(feature.shape)}")
        batch, planes, frames, bins = feature.shape
        if planes != self.in_channels or bins != self.n_mels:
            raise ParameterError(
                f"classifier expects {self.in_channels} plane(s) of {self.n_mels} mel bins, got {planes} of {bins}"
            )
        if lengths is None:
            lengths = torch.full((batch,), frames, dtype=torch.long, device=feature.device)
        lengths = lengths.to(device=feature.device, dtype=torch.long)
        if self.plane_weight is not None:
            feature = (torch.einsum("bctf,cf->btf", feature, self.plane_weight) + self.plane_bias)[:, None]
            planes = 1
        # [B, C, T, F] -> [B, C*F, T]: planes become extra channels of the first convolution.
        x = feature.permute(0, 1, 3, 2).reshape(batch, planes * bins, frames)
        mask = frame_mask(lengths, max_len=frames)
        x = x * mask[:, None, :].to(x.dtype)
        for index, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = torch.relu(norm(conv(x)))
            x = x * mask[:, None, :].to(x.dtype)
            if self.pool_every and (index + 1) % self.pool_every == 0 and index + 1 < len(self.convs):
                # After ReLU every value is >= 0 and padding is 0, so a window straddling the end of
                # a clip keeps its valid maximum: pooled padding stays exact.
                x = nn.functional.max_pool1d(x, 2, ceil_mode=True)
                lengths = pooled_lengths(lengths, factor=2)
                mask = frame_mask(lengths, max_len=x.shape[-1])
        return torch.cat([masked_mean(x, mask), masked_max(x, mask)], dim=1)

    def forward(self, feature: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Class logits.

        Parameters
        ----------
        feature : torch.Tensor [shape=(B, C, T, F) or (B, T, F)]
        lengths : torch.Tensor [shape=(B,)], integer, optional

        Returns
        -------
        torch.Tensor [shape=(B, n_classes)]
        """
        return self.head(self.dropout(self.embed(feature, lengths)))
