"""Tests of what a configuration trains: the builders, the optimiser groups, MAC counting."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from adares.cli.main import main
from adares.compressor import Compressor
from adares.diffres import AvgPoolCompressor, DiffRes
from adares.models import ConvClassifier
from adares.train import (
    build_classifier,
    build_compressor,
    build_model,
    build_optimizer,
    classifier_macs,
    compressor_macs,
    train,
    train_multitask,
)
from adares.train import loop as loop_module
from adares.train import model as model_module
from adares.train import multitask as multitask_module

from .train_helpers import run, small_config, synthetic_set, tone_dataset


def test_builders_follow_the_config():
    assert build_compressor(small_config(compressor="none")) is None
    assert isinstance(build_compressor(small_config(compressor="avgpool", reduction=0.25)), AvgPoolCompressor)
    diffres = build_compressor(small_config(compressor="diffres", reduction=0.0, estimator={"channels": [4, 1]}))
    assert isinstance(diffres, DiffRes) and diffres.reduction == 0.0
    classifier = build_classifier(small_config(compressor="diffres", planes="stack"), n_classes=4)
    assert classifier.in_channels == 3 and classifier.n_classes == 4 and classifier.n_mels == 16
    first = build_model(small_config(), n_classes=3).state_dict()
    second = build_model(small_config(), n_classes=3).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_optimizer_groups():
    config = small_config(compressor="diffres", lr=1e-2, compressor_lr=1e-3, estimator={"channels": [4, 1]})
    model = build_model(config, n_classes=3)
    optimizer = build_optimizer(config, classifier=model.classifier, compressor=model.compressor)
    classifier_group, compressor_group = optimizer.param_groups
    assert classifier_group["peak_lr"] == classifier_group["lr"] == 1e-2
    assert compressor_group["peak_lr"] == compressor_group["lr"] == 1e-3
    assert len(classifier_group["params"]) == len(list(model.classifier.parameters()))
    # Without compressor_lr the compressor learns at lr; frozen parameters are left out.
    config = small_config(compressor="diffres", lr=1e-2, estimator={"channels": [4, 1]})
    model = build_model(config, n_classes=3)
    frozen = next(model.compressor.parameters())
    frozen.requires_grad_(False)
    groups = build_optimizer(config, classifier=model.classifier, compressor=model.compressor).param_groups
    assert groups[1]["peak_lr"] == 1e-2
    assert all(p is not frozen for p in groups[1]["params"])
    assert len(groups[1]["params"]) == len(list(model.compressor.parameters())) - 1
    # A compressor without parameters (or none) adds no group.
    for name in ("none", "avgpool"):
        model = build_model(small_config(compressor=name), n_classes=3)
        optimizer = build_optimizer(small_config(), classifier=model.classifier, compressor=model.compressor)
        assert len(optimizer.param_groups) == 1


def test_single_and_multitask_build_through_the_same_builders(tmp_path, monkeypatch):
    """Every classifier and optimiser of either path is made inside build_classifier / build_optimizer."""
    running: list[str] = []
    made: list[tuple[str, tuple[str, ...]]] = []

    def through(name, builder):
        def wrapper(*args, **kwargs):
            running.append(name)
            try:
                return builder(*args, **kwargs)
            finally:
                running.pop()

        return wrapper

    build_classifier_, build_optimizer_ = model_module.build_classifier, loop_module.build_optimizer
    for module in (model_module, multitask_module):
        monkeypatch.setattr(module, "build_classifier", through("build_classifier", build_classifier_))
    for module in (loop_module, multitask_module):
        monkeypatch.setattr(module, "build_optimizer", through("build_optimizer", build_optimizer_))
    classifier_init, adamw = ConvClassifier.__init__, torch.optim.AdamW

    def recording_init(self, *args, **kwargs):
        made.append(("classifier", tuple(running)))
        classifier_init(self, *args, **kwargs)

    def recording_adamw(*args, **kwargs):
        made.append(("optimizer", tuple(running)))
        return adamw(*args, **kwargs)

    monkeypatch.setattr(ConvClassifier, "__init__", recording_init)
    monkeypatch.setattr(torch.optim, "AdamW", recording_adamw)

    config = small_config(compressor="diffres", epochs=1, estimator={"channels": [4, 1]})
    train(None, tmp_path / "single", config, data=synthetic_set(config, clips=36), progress=False)
    single = list(made)
    assert single == [("classifier", ("build_classifier",)), ("optimizer", ("build_optimizer",))]
    datasets = {task: {"5ms": synthetic_set(config, clips=36)} for task in ("a", "b")}
    train_multitask(datasets, tmp_path / "multi", config, reductions=(0.5,), progress=False)
    assert made[len(single) :] == [single[0], single[0], single[1]]


def test_macs():
    config = small_config(compressor="diffres", estimator={"channels": [4, 1]})
    model = build_model(config, n_classes=3).train()
    short, long = classifier_macs(model, frames=10), classifier_macs(model, frames=40)
    assert 0 < short < long
    assert compressor_macs(model, frames=40) > 0
    assert model.training and model.classifier.training and model.compressor.training
    assert compressor_macs(build_model(small_config(), n_classes=3), frames=40) == 0


@pytest.mark.parametrize("frames", [0, 1])
def test_macs_of_degenerate_clips_count_one_frame(frames):
    model = build_model(small_config(), n_classes=3)
    assert classifier_macs(model, frames=frames) == classifier_macs(model, frames=1)


def test_a_flux_based_estimator_trains_and_ships(tmp_path):
    config = small_config(compressor="diffres", epochs=2, estimator={"channels": [4, 1], "flux_base": True})
    diffres = build_compressor(config)
    assert isinstance(diffres, DiffRes) and diffres.estimator.flux_base
    metrics = run(tmp_path, "flux-base", config, synthetic_set(config))
    assert metrics["config"]["estimator"]["flux_base"] is True
    bundle = Compressor.load(tmp_path / "flux-base" / "compressor")
    assert bundle.estimator.flux_base and bundle.card["estimator"]["flux_base"] is True
    # training moved the correction away from the flux
    assert float(bundle.estimator.correction_gain.detach()) != 0.0


def test_a_learned_sharpness_trains_and_ships(tmp_path):
    settings = {"channels": [4, 1], "flux_base": True, "learn_sharpness": True}
    config = small_config(compressor="diffres", epochs=2, estimator=settings)
    run(tmp_path, "sharp", config, synthetic_set(config))
    bundle = Compressor.load(tmp_path / "sharp" / "compressor")
    assert bundle.card["estimator"]["learn_sharpness"] is True
    # training moved the power away from the plain flux's
    assert float(bundle.estimator.log_sharpness.detach()) != 0.0


def _train_diffres(tmp_path, *options: str):
    """``adares train --compressor diffres`` for one epoch on a small tone corpus, with ``options``."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    tone_dataset(data_dir)
    arguments = ["train", str(data_dir), str(tmp_path / "out"), "--compressor", "diffres", *options]
    arguments += ["--epochs", "1", "--min-epochs", "1", "--n-mels", "32", "--quiet"]
    return CliRunner().invoke(main, arguments)


def test_the_train_command_takes_the_flux_base(tmp_path):
    result = _train_diffres(tmp_path, "--flux-base")
    assert result.exit_code == 0, result.output
    assert Compressor.load(tmp_path / "out" / "compressor").estimator.flux_base


def test_the_train_command_takes_a_learned_sharpness_only_with_the_flux_base(tmp_path):
    refused = _train_diffres(tmp_path, "--learn-sharpness")
    assert refused.exit_code == 2 and "--learn-sharpness and --flux-power need --flux-base" in refused.output
    assert not (tmp_path / "out").exists()
    result = _train_diffres(tmp_path, "--learn-sharpness", "--flux-base")
    assert result.exit_code == 0, result.output
    assert Compressor.load(tmp_path / "out" / "compressor").estimator.learn_sharpness


def test_a_fixed_flux_power_is_not_a_trained_parameter():
    settings = {"channels": [4, 1], "flux_base": True, "flux_power": 0.5}
    config = small_config(compressor="diffres", epochs=1, estimator=settings)
    diffres = build_compressor(config)
    assert "estimator.log_sharpness" not in dict(diffres.named_parameters())
    assert float(diffres.estimator.log_sharpness.exp()) == pytest.approx(0.5)
