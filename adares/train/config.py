"""The settings of a training run (:class:`TrainConfig`) and their validation.

Everything a run depends on is here, so two runs with equal configurations and data give equal
results, and a checkpoint can tell whether it was written by the same run.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from adares.errors import ParameterError

__all__ = [
    "COMPRESSORS",
    "DEFAULT_ESTIMATOR_CHANNELS",
    "DEFAULT_WIDTHS",
    "THREE_PLANES",
    "TrainConfig",
    "check_reductions",
]

COMPRESSORS = ("none", "avgpool", "maxpool", "changehop", "flux", "diffres")
# Compressors whose output keeps the three DiffRes planes (averaged merge, max merge, resolution
# encoding); the uniform baselines feed the classifier their single averaged plane.
THREE_PLANES = ("flux", "diffres")
# The benchmark's classifier and estimator: small enough that a run fits on one CPU core.
DEFAULT_WIDTHS = (32, 32, 64, 64, 64)
DEFAULT_ESTIMATOR_CHANNELS = (32, 16, 8, 4, 1)


def check_reductions(values: Sequence[float], *, name: str) -> list[float]:
    """Validate reductions ρ: numbers in [0, 1), the range extraction accepts (0 keeps every frame).

    Parameters
    ----------
    values : sequence of float
        ρ values; at least one.
    name : str
        Parameter name for the error message.

    Returns
    -------
    list of float

    Raises
    ------
    ParameterError
        If ``values`` is empty or one is not a number in [0, 1).
    """
    values = list(values)
    if not values:
        raise ParameterError(f"{name}: give at least one reduction")
    for value in values:
        number = not isinstance(value, bool) and isinstance(value, numbers.Real)
        if not number or not 0.0 <= value < 1.0:  # NaN fails the range test too
            raise ParameterError(f"{name} must lie in [0, 1) (the fraction of frames removed), got {value!r}")
    return [float(value) for value in values]


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; two runs with equal configs and data give equal results.

    Parameters
    ----------
    compressor : str
        ``none`` (the fine log-mel), ``avgpool``, ``maxpool``, ``changehop``, ``flux`` or ``diffres``.
    reduction : float
        ρ in [0, 1): the compressor keeps ``round((1 - ρ) T)`` frames (0 keeps every frame).
        Ignored by ``none``.
    hop, win : str
        Front-end hop and window (``"5ms"``, ``"25ms"``).
    n_mels, sr, n_fft : int
        Front-end settings.
    seed : int
        Seeds weights, data order, augmentation and dropout.
    epochs, patience : int
        Most epochs; stop after ``patience`` epochs without a better validation accuracy.
    min_epochs : int
        Epochs before early stopping is armed: earlier epochs are neither kept as the best
        model nor counted against the patience. At the start of the cosine schedule the
        learning rate is high and validation accuracy swings widely from one epoch to the next
        (batch-norm statistics chase the last batches), so stopping or selecting there
        measures luck.
    batch_size : int
    lr, compressor_lr : float
        Peak learning rates (AdamW, cosine decay) of the classifier and of the compressor's
        estimator (``None``: same as ``lr``).
    weight_decay : float
    guide_weight : float
        Weight of DiffRes's guide loss.
    time_masks, time_width, freq_masks, freq_width
        SpecAugment: time masks per clip, widest as a fraction of the clip; frequency masks,
        widest in mel bins.
    mixup : float
        Beta(α, α) mixup of the classifier input; 0 disables it.
    planes : str
        What the classifier reads from a compressor: ``avg`` (the averaged plane), ``stack`` (the
        three DiffRes planes as extra input channels of the first convolution) or ``mix`` (the
        three planes combined per mel bin by learned weights, nearly free); ``auto`` is ``mix``
        for ``flux``/``diffres`` and ``avg`` otherwise.
    widths, kernel_size, pool_every, dropout
        Classifier settings (:class:`~adares.models.ConvClassifier`).
    estimator : dict
        Extra keyword arguments of the DiffRes importance estimator.

    Raises
    ------
    ParameterError
        If a setting is out of range or two settings contradict each other.
    """

    compressor: str = "diffres"
    reduction: float = 0.5
    hop: str = "5ms"
    win: str = "25ms"
    n_mels: int = 128
    sr: int = 16000
    n_fft: int = 512
    seed: int = 0
    epochs: int = 25
    patience: int = 6
    min_epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-3
    compressor_lr: float | None = None
    weight_decay: float = 1e-3
    guide_weight: float = 1.0
    time_masks: int = 2
    time_width: float = 0.1
    freq_masks: int = 2
    freq_width: int = 16
    mixup: float = 0.0
    planes: str = "auto"
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    kernel_size: int = 5
    pool_every: int = 1
    dropout: float = 0.1
    estimator: dict[str, Any] = field(default_factory=lambda: {"channels": list(DEFAULT_ESTIMATOR_CHANNELS)})

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "estimator", dict(self.estimator))
        if self.compressor not in COMPRESSORS:
            raise ParameterError(f"compressor must be one of {', '.join(COMPRESSORS)}; got {self.compressor!r}")
        if self.compressor != "none":
            check_reductions([self.reduction], name="reduction")
        if self.planes not in ("auto", "avg", "stack", "mix"):
            raise ParameterError(f"planes must be auto, avg, stack or mix; got {self.planes!r}")
        if self.planes in ("stack", "mix") and self.compressor not in THREE_PLANES:
            raise ParameterError(f"planes={self.planes!r} needs flux or diffres; {self.compressor} gives one plane")
        for name in ("epochs", "batch_size", "n_mels", "sr", "n_fft"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        if self.patience < 1:
            raise ParameterError(f"patience must be >= 1, got {self.patience}")
        if not 0 <= self.min_epochs <= self.epochs:
            raise ParameterError(f"min_epochs must lie in [0, epochs], got {self.min_epochs}")
        if self.lr <= 0 or (self.compressor_lr is not None and self.compressor_lr < 0):
            raise ParameterError("learning rates must be positive")
        if self.mixup < 0 or self.guide_weight < 0 or self.weight_decay < 0:
            raise ParameterError("mixup, guide_weight and weight_decay must be >= 0")

    @property
    def plane_mode(self) -> str:
        """``avg``, ``stack`` or ``mix``, with ``auto`` resolved."""
        if self.planes == "auto":
            return "mix" if self.compressor in THREE_PLANES else "avg"
        return self.planes

    @property
    def num_planes(self) -> int:
        """Feature planes the classifier reads."""
        return 1 if self.plane_mode == "avg" else 3

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        data = dataclasses.asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ParameterError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ParameterError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**data)

    def frontend_config(self) -> dict[str, Any]:
        """Keyword arguments of the :class:`~adares.frontend.MelFrontend` this run uses."""
        return {"sr": self.sr, "hop": self.hop, "win": self.win, "n_fft": self.n_fft, "n_mels": self.n_mels}
