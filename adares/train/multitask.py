"""Multi-task training: one shared DiffRes estimator, one classifier per task, mixed hops and reductions.

The estimator a compressor bundle ships should not be tuned to one dataset, hop or reduction:
:func:`train_multitask` trains it through every task's classifier at once, drawing a hop per
clip and a reduction per batch, with the same step, epoch loop and checkpoints as single-task
training (:mod:`adares.train.loop`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adares.compressor import export_bundle as export_compressor
from adares.errors import ParameterError
from adares.models import ConvClassifier
from adares.train.config import TrainConfig, check_reductions
from adares.train.data import SpectrogramSet
from adares.train.loop import (
    batches,
    build_optimizer,
    deterministic,
    epoch_seed,
    evaluate,
    fit,
    mean_records,
    train_step,
)
from adares.train.model import JointModel, build_classifier, build_compressor
from adares.train.output import BUNDLE, CONFIG, METRICS, WEIGHTS, save_weights, write_json
from adares.units import to_samples

__all__ = ["MultiTaskModel", "train_multitask"]


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
    generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
    torch.manual_seed(epoch_seed(config.seed, epoch) + 1)
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
            plan += [(task, hop, chunk) for chunk in batches(order[drawn == index], config.batch_size)]
    records = []
    for position in torch.randperm(len(plan), generator=generator).tolist():
        task, hop, indices = plan[position]
        reduction = reductions[int(torch.randint(len(reductions), (1,), generator=generator))]
        log_mel, lengths, labels = datasets[task][hop].batch(indices)
        records.append(
            train_step(model.task(task), log_mel, lengths, labels, optimizer, config, generator, reduction=reduction)
        )
    return mean_records(records)


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
    reductions = check_reductions(reductions, name="reductions")
    watched = check_reductions(validation_reductions or [max(reductions)], name="validation_reductions")
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
        task: build_classifier(config, n_classes=len(next(iter(hops.values())).classes))
        for task, hops in sorted(datasets.items())
    }
    model = MultiTaskModel(compressor, classifiers, planes=config.num_planes)
    optimizer = build_optimizer(config, classifier=model.classifiers, compressor=model.compressor)

    def validate() -> dict[str, Any]:
        scores = _multitask_scores(model, datasets, "validation", watched)
        return {"accuracy": _mean_score(scores, "accuracy"), "loss": _mean_score(scores, "loss"), "scores": scores}

    with deterministic():
        state = fit(
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

    hops = sorted({hop for task_hops in datasets.values() for hop in task_hops})
    frontend = dataclasses.replace(config, hop="5ms" if "5ms" in hops else hops[0]).frontend_config()
    sets = {task: next(iter(task_hops.values())) for task, task_hops in datasets.items()}
    bundle = export_compressor(
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
            # No wall time here (it is in metrics.json): the same run rebuilds the same card, byte for byte.
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
    save_weights(out / WEIGHTS, model.state_dict(), {"description": json.dumps(description)})
    write_json(out / CONFIG, description)
    write_json(out / METRICS, metrics)
    return metrics


def _all_sets(datasets: dict[str, dict[str, SpectrogramSet]]) -> list[SpectrogramSet]:
    return [data for hops in datasets.values() for data in hops.values()]
