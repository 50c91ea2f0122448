"""The screen: does a compressor's output classify as well as the fine log-mel, uniform pooling and flux?

It measures what a user gets: features written by the extractor (``adares.pipeline.extract`` with
``ExtractConfig(frontend={"hop": "5ms"}, model=X, reduction=R)``, what ``adares extract --hop 5ms
--model X --reduction R`` writes), then one fixed compact classifier (``adares.models.ConvClassifier``,
the same settings for every configuration) trained on them from scratch.

Every clip of a task is tested once per seed: group k-fold cross-validation over all clips (the
dataset's own train/validation/test split is ignored), with groups that never straddle a fold
(the ``group`` column of ``labels.csv``: voice variant, instrument, drum recording), dealt so each
fold holds a similar share of every label. Every configuration runs on the same (seed, fold)
pairs with the same initialisation and batch order, so differences are paired; a difference's
standard error is taken over all (seed, fold) runs, and over tasks for the average.

Baselines, computed once and cached: ``none`` (fine 5 ms), ``uniform`` (uniform pooling of the
fine features with adares' own merge: ``adares.diffres.uniform_scores`` and
``adares.functional.merge.merge_average``, the extractor's merge with equal scores) and ``flux``
at the same reduction. A configuration is a model name (``default``, ``flux``) or a bundle path
(``MODEL@K``: merged with ``min_span_exponent`` K, e.g. ``flux@0.5``), or ``joint``: ``adares
train --compressor diffres``'s DiffRes (the paper's setting), trained in every run with the
classifier on the fine features, the classifier reading its averaged plane (``joint-diffres-R``;
at 0.75 unless ``--reductions`` says otherwise, reported as ``screen-joint``).

    python benchmarks/screen.py                            # default at 0.5 and 0.75, seeds 0-7, 4 folds
    python benchmarks/screen.py --configs runs/x/compressor --name x   # a candidate bundle
    python benchmarks/screen.py --seeds 8,9,10,11 --name seeds8-11     # another seed set
    python benchmarks/screen.py --configs joint                        # DiffRes trained jointly, at 0.75
    python benchmarks/screen.py --configs flux@0.5 --name flux-k05     # flux, merged frames >= (T/T')**0.5

Everything is cached under ``benchmarks/cache/screen`` (git-ignored) and keyed by what determines
it: extracted features by the extractor's configuration hash (front end, model weights' sha256,
reduction), stacked feature tensors by that and the dataset's files, each run's result by the
features, the classifier settings, the folds, the seed and the fold (a joint run also by its
compressor's settings and a fingerprint of what adares' DiffRes computes). Rerunning, or adding a
configuration or seeds, computes only what is new; a killed run resumes.

Results: ``benchmarks/results/screen[-NAME].json`` and the section ``screen[-NAME]`` of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data" / "generated"
CACHE = ROOT / "benchmarks" / "cache" / "screen"
RESULTS = ROOT / "benchmarks" / "results"
TASKS = ("keywords", "pitch", "drums")
BASELINES = ("none", "uniform", "flux")
FRONTEND = {"hop": "5ms"}


@dataclasses.dataclass(frozen=True)
class Classifier:
    """The fixed classifier and its training: the same for every configuration.

    Small on purpose (a 1-D CNN over time with the mel bins as channels, about 2.7 M MACs on a
    one-second clip at 5 ms): the screen trains it hundreds of times.
    """

    widths: tuple[int, ...] = (24, 32, 64, 64)
    kernel_size: int = 3
    pool_every: int = 1
    dropout: float = 0.1
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4

    def key(self) -> str:
        return _digest(dataclasses.asdict(self))[:10]


# --------------------------------------------------------------------------------------------
# statistics: small pure functions (tested in test_screen.py)


def group_folds(labels: Sequence[str], groups: Sequence[str], *, folds: int, seed: int) -> list[int]:
    """Deal whole groups to ``folds`` folds so each fold holds a similar share of every label.

    Groups are visited largest first (ties in an order shuffled by ``seed``); each goes to the
    fold where adding it keeps the per-label counts most even (least sum over labels of squared
    count relative to the label's total), the smaller fold on a tie.

    Returns
    -------
    list of int
        The fold (0 .. folds-1) of every clip.
    """
    import random

    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if len(labels) != len(groups):
        raise ValueError(f"{len(labels)} labels but {len(groups)} groups")
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    if len(members) < folds:
        raise ValueError(f"{len(members)} groups cannot fill {folds} folds")
    totals: dict[str, int] = {}
    for label in labels:
        totals[label] = totals.get(label, 0) + 1
    order = sorted(members)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -len(members[g]))  # stable: the shuffle breaks ties
    counts = [dict.fromkeys(totals, 0) for _ in range(folds)]
    sizes = [0] * folds
    fold_of = [0] * len(labels)
    for group in order:
        histogram: dict[str, int] = {}
        for index in members[group]:
            histogram[labels[index]] = histogram.get(labels[index], 0) + 1

        def cost(fold: int, histogram: dict[str, int] = histogram) -> tuple[float, int]:
            spread = sum((counts[fold][label] + n) ** 2 / totals[label] for label, n in histogram.items())
            return spread, sizes[fold]

        best = min(range(folds), key=cost)
        for label, n in histogram.items():
            counts[best][label] += n
        sizes[best] += len(members[group])
        for index in members[group]:
            fold_of[index] = best
    return fold_of


def mean_and_sem(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n); 0 for one value)."""
    if not values:
        raise ValueError("no values")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


RunKey = tuple[int, int]
"""(seed, fold)."""


def paired_differences(a: Mapping[RunKey, float], b: Mapping[RunKey, float]) -> dict[RunKey, float]:
    """``a - b`` on every (seed, fold) run both have; refuses runs that only one side has."""
    if set(a) != set(b):
        missing = sorted(set(a) ^ set(b))
        raise ValueError(f"unpaired runs: {missing[:5]}")
    return {key: a[key] - b[key] for key in sorted(a)}


def average_over_tasks(per_task: Mapping[str, Mapping[RunKey, float]]) -> dict[RunKey, float]:
    """Per (seed, fold), the mean over tasks: the runs of the task average (keys must agree)."""
    tasks = list(per_task)
    if not tasks:
        raise ValueError("no tasks")
    keys = set(per_task[tasks[0]])
    if any(set(per_task[t]) != keys for t in tasks):
        raise ValueError("tasks ran different (seed, fold) runs")
    return {key: sum(per_task[t][key] for t in tasks) / len(tasks) for key in sorted(keys)}


def summarize(values: Mapping[RunKey, float]) -> dict[str, float]:
    """``{"mean", "sem", "runs"}`` over the runs, in the values' unit."""
    mean, sem = mean_and_sem(list(values.values()))
    return {"mean": mean, "sem": sem, "runs": len(values)}


def seed_set_agreement(values: Mapping[RunKey, float], first: Iterable[int], second: Iterable[int]) -> dict[str, Any]:
    """Whether two disjoint seed sets give the same mean within two standard errors of their difference.

    Returns
    -------
    dict
        ``first`` and ``second`` (summaries over each set's runs), ``gap`` (first - second),
        ``gap_sem`` (sqrt of the sum of the two squared standard errors) and ``agree``
        (``|gap| <= 2 gap_sem``).
    """
    first, second = set(first), set(second)
    if first & second:
        raise ValueError(f"seed sets overlap: {sorted(first & second)}")
    parts = []
    for seeds in (first, second):
        part = {k: v for k, v in values.items() if k[0] in seeds}
        if not part:
            raise ValueError(f"no runs for seeds {sorted(seeds)}")
        parts.append(summarize(part))
    gap = parts[0]["mean"] - parts[1]["mean"]
    gap_sem = math.hypot(parts[0]["sem"], parts[1]["sem"])
    return {"first": parts[0], "second": parts[1], "gap": gap, "gap_sem": gap_sem, "agree": abs(gap) <= 2 * gap_sem}


def noise_figures(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The screen's own noise, from a :func:`report` summary.

    Returns
    -------
    dict
        ``mean_sem_max`` (largest standard error of a task-averaged paired difference),
        ``task_sem_max`` (largest of a single task's), and ``agree`` / ``compared`` (seed-set
        comparisons that agree, out of those made).
    """
    mean_sems, task_sems, verdicts = [], [], []
    for entry in summary.values():
        mean_sems += [stats["sem"] for stats in entry["mean"]["vs"].values()]
        task_sems += [stats["sem"] for cell in entry["tasks"].values() for stats in cell["vs"].values()]
        verdicts += [agreement["agree"] for agreement in entry["mean"]["seed_sets"].values()]
    return {
        "mean_sem_max": max(mean_sems, default=0.0),
        "task_sem_max": max(task_sems, default=0.0),
        "agree": sum(verdicts),
        "compared": len(verdicts),
    }


def halves(seeds: Sequence[int]) -> tuple[list[int], list[int]]:
    """Two disjoint seed sets: the first and second half of the sorted seeds."""
    ordered = sorted(set(seeds))
    if len(ordered) < 2:
        raise ValueError("need at least two seeds")
    middle = len(ordered) // 2
    return ordered[:middle], ordered[middle:]


# --------------------------------------------------------------------------------------------
# data and features


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def read_task(task: str) -> list[dict[str, str]]:
    """Rows of a task's ``labels.csv`` (path, label, group), in file order."""
    table = DATA / task / "labels.csv"
    if not table.is_file():
        raise SystemExit(f"{table} missing: run `make data` first")
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "group" not in rows[0]:
        raise SystemExit(f"{table} has no group column: regenerate with `make data`")
    return rows


def _data_key(task: str, rows: Sequence[Mapping[str, str]]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        stat = (DATA / task / row["path"]).stat()
        digest.update(f"{row['path']}\0{row['label']}\0{row['group']}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def model_and_exponent(config: str) -> tuple[str, float | None]:
    """``MODEL@K`` is MODEL merged with ``min_span_exponent`` K; a plain MODEL merges as its card says."""
    model, at, exponent = config.rpartition("@")
    if not at:
        return config, None
    try:
        return model, float(exponent)
    except ValueError:
        raise SystemExit(f"{config!r}: the part after @ must be a min_span_exponent (a number in [0, 1])") from None


def _extract_config(config: str, reduction: float | None):
    from adares.pipeline import ExtractConfig

    model, exponent = model_and_exponent(config)
    return ExtractConfig(
        frontend=dict(FRONTEND),
        model=model,
        reduction=0.5 if reduction is None else reduction,
        min_span_exponent=exponent,
    )


def extracted(task: str, model: str, reduction: float | None, *, jobs: int) -> tuple[Path, str]:
    """Run the extractor over a task (resumes; skips finished files). Returns its folder and config hash."""
    from adares.pipeline import extract

    config = _extract_config(model, reduction)
    config_hash = config.config_hash(config.build_extractor())
    out = CACHE / "extract" / task / config_hash
    summary = extract(DATA / task, out, config=config, jobs=jobs)
    if summary.exit_code:
        raise SystemExit(f"extraction of {task} with {model} failed for some files: see {out}/failures.jsonl")
    return out, config_hash


def _stack(mels: Sequence[Any]) -> tuple[Any, Any]:
    import torch

    lengths = torch.tensor([len(m) for m in mels])
    padded = torch.zeros(len(mels), int(lengths.max()), mels[0].shape[-1], dtype=torch.float16)
    for item, mel in enumerate(mels):
        padded[item, : len(mel)] = torch.as_tensor(mel)
        padded[item, len(mel) :] = float(mel.min())
    return padded, lengths


def feature_set(task: str, model: str, reduction: float | None, rows, *, jobs: int) -> tuple[Path, str]:
    """The stacked features of a task for one configuration (cached); returns its file and key.

    ``model`` is ``none``, ``uniform`` (computed from the fine features) or anything the extractor
    takes. Stored as float16 [N, T, F] with lengths; ``key`` names the features for the run cache.
    """
    import torch

    from adares.features import load_features
    from adares.store import read_jsonl

    data_key = _data_key(task, rows)
    if model == "uniform":
        fine_path, fine_key = feature_set(task, "none", None, rows, jobs=jobs)
        key = _digest(["uniform", reduction, fine_key])[:16]
        path = CACHE / "features" / task / f"uniform-{reduction:g}-{key}.pt"
        if not path.is_file():
            fine = torch.load(fine_path)
            mel, lengths = uniform_pool(fine["mel"], fine["lengths"], reduction=reduction)
            _save({"mel": mel, "lengths": lengths}, path)
        return path, key
    folder, config_hash = extracted(task, model, reduction, jobs=jobs)
    key = _digest([config_hash, data_key])[:16]
    name = "none" if model == "none" else f"{Path(model).name}-{reduction:g}"
    path = CACHE / "features" / task / f"{name}-{key}.pt"
    if not path.is_file():
        outputs = {
            r["source"]: r["output"] for r in read_jsonl(folder / "manifest.jsonl") if r["status"] in ("ok", "skipped")
        }
        missing = [row["path"] for row in rows if row["path"] not in outputs]
        if missing:
            raise SystemExit(f"{folder}: no features for {len(missing)} clips (first: {missing[0]})")
        mel, lengths = _stack([load_features(folder / outputs[row["path"]]).mel for row in rows])
        _save({"mel": mel, "lengths": lengths}, path)
    return path, key


def uniform_pool(mel: Any, lengths: Any, *, reduction: float) -> tuple[Any, Any]:
    """Uniform pooling of fine log-mels, as the extractor would write it with equal scores.

    The log is undone (``exp(x) - eps``, the front end's ``ln(P + eps)``), the power merged by
    ``merge_average`` with ``uniform_scores`` to ``output_lengths`` frames, and logged again.
    """
    import torch

    from adares.diffres import uniform_scores
    from adares.frontend import MelFrontend
    from adares.functional.merge import merge_average, output_lengths

    frontend = MelFrontend(**FRONTEND)
    out_frames = output_lengths(lengths, reduction=reduction)
    rows = []
    for start in range(0, len(lengths), 256):
        x = mel[start : start + 256].float()
        length = lengths[start : start + 256]
        power = (x.exp() - frontend.eps).clamp_min(0.0)
        scores = uniform_scores(length, out_frames[start : start + 256], x.shape[1])
        merged = merge_average(power, scores, out_frames[start : start + 256], length)
        rows.append(frontend.log_mel(merged))
    width = max(r.shape[1] for r in rows)
    padded = torch.zeros(len(lengths), width, mel.shape[-1], dtype=torch.float16)
    start = 0
    for r in rows:
        padded[start : start + len(r), : r.shape[1]] = r.to(torch.float16)
        start += len(r)
    return padded, out_frames


def _save(obj: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(obj, temporary)
    temporary.replace(path)


# --------------------------------------------------------------------------------------------
# the joint mode: `adares train --compressor diffres`'s compressor trained with the screen's classifier

JOINT = "joint"
# The settings of a joint run's TrainConfig that the screen uses (the rest are `adares train`'s
# own loop: epochs, SpecAugment, its classifier), and so what a joint run's cache key holds.
_JOINT_FIELDS = ("compressor", "reduction", "n_mels", "estimator", "guide_weight", "compressor_lr")


def joint_config(reduction: float, *, n_mels: int) -> dict[str, Any]:
    """The compressor of a joint run: ``adares train --compressor diffres --reduction R``'s DiffRes.

    The default estimator (``DEFAULT_ESTIMATOR_CHANNELS``) with its input standardised, the guide
    loss at ``adares train``'s weight and the estimator at the classifier's learning rate
    (``compressor_lr`` None), as the shipped default was trained.

    Returns
    -------
    dict
        The :class:`adares.train.TrainConfig` settings in ``_JOINT_FIELDS`` (JSON, for the job and its key).
    """
    from adares.train import DEFAULT_ESTIMATOR_CHANNELS, TrainConfig

    config = TrainConfig(
        compressor="diffres",
        reduction=reduction,
        n_mels=n_mels,
        estimator={"channels": list(DEFAULT_ESTIMATOR_CHANNELS), "standardize": True},
    )
    return {name: value for name, value in config.to_dict().items() if name in _JOINT_FIELDS}


def _joint_train_config(settings: Mapping[str, Any]) -> Any:
    from adares.train import TrainConfig

    return TrainConfig(**settings)


def joint_compressor(config: Any, *, seed: int) -> Any:
    """A fresh compressor of ``config`` (``adares.train.build_compressor``), initialised from ``seed``.

    Drawn from its own generator state, so the global stream the classifier's dropout draws from
    continues as in a run without a compressor.
    """
    import torch

    from adares.train import build_compressor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(_digest(["compressor", seed])[:8], 16))
        return build_compressor(config)


def compressor_fingerprint(settings: Mapping[str, Any]) -> str:
    """What the library makes of ``settings``: 16 hex digits of a fresh compressor's behaviour.

    A joint run's result depends on adares' DiffRes code, not only on its settings. Hashed: the
    initial weights, and the output, guide loss and gradients on a fixed input, in summary sums
    to 6 significant digits, so edits that change no number (comments, refactors) keep the cache.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = joint_compressor(_joint_train_config(settings), seed=0)
            n_mels = int(settings["n_mels"])
            log_mel = torch.randn(3, 96, n_mels) * 3.0 - 8.0
            log_mel[1, 60:] = log_mel[1].min()  # blank frames, for the guide loss
            lengths = torch.tensor([96, 80, 41])
            module.train()
            out = module(log_mel, lengths)
            (out.avg.square().mean() + out.guide_loss).backward()
            tensors = [*module.state_dict().values(), out.feature, out.scores, out.guide_loss]
            tensors += [p.grad for p in module.parameters() if p.grad is not None]
            sums = [
                (f"{float(t.detach().double().sum()):.6g}", f"{float(t.detach().double().abs().sum()):.6g}")
                for t in tensors
                if t.is_floating_point()
            ]
    finally:
        torch.set_num_threads(threads)
    return _digest([list(out.lengths.tolist()), sums])[:16]


def run_jobs(
    *,
    task: str,
    name: str,
    features: tuple[Path, str],
    labels: Sequence[int],
    n_classes: int,
    fold_of: Mapping[int, Sequence[int]],
    folds: int,
    classifier: Classifier,
    joint: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The (seed, fold) runs of one configuration of a task, each with its cache file.

    Every configuration gets the same (seed, fold) pairs (the seeds of ``fold_of``), so its runs
    pair with the baselines'. ``features`` is the stacked features' file and key; a joint
    configuration (``joint``: :func:`joint_config`) reads the fine ones, and its runs are keyed by
    them, its settings and :func:`compressor_fingerprint` as well.
    """
    path, key = features
    run_key = key
    if joint is not None:
        run_key = "joint-" + _digest([key, dict(joint), compressor_fingerprint(joint)])[:16]
    jobs = []
    for seed, fold_list in fold_of.items():
        folds_key = _digest([folds, seed])[:8]
        for fold in range(folds):
            out = CACHE / "runs" / task / run_key / classifier.key() / f"folds{folds_key}-s{seed}-f{fold}.json"
            jobs.append(
                {
                    "task": task,
                    "name": name,
                    "features": str(path),
                    "features_key": run_key,
                    "labels": list(labels),
                    "n_classes": n_classes,
                    "folds": list(fold_list),
                    "seed": seed,
                    "fold": fold,
                    "classifier": dataclasses.asdict(classifier),
                    "out": str(out),
                    **({"joint": dict(joint)} if joint is not None else {}),
                }
            )
    return jobs


# --------------------------------------------------------------------------------------------
# one run: train the fixed classifier on k-1 folds, test on one


_LOADED: dict[str, Any] = {}


def _load(path: str) -> Any:
    import torch

    if path not in _LOADED:
        if len(_LOADED) >= 2:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[path] = torch.load(path)
    return _LOADED[path]


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train and test one (task, features, seed, fold); the result is cached in ``job["out"]``."""
    out = Path(job["out"])
    if out.is_file():
        return json.loads(out.read_text())
    result, _, _ = train_and_test(job)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(result) + "\n")
    temporary.replace(out)
    return result


def train_and_test(job: dict[str, Any]) -> tuple[dict[str, Any], Any, Any]:
    """Train the classifier of ``job`` on k-1 folds and test it on one; nothing is cached.

    A joint job (``job["joint"]``: the settings of :func:`joint_config`) also trains a fresh DiffRes
    on the fine features with the classifier, which reads its averaged plane; its guide loss is
    added to the task loss.

    Returns
    -------
    result : dict
        What :func:`run_one` caches.
    classifier : ConvClassifier
    compressor : DiffRes or None
        Trained (joint jobs), in eval mode.
    """
    import torch

    from adares.models import ConvClassifier

    torch.set_num_threads(1)
    began = time.perf_counter()
    spec = Classifier(**job["classifier"])
    data = _load(job["features"])
    mel, lengths = data["mel"], data["lengths"]
    labels = torch.tensor(job["labels"])
    folds = torch.tensor(job["folds"])
    train_idx = torch.nonzero(folds != job["fold"]).flatten()
    test_idx = torch.nonzero(folds == job["fold"]).flatten()
    # Standardised per mel bin with the training clips' statistics (valid frames only). A joint
    # run's classifier reads the compressor's output with the statistics of its fine input: a
    # fixed map, where statistics of the output would move as the compressor learns.
    sample = mel[train_idx].float()
    valid = (torch.arange(mel.shape[1])[None, :] < lengths[train_idx][:, None]).float()[..., None]
    count = valid.sum()
    mean = (sample * valid).sum((0, 1)) / count
    std = (((sample - mean) ** 2 * valid).sum((0, 1)) / count).sqrt().clamp_min(1e-3)
    del sample, valid

    run_seed = _seed(job["task"], job["seed"], job["fold"])
    generator = torch.Generator().manual_seed(run_seed)
    torch.manual_seed(run_seed)
    model = ConvClassifier(
        n_mels=mel.shape[-1],
        n_classes=job["n_classes"],
        widths=spec.widths,
        kernel_size=spec.kernel_size,
        pool_every=spec.pool_every,
        dropout=spec.dropout,
    )
    groups = [{"params": list(model.parameters()), "lr": spec.learning_rate}]
    compressor = guide_weight = None
    if job.get("joint"):
        config = _joint_train_config(job["joint"])
        compressor = joint_compressor(config, seed=run_seed)
        guide_weight = config.guide_weight
        peak = spec.learning_rate if config.compressor_lr is None else config.compressor_lr
        groups.append({"params": [p for p in compressor.parameters() if p.requires_grad], "lr": peak})
    optimizer = torch.optim.AdamW(groups, lr=spec.learning_rate, weight_decay=spec.weight_decay)
    steps = spec.epochs * math.ceil(len(train_idx) / spec.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[group["lr"] for group in groups], total_steps=steps
    )

    def batch(index: Any) -> tuple[Any, Any]:
        frames = int(lengths[index].max())
        return mel[index, :frames].float(), lengths[index]

    def forward(x: Any, length: Any) -> tuple[Any, Any]:
        """Logits, and the compressor's output (None without one)."""
        if compressor is None:
            return model((x - mean) / std, length), None
        out = compressor(x, length)
        return model((out.avg - mean) / std, out.lengths), out

    model.train()
    if compressor is not None:
        compressor.train()
    guides: list[float] = []
    activeness: list[float] = []
    for _epoch in range(spec.epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        activeness.clear()  # the last epoch's
        for start in range(0, len(order), spec.batch_size):
            index = order[start : start + spec.batch_size]
            if len(index) < 2:
                continue  # batch norm needs two items
            x, length = batch(index)
            logits, out = forward(x, length)
            loss = torch.nn.functional.cross_entropy(logits, labels[index])
            if out is not None:
                # As `adares train` adds it (train_step): weighted, after the task loss.
                loss = loss + guide_weight * out.guide_loss
                guides.append(float(out.guide_loss.detach()))
                activeness.append(float(out.activeness))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    if compressor is not None:
        compressor.eval()
    correct = output_frames = 0
    with torch.no_grad():
        for start in range(0, len(test_idx), 256):
            index = test_idx[start : start + 256]
            x, length = batch(index)
            logits, out = forward(x, length)
            correct += int((logits.argmax(1) == labels[index]).sum())
            output_frames += int(length.sum() if out is None else out.lengths.sum())
    result = {
        "task": job["task"],
        "features": job["features_key"],
        "seed": job["seed"],
        "fold": job["fold"],
        "accuracy": correct / len(test_idx),
        "test_clips": len(test_idx),
        "seconds": time.perf_counter() - began,
    }
    if compressor is not None:
        result["joint"] = {
            "guide_loss": sum(guides) / max(1, len(guides)),
            "guide_active": sum(g > 0 for g in guides) / max(1, len(guides)),
            "activeness_last_epoch": sum(activeness) / max(1, len(activeness)),
            "mean_output_frames": output_frames / len(test_idx),
        }
    return result, model, compressor


def _seed(task: str, seed: int, fold: int) -> int:
    return int(_digest([task, seed, fold])[:8], 16)


# --------------------------------------------------------------------------------------------
# the report


def _name(model: str, reduction: float | None) -> str:
    if model == "none":
        return "none"
    if model == JOINT:
        return f"joint-diffres-{reduction:g}"
    return f"{Path(model).name if os.sep in model else model}-{reduction:g}"


@functools.cache
def _importance(model: str) -> Any:
    """The importance ``model`` names, loaded once for :func:`trained_weights` and :func:`merge_exponents`."""
    from adares.registry import resolve_importance

    return resolve_importance(model)


def trained_weights(candidates: Sequence[str]) -> dict[str, str]:
    """The sha256 of each trained bundle among ``candidates`` (a model card names what it was screened as)."""
    weights = {}
    for config in candidates:
        model = model_and_exponent(config)[0]
        if model not in ("none", "flux", JOINT):
            digest = _importance(model).sha256
            if digest is not None:
                weights[config] = digest
    return weights


def merge_exponents(candidates: Sequence[str]) -> dict[str, float]:
    """The ``min_span_exponent`` each merging candidate extracted with (``@K``, else its card's, else 0).

    With :func:`trained_weights` it names what was screened: one bundle's weights can merge
    with different caps.
    """
    exponents = {}
    for config in candidates:
        model, exponent = model_and_exponent(config)
        if model not in ("none", JOINT):
            exponents[config] = _importance(model).min_span_exponent if exponent is None else exponent
    return exponents


def report(runs: Mapping[str, Mapping[str, dict[RunKey, float]]], candidates: Sequence[str], reductions, seeds):
    """Summaries: per task and averaged, accuracy and paired differences against the baselines.

    ``runs[task][configuration name][(seed, fold)]`` is an accuracy in percent.
    """
    tasks = list(runs)
    sets = halves(seeds) if len(set(seeds)) >= 2 else None
    summary: dict[str, Any] = {}
    for reduction in reductions:
        names = [_name(c, reduction) for c in candidates]
        for name in dict.fromkeys(["none", f"uniform-{reduction:g}", f"flux-{reduction:g}", *names]):
            entry: dict[str, Any] = {"tasks": {}, "reduction": reduction if name != "none" else None}
            per_task_diffs: dict[str, dict[str, dict[RunKey, float]]] = {}
            for task in tasks:
                own = runs[task][name]
                cell: dict[str, Any] = {"accuracy": summarize(own), "vs": {}}
                bases = ("none", f"uniform-{reduction:g}", f"flux-{reduction:g}")
                # Each baseline against the ones before it only (the reverse is the same number negated).
                for base in bases[: bases.index(name)] if name in bases else bases:
                    diff = paired_differences(own, runs[task][base])
                    per_task_diffs.setdefault(base, {})[task] = diff
                    cell["vs"][base] = summarize(diff)
                entry["tasks"][task] = cell
            entry["mean"] = {
                "accuracy": summarize(average_over_tasks({t: runs[t][name] for t in tasks})),
                "vs": {},
                "seed_sets": {},
            }
            for base, diffs in per_task_diffs.items():
                averaged = average_over_tasks(diffs)
                entry["mean"]["vs"][base] = summarize(averaged)
                if sets:
                    entry["mean"]["seed_sets"][base] = seed_set_agreement(averaged, *sets)
            summary[name] = entry
    return summary


def markdown(summary: Mapping[str, Any], meta: Mapping[str, Any], *, title: str) -> str:
    tasks = meta["tasks"]
    lines = [
        f"## {title}",
        "",
        f"Generated by `{meta['command']}` (`benchmarks/screen.py`) on {meta['machine']}, {meta['date']}, "
        f"commit `{meta['commit']}`; seeds {meta['seeds']} x {meta['folds']} group folds = "
        f"{len(meta['seeds']) * meta['folds']} paired runs per task and configuration; {meta['jobs']} worker(s). "
        f"Wall time of this invocation {meta['wall_seconds'] / 60:.1f} min ({meta['trained']} runs trained, "
        f"{meta['cached']} from the cache); {meta['run_seconds'] / 60:.1f} core-min of training in all the runs "
        f"it reports. Raw numbers: `results/{meta['json']}`.",
        "",
        "Features as `adares extract --hop 5ms --model X --reduction R` writes them; the same fixed classifier "
        f"({meta['classifier_text']}) trained from scratch on each. Accuracy in %, differences in points: "
        "mean ± standard error over the (seed, fold) runs; the average over tasks pairs each run's "
        "task-mean.",
        "",
    ]
    if meta["seed_sets"]:
        lines[-2] += (
            f" Seed-set agreement: the task-averaged difference on seeds {meta['seed_sets'][0]} against "
            f"{meta['seed_sets'][1]}; they agree if their gap is within two standard errors of the gap."
        )
    if meta.get("joint"):
        lines += [_joint_text(meta["joint"]), ""]
    noise = noise_figures(summary)
    lines += [
        f"Noise: the largest standard error of a task-averaged paired difference is {noise['mean_sem_max']:.2f} pt "
        f"(of one task's: {noise['task_sem_max']:.2f} pt); {noise['agree']} of {noise['compared']} seed-set "
        "comparisons agree within two standard errors.",
        "",
        "Cost (core-minutes: each configuration's training runs summed over tasks, seeds and folds, plus "
        "extracting and stacking its features when this invocation did; on 2 otherwise idle cores the wall "
        "time is about half): "
        + "; ".join(
            f"{name} {(meta['config_seconds'][name] + meta['feature_seconds'].get(name, 0.0)) / 60:.1f}"
            for name in summary
        )
        + ".",
        "",
    ]
    header = "| configuration | " + " | ".join(tasks) + " | mean |"
    rule = "| --- |" + " --- |" * (len(tasks) + 1)
    lines += ["### Accuracy (%)", "", header, rule]
    for name, entry in summary.items():
        cells = [_pm(entry["tasks"][t]["accuracy"]) for t in tasks] + [_pm(entry["mean"]["accuracy"])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "### Paired differences (points)", "", "| configuration | against | " + " | ".join(tasks)]
    lines[-1] += " | mean | seed sets (first / second, agree) |"
    lines.append("| --- | --- |" + " --- |" * (len(tasks) + 2))
    for name, entry in summary.items():
        for base, mean in entry["mean"]["vs"].items():
            cells = [_pm(entry["tasks"][t]["vs"][base], sign=True) for t in tasks] + [_pm(mean, sign=True)]
            agreement = entry["mean"]["seed_sets"].get(base)
            seeds_text = "-"
            if agreement:
                verdict = "yes" if agreement["agree"] else "**no**"
                seeds_text = f"{_pm(agreement['first'], sign=True)} / {_pm(agreement['second'], sign=True)}, {verdict}"
            lines.append(f"| {name} | {base} | " + " | ".join(cells) + f" | {seeds_text} |")
    lines += ["", *claims_table(summary, tasks)]
    return "\n".join(lines) + "\n"


def joint_meta(runs: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], tasks: Sequence[str]) -> dict[str, Any]:
    """The joint runs' settings and, per task, their compressor's diagnostics averaged over runs."""
    per_task = {}
    for task in tasks:
        own = [r["joint"] for r in runs if r["task"] == task and "joint" in r]
        if own:
            per_task[task] = {key: sum(r[key] for r in own) / len(own) for key in own[0]}
    return {"settings": {k: v for k, v in settings.items() if k != "reduction"}, "per_task": per_task}


def _joint_text(joint: Mapping[str, Any]) -> str:
    settings = joint["settings"]
    lr = "the classifier's" if settings["compressor_lr"] is None else f"{settings['compressor_lr']:g}"
    active = ", ".join(f"{task} {100 * d['guide_active']:.0f}%" for task, d in joint["per_task"].items())
    return (
        "Joint mode (`joint-diffres-R`, `--configs joint`): no extracted features; in every run a fresh DiffRes "
        f"as `adares train --compressor diffres` builds it (estimator channels {settings['estimator']['channels']}, "
        f"input standardised: {settings['estimator'].get('standardize', False)}) is trained with the classifier "
        "on the fine 5 ms log-mels of the training folds (the `none` features), the classifier reading its "
        "averaged plane (standardised with the fine features' per-bin statistics); guide loss added at weight "
        f"{settings['guide_weight']:g}, the estimator in its own parameter group at {lr} learning rate and "
        "schedule. The test fold goes through the trained compressor in eval mode. Initialisation and batch order "
        "are the baselines', so its runs pair with theirs. Without augmentation, as every configuration here "
        "(`adares train` fills SpecAugment masks with blank frames), the guide loss has only digitally silent "
        f"frames to act on: it was nonzero in {active or '-'} of training steps."
    )


# The paper's claims and issue 15's bar, as checks on a configuration's paired differences:
# (reduction, baseline, relation, margin in points). The paper: equal or better accuracy than the
# fixed-hop features at 25-75 % fewer frames, and better than uniform pooling and flux.
CLAIMS = (
    (0.75, "none", ">=", 0.0),
    (0.75, "uniform", ">", 0.0),
    (0.75, "flux", ">=", 0.0),
    (0.5, "none", ">=", 0.0),
    (0.5, "none", ">=", -0.5),
    (0.5, "uniform", ">=", 0.0),
    (0.5, "flux", ">=", 0.0),
)


def verdict(stats: Mapping[str, float], *, relation: str, margin: float) -> str:
    """Whether ``difference (relation) margin`` holds, given the difference's mean and standard error.

    A gap within two standard errors is no difference: a ``>=`` claim then holds ("level"), a
    ``>`` claim does not ("no difference").
    """
    if relation not in (">", ">="):
        raise ValueError(f"relation must be '>' or '>=', got {relation!r}")
    gap, bound = stats["mean"] - margin, 2.0 * stats["sem"]
    if gap > bound:
        return "yes"
    if gap < -bound:
        return "**no**"
    return "level" if relation == ">=" else "no difference"


def claims_table(summary: Mapping[str, Any], tasks: Sequence[str]) -> list[str]:
    """The :data:`CLAIMS` of every non-baseline configuration, per task and on the task average."""
    lines = [
        "### The paper's claims, task by task",
        "",
        "Each configuration's paired difference against a baseline at the same reduction (points, mean ± standard "
        "error); a claim holds (yes), fails (**no**) or the gap is within two standard errors (level: holds for "
        "an at-least claim; no difference: fails a better-than claim).",
        "",
        "| configuration | claim | " + " | ".join(tasks) + " | mean |",
        "| --- | --- |" + " --- |" * (len(tasks) + 1),
    ]
    candidates = {name.rsplit("-", 1)[0] for name in summary if not name.startswith(("none", "uniform-", "flux-"))}
    for candidate in sorted(candidates):
        for reduction, base, relation, margin in CLAIMS:
            name = f"{candidate}-{reduction:g}"
            if name not in summary:
                continue
            base_name = base if base == "none" else f"{base}-{reduction:g}"
            shift = f" {margin:+g} pt" if margin else ""
            cells = []
            for stats in [summary[name]["tasks"][t]["vs"][base_name] for t in tasks] + [
                summary[name]["mean"]["vs"][base_name]
            ]:
                cells.append(f"{_pm(stats, sign=True)}: {verdict(stats, relation=relation, margin=margin)}")
            lines.append(f"| {name} | {relation} {base_name}{shift} | " + " | ".join(cells) + " |")
    return lines


def _pm(stats: Mapping[str, float], *, sign: bool = False) -> str:
    return f"{stats['mean']:+.2f} ± {stats['sem']:.2f}" if sign else f"{stats['mean']:.2f} ± {stats['sem']:.2f}"


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs",
        default="default",
        help="comma-separated models or bundle paths, or `joint` (DiffRes trained with the classifier) [default]",
    )
    parser.add_argument(
        "--reductions", default=None, help="comma-separated reductions [0.5,0.75; 0.75 with --configs joint]"
    )
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7", help="comma-separated seeds [0-7]")
    parser.add_argument("--folds", type=int, default=4, help="group folds [4]")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    parser.add_argument("--epochs", type=int, default=Classifier.epochs, help=f"[{Classifier.epochs}]")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes, one torch thread each [2]")
    parser.add_argument(
        "--name", default=None, help="suffix of the JSON and RESULTS.md section [none; joint with --configs joint]"
    )
    parser.add_argument("--no-markdown", action="store_true", help="do not touch benchmarks/RESULTS.md")
    parser.add_argument(
        "--cached-only", action="store_true", help="train nothing; report the seeds whose runs are all cached"
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    tasks = [t for t in args.tasks.split(",") if t]
    candidates = [c for c in args.configs.split(",") if c]
    # The joint mode's question is 0.75 (issue 15), and its runs cost several times an extracted
    # configuration's, so it asks for other reductions explicitly; it writes its own section.
    if args.reductions is None:
        args.reductions = "0.75" if JOINT in candidates else "0.5,0.75"
    if args.name is None:
        args.name = JOINT if JOINT in candidates else ""
    reductions = [float(r) for r in args.reductions.split(",") if r]
    from adares.frontend import MelFrontend

    n_mels = MelFrontend(**FRONTEND).n_mels
    seeds = [int(s) for s in args.seeds.split(",") if s]
    classifier = dataclasses.replace(Classifier(), epochs=args.epochs)

    jobs: list[dict[str, Any]] = []
    feature_seconds: dict[str, float] = {}
    names: dict[str, list[str]] = {t: [] for t in tasks}
    for task in tasks:
        rows = read_task(task)
        label_names = sorted({row["label"] for row in rows})
        labels = [label_names.index(row["label"]) for row in rows]
        fold_of = {
            seed: group_folds([r["label"] for r in rows], [r["group"] for r in rows], folds=args.folds, seed=seed)
            for seed in seeds
        }
        sets: list[tuple[str, str, float | None]] = [("none", "none", None)]
        for reduction in reductions:
            for model in dict.fromkeys(["uniform", "flux", *candidates]):
                sets.append((_name(model, reduction), model, reduction))
        fine: tuple[Path, str] | None = None
        for name, model, reduction in sets:
            t0 = time.perf_counter()
            joint = None
            if model == JOINT:
                # Trained in each run on the fine features (the first set, always there).
                joint = joint_config(reduction, n_mels=n_mels)
                features = fine
            else:
                features = feature_set(task, model, reduction, rows, jobs=args.jobs)
                fine = fine or features
                feature_seconds[name] = feature_seconds.get(name, 0.0) + time.perf_counter() - t0
                print(f"{task:9s} {name:24s} features ready ({time.perf_counter() - t0:.0f} s)", flush=True)
            names[task].append(name)
            jobs += run_jobs(
                task=task,
                name=name,
                features=features,
                labels=labels,
                n_classes=len(label_names),
                fold_of=fold_of,
                folds=args.folds,
                classifier=classifier,
                joint=joint,
            )
    cached = [j for j in jobs if Path(j["out"]).is_file()]
    todo = [j for j in jobs if not Path(j["out"]).is_file()]
    print(f"{len(jobs)} runs: {len(cached)} cached, {len(todo)} to train", flush=True)
    if args.cached_only:
        # Report the seeds every configuration has finished (another invocation may still be running).
        unfinished = {j["seed"] for j in todo}
        seeds = [seed for seed in seeds if seed not in unfinished]
        if not seeds:
            raise SystemExit("no seed is finished for every task and configuration yet")
        cached = [j for j in cached if j["seed"] in seeds]
        todo = []
        print(f"reporting the finished seeds {seeds}", flush=True)
    results: dict[str, dict[str, dict[RunKey, float]]] = {t: {} for t in tasks}
    all_runs = []

    def record(job: dict[str, Any], result: dict[str, Any]) -> None:
        results[job["task"]].setdefault(job["name"], {})[(job["seed"], job["fold"])] = 100 * result["accuracy"]
        all_runs.append({**result, "config": job["name"]})

    for job in cached:
        record(job, json.loads(Path(job["out"]).read_text()))
    # Seed by seed, so a run stopped early leaves whole seeds to report.
    todo.sort(key=lambda j: j["seed"])
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_one, job): job for job in todo}
        for done, future in enumerate(as_completed(futures), 1):
            job, result = futures[future], future.result()
            record(job, result)
            print(
                f"[{done}/{len(todo)}] {job['task']:9s} {job['name']:24s} seed {job['seed']} fold {job['fold']}: "
                f"{100 * result['accuracy']:.2f}% ({result['seconds']:.0f} s)",
                flush=True,
            )
    summary = report(results, candidates, reductions, seeds)
    suffix = f"-{args.name}" if args.name else ""
    json_path = RESULTS / f"screen{suffix}.json"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from _report import commit, update_section

    meta = {
        "command": "python benchmarks/screen.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit(),
        "machine": f"{os.cpu_count()} CPU(s), torch {torch.__version__}",
        "tasks": tasks,
        "candidates": candidates,
        "reductions": reductions,
        "seeds": seeds,
        "seed_sets": list(halves(seeds)) if len(set(seeds)) >= 2 else None,
        "folds": args.folds,
        "jobs": args.jobs,
        "classifier": dataclasses.asdict(classifier),
        "classifier_text": f"ConvClassifier widths {list(classifier.widths)}, kernel {classifier.kernel_size}, "
        f"max-pool after every block, {classifier.epochs} epochs of AdamW with a one-cycle schedule, "
        "no augmentation, inputs standardised per mel bin",
        "wall_seconds": time.perf_counter() - began,
        "trained": len(todo),
        "cached": len(cached),
        "run_seconds": sum(r["seconds"] for r in all_runs),
        "config_seconds": {
            name: sum(r["seconds"] for r in all_runs if r["config"] == name) for name in dict.fromkeys(summary)
        },
        "feature_seconds": feature_seconds,
        "json": json_path.name,
        "weights": trained_weights(candidates),
        "min_span_exponents": merge_exponents(candidates),
    }
    if JOINT in candidates:
        meta["joint"] = joint_meta(all_runs, joint_config(reductions[0], n_mels=n_mels), tasks)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"meta": meta, "summary": summary, "runs": all_runs}, indent=1) + "\n")
    print(f"wrote {json_path}")
    for name, entry in summary.items():
        vs = "; ".join(f"{b}: {_pm(s, sign=True)}" for b, s in entry["mean"]["vs"].items())
        print(f"{name:24s} {_pm(entry['mean']['accuracy'])}  {vs}")
    if not args.no_markdown:
        section = f"screen{suffix}"
        title = "The screen: extracted features, a fixed classifier, group folds" + (
            f" ({args.name})" if suffix else ""
        )
        update_section(section, markdown(summary, meta, title=title))
        print(f"updated benchmarks/RESULTS.md section {section}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
