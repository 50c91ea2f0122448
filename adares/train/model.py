"""What a configuration trains: a compressor (or none) followed by a classifier, built in one place.

:func:`build_compressor` and :func:`build_classifier` are the only constructors of the trained
modules, used by single-task (:func:`build_model`) and multi-task training alike, so both read a
:class:`~adares.train.config.TrainConfig` the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from adares.diffres import AvgPoolCompressor, ChangeHopCompressor, DiffRes, FluxCompressor, MaxPoolCompressor
from adares.models import ConvClassifier
from adares.train.config import TrainConfig

__all__ = ["JointModel", "build_classifier", "build_compressor", "build_model"]

_BASELINES = {
    "avgpool": AvgPoolCompressor,
    "maxpool": MaxPoolCompressor,
    "changehop": ChangeHopCompressor,
    "flux": FluxCompressor,
}


class JointModel(nn.Module):
    """A compressor (or none) followed by a classifier.

    Parameters
    ----------
    compressor : nn.Module or None
        Maps ``(log_mel [B, T, F], lengths)`` to an output with ``feature`` [B, 3, T', F], ``avg``
        [B, T', F] and ``lengths`` [B] (the DiffRes interface); None feeds the log-mel directly.
    classifier : ConvClassifier
    planes : int
        1: the classifier reads the averaged plane (or the log-mel); 3: all DiffRes planes.
    """

    def __init__(self, compressor: nn.Module | None, classifier: ConvClassifier, *, planes: int) -> None:
        super().__init__()
        self.compressor = compressor
        self.classifier = classifier
        self.planes = planes

    def features(
        self, log_mel: Tensor, lengths: Tensor, *, reduction: float | None = None
    ) -> tuple[Tensor, Tensor, Any]:
        """Classifier input ``[B, C, T', F]``, its lengths ``[B]`` and the compressor's output.

        ``reduction`` overrides the compressor's ρ for this call.
        """
        if self.compressor is None:
            return log_mel[:, None], lengths, None
        out = (
            self.compressor(log_mel, lengths)
            if reduction is None
            else self.compressor(log_mel, lengths, reduction=reduction)
        )
        feature = out.feature if self.planes == 3 else out.avg[:, None]
        return feature, out.lengths, out

    def forward(self, log_mel: Tensor, lengths: Tensor) -> Tensor:
        """Class logits ``[B, K]`` for a log-mel batch ``[B, T, F]`` with lengths ``[B]``."""
        feature, out_lengths, _ = self.features(log_mel, lengths)
        return self.classifier(feature, out_lengths)


def build_compressor(config: TrainConfig) -> nn.Module | None:
    """The compressor module a configuration names (None for ``none``)."""
    if config.compressor == "none":
        return None
    if config.compressor == "diffres":
        return DiffRes(config.n_mels, reduction=config.reduction, **config.estimator)
    return _BASELINES[config.compressor](config.n_mels, reduction=config.reduction)


def build_classifier(config: TrainConfig, *, n_classes: int) -> ConvClassifier:
    """The classifier of ``config`` for ``n_classes`` classes, reading ``config.num_planes`` planes.

    Its weights come from torch's global generator: seed it first (as :func:`build_model` does).
    """
    return ConvClassifier(
        n_mels=config.n_mels,
        n_classes=n_classes,
        in_channels=config.num_planes,
        plane_mode="mix" if config.plane_mode == "mix" else "stack",
        widths=config.widths,
        kernel_size=config.kernel_size,
        pool_every=config.pool_every,
        dropout=config.dropout,
    )


def build_model(config: TrainConfig, *, n_classes: int) -> JointModel:
    """Compressor and classifier for ``config``, initialised from ``config.seed``."""
    torch.manual_seed(config.seed)
    compressor = build_compressor(config)
    classifier = build_classifier(config, n_classes=n_classes)
    return JointModel(compressor, classifier, planes=config.num_planes)
