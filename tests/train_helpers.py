"""Shared fixtures of the trainer's tests: small configurations, synthetic and audio datasets."""

from __future__ import annotations

import numpy as np
import soundfile
import torch

from adares.train import SpectrogramSet, TrainConfig, train

N_MELS = 16


def small_config(**kwargs) -> TrainConfig:
    """A configuration that trains in moments: 16 mel bins, a two-layer classifier; ``kwargs`` override."""
    settings = {
        "compressor": "none",
        "n_mels": N_MELS,
        "epochs": 4,
        "patience": 4,
        "min_epochs": 1,
        "batch_size": 12,
        "widths": (8, 12),
        "freq_width": 3,
        "lr": 1e-2,
        "seed": 7,
    }
    settings.update(kwargs)
    return TrainConfig(**settings)


def synthetic_set(config: TrainConfig, *, clips: int = 72, frames: int = 40) -> SpectrogramSet:
    """Three classes told apart by which band carries energy; lengths vary."""
    generator = torch.Generator().manual_seed(1234)
    labels = torch.arange(clips) % 3
    lengths = torch.randint(frames // 2, frames + 1, (clips,), generator=generator)
    log_mel = torch.randn(clips, frames, N_MELS, generator=generator)
    for item in range(clips):
        band = 5 * int(labels[item])
        log_mel[item, :, band : band + 4] += 1.5
        log_mel[item, lengths[item] :] = log_mel[item, : lengths[item]].min()
    order = torch.arange(clips)
    train, validation = 2 * clips // 3, 5 * clips // 6
    splits = {"train": order[:train], "validation": order[train:validation], "test": order[validation:]}
    return SpectrogramSet.from_padded(
        log_mel=log_mel,
        lengths=lengths,
        labels=labels,
        splits=splits,
        classes=["high", "low", "mid"],
        paths=[f"clip{i}.wav" for i in range(clips)],
        frontend=config.frontend_config(),
        key="synthetic",
    )


def run(tmp_path, name, config, data, **kwargs):
    """Train ``config`` on ``data`` into ``tmp_path / name`` without a progress bar."""
    return train(None, tmp_path / name, config, data=data, progress=False, **kwargs)


def comparable(metrics):
    """Everything in metrics.json that must not depend on wall-clock time."""
    return {
        "accuracy": metrics["accuracy"],
        "val_accuracy": metrics["val_accuracy"],
        "test_loss": metrics["test_loss"],
        "predictions": metrics["test_predictions"],
        "history": [{k: v for k, v in r.items() if k != "seconds"} for r in metrics["history"]],
    }


def write_labels(root, rows):
    """Write ``labels.csv`` with the rows ``(path, label, split)``."""
    lines = "".join(f"{path},{label},{split}\n" for path, label, split in rows)
    (root / "labels.csv").write_text("path,label,split\n" + lines)


def tone_dataset(root, *, per_class=6):
    """Three pitch classes of short tones with a little noise, written as WAV."""
    rng = np.random.default_rng(0)
    rows = []
    sr = 16000
    for label, freq in (("low", 300.0), ("mid", 1200.0), ("high", 4000.0)):
        for index in range(per_class):
            split = ("train", "train", "train", "train", "validation", "test")[index % 6]
            seconds = 0.2 + 0.05 * (index % 3)
            t = np.arange(int(seconds * sr)) / sr
            tone = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.02 * rng.standard_normal()) * t)
            audio = (tone + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
            path = f"{label}/{index}.wav"
            (root / label).mkdir(exist_ok=True)
            soundfile.write(root / path, audio, sr)
            rows.append((path, label, split))
    write_labels(root, rows)
