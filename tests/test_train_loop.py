"""Tests of the training loop: determinism under a seed, resume after a kill, early stopping, outputs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from adares.cli.main import main
from adares.compressor import Compressor
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
    train,
)

from .train_helpers import comparable, run, small_config, synthetic_set, tone_dataset, write_labels


def test_same_seed_same_run_and_other_seed_differs(tmp_path):
    config = small_config(mixup=0.3, epochs=2)
    data = synthetic_set(config)
    first = run(tmp_path, "a", config, data)
    second = run(tmp_path, "b", config, data)
    assert comparable(first) == comparable(second)
    weights_a = load_file(tmp_path / "a" / WEIGHTS)
    weights_b = load_file(tmp_path / "b" / WEIGHTS)
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    other = run(tmp_path, "c", small_config(mixup=0.3, epochs=2, seed=8), data)
    assert comparable(other)["history"] != comparable(first)["history"]


def test_learns_the_synthetic_task(tmp_path):
    config = small_config(epochs=8, patience=8)
    metrics = run(tmp_path, "run", config, synthetic_set(config))
    assert metrics["accuracy"] >= 0.9
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]


def test_resume_after_a_kill_gives_the_uninterrupted_result(tmp_path):
    config = small_config(epochs=5, patience=5)
    data = synthetic_set(config)
    reference = run(tmp_path, "whole", config, data)

    class Killed(Exception):
        pass

    def kill_after_two(epoch, record):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path, "split", config, data, on_epoch_end=kill_after_two)
    assert not (tmp_path / "split" / METRICS).exists()
    saved = torch.load(tmp_path / "split" / CHECKPOINT, weights_only=True)
    assert saved["state"]["epoch"] == 2

    seen = []
    resumed = run(tmp_path, "split", config, data, on_epoch_end=lambda epoch, record: seen.append(epoch))
    assert seen == [3, 4, 5]  # only the missing epochs ran
    assert comparable(resumed) == comparable(reference)

    # A finished run is not trained again.
    again = run(tmp_path, "split", config, data, on_epoch_end=lambda epoch, record: seen.append(epoch))
    assert seen == [3, 4, 5]
    assert comparable(again) == comparable(reference)


def test_resume_refuses_other_settings_unless_restarting(tmp_path):
    config = small_config(epochs=1)
    data = synthetic_set(config)
    run(tmp_path, "run", config, data)
    with pytest.raises(ParameterError, match=r"other settings.*resume=False \(--restart\)"):
        run(tmp_path, "run", small_config(epochs=1, lr=5e-3), data)
    restarted = run(tmp_path, "run", small_config(epochs=1, lr=5e-3), data, resume=False)
    assert restarted["config"]["lr"] == 5e-3


def test_early_stopping_and_best_epoch(tmp_path):
    config = small_config(epochs=12, patience=1, lr=1e-5)
    metrics = run(tmp_path, "run", config, synthetic_set(config))
    history = metrics["history"]
    keys = [(r["val_accuracy"], -r["val_loss"]) for r in history]
    best = max(range(len(keys)), key=lambda i: (keys[i], -i))
    assert metrics["best_epoch"] == best + 1
    # Stopped at the first epoch that did not beat the best so far (patience 1), or ran out.
    first_miss = next((i for i in range(1, len(keys)) if keys[i] <= max(keys[:i])), None)
    assert metrics["epochs_run"] == (config.epochs if first_miss is None else first_miss + 1)
    assert metrics["epochs_run"] < config.epochs  # a tiny learning rate plateaus quickly


def test_no_stopping_or_selection_before_min_epochs(tmp_path):
    config = small_config(epochs=6, patience=1, min_epochs=4, lr=1e-5)
    metrics = run(tmp_path, "run", config, synthetic_set(config))
    assert metrics["epochs_run"] >= 4
    assert metrics["best_epoch"] >= 4
    keys = [(r["val_accuracy"], -r["val_loss"]) for r in metrics["history"]]
    assert metrics["best_epoch"] == 1 + max(range(3, len(keys)), key=lambda i: (keys[i], -i))


def test_outputs_and_metrics(tmp_path):
    config = small_config(epochs=2)
    data = synthetic_set(config)
    metrics = run(tmp_path, "run", config, data)
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
    data = synthetic_set(small_config())
    with pytest.raises(ParameterError, match="computed with"):
        run(tmp_path, "run", small_config(hop="10ms"), data)


def test_train_from_audio_folder_is_reproducible(tmp_path):
    pytest.importorskip("adares.frontend")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    tone_dataset(data_dir)
    config = small_config(epochs=2, batch_size=6)
    first = train(data_dir, tmp_path / "a", config, progress=False)
    second = train(data_dir, tmp_path / "b", config, progress=False, cache_dir=tmp_path / "cache")
    assert comparable(first) == comparable(second)


def test_diffres_run_exports_a_loadable_bundle(tmp_path):
    config = small_config(
        compressor="diffres", reduction=0.5, epochs=1, estimator={"channels": [4, 1], "standardize": True}
    )
    assert config.plane_mode == "mix"
    metrics = run(tmp_path, "run", config, synthetic_set(config))
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


def test_train_command(tmp_path):

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    tone_dataset(data_dir)
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


def test_reduction_zero_keeps_every_frame(tmp_path):
    config = small_config(compressor="avgpool", reduction=0.0, epochs=1)
    metrics = run(tmp_path, "run", config, synthetic_set(config))
    assert metrics["mean_output_frames"] == pytest.approx(metrics["mean_frames"])


def test_memory_mapped_and_in_memory_data_train_identically(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    tone_dataset(data_dir)
    config = small_config(epochs=2, batch_size=6, mixup=0.3)
    mapped = load_spectrograms(data_dir, frontend=config.frontend_config(), cache_dir=tmp_path / "cache")
    in_memory = dataclasses.replace(mapped, frames=mapped.frames.clone())
    padded = SpectrogramSet.from_padded(
        mapped.log_mel,
        mapped.lengths,
        **{k: getattr(mapped, k) for k in ("labels", "splits", "classes", "paths")},
        frontend=mapped.frontend,
        key=mapped.key,
    )
    results = [run(tmp_path, name, config, data) for name, data in (("a", mapped), ("b", in_memory), ("c", padded))]
    results.append(train(data_dir, tmp_path / "d", config, progress=False))
    assert all(comparable(result) == comparable(results[0]) for result in results[1:])
    weights = [load_file(tmp_path / name / WEIGHTS) for name in "abcd"]
    for name in weights[0]:
        assert all(torch.equal(other[name], weights[0][name]) for other in weights[1:]), name


_CAPPED_TRAINING = """
import resource, sys
import torch
from adares.cli.main import main
from adares.train import TrainConfig, load_spectrograms

def data_bytes():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmData:"))

data, out, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(1)
# Private writable memory (heap, anonymous maps) beyond what the process holds now; file-backed
# read-only maps, such as the memory-mapped log-mels, are not counted.
resource.setrlimit(resource.RLIMIT_DATA, (data_bytes() + budget, resource.getrlimit(resource.RLIMIT_DATA)[1]))
arguments = ["train", data, out, "--compressor", "none", "--n-mels", "16", "--epochs", "1", "--min-epochs", "1"]
main(arguments + ["--batch-size", "4", "--threads", "1", "--quiet"], standalone_mode=False)
print("trained")
loaded = load_spectrograms(data, frontend=TrainConfig(n_mels=16).frontend_config())
print("padded bytes", len(loaded.lengths) * int(loaded.lengths.max()) * loaded.n_mels * 4)
try:
    loaded.log_mel  # the whole corpus padded into one tensor, as training used to hold it
except (MemoryError, RuntimeError):
    print("padding refused")
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's RLIMIT_DATA and /proc")
def test_train_command_on_a_corpus_too_large_to_hold_padded(tmp_path):
    # 800 clips of 0.1 s and ten of 60 s in the training split: padded to the longest, 16 mel bins at
    # 5 ms hop take 800 x 12,001 x 16 x 4 bytes = 614 MB; end to end they take 8 MB.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for index in range(800):
        label, freq = (("low", 300.0), ("mid", 1200.0), ("high", 4000.0))[index % 3]
        split = ("train", "train", "train", "train", "validation", "test")[index % 6]
        seconds = 60.0 if split == "train" and index % 80 == 0 else 0.1
        t = np.arange(int(seconds * 16000)) / 16000
        audio = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
        soundfile.write(data_dir / f"{index}.wav", audio.astype(np.float32), 16000)
        rows.append((f"{index}.wav", label, split))
    write_labels(data_dir, rows)
    budget = 400_000_000
    environment = {**os.environ, "MALLOC_ARENA_MAX": "2", "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", _CAPPED_TRAINING, str(data_dir), str(tmp_path / "out"), str(budget)],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained" in result.stdout and "padding refused" in result.stdout, result.stdout
    padded = int(result.stdout.split("padded bytes")[1].split()[0])
    assert padded > budget
    assert json.loads((tmp_path / "out" / METRICS).read_text())["accuracy"] > 0.9
