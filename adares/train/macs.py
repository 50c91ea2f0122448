"""Multiply-accumulates per clip of a trained model's parts, the cost a compressor trades for accuracy.

Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (flops / 2) on one clip in
evaluation mode, so the numbers hold for any hardware and do not depend on timing.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from adares.train.model import JointModel

__all__ = ["classifier_macs", "compressor_macs"]


def _macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of ``module(*inputs)`` in evaluation mode; its training flag is restored."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*inputs)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops() // 2)


def classifier_macs(model: JointModel, *, frames: int) -> int:
    """Multiply-accumulates of the classifier on one clip of ``frames`` (compressed) frames.

    Convolutions and the linear head, including the extra input planes.
    """
    classifier = model.classifier
    return _macs(classifier, torch.zeros(1, classifier.in_channels, max(1, frames), classifier.n_mels))


def compressor_macs(model: JointModel, *, frames: int) -> int:
    """Multiply-accumulates of the compressor on one clip of ``frames`` fine frames (0 for none)."""
    if model.compressor is None:
        return 0
    frames = max(2, frames)
    return _macs(model.compressor, torch.zeros(1, frames, model.classifier.n_mels), torch.tensor([frames]))
