"""Tests of multi-task training: one shared DiffRes estimator, one classifier per task."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from adares.compressor import Compressor
from adares.errors import ParameterError
from adares.train import WEIGHTS, train_multitask

from .train_helpers import small_config, synthetic_set


def test_multitask_training_shares_one_estimator_and_exports_it(tmp_path):
    config = small_config(compressor="diffres", epochs=1, estimator={"channels": [4, 1]})
    datasets = {
        task: {hop: synthetic_set(small_config(compressor="diffres", hop=hop), clips=36) for hop in ("2.5ms", "5ms")}
        for task in ("a", "b")
    }
    metrics = train_multitask(datasets, tmp_path / "mt", config, reductions=(0.5, 0.75), progress=False)
    assert set(metrics["test"]) == {"a", "b"}
    assert set(metrics["test"]["a"]) == {"2.5ms", "5ms"}
    assert set(metrics["test"]["a"]["5ms"]) == {"0.5", "0.75"}
    bundle = Compressor.load(tmp_path / "mt" / "compressor")
    assert bundle.sha256 == metrics["bundle"]["sha256"]
    assert bundle.card["validated"]["hop_samples"] == [40, 80]
    assert bundle.card["validated"]["reduction"] == [0.5, 0.75]
    assert bundle.card["training"]["tasks"] == ["a", "b"]
    assert bundle.card["frontend"]["hop_samples"] == 80
    weights = load_file(tmp_path / "mt" / WEIGHTS)
    assert {"classifiers.a.head.weight", "classifiers.b.head.weight"} <= set(weights)
    for name, tensor in bundle.estimator.state_dict().items():
        assert torch.equal(weights[f"compressor.estimator.{name}"], tensor), name
    with pytest.raises(ParameterError, match="DiffRes"):
        train_multitask(datasets, tmp_path / "x", small_config(compressor="flux"), progress=False)


def test_multitask_reductions_share_the_range_of_extraction(tmp_path):
    datasets = {"a": {"5ms": synthetic_set(small_config(compressor="diffres"), clips=36)}}
    config = small_config(compressor="diffres", epochs=1, estimator={"channels": [4, 1]})
    with pytest.raises(ParameterError, match=r"reductions must lie in \[0, 1\)"):
        train_multitask(datasets, tmp_path / "x", config, reductions=(0.5, 1.0), progress=False)
    metrics = train_multitask(datasets, tmp_path / "mt", config, reductions=(0.0, 0.5), progress=False)
    assert set(metrics["test"]["a"]["5ms"]) == {"0", "0.5"}
