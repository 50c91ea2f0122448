"""adares: adaptive-resolution audio features.

The data path, one module per stage::

    audio.load -> frontend.MelFrontend -> diffres.DiffRes (functional.merge) -> features.Features
    -> store -> pipeline.extract -> cli

Public names are imported lazily, so ``import adares`` stays cheap and a worker process only pays
for what it uses.
"""

from __future__ import annotations

import importlib
from typing import Any

from adares.errors import (
    AdaresError,
    AdaresWarning,
    AudioDecodeError,
    ConfigMismatchError,
    FeatureFileError,
    ModelError,
    OutputError,
    OutputLockedError,
    ParameterError,
    ValidationWarning,
)

__version__ = "0.1.0"

_LAZY = {
    "load": "adares.audio",
    "MelFrontend": "adares.frontend",
    "DiffRes": "adares.diffres",
    "ImportanceEstimator": "adares.diffres",
    "Compressor": "adares.compressor",
    "Features": "adares.features",
    "load_features": "adares.features",
    "extract": "adares.pipeline",
    "ExtractConfig": "adares.pipeline",
    "FeatureDataset": "adares.data",
    "collate": "adares.data",
    "BucketBatchSampler": "adares.sampling",
    "read_inputs": "adares.inputs",
    "plot": "adares.plotting",
}

__all__ = [
    "AdaresError",
    "AdaresWarning",
    "AudioDecodeError",
    "ConfigMismatchError",
    "FeatureFileError",
    "ModelError",
    "OutputError",
    "OutputLockedError",
    "ParameterError",
    "ValidationWarning",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'adares' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
