"""Files longer than LONG_SECONDS go through the streamed path (decoded, computed and written in
blocks); through the whole pipeline, their features and records equal the in-memory path's."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

import adares.pipeline.worker as worker
from adares.pipeline import ExtractConfig, extract
from adares.store import read_features, read_jsonl

from .conftest import synth

VARYING = ("seconds", "run", "output", "shard")  # and the random shard names


def recording(minutes: float, *, sr: int) -> np.ndarray:
    """Signal whose level changes every minute (the scores are normalised over the whole file)."""
    whole = int(minutes)
    parts = [synth(60.0, sr=sr, seed=seed) * (0.02 + 0.1 * seed) for seed in range(whole)]
    if minutes > whole:
        parts.append(synth(60.0 * (minutes - whole), sr=sr, seed=whole) * 0.3)
    return np.concatenate(parts)


def outcome(out):
    records = {r["source"]: r for r in read_jsonl(out / "manifest.jsonl")}
    return records, {source: read_features(out, record) for source, record in records.items()}


def run_both(tmp_path, monkeypatch, config, *, threshold):
    """The corpus in tmp_path/in extracted in memory, then with files over ``threshold`` s streamed."""
    calls = []
    streamed = worker._write_streamed

    def counted(task, *args, **kwargs):
        calls.append(task.source_rel)
        return streamed(task, *args, **kwargs)

    extract(tmp_path / "in", tmp_path / "memory", config=config, jobs=1)
    monkeypatch.setattr(worker, "_write_streamed", counted)
    monkeypatch.setattr(worker, "LONG_SECONDS", threshold)
    extract(tmp_path / "in", tmp_path / "streamed", config=config, jobs=1)
    return calls, outcome(tmp_path / "memory"), outcome(tmp_path / "streamed")


def assert_equal(memory, streamed, *, exact):
    (records_a, features_a), (records_b, features_b) = memory, streamed
    assert records_a.keys() == records_b.keys()
    for source, record in records_a.items():
        strip = {key: value for key, value in record.items() if key not in VARYING}
        assert strip == {key: value for key, value in records_b[source].items() if key not in VARYING}
        a, b = features_a[source], features_b[source]
        assert a.meta == b.meta
        np.testing.assert_array_equal(a.spans, b.spans)
        assert (a.scores is None) == (b.scores is None)
        if exact:
            np.testing.assert_array_equal(a.mel, b.mel)
            assert a.scores is None or np.array_equal(a.scores, b.scores)
        else:  # the estimator's standardisation sums are added block by block
            np.testing.assert_allclose(b.mel, a.mel, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(b.scores, a.scores, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("model", "format"), [("none", "npz"), ("flux", "shards"), ("flux", "hdf5")])
def test_long_files_streamed_equal_the_in_memory_path(tmp_path, monkeypatch, model, format):
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "long.flac", recording(2.5, sr=22050), 22050)  # resampled as it streams
    sf.write(tmp_path / "in" / "short.wav", synth(3.0), 16000)
    config = ExtractConfig(frontend={"n_mels": 40}, model=model, format=format)
    calls, memory, streamed = run_both(tmp_path, monkeypatch, config, threshold=60.0)
    assert calls == ["long.flac"]  # the short file stays in memory
    assert_equal(memory, streamed, exact=True)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::adares.errors.ValidationWarning")
def test_a_ten_minute_file_streamed_equals_the_in_memory_path(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "ten.wav", recording(10, sr=16000), 16000, subtype="PCM_16")
    calls, memory, streamed = run_both(tmp_path, monkeypatch, ExtractConfig(), threshold=300.0)
    assert calls == ["ten.wav"]
    assert_equal(memory, streamed, exact=False)


def test_a_long_file_that_fails_midway_is_recorded_failed_and_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    samples = recording(1.5, sr=16000)
    samples[80 * 16000] = np.nan
    sf.write(tmp_path / "in" / "bad.wav", samples, 16000, subtype="FLOAT")
    monkeypatch.setattr(worker, "LONG_SECONDS", 30.0)
    summary = extract(tmp_path / "in", tmp_path / "out", config=ExtractConfig(model="none"), jobs=1)
    assert summary.failed == 1 and "non-finite samples (NaN or Inf) from 80.000 s" in summary.failures[0]["error"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["failures.jsonl", "manifest.jsonl"]
