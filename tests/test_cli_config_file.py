"""``--config`` and ``--write-config``: settings in a YAML file, flags overriding it."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from adares.cli import train as train_command_module
from adares.cli.main import main
from adares.store import Manifest

from .conftest import make_corpus


def _capture_training(monkeypatch) -> list:
    """Replace the trainer with a recorder of the configurations it is given."""
    seen = []

    def fake_train(data_dir, out_dir, config, **kwargs):
        seen.append(config)
        return {
            "accuracy": 1.0,
            "val_accuracy": 1.0,
            "best_epoch": 1,
            "epochs_run": 1,
            "macs": 1e6,
            "mean_output_frames": 1.0,
            "training_seconds": 0.0,
        }

    monkeypatch.setattr(train_command_module, "train", fake_train)
    return seen


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_written_config_runs_the_same_settings(tmp_path, monkeypatch):
    seen = _capture_training(monkeypatch)
    data = tmp_path / "data"
    data.mkdir()
    flags = ["--compressor", "diffres", "--reduction", "0.75", "--hop", "10ms", "--flux-base", "--epochs", "30"]
    first = run("train", str(data), str(tmp_path / "a"), *flags, "--quiet")
    assert first.exit_code == 0, first.output
    written = tmp_path / "train.yaml"
    result = run("train", str(data), str(tmp_path / "a"), *flags, "--write-config", str(written))
    assert result.exit_code == 0 and len(seen) == 1  # writing the config runs nothing
    settings = yaml.safe_load(written.read_text())
    assert settings["reduction"] == 0.75 and settings["flux-base"] is True and settings["n-mels"] == 128
    assert run("train", str(data), str(tmp_path / "b"), "--config", str(written), "--quiet").exit_code == 0
    assert seen[1] == seen[0]


def test_flags_override_the_file(tmp_path, monkeypatch):
    seen = _capture_training(monkeypatch)
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "train.yaml"
    config.write_text("compressor: avgpool\n--reduction: 0.25\nn_mels: 40\n")
    result = run("train", str(data), str(tmp_path / "a"), "--config", str(config), "--n-mels", "64", "--quiet")
    assert result.exit_code == 0, result.output
    assert (seen[0].compressor, seen[0].reduction, seen[0].n_mels) == ("avgpool", 0.25, 64)


def test_unknown_settings_and_bad_files_are_usage_errors(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "train.yaml"
    config.write_text("compressor: diffres\nlearning-rate: 0.1\n")
    result = run("train", str(data), str(tmp_path / "a"), "--config", str(config))
    assert result.exit_code == 2 and "learning-rate" in result.output and "does not have" in result.output
    config.write_text("- a list\n- not a mapping\n")
    result = run("train", str(data), str(tmp_path / "a"), "--config", str(config))
    assert result.exit_code == 2 and "mapping" in result.output
    config.write_text("compressor: [unclosed\n")
    result = run("train", str(data), str(tmp_path / "a"), "--config", str(config))
    assert result.exit_code == 2 and "cannot read" in result.output


def test_extract_gives_the_same_configuration_hash_from_flags_or_a_file(tmp_path):
    root = tmp_path / "in"
    make_corpus(root, count=2, corrupt=False)
    flags = ["--model", "flux", "--reduction", "0.75", "--n-mels", "40", "--hop", "10ms", "-j", "1"]
    first = run("extract", str(root), str(tmp_path / "a"), *flags)
    assert first.exit_code == 0, first.output
    config = tmp_path / "extract.yaml"
    assert run("extract", str(root), str(tmp_path / "x"), *flags, "--write-config", str(config)).exit_code == 0
    assert not (tmp_path / "x").exists()  # writing the config extracts nothing
    assert yaml.safe_load(config.read_text())["reduction"] == 0.75
    second = run("extract", str(root), str(tmp_path / "b"), "--config", str(config))
    assert second.exit_code == 0, second.output
    hashes = [Manifest.of(tmp_path / name).configs() for name in ("a", "b")]
    assert hashes[0] == hashes[1] and len(hashes[0]) == 1
