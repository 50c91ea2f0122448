"""Full float32 on CUDA where features are extracted.

PyTorch lets cuDNN run float32 convolutions in TF32 by default (10-bit mantissa), which moves a
trained estimator's scores on a GPU, and with them the merge boundaries: extraction on
CUDA would then write other features than on the CPU. Extraction runs its estimator inside
:func:`exact_float32`; training keeps whatever the user's program set (TF32 is a fine trade there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["exact_float32"]


@contextlib.contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """Within the block, CUDA convolutions and matrix products on ``device`` use IEEE float32.

    Sets ``torch.backends.cudnn.allow_tf32`` and ``torch.backends.cuda.matmul.allow_tf32`` to
    False and restores both afterwards (also on error). These are process-wide switches: another
    thread's CUDA work in the same process also runs in full float32 meanwhile. On other devices
    the block runs unchanged.

    Parameters
    ----------
    device : torch.device
        The device the block computes on.
    """
    if device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul
