"""Tests of the training configuration: validation, the reduction's range, serialisation."""

from __future__ import annotations

import json

import pytest

from adares.errors import ParameterError
from adares.train import TrainConfig
from adares.train.config import check_reductions

from .train_helpers import small_config


@pytest.mark.parametrize(
    "kwargs",
    [
        {"compressor": "wavelet"},
        {"compressor": "diffres", "reduction": 1.0},
        {"planes": "stack"},
        {"compressor": "avgpool", "planes": "mix"},
        {"epochs": 0},
        {"lr": 0.0},
        {"mixup": -0.1},
        {"min_epochs": 5},
    ],
)
def test_config_rejects_bad_settings(kwargs):
    with pytest.raises(ParameterError):
        small_config(**kwargs)


def test_config_round_trip_and_unknown_keys():
    config = small_config(compressor="diffres", reduction=0.75, estimator={"width": 8})
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.num_planes == 3 and config.plane_mode == "mix"
    assert small_config(compressor="avgpool").num_planes == 1
    assert small_config(compressor="flux", planes="stack").plane_mode == "stack"
    with pytest.raises(ParameterError, match="unknown"):
        TrainConfig.from_dict({**config.to_dict(), "learning_rate": 1})


@pytest.mark.parametrize("reduction", [-0.1, 1.0, 1.5, float("nan"), True, "0.5"])
def test_reduction_outside_zero_to_one_is_rejected(reduction):
    with pytest.raises(ParameterError, match="reduction"):
        small_config(compressor="avgpool", reduction=reduction)


def test_reduction_range_is_extractions_zero_included():
    # [0, 1), as extraction: 0 keeps every frame.
    assert small_config(compressor="diffres", reduction=0.0).reduction == 0.0
    assert small_config(compressor="avgpool", reduction=0.99).reduction == 0.99
    # `none` ignores the reduction.
    assert small_config(compressor="none", reduction=1.0).compressor == "none"


def test_check_reductions():
    assert check_reductions((0, 0.5), name="reductions") == [0.0, 0.5]
    with pytest.raises(ParameterError, match="at least one"):
        check_reductions((), name="reductions")
    with pytest.raises(ParameterError, match=r"validation_reductions must lie in \[0, 1\)"):
        check_reductions((0.5, 1.0), name="validation_reductions")
