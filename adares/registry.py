"""Model names: what ``--model`` and ``model=`` may say, and what each one builds.

``"none"`` keeps the fine frames; ``"flux"`` is the training-free spectral flux; any other name is
a compressor bundle, shipped with adares (``"default"``, see :meth:`Compressor.available`) or a
folder written by ``adares train``. This module is the only place that maps names to
importances, so the pipeline, the CLI and the benchmarks agree on them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from adares.compressor import Compressor
from adares.errors import ParameterError
from adares.extractor import Extractor, FineMelExtractor, MergingExtractor, resolve_device
from adares.frontend import MelFrontend
from adares.functional.merge import check_min_span_exponent, check_reduction
from adares.importance import FluxImportance, Importance

__all__ = ["NO_MERGE", "resolve_importance", "resolve_extractor", "model_names"]

NO_MERGE = "none"
"""The model name that keeps the fine frames."""

_HEURISTICS: dict[str, Callable[[], Importance]] = {"flux": FluxImportance}
"""Training-free importances by name: nothing to load, nothing to hash."""


def model_names() -> list[str]:
    """Every name a model may be given by, besides a bundle folder: ``none``, heuristics, shipped bundles."""
    return [NO_MERGE, *_HEURISTICS, *Compressor.available()]


def resolve_importance(model: str, *, device: str | torch.device = "cpu") -> Importance:
    """The importance a merging model name means, on ``device``.

    Parameters
    ----------
    model : str
        ``"flux"``, a shipped bundle's name or a bundle folder.
    device : str or torch.device
        Where a trained estimator runs (``cpu``, ``cuda``, ``cuda:N``, ``auto``).

    Raises
    ------
    ParameterError
        If ``model`` is ``"none"`` (it merges nothing), or the device is unknown or unavailable.
    ModelError
        If the name is neither built in nor a readable bundle.
    """
    if model == NO_MERGE:
        raise ParameterError(f"model {NO_MERGE!r} keeps the fine frames: it has no importance to resolve")
    if model in _HEURISTICS:
        return _HEURISTICS[model]()
    torch_device = resolve_device(device) if isinstance(device, str) else device
    compressor = Compressor.from_pretrained(model) if Compressor.is_pretrained_name(model) else Compressor.load(model)
    return compressor.to(torch_device)


def resolve_extractor(
    model: str,
    *,
    frontend: MelFrontend,
    reduction: float = 0.5,
    min_span_exponent: float | None = None,
    device: str | torch.device = "cpu",
) -> Extractor:
    """The extractor for ``model`` on ``frontend``: fine frames, or merged by the model's importance.

    ``min_span_exponent`` caps the merge's scores (see
    :func:`adares.functional.merge.normalize_scores`); None takes the model's own.

    Raises
    ------
    ParameterError
        If the reduction is outside ``[0, 1)``, ``min_span_exponent`` outside ``[0, 1]`` or given
        with ``"none"`` (which merges nothing), or the device is unknown.
    ModelError
        If the model cannot be found or loaded.
    """
    torch_device = resolve_device(device) if isinstance(device, str) else device
    frontend = frontend.to(torch_device)
    if model == NO_MERGE:
        if min_span_exponent is not None:
            raise ParameterError(f"min_span_exponent caps a merge; model {NO_MERGE!r} keeps every fine frame")
        return FineMelExtractor(frontend)
    rho = check_reduction(reduction)
    if min_span_exponent is not None:
        check_min_span_exponent(min_span_exponent)  # before loading a model
    importance = resolve_importance(model, device=torch_device)
    return MergingExtractor(frontend, importance, reduction=rho, min_span_exponent=min_span_exponent)
