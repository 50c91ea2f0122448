"""The training loop: one optimiser step, one epoch, the epoch loop with early stopping, evaluation.

One trainer for every configuration, so comparisons are fair: the fine log-mel of a labelled
folder goes through SpecAugment, then the compressor (``none``, ``avgpool``, ``maxpool``,
``changehop``, ``flux`` or ``diffres``) at reduction ρ, then :class:`~adares.models.ConvClassifier`.
Cross-entropy (with optional mixup) plus, for DiffRes, its guide loss; early stopping on
validation accuracy; test accuracy of the best epoch.

Reproducible and resumable: every random draw of epoch ``e`` comes from a generator seeded by
``(seed, e)``, and a checkpoint (weights, optimiser, early-stopping state, history) is written
atomically after each epoch, so a killed run continues where it stopped and ends with the
numbers an uninterrupted run gives. :func:`fit` is the epoch loop shared with multi-task
training (:mod:`adares.train.multitask`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from adares.compressor import export_bundle as export_compressor
from adares.errors import ParameterError
from adares.models import mixup, spec_augment
from adares.train.config import TrainConfig
from adares.train.data import SpectrogramSet, load_spectrograms
from adares.train.macs import classifier_macs, compressor_macs
from adares.train.model import JointModel, build_model
from adares.train.output import (
    BUNDLE,
    CHECKPOINT,
    CONFIG,
    METRICS,
    WEIGHTS,
    load_checkpoint,
    save_checkpoint,
    save_weights,
    write_json,
)

__all__ = [
    "batches",
    "build_optimizer",
    "deterministic",
    "epoch_seed",
    "evaluate",
    "fit",
    "mean_records",
    "train",
    "train_step",
]


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


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of every random draw of ``epoch`` (0-based) in a run seeded by ``seed``.

    Independent streams per ``(seed, epoch)``: a resumed run redraws exactly what it would have.
    """
    return int.from_bytes(hashlib.sha256(f"adares-train:{seed}:{epoch}".encode()).digest()[:6], "little")


def _learning_rate(peak: float, epoch: int, epochs: int) -> float:
    return peak * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def build_optimizer(
    config: TrainConfig, *, classifier: nn.Module, compressor: nn.Module | None
) -> torch.optim.Optimizer:
    """AdamW over the classifier's parameters and the compressor's trainable ones, each at its peak rate.

    The one place that sets the parameter groups, for single-task (``classifier`` a
    :class:`~adares.models.ConvClassifier`) and multi-task training (``classifier`` the module
    holding every task's classifier). Each group carries ``peak_lr`` (``config.lr`` for the
    classifier, ``config.compressor_lr`` or else ``config.lr`` for the compressor), from which
    :func:`fit` sets the cosine schedule.
    """
    groups = [{"params": list(classifier.parameters()), "lr": config.lr, "peak_lr": config.lr}]
    params = [] if compressor is None else [p for p in compressor.parameters() if p.requires_grad]
    if params:
        peak = config.lr if config.compressor_lr is None else config.compressor_lr
        groups.append({"params": params, "lr": peak, "peak_lr": peak})
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


def train_step(
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


def mean_records(records: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each key over the per-batch records of :func:`train_step` (empty: ``{}``)."""
    if not records:
        return {}
    return {key: sum(r[key] for r in records) / len(records) for key in records[0]}


def batches(indices: Tensor, batch_size: int) -> list[Tensor]:
    """``indices`` cut into batches of ``batch_size``, without a last batch of one item."""
    chunks = [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]
    # A lone last item would make batch-norm statistics degenerate.
    return [chunk for chunk in chunks if len(chunk) >= 2] or chunks


def _train_epoch(
    model: JointModel, data: SpectrogramSet, optimizer: torch.optim.Optimizer, config: TrainConfig, epoch: int
) -> dict[str, float]:
    generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
    torch.manual_seed(epoch_seed(config.seed, epoch) + 1)  # dropout draws from the global stream
    model.train()
    train = data.splits["train"]
    order = train[torch.randperm(len(train), generator=generator)]
    records = []
    for indices in batches(order, config.batch_size):
        log_mel, lengths, labels = data.batch(indices)
        records.append(train_step(model, log_mel, lengths, labels, optimizer, config, generator))
    return mean_records(records)


def _state_to_cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def _run_description(config: TrainConfig, data: SpectrogramSet) -> dict[str, Any]:
    return {"config": config.to_dict(), "data_key": data.key, "classes": list(data.classes)}


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Use torch's deterministic algorithms inside the block (a warning where one has none)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def fit(
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
        saved = load_checkpoint(checkpoint_path)
        if json.loads(saved["description"]) != json.loads(json.dumps(description)):
            raise ParameterError(
                f"{checkpoint_path} was written by a run with other settings or data; "
                "use another output folder, or pass resume=False (--restart) to start over"
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
            save_checkpoint(
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
    if data.n_mels != config.n_mels:
        raise ParameterError(f"spectrograms have {data.n_mels} mel bins, the configuration has n_mels={config.n_mels}")
    description = _run_description(config, data)
    out.mkdir(parents=True, exist_ok=True)

    model = build_model(config, n_classes=len(data.classes))
    with deterministic():
        state = fit(
            model,
            build_optimizer(config, classifier=model.classifier, compressor=model.compressor),
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
    """Evaluate the best weights; write the weights, ``config.json``, ``metrics.json`` and the bundle."""
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
    save_weights(
        out / WEIGHTS,
        model.state_dict(),
        {"config": json.dumps(config.to_dict()), "classes": json.dumps(list(data.classes))},
    )
    write_json(
        out / CONFIG,
        {**description, "classifier": model.classifier.config(), "frontend": data.frontend},
    )
    if export_bundle and config.compressor == "diffres":
        export_compressor(
            model.compressor,
            out / BUNDLE,
            frontend=data.frontend,
            reduction=config.reduction,
            training={"config": config.to_dict(), "data_key": data.key, "classes": list(data.classes)},
            metrics={"accuracy": test["accuracy"], "val_accuracy": validation["accuracy"]},
        )
    write_json(out / METRICS, metrics)
    state["finished"] = True
    return metrics
