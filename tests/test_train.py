"""Tests of the trainer: determinism under a seed, resume after a kill, outputs, data loading."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file

from adares.errors import ParameterError
from adares.train import (
    CHECKPOINT,
    METRICS,
    WEIGHTS,
    SpectrogramSet,
    TrainConfig,
    build_model,
    classifier_macs,
    load_spectrograms,
    read_labels,
    train,
)

N_MELS = 16


def _synthetic_set(config: TrainConfig, *, clips: int = 72, frames: int = 40) -> SpectrogramSet:
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
    return SpectrogramSet(
        log_mel=log_mel,
        lengths=lengths,
        labels=labels,
        splits=splits,
        classes=["high", "low", "mid"],
        paths=[f"clip{i}.wav" for i in range(clips)],
        frontend=config.frontend_config(),
        key="synthetic",
    )


def _config(**kwargs) -> TrainConfig:
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


def _run(tmp_path, name, config, data, **kwargs):
    return train(None, tmp_path / name, config, data=data, progress=False, **kwargs)


def _comparable(metrics):
    """Everything in metrics.json that must not depend on wall-clock time."""
    return {
        "accuracy": metrics["accuracy"],
        "val_accuracy": metrics["val_accuracy"],
        "test_loss": metrics["test_loss"],
        "predictions": metrics["test_predictions"],
        "history": [{k: v for k, v in r.items() if k != "seconds"} for r in metrics["history"]],
    }


def test_same_seed_same_run_and_other_seed_differs(tmp_path):
    config = _config(mixup=0.3, epochs=2)
    data = _synthetic_set(config)
    first = _run(tmp_path, "a", config, data)
    second = _run(tmp_path, "b", config, data)
    assert _comparable(first) == _comparable(second)
    weights_a = load_file(tmp_path / "a" / WEIGHTS)
    weights_b = load_file(tmp_path / "b" / WEIGHTS)
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    other = _run(tmp_path, "c", _config(mixup=0.3, epochs=2, seed=8), data)
    assert _comparable(other)["history"] != _comparable(first)["history"]


def test_learns_the_synthetic_task(tmp_path):
    config = _config(epochs=8, patience=8)
    metrics = _run(tmp_path, "run", config, _synthetic_set(config))
    assert metrics["accuracy"] >= 0.9
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]


def test_resume_after_a_kill_gives_the_uninterrupted_result(tmp_path):
    config = _config(epochs=5, patience=5)
    data = _synthetic_set(config)
    reference = _run(tmp_path, "whole", config, data)

    class Killed(Exception):
        pass

    def kill_after_two(epoch, record):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        _run(tmp_path, "split", config, data, on_epoch_end=kill_after_two)
    assert not (tmp_path / "split" / METRICS).exists()
    saved = torch.load(tmp_path / "split" / CHECKPOINT, weights_only=True)
    assert saved["state"]["epoch"] == 2

    seen = []
    resumed = _run(tmp_path, "split", config, data, on_epoch_end=lambda epoch, record: seen.append(epoch))
    assert seen == [3, 4, 5]  # only the missing epochs ran
    assert _comparable(resumed) == _comparable(reference)

    # A finished run is not trained again.
    again = _run(tmp_path, "split", config, data, on_epoch_end=lambda epoch, record: seen.append(epoch))
    assert seen == [3, 4, 5]
    assert _comparable(again) == _comparable(reference)


def test_resume_refuses_other_settings_unless_restarting(tmp_path):
    config = _config(epochs=1)
    data = _synthetic_set(config)
    _run(tmp_path, "run", config, data)
    with pytest.raises(ParameterError, match="other settings"):
        _run(tmp_path, "run", _config(epochs=1, lr=5e-3), data)
    restarted = _run(tmp_path, "run", _config(epochs=1, lr=5e-3), data, resume=False)
    assert restarted["config"]["lr"] == 5e-3


def test_early_stopping_and_best_epoch(tmp_path):
    config = _config(epochs=12, patience=1, lr=1e-5)
    metrics = _run(tmp_path, "run", config, _synthetic_set(config))
    history = metrics["history"]
    keys = [(r["val_accuracy"], -r["val_loss"]) for r in history]
    best = max(range(len(keys)), key=lambda i: (keys[i], -i))
    assert metrics["best_epoch"] == best + 1
    # Stopped at the first epoch that did not beat the best so far (patience 1), or ran out.
    first_miss = next((i for i in range(1, len(keys)) if keys[i] <= max(keys[:i])), None)
    assert metrics["epochs_run"] == (config.epochs if first_miss is None else first_miss + 1)
    assert metrics["epochs_run"] < config.epochs  # a tiny learning rate plateaus quickly


def test_no_stopping_or_selection_before_min_epochs(tmp_path):
    config = _config(epochs=6, patience=1, min_epochs=4, lr=1e-5)
    metrics = _run(tmp_path, "run", config, _synthetic_set(config))
    assert metrics["epochs_run"] >= 4
    assert metrics["best_epoch"] >= 4
    keys = [(r["val_accuracy"], -r["val_loss"]) for r in metrics["history"]]
    assert metrics["best_epoch"] == 1 + max(range(3, len(keys)), key=lambda i: (keys[i], -i))


def test_outputs_and_metrics(tmp_path):
    config = _config(epochs=2)
    data = _synthetic_set(config)
    metrics = _run(tmp_path, "run", config, data)
    out = tmp_path / "run"
    on_disk = json.loads((out / METRICS).read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for key in ("accuracy", "macs", "training_seconds", "history", "mean_output_frames", "best_epoch"):
        assert key in on_disk
    assert [record["epoch"] for record in on_disk["history"]] == [1, 2]
    for record in on_disk["history"]:
        assert math.isfinite(record["train_loss"]) and math.isfinite(record["val_loss"])
    # The classifier reads the fine frames here: MACs are those of one clip of the mean length.
    model = build_model(config, n_classes=3)
    test_lengths = data.lengths[data.splits["test"]].float()
    assert on_disk["mean_output_frames"] == pytest.approx(float(test_lengths.mean()))
    assert on_disk["macs"] == classifier_macs(model, frames=round(float(test_lengths.mean())))
    card = json.loads((out / "config.json").read_text())
    assert card["classes"] == data.classes
    assert TrainConfig.from_dict(card["config"]) == config
    weights = load_file(out / WEIGHTS)
    assert any(name.startswith("classifier.") for name in weights)
    # The trained weights reproduce the reported test accuracy.
    model.load_state_dict(weights)
    model.eval()
    log_mel, lengths, labels = data.batch(data.splits["test"])
    with torch.no_grad():
        accuracy = float((model(log_mel, lengths).argmax(1) == labels).float().mean())
    assert accuracy == pytest.approx(metrics["accuracy"])


def test_data_must_match_config(tmp_path):
    data = _synthetic_set(_config())
    with pytest.raises(ParameterError, match="computed with"):
        _run(tmp_path, "run", _config(hop="10ms"), data)


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
        _config(**kwargs)


def test_config_round_trip_and_unknown_keys():
    config = _config(compressor="diffres", reduction=0.75, estimator={"width": 8})
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.num_planes == 3 and config.plane_mode == "mix"
    assert _config(compressor="avgpool").num_planes == 1
    assert _config(compressor="flux", planes="stack").plane_mode == "stack"
    with pytest.raises(ParameterError, match="unknown"):
        TrainConfig.from_dict({**config.to_dict(), "learning_rate": 1})


def _write_labels(root, rows):
    lines = "".join(f"{path},{label},{split}\n" for path, label, split in rows)
    (root / "labels.csv").write_text("path,label,split\n" + lines)


def test_read_labels_errors(tmp_path):
    with pytest.raises(ParameterError, match="no labels.csv"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label,split\n")
    with pytest.raises(ParameterError, match="missing column"):
        read_labels(tmp_path)
    soundfile.write(tmp_path / "a.wav", np.zeros(800, dtype=np.float32), 16000)
    _write_labels(tmp_path, [("a.wav", "x", "dev")])
    with pytest.raises(ParameterError, match="'dev'"):
        read_labels(tmp_path)
    _write_labels(tmp_path, [("a.wav", "x", "train"), ("b.wav", "x", "test")])
    with pytest.raises(ParameterError, match="does not exist"):
        read_labels(tmp_path)
    _write_labels(tmp_path, [("a.wav", "x", "train"), ("a.wav", "x", "test")])
    with pytest.raises(ParameterError, match="validation split is empty"):
        read_labels(tmp_path)


def _tone_dataset(root, *, per_class=6):
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
    _write_labels(root, rows)


def test_load_spectrograms_from_audio_and_cache(tmp_path):
    pytest.importorskip("adares.frontend")
    from adares.frontend import MelFrontend

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _tone_dataset(data_dir)
    config = _config()
    cache = tmp_path / "cache"
    first = load_spectrograms(data_dir, frontend=config.frontend_config(), cache_dir=cache)
    assert len(list(cache.glob("*.safetensors"))) == 1
    second = load_spectrograms(data_dir, frontend=config.frontend_config(), cache_dir=cache)
    assert torch.equal(first.log_mel, second.log_mel) and torch.equal(first.lengths, second.lengths)
    assert first.classes == ["high", "low", "mid"]
    assert {split: len(v) for split, v in first.splits.items()} == {"train": 12, "validation": 3, "test": 3}
    # The cached spectrogram is the front end's log-mel of the decoded clip.
    from adares.audio import load

    samples, _ = load(data_dir / first.paths[0], sr=16000)
    expected, _ = MelFrontend(**config.frontend_config())(torch.from_numpy(samples)[None])
    length = int(first.lengths[0])
    assert length == expected.shape[1]
    torch.testing.assert_close(first.log_mel[0, :length], expected[0].float())
    # Another front end is another cache entry.
    load_spectrograms(data_dir, frontend=_config(hop="10ms").frontend_config(), cache_dir=cache)
    assert len(list(cache.glob("*.safetensors"))) == 2


def test_train_from_audio_folder_is_reproducible(tmp_path):
    pytest.importorskip("adares.frontend")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _tone_dataset(data_dir)
    config = _config(epochs=2, batch_size=6)
    first = train(data_dir, tmp_path / "a", config, progress=False)
    second = train(data_dir, tmp_path / "b", config, progress=False, cache_dir=tmp_path / "cache")
    assert _comparable(first) == _comparable(second)


def test_diffres_run_exports_a_loadable_bundle(tmp_path):
    from adares.compressor import Compressor

    config = _config(compressor="diffres", reduction=0.5, epochs=1, estimator={"channels": [4, 1], "standardize": True})
    assert config.plane_mode == "mix"
    metrics = _run(tmp_path, "run", config, _synthetic_set(config))
    assert metrics["compressor_macs"] > 0
    assert metrics["mean_output_frames"] < metrics["mean_frames"]
    bundle = Compressor.load(tmp_path / "run" / "compressor")
    assert bundle.reduction == 0.5
    assert bundle.card["estimator"]["channels"] == [4, 1]
    assert bundle.card["estimator"]["standardize"] is True and bundle.estimator.standardize
    assert bundle.card["metrics"]["accuracy"] == metrics["accuracy"]
    weights = load_file(tmp_path / "run" / WEIGHTS)
    for name, tensor in bundle.estimator.state_dict().items():
        assert torch.equal(weights[f"compressor.estimator.{name}"], tensor), name


def test_multitask_training_shares_one_estimator_and_exports_it(tmp_path):
    from adares.compressor import Compressor
    from adares.train import train_multitask

    config = _config(compressor="diffres", epochs=1, estimator={"channels": [4, 1]})
    datasets = {
        task: {hop: _synthetic_set(_config(compressor="diffres", hop=hop), clips=36) for hop in ("2.5ms", "5ms")}
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
        train_multitask(datasets, tmp_path / "x", _config(compressor="flux"), progress=False)


def test_train_command(tmp_path):
    from click.testing import CliRunner

    from adares.cli.main import main
    from adares.compressor import Compressor

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _tone_dataset(data_dir)
    arguments = ["train", str(data_dir), str(tmp_path / "out"), "--compressor", "avgpool", "--reduction", "0.5"]
    arguments += ["--epochs", "1", "--min-epochs", "1", "--n-mels", "32", "--quiet"]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    metrics = json.loads((tmp_path / "out" / METRICS).read_text())
    assert metrics["config"]["compressor"] == "avgpool" and metrics["config"]["n_mels"] == 32
    assert metrics["config"]["estimator"] == TrainConfig().estimator  # the default: raw input
    arguments = ["train", str(data_dir), str(tmp_path / "std"), "--compressor", "diffres", "--standardize-input"]
    arguments += ["--epochs", "1", "--min-epochs", "1", "--n-mels", "32", "--quiet"]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "std" / METRICS).read_text())["config"]["estimator"]["standardize"] is True
    assert Compressor.load(tmp_path / "std" / "compressor").estimator.standardize
    bad = CliRunner().invoke(main, ["train", str(data_dir), str(tmp_path / "x"), "--reduction", "1.5"])
    assert bad.exit_code == 2 and "reduction" in bad.output
