"""Joint training of a temporal compressor (DiffRes or a baseline) with a classifier.

One trainer for every configuration, so comparisons are fair: the fine log-mel of a labelled
folder goes through SpecAugment, then the compressor (``none``, ``avgpool``, ``changehop``,
``flux`` or ``diffres``) at reduction ρ, then :class:`~adares.models.ConvClassifier`. Cross-entropy
(with optional mixup) plus, for DiffRes, its guide loss; early stopping on validation accuracy;
test accuracy of the best epoch.

Reproducible and resumable: every random draw of epoch ``e`` comes from a generator seeded by
``(seed, e)``, and a checkpoint (weights, optimiser, early-stopping state, history) is written
atomically after each epoch and read back with ``torch.load(weights_only=True)``, so a killed run
continues where it stopped and ends with the numbers an uninterrupted run gives.

The fine log-mel of a dataset is computed once per front-end configuration and cached as a
safetensors file keyed by a hash of the configuration and the audio files.

Layout of ``out_dir``::

    config.json        the training configuration, classes, front end and classifier settings
    model.safetensors  best weights (compressor + classifier)
    metrics.json       accuracies, loss curves, MACs per clip, training time
    checkpoint.pt      resume state (tensors and plain containers only)
    compressor/        DiffRes only: a bundle ``adares extract --model`` loads
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from adares.atomic import atomic_open, atomic_write_text
from adares.errors import ParameterError
from adares.models import ConvClassifier, mixup, spec_augment
from adares.units import to_samples

__all__ = [
    "COMPRESSORS",
    "SPLITS",
    "TrainConfig",
    "SpectrogramSet",
    "JointModel",
    "read_labels",
    "load_spectrograms",
    "build_model",
    "evaluate",
    "classifier_macs",
    "train",
    "MultiTaskModel",
    "train_multitask",
]

COMPRESSORS = ("none", "avgpool", "maxpool", "changehop", "flux", "diffres")
SPLITS = ("train", "validation", "test")
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
BUNDLE = "compressor"

# Compressors whose output keeps the three DiffRes planes (averaged merge, max merge, resolution
# encoding); the uniform baselines feed the classifier their single averaged plane.
_THREE_PLANES = ("flux", "diffres")
# The benchmark's classifier and estimator: sized so a run takes minutes on one CPU core.
DEFAULT_WIDTHS = (32, 32, 64, 64, 64)
DEFAULT_ESTIMATOR_CHANNELS = (32, 16, 8, 4, 1)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; two runs with equal configs and data give equal results.

    Parameters
    ----------
    compressor : str
        ``none`` (the fine log-mel), ``avgpool``, ``maxpool``, ``changehop``, ``flux`` or ``diffres``.
    reduction : float
        ρ: the compressor keeps ``round((1 - ρ) T)`` frames. Ignored by ``none``.
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
        learning rate is high and validation accuracy swings by tens of points from one epoch
        to the next (batch-norm statistics chase the last batches), so stopping or selecting
        there measures luck.
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
        if self.compressor != "none" and not 0.0 < self.reduction < 1.0:
            raise ParameterError(f"reduction must be in (0, 1), got {self.reduction}")
        if self.planes not in ("auto", "avg", "stack", "mix"):
            raise ParameterError(f"planes must be auto, avg, stack or mix; got {self.planes!r}")
        if self.planes in ("stack", "mix") and self.compressor not in _THREE_PLANES:
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
            return "mix" if self.compressor in _THREE_PLANES else "avg"
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


# ----------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True, eq=False)
class SpectrogramSet:
    """Fine log-mel spectrograms of a labelled folder, padded into one tensor.

    Attributes
    ----------
    log_mel : torch.Tensor [shape=(N, T_max, F)], float32
        Padded with each clip's minimum past its length.
    lengths : torch.Tensor [shape=(N,)], int64
    labels : torch.Tensor [shape=(N,)], int64
        Index into ``classes``.
    splits : dict of str to torch.Tensor
        Clip indices of ``train``, ``validation`` and ``test``.
    classes : list of str
        Sorted class names.
    paths : list of str
        Clip paths relative to the folder.
    frontend : dict
        Front-end configuration the spectrograms were computed with.
    key : str
        Hash of the front end and the audio files (the cache key).
    """

    log_mel: Tensor
    lengths: Tensor
    labels: Tensor
    splits: dict[str, Tensor]
    classes: list[str]
    paths: list[str]
    frontend: dict[str, Any]
    key: str

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Log-mel ``[B, T, F]`` trimmed to the longest item, lengths ``[B]`` and labels ``[B]``."""
        lengths = self.lengths[indices]
        longest = int(lengths.max()) if len(indices) else 0
        return self.log_mel[indices, :longest], lengths, self.labels[indices]


def read_labels(data_dir: str | os.PathLike[str]) -> list[tuple[str, str, str]]:
    """Read ``labels.csv`` (columns ``path,label,split``) of a dataset folder.

    Returns
    -------
    list of (path, label, split)
        ``path`` relative to ``data_dir``, as written in the file.

    Raises
    ------
    ParameterError
        If the file is missing, lacks a column, names an unknown split or a missing clip, or a
        split is empty.
    """
    root = Path(data_dir)
    table = root / "labels.csv"
    if not table.is_file():
        raise ParameterError(f"{root}: no labels.csv (expected columns path,label,split)")
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label", "split"} - set(reader.fieldnames or ())
        if missing:
            raise ParameterError(f"{table}: missing column(s) {', '.join(sorted(missing))}")
        rows = [(row["path"], row["label"], row["split"]) for row in reader]
    for path, _label, split in rows:
        if split not in SPLITS:
            raise ParameterError(f"{table}: split of {path!r} is {split!r}, expected one of {', '.join(SPLITS)}")
        if not (root / path).is_file():
            raise ParameterError(f"{table}: clip {path!r} does not exist")
    for split in SPLITS:
        if not any(row[2] == split for row in rows):
            raise ParameterError(f"{table}: the {split} split is empty")
    return rows


def _data_key(root: Path, rows: Sequence[tuple[str, str, str]], frontend: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(frontend, sort_keys=True).encode())
    for path, _label, _split in rows:
        stat = (root / path).stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _compute_log_mel(root: Path, paths: Sequence[str], frontend_config: dict[str, Any], *, progress: bool):
    from tqdm.auto import tqdm

    from adares.audio import load
    from adares.frontend import MelFrontend

    frontend = MelFrontend(**frontend_config)
    sr = frontend_config["sr"]
    spectrograms = []
    with torch.no_grad():
        for path in tqdm(paths, desc="log-mel", unit="clip", disable=not progress, leave=False):
            samples, _ = load(root / path, sr=sr)
            log_mel, _frames = frontend(torch.from_numpy(np.ascontiguousarray(samples))[None])
            spectrograms.append(log_mel[0].to(torch.float32).contiguous())
    return spectrograms


def load_spectrograms(
    data_dir: str | os.PathLike[str],
    *,
    frontend: dict[str, Any],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> SpectrogramSet:
    """Decode a labelled folder and compute its fine log-mel, or read it from the cache.

    Parameters
    ----------
    data_dir : str or os.PathLike
        Folder with ``labels.csv`` and the clips it names.
    frontend : dict
        :class:`~adares.frontend.MelFrontend` keyword arguments (``TrainConfig.frontend_config()``).
    cache_dir : str or os.PathLike, optional
        Where to keep ``<key>.safetensors``; the key hashes the front end and every clip's path,
        size and modification time, so a rebuilt dataset is never read stale.
    progress : bool
        Show a progress bar while computing.

    Returns
    -------
    SpectrogramSet
    """
    from safetensors.torch import load as load_tensors
    from safetensors.torch import save as save_tensors

    root = Path(data_dir)
    rows = read_labels(root)
    key = _data_key(root, rows, frontend)
    paths = [row[0] for row in rows]
    cached = Path(cache_dir) / f"logmel-{key[:20]}.safetensors" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        tensors = load_tensors(cached.read_bytes())
        flat, lengths = tensors["log_mel"], tensors["lengths"]
        spectrograms = list(torch.split(flat, lengths.tolist()))
    else:
        spectrograms = _compute_log_mel(root, paths, frontend, progress=progress)
        lengths = torch.tensor([len(s) for s in spectrograms], dtype=torch.long)
        if cached is not None:
            blob = save_tensors({"log_mel": torch.cat(spectrograms), "lengths": lengths}, metadata={"key": key})
            with atomic_open(cached, "wb") as handle:
                handle.write(blob)
    if int(lengths.min()) < 1:
        raise ParameterError(f"{root}: a clip gave no frames")
    classes = sorted({row[1] for row in rows})
    index = {name: i for i, name in enumerate(classes)}
    bins = spectrograms[0].shape[1]
    padded = torch.empty(len(spectrograms), int(lengths.max()), bins, dtype=torch.float32)
    for item, spectrogram in enumerate(spectrograms):
        padded[item, : len(spectrogram)] = spectrogram
        padded[item, len(spectrogram) :] = spectrogram.min()
    splits = {
        split: torch.tensor([i for i, row in enumerate(rows) if row[2] == split], dtype=torch.long) for split in SPLITS
    }
    return SpectrogramSet(
        log_mel=padded,
        lengths=lengths,
        labels=torch.tensor([index[row[1]] for row in rows], dtype=torch.long),
        splits=splits,
        classes=classes,
        paths=paths,
        frontend=dict(frontend),
        key=key,
    )


# ----------------------------------------------------------------------------------------------
# Model


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
    from adares import diffres

    if config.compressor == "diffres":
        return diffres.DiffRes(config.n_mels, reduction=config.reduction, **config.estimator)
    baseline = {
        "avgpool": diffres.AvgPoolCompressor,
        "maxpool": diffres.MaxPoolCompressor,
        "changehop": diffres.ChangeHopCompressor,
        "flux": diffres.FluxCompressor,
    }[config.compressor]
    return baseline(config.n_mels, reduction=config.reduction)


def build_model(config: TrainConfig, *, n_classes: int) -> JointModel:
    """Compressor and classifier for ``config``, initialised from ``config.seed``."""
    torch.manual_seed(config.seed)
    compressor = build_compressor(config)
    classifier = ConvClassifier(
        n_mels=config.n_mels,
        n_classes=n_classes,
        in_channels=config.num_planes,
        plane_mode="mix" if config.plane_mode == "mix" else "stack",
        widths=config.widths,
        kernel_size=config.kernel_size,
        pool_every=config.pool_every,
        dropout=config.dropout,
    )
    return JointModel(compressor, classifier, planes=config.num_planes)


def classifier_macs(model: JointModel, *, frames: int) -> int:
    """Multiply-accumulates of the classifier on one clip of ``frames`` (compressed) frames.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (flops / 2): convolutions and
    the linear head, including the extra input planes.
    """
    classifier = model.classifier
    was_training = classifier.training
    classifier.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            classifier(torch.zeros(1, classifier.in_channels, max(1, frames), classifier.n_mels))
    finally:
        classifier.train(was_training)
    return int(counter.get_total_flops() // 2)


def compressor_macs(model: JointModel, *, frames: int) -> int:
    """Multiply-accumulates of the compressor on one clip of ``frames`` fine frames (0 for none)."""
    if model.compressor is None:
        return 0
    compressor = model.compressor
    was_training = compressor.training
    compressor.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            compressor(torch.zeros(1, max(2, frames), model.classifier.n_mels), torch.tensor([max(2, frames)]))
    finally:
        compressor.train(was_training)
    return int(counter.get_total_flops() // 2)


# ----------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(
    model: JointModel,
    data: SpectrogramSet,
    indices: Tensor,
    *,
    batch_size: int = 128,
    reduction: float | None = None,
) -> dict[str, Any]:
    """Accuracy and mean cross-entropy of ``model`` (in eval mode) on the clips ``indices``.

    ``reduction`` overrides the compressor's ρ.

    Returns
    -------
    dict
        ``accuracy``, ``loss``, ``predictions`` (list, in the order of ``indices``),
        ``mean_frames`` (fine) and ``mean_output_frames`` (what the classifier saw).
    """
    was_training = model.training
    model.eval()
    # Sorting by length keeps padding (and time) low; results go back to the caller's order.
    order = torch.argsort(data.lengths[indices], stable=True)
    predictions = torch.empty(len(indices), dtype=torch.long)
    loss_sum = 0.0
    output_frames = 0
    try:
        for start in range(0, len(indices), batch_size):
            positions = order[start : start + batch_size]
            log_mel, lengths, labels = data.batch(indices[positions])
            feature, out_lengths, _ = model.features(log_mel, lengths, reduction=reduction)
            logits = model.classifier(feature, out_lengths)
            loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            predictions[positions] = logits.argmax(1)
            output_frames += int(out_lengths.sum())
    finally:
        model.train(was_training)
    labels = data.labels[indices]
    count = max(1, len(indices))
    return {
        "accuracy": float((predictions == labels).float().mean()) if len(indices) else float("nan"),
        "loss": loss_sum / count,
        "predictions": predictions.tolist(),
        "mean_frames": float(data.lengths[indices].float().mean()),
        "mean_output_frames": output_frames / count,
    }


# ----------------------------------------------------------------------------------------------
# Training


def _epoch_seed(seed: int, epoch: int) -> int:
    # Independent streams per (seed, epoch): a resumed run redraws exactly what it would have.
    return int.from_bytes(hashlib.sha256(f"adares-train:{seed}:{epoch}".encode()).digest()[:6], "little")


def _learning_rate(peak: float, epoch: int, epochs: int) -> float:
    return peak * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def _optimizer(model: JointModel, config: TrainConfig) -> torch.optim.Optimizer:
    groups = [{"params": list(model.classifier.parameters()), "lr": config.lr, "peak_lr": config.lr}]
    if model.compressor is not None:
        params = [p for p in model.compressor.parameters() if p.requires_grad]
        if params:
            peak = config.lr if config.compressor_lr is None else config.compressor_lr
            groups.append({"params": params, "lr": peak, "peak_lr": peak})
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def _train_step(
    model: JointModel,
    log_mel: Tensor,
    lengths: Tensor,
    labels: Tensor,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    generator: torch.Generator,
    *,
    reduction: float | None = None,
) -> dict[str, float]:
    """One optimiser step on one batch: SpecAugment, compressor, mixup, classifier, losses."""
    log_mel, _ = spec_augment(
        log_mel,
        lengths,
        generator=generator,
        time_masks=config.time_masks,
        time_width=config.time_width,
        freq_masks=config.freq_masks,
        freq_width=config.freq_width,
    )
    feature, out_lengths, out = model.features(log_mel, lengths, reduction=reduction)
    targets = nn.functional.one_hot(labels, model.classifier.n_classes).to(feature.dtype)
    feature, targets, out_lengths = mixup(feature, targets, out_lengths, alpha=config.mixup, generator=generator)
    logits = model.classifier(feature, out_lengths)
    task_loss = nn.functional.cross_entropy(logits, targets)
    loss = task_loss
    guide = activeness = 0.0
    if out is not None:
        if config.guide_weight > 0:
            loss = loss + config.guide_weight * out.guide_loss
        guide = float(out.guide_loss.detach())
        activeness = float(torch.as_tensor(out.activeness).detach())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {
        "train_loss": float(loss.detach()),
        "train_task_loss": float(task_loss.detach()),
        "train_accuracy": float((logits.argmax(1) == targets.argmax(1)).float().mean()),
        "guide_loss": guide,
        "activeness": activeness,
    }


def _mean_records(records: Sequence[dict[str, float]]) -> dict[str, float]:
    if not records:
        return {}
    return {key: sum(r[key] for r in records) / len(records) for key in records[0]}


def _batches(indices: Tensor, batch_size: int) -> list[Tensor]:
    chunks = [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]
    # A lone last item would make batch-norm statistics degenerate.
    return [chunk for chunk in chunks if len(chunk) >= 2] or chunks


def _train_epoch(
    model: JointModel, data: SpectrogramSet, optimizer: torch.optim.Optimizer, config: TrainConfig, epoch: int
) -> dict[str, float]:
    generator = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
    torch.manual_seed(_epoch_seed(config.seed, epoch) + 1)  # dropout draws from the global stream
    model.train()
    train = data.splits["train"]
    order = train[torch.randperm(len(train), generator=generator)]
    records = []
    for indices in _batches(order, config.batch_size):
        log_mel, lengths, labels = data.batch(indices)
        records.append(_train_step(model, log_mel, lengths, labels, optimizer, config, generator))
    return _mean_records(records)


def _state_to_cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _load_checkpoint(path: Path) -> dict[str, Any]:
    # weights_only: a checkpoint is tensors and plain containers; never unpickle arbitrary objects.
    return torch.load(path, map_location="cpu", weights_only=True)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _save_weights(path: Path, state: dict[str, Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save as save_tensors

    blob = save_tensors({name: t.contiguous() for name, t in state.items()}, metadata=metadata)
    with atomic_open(path, "wb") as handle:
        handle.write(blob)


def _run_description(config: TrainConfig, data: SpectrogramSet) -> dict[str, Any]:
    return {"config": config.to_dict(), "data_key": data.key, "classes": list(data.classes)}


def train(
    data_dir: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    config: TrainConfig,
    *,
    data: SpectrogramSet | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    export_bundle: bool = True,
    threads: int | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``config`` on the folder ``data_dir`` and write the results to ``out_dir``.

    Parameters
    ----------
    data_dir : str or os.PathLike, or None
        Folder with ``labels.csv`` (columns ``path,label,split``, splits ``train``,
        ``validation``, ``test``); None when ``data`` is given.
    out_dir : str or os.PathLike
        Where the model, ``metrics.json``, the checkpoint and (DiffRes) the compressor bundle go.
    config : TrainConfig
    data : SpectrogramSet, optional
        Spectrograms already loaded (the benchmark reuses one load for many runs); must match
        the front end of ``config``.
    cache_dir : str or os.PathLike, optional
        Cache of fine log-mels (see :func:`load_spectrograms`).
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when it holds the same configuration and data;
        a finished run returns its metrics without training. False starts over.
    progress : bool
        Show a progress bar with per-epoch metrics on stderr.
    export_bundle : bool
        For DiffRes, also write a compressor bundle to ``out_dir/compressor``.
    threads : int, optional
        ``torch.set_num_threads`` for this run.
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(epoch, record)`` after each epoch's checkpoint is written.

    Returns
    -------
    dict
        The content of ``metrics.json``.

    Raises
    ------
    ParameterError
        Bad data folder, or a checkpoint in ``out_dir`` from a different configuration or
        dataset while ``resume`` is true.
    """
    out = Path(out_dir)
    if threads is not None:
        torch.set_num_threads(threads)
    if data is None:
        if data_dir is None:
            raise ParameterError("give data_dir or data")
        data = load_spectrograms(data_dir, frontend=config.frontend_config(), cache_dir=cache_dir, progress=progress)
    elif data.frontend != config.frontend_config():
        raise ParameterError(
            f"spectrograms were computed with {data.frontend}, the configuration asks for {config.frontend_config()}"
        )
    if int(data.log_mel.shape[-1]) != config.n_mels:
        raise ParameterError(f"spectrograms have {data.log_mel.shape[-1]} mel bins, config says {config.n_mels}")
    description = _run_description(config, data)
    out.mkdir(parents=True, exist_ok=True)

    model = build_model(config, n_classes=len(data.classes))
    with _deterministic():
        state = _fit(
            model,
            _optimizer(model, config),
            config=config,
            out=out,
            description=description,
            run_epoch=lambda epoch, optimizer: _train_epoch(model, data, optimizer, config, epoch),
            validate=lambda: evaluate(model, data, data.splits["validation"]),
            resume=resume,
            progress=progress,
            label=config.compressor + ("" if config.compressor == "none" else f" ρ={config.reduction:g}"),
            on_epoch_end=on_epoch_end,
        )
        if state is None:
            return json.loads((out / METRICS).read_text())
        return _finish(model, data, config, state, out, description, export_bundle=export_bundle)


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    config: TrainConfig,
    out: Path,
    description: dict[str, Any],
    run_epoch: Callable[[int, torch.optim.Optimizer], dict[str, float]],
    validate: Callable[[], dict[str, Any]],
    resume: bool,
    progress: bool,
    label: str,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None,
) -> dict[str, Any] | None:
    """The epoch loop: cosine learning rate, validation, early stopping, checkpoint, progress.

    Returns the final state with the best weights loaded into ``model``, or None when ``out``
    already holds the finished run's metrics.
    """
    from tqdm.auto import tqdm

    state: dict[str, Any] = {
        "epoch": 0,
        "best_accuracy": -1.0,
        "best_loss": math.inf,
        "best_epoch": 0,
        "bad_epochs": 0,
        "history": [],
        "seconds": 0.0,
        "finished": False,
        "best_state": _state_to_cpu(model.state_dict()),
    }
    checkpoint_path = out / CHECKPOINT
    if resume and checkpoint_path.is_file():
        saved = _load_checkpoint(checkpoint_path)
        if json.loads(saved["description"]) != json.loads(json.dumps(description)):
            raise ParameterError(
                f"{checkpoint_path} was written by a run with other settings or data; "
                "use another output folder or start over (--restart)"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        if state["finished"] and (out / METRICS).is_file():
            return None

    with tqdm(total=config.epochs, initial=state["epoch"], desc=label, unit="epoch", disable=not progress) as bar:
        while not state["finished"]:
            epoch = state["epoch"]
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(group["peak_lr"], epoch, config.epochs)
            began = time.perf_counter()
            record = run_epoch(epoch, optimizer)
            validation = validate()
            record.update(
                epoch=epoch + 1,
                val_accuracy=validation["accuracy"],
                val_loss=validation["loss"],
                lr=optimizer.param_groups[0]["lr"],
                seconds=time.perf_counter() - began,
            )
            state["history"].append(record)
            state["seconds"] += record["seconds"]
            state["epoch"] = epoch + 1
            armed = epoch + 1 >= config.min_epochs
            better = armed and (
                validation["accuracy"] > state["best_accuracy"]
                or (validation["accuracy"] == state["best_accuracy"] and validation["loss"] < state["best_loss"])
            )
            if better:
                state.update(
                    best_accuracy=validation["accuracy"],
                    best_loss=validation["loss"],
                    best_epoch=epoch + 1,
                    bad_epochs=0,
                    best_state=_state_to_cpu(model.state_dict()),
                )
            elif armed:
                state["bad_epochs"] += 1
            state["finished"] = state["epoch"] >= config.epochs or state["bad_epochs"] >= config.patience
            _save_checkpoint(
                checkpoint_path,
                {
                    "description": json.dumps(description),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "state": state,
                },
            )
            bar.update(1)
            bar.set_postfix(
                loss=f"{record['train_loss']:.3f}",
                val_acc=f"{record['val_accuracy']:.3f}",
                best=f"{state['best_accuracy']:.3f}@{state['best_epoch']}",
            )
            if progress:
                bar.write(
                    f"epoch {epoch + 1:3d}  loss {record['train_loss']:.4f}  train acc "
                    f"{record['train_accuracy']:.3f}  val loss {record['val_loss']:.4f}  val acc "
                    f"{record['val_accuracy']:.3f}  ({record['seconds']:.1f} s)"
                )
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
    model.load_state_dict(state["best_state"])
    return state


def _finish(
    model: JointModel,
    data: SpectrogramSet,
    config: TrainConfig,
    state: dict[str, Any],
    out: Path,
    description: dict[str, Any],
    *,
    export_bundle: bool,
) -> dict[str, Any]:
    test = evaluate(model, data, data.splits["test"])
    validation = evaluate(model, data, data.splits["validation"])
    output_frames = round(test["mean_output_frames"])
    n_params = {
        "classifier": sum(p.numel() for p in model.classifier.parameters()),
        "compressor": 0 if model.compressor is None else sum(p.numel() for p in model.compressor.parameters()),
    }
    metrics = {
        "config": config.to_dict(),
        "classes": list(data.classes),
        "data": {
            "key": data.key,
            "clips": {split: len(indices) for split, indices in data.splits.items()},
            "frontend": data.frontend,
        },
        "accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "val_accuracy": validation["accuracy"],
        "val_loss": validation["loss"],
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "history": state["history"],
        "mean_frames": test["mean_frames"],
        "mean_output_frames": test["mean_output_frames"],
        "macs": classifier_macs(model, frames=output_frames),
        "compressor_macs": compressor_macs(model, frames=round(test["mean_frames"])),
        "parameters": n_params,
        "training_seconds": state["seconds"],
        "test_predictions": test["predictions"],
    }
    _save_weights(
        out / WEIGHTS,
        model.state_dict(),
        {"config": json.dumps(config.to_dict()), "classes": json.dumps(list(data.classes))},
    )
    _write_json(
        out / CONFIG,
        {**description, "classifier": model.classifier.config(), "frontend": data.frontend},
    )
    if export_bundle and config.compressor == "diffres":
        from adares.compressor import export_bundle as export

        export(
            model.compressor,
            out / BUNDLE,
            frontend=data.frontend,
            reduction=config.reduction,
            training={"config": config.to_dict(), "data_key": data.key, "classes": list(data.classes)},
            metrics={"accuracy": test["accuracy"], "val_accuracy": validation["accuracy"]},
        )
    _write_json(out / METRICS, metrics)
    state["finished"] = True
    return metrics


# ----------------------------------------------------------------------------------------------
# Multi-task training: one shared DiffRes, one classifier per task, mixed hops and reductions


class MultiTaskModel(nn.Module):
    """A shared compressor with one classifier per task.

    Parameters
    ----------
    compressor : nn.Module
        Shared by every task (a :class:`~adares.diffres.DiffRes`).
    classifiers : dict of str to ConvClassifier
        One per task.
    planes : int
        Planes each classifier reads (see :class:`JointModel`).
    """

    def __init__(self, compressor: nn.Module, classifiers: dict[str, ConvClassifier], *, planes: int) -> None:
        super().__init__()
        self.compressor = compressor
        self.classifiers = nn.ModuleDict(classifiers)
        self.planes = planes

    def task(self, name: str) -> JointModel:
        """The compressor and the classifier of task ``name`` as one model (sharing the weights)."""
        return JointModel(self.compressor, self.classifiers[name], planes=self.planes)


def _multitask_epoch(
    model: MultiTaskModel,
    datasets: dict[str, dict[str, SpectrogramSet]],
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    epoch: int,
    reductions: Sequence[float],
) -> dict[str, float]:
    generator = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))
    torch.manual_seed(_epoch_seed(config.seed, epoch) + 1)
    model.train()
    plan: list[tuple[str, str, Tensor]] = []
    for task in sorted(datasets):
        hops = sorted(datasets[task])
        any_set = datasets[task][hops[0]]
        train = any_set.splits["train"]
        order = train[torch.randperm(len(train), generator=generator)]
        # Every clip once per epoch, at a hop drawn for it: the estimator sees all hops equally.
        drawn = torch.randint(len(hops), (len(order),), generator=generator)
        for index, hop in enumerate(hops):
            plan += [(task, hop, chunk) for chunk in _batches(order[drawn == index], config.batch_size)]
    records = []
    for position in torch.randperm(len(plan), generator=generator).tolist():
        task, hop, indices = plan[position]
        reduction = reductions[int(torch.randint(len(reductions), (1,), generator=generator))]
        log_mel, lengths, labels = datasets[task][hop].batch(indices)
        records.append(
            _train_step(model.task(task), log_mel, lengths, labels, optimizer, config, generator, reduction=reduction)
        )
    return _mean_records(records)


def _multitask_scores(
    model: MultiTaskModel, datasets: dict[str, dict[str, SpectrogramSet]], split: str, reductions: Sequence[float]
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    scores: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for task in sorted(datasets):
        scores[task] = {}
        for hop in sorted(datasets[task]):
            data = datasets[task][hop]
            scores[task][hop] = {}
            for reduction in reductions:
                result = evaluate(model.task(task), data, data.splits[split], reduction=reduction)
                scores[task][hop][f"{reduction:g}"] = {"accuracy": result["accuracy"], "loss": result["loss"]}
    return scores


def _mean_score(scores: dict[str, Any], key: str) -> float:
    values = [leaf[key] for hops in scores.values() for rhos in hops.values() for leaf in rhos.values()]
    return sum(values) / len(values)


def train_multitask(
    datasets: dict[str, dict[str, SpectrogramSet]],
    out_dir: str | os.PathLike[str],
    config: TrainConfig,
    *,
    reductions: Sequence[float] = (0.5, 0.75),
    validation_reductions: Sequence[float] | None = None,
    bundle_name: str = "default",
    bundle_description: str = "",
    resume: bool = True,
    progress: bool = True,
    threads: int | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train one DiffRes estimator on several tasks and hops at once; export it as a bundle.

    Each epoch visits every training clip of every task once, at a hop drawn per clip and a
    reduction drawn per batch, through the shared DiffRes and that task's classifier. Early
    stopping watches the mean validation accuracy over tasks, hops and
    ``validation_reductions``. The estimator is written as a compressor bundle to
    ``out_dir/compressor`` whose card records the tasks, hops and reductions it was trained and
    validated on, and its test accuracies.

    Parameters
    ----------
    datasets : dict
        ``{task: {hop: SpectrogramSet}}``, e.g. ``{"keywords": {"5ms": ...}}``; every set of a task
        must hold the same clips and splits, each computed at its hop (``TrainConfig(hop=...)``'s
        front end otherwise).
    out_dir : str or os.PathLike
    config : TrainConfig
        ``compressor`` must be ``diffres``; ``hop`` is ignored (the hops are the datasets').
    reductions : sequence of float
        ρ values drawn per batch.
    validation_reductions : sequence of float, optional
        ρ values of the early-stopping criterion (default: the largest of ``reductions``).
    bundle_name, bundle_description : str
        Model-card name and description.
    resume, progress, threads, on_epoch_end
        As :func:`train`.

    Returns
    -------
    dict
        The content of ``out_dir/metrics.json``.
    """
    if config.compressor != "diffres":
        raise ParameterError(f"multi-task training trains a DiffRes estimator; compressor is {config.compressor!r}")
    if not datasets or any(not hops for hops in datasets.values()):
        raise ParameterError("give at least one task with at least one hop")
    if not reductions or any(not 0.0 < r < 1.0 for r in reductions):
        raise ParameterError(f"reductions must lie in (0, 1), got {list(reductions)}")
    reductions = [float(r) for r in reductions]
    watched = [float(r) for r in (validation_reductions or [max(reductions)])]
    for task, hops in datasets.items():
        reference = next(iter(hops.values()))
        for hop, data in hops.items():
            expected = dataclasses.replace(config, hop=hop).frontend_config()
            if data.frontend != expected:
                raise ParameterError(
                    f"{task} at {hop}: spectrograms were computed with {data.frontend}, not {expected}"
                )
            if data.classes != reference.classes or data.paths != reference.paths:
                raise ParameterError(f"{task}: the sets of every hop must hold the same clips")
    if threads is not None:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    description = {
        "config": config.to_dict(),
        "tasks": {
            task: {
                "classes": next(iter(hops.values())).classes,
                "data": {hop: data.key for hop, data in sorted(hops.items())},
            }
            for task, hops in sorted(datasets.items())
        },
        "reductions": reductions,
        "validation_reductions": watched,
    }
    torch.manual_seed(config.seed)
    compressor = build_compressor(config)
    classifiers = {
        task: ConvClassifier(
            n_mels=config.n_mels,
            n_classes=len(next(iter(hops.values())).classes),
            in_channels=config.num_planes,
            plane_mode="mix" if config.plane_mode == "mix" else "stack",
            widths=config.widths,
            kernel_size=config.kernel_size,
            pool_every=config.pool_every,
            dropout=config.dropout,
        )
        for task, hops in sorted(datasets.items())
    }
    model = MultiTaskModel(compressor, classifiers, planes=config.num_planes)
    groups = [{"params": list(model.classifiers.parameters()), "lr": config.lr, "peak_lr": config.lr}]
    peak = config.lr if config.compressor_lr is None else config.compressor_lr
    groups.append({"params": list(model.compressor.parameters()), "lr": peak, "peak_lr": peak})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)

    def validate() -> dict[str, Any]:
        scores = _multitask_scores(model, datasets, "validation", watched)
        return {"accuracy": _mean_score(scores, "accuracy"), "loss": _mean_score(scores, "loss"), "scores": scores}

    with _deterministic():
        state = _fit(
            model,
            optimizer,
            config=config,
            out=out,
            description=description,
            run_epoch=lambda epoch, opt: _multitask_epoch(model, datasets, opt, config, epoch, reductions),
            validate=validate,
            resume=resume,
            progress=progress,
            label=f"diffres × {len(datasets)} tasks",
            on_epoch_end=on_epoch_end,
        )
        if state is None:
            return json.loads((out / METRICS).read_text())
        test = _multitask_scores(model, datasets, "test", reductions)
        validation = _multitask_scores(model, datasets, "validation", reductions)

    from adares.compressor import export_bundle as export

    hops = sorted({hop for task_hops in datasets.values() for hop in task_hops})
    frontend = dataclasses.replace(config, hop="5ms" if "5ms" in hops else hops[0]).frontend_config()
    sets = {task: next(iter(task_hops.values())) for task, task_hops in datasets.items()}
    bundle = export(
        model.compressor,
        out / BUNDLE,
        frontend=frontend,
        reduction=reductions[0],
        name=bundle_name,
        description=bundle_description,
        training={
            "tasks": sorted(datasets),
            "hops": hops,
            "reductions": reductions,
            "clips": {task: {s: len(i) for s, i in d.splits.items()} for task, d in sorted(sets.items())},
            "data": {task: info["data"] for task, info in description["tasks"].items()},
            "config": config.to_dict(),
            "best_epoch": state["best_epoch"],
            "epochs_run": state["epoch"],
            "training_seconds": round(state["seconds"], 1),
        },
        metrics={
            "note": "accuracy of the jointly trained per-task classifiers on the held-out splits",
            "test_accuracy": {
                t: {h: {r: v["accuracy"] for r, v in rs.items()} for h, rs in hs.items()} for t, hs in test.items()
            },
            "val_accuracy": {
                t: {h: {r: v["accuracy"] for r, v in rs.items()} for h, rs in hs.items()}
                for t, hs in validation.items()
            },
        },
        validated={
            "sr": [config.sr],
            "hop_samples": sorted({to_samples(d.frontend["hop"], sr=d.frontend["sr"]) for d in _all_sets(datasets)}),
            "preset": ["librosa"],
            "reduction": sorted(reductions),
        },
    )
    metrics = {
        "description": description,
        "test": test,
        "validation": validation,
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "history": [{k: v for k, v in r.items() if k != "scores"} for r in state["history"]],
        "training_seconds": state["seconds"],
        "bundle": {"name": bundle.name, "sha256": bundle.sha256},
    }
    _save_weights(out / WEIGHTS, model.state_dict(), {"description": json.dumps(description)})
    _write_json(out / CONFIG, description)
    _write_json(out / METRICS, metrics)
    return metrics


def _all_sets(datasets: dict[str, dict[str, SpectrogramSet]]) -> list[SpectrogramSet]:
    return [data for hops in datasets.values() for data in hops.values()]
