"""Tests of the trainer's data: labels.csv reading, the log-mel of a labelled folder and its cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from adares.errors import ParameterError
from adares.train import load_spectrograms, read_labels

from .train_helpers import small_config, tone_dataset, write_labels


def test_read_labels_errors(tmp_path):
    with pytest.raises(ParameterError, match="no labels.csv"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label,split\n")
    with pytest.raises(ParameterError, match="missing column"):
        read_labels(tmp_path)
    soundfile.write(tmp_path / "a.wav", np.zeros(800, dtype=np.float32), 16000)
    write_labels(tmp_path, [("a.wav", "x", "dev")])
    with pytest.raises(ParameterError, match="'dev'"):
        read_labels(tmp_path)
    write_labels(tmp_path, [("a.wav", "x", "train"), ("b.wav", "x", "test")])
    with pytest.raises(ParameterError, match="does not exist"):
        read_labels(tmp_path)
    write_labels(tmp_path, [("a.wav", "x", "train"), ("a.wav", "x", "test")])
    with pytest.raises(ParameterError, match="validation split is empty"):
        read_labels(tmp_path)


def test_load_spectrograms_from_audio_and_cache(tmp_path):
    pytest.importorskip("adares.frontend")
    from adares.frontend import MelFrontend

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    tone_dataset(data_dir)
    config = small_config()
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
    load_spectrograms(data_dir, frontend=small_config(hop="10ms").frontend_config(), cache_dir=cache)
    assert len(list(cache.glob("*.safetensors"))) == 2


def test_spectrogram_set_batches_pad_each_clip_with_its_minimum():
    from adares.train import SpectrogramSet

    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([3, 5, 2])
    log_mel = torch.randn(3, 5, 4, generator=generator)
    data = SpectrogramSet.from_padded(
        log_mel,
        lengths,
        labels=torch.tensor([0, 1, 0]),
        splits={"train": torch.arange(3)},
        classes=["a", "b"],
        paths=["a", "b", "c"],
        frontend={},
        key="k",
    )
    assert data.frames.shape == (10, 4) and data.n_mels == 4
    batch, batch_lengths, labels = data.batch(torch.tensor([2, 0]))
    assert batch.shape == (2, 3, 4) and batch_lengths.tolist() == [2, 3] and labels.tolist() == [0, 0]
    torch.testing.assert_close(batch[0, :2], log_mel[2, :2])
    assert bool((batch[0, 2:] == log_mel[2, :2].min()).all())
    torch.testing.assert_close(data.log_mel[1], log_mel[1])
    with pytest.raises(ParameterError, match="add up"):
        SpectrogramSet(
            frames=data.frames[:9],
            **{k: getattr(data, k) for k in ("lengths", "labels", "splits")},
            classes=data.classes,
            paths=data.paths,
            frontend={},
            key="k",
        )


def test_cache_is_the_safetensors_layout_and_read_memory_mapped(tmp_path):
    from safetensors.torch import load_file

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    tone_dataset(data_dir)
    config = small_config()
    cached = load_spectrograms(data_dir, frontend=config.frontend_config(), cache_dir=tmp_path / "cache")
    uncached = load_spectrograms(data_dir, frontend=config.frontend_config())
    (file,) = (tmp_path / "cache").glob("*.safetensors")
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the frames are a shared read-only map of the file, not the process's memory
        perms = {line.split()[1] for line in maps.read_text().splitlines() if line.endswith(str(file.resolve()))}
        assert perms == {"r--s"}
    tensors = load_file(file)  # the safetensors library reads what was streamed to disk
    assert torch.equal(tensors["log_mel"], cached.frames) and torch.equal(tensors["lengths"], cached.lengths)
    assert torch.equal(uncached.frames, cached.frames)
