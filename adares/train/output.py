"""The files of a run's output folder, each written atomically so a killed run leaves no half file.

Layout of ``out_dir``::

    config.json        the training configuration, classes, front end and classifier settings
    model.safetensors  best weights (compressor + classifier)
    metrics.json       accuracies, loss curves, MACs per clip, training time
    checkpoint.pt      resume state (tensors and plain containers only)
    compressor/        DiffRes only: a bundle ``adares extract --model`` loads
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_tensors
from torch import Tensor

from adares.atomic import atomic_open, atomic_write_text

__all__ = [
    "BUNDLE",
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "WEIGHTS",
    "load_checkpoint",
    "save_checkpoint",
    "save_weights",
    "write_json",
]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
BUNDLE = "compressor"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a resume state (tensors and plain containers) to ``path``."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a resume state written by :func:`save_checkpoint`, onto the CPU."""
    # weights_only: a checkpoint is tensors and plain containers; never unpickle arbitrary objects.
    return torch.load(path, map_location="cpu", weights_only=True)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON with sorted keys."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def save_weights(path: Path, state: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Write a state dict as safetensors with string ``metadata``."""
    blob = save_tensors({name: t.contiguous() for name, t in state.items()}, metadata=metadata)
    with atomic_open(path, "wb") as handle:
        handle.write(blob)
