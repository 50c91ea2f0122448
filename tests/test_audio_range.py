"""Out-of-range and non-finite samples never become an ``ok`` feature file of NaNs.

Float files may hold any float32 value: up to :data:`adares.audio.MAX_ABS_SAMPLE` (2^31, the 32-bit
PCM scale) they give finite features, beyond it (what a byte flip in float data gives) they are
refused by name, by :func:`adares.load`, by the front end, by a compressor, and by the pipeline,
which records the reason in failures.jsonl. The last check before any write refuses NaN or Inf
features whatever produced them.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import soundfile as sf
import torch

from adares import Compressor
from adares.audio import MAX_ABS_SAMPLE, load
from adares.errors import AudioDecodeError, ParameterError
from adares.features import Features, load_features, require_finite
from adares.frontend import MelFrontend
from adares.pipeline import ExtractConfig, extract
from adares.store import FAILURES_NAME, MANIFEST_NAME, read_jsonl, write_features
from tests.conftest import SR, synth


def _float_wav(path, samples):
    sf.write(path, np.asarray(samples, dtype=np.float32), SR, subtype="FLOAT")
    return path


@pytest.mark.parametrize("scale", [1e24, 1e30, 3e38])
def test_load_refuses_huge_float_samples_by_name(tmp_path, scale):
    y = synth(0.5)
    y[4000:4010] = scale
    path = _float_wav(tmp_path / "huge.wav", y)
    with pytest.raises(AudioDecodeError) as error:
        load(path)
    assert error.value.reason == (
        f"samples out of range from 0.250 s: max |x| = {np.float32(scale):.2g}; "
        "float audio is expected in [-1, 1] (at most 2^31 is accepted)"
    )


def test_a_flipped_exponent_bit_in_float_data_is_refused(tmp_path):
    # the commonest corruption of float WAV data: one bit of one sample's exponent
    path = _float_wav(tmp_path / "flipped.wav", synth(0.5))
    data = bytearray(path.read_bytes())
    offset = len(data) - 4 * 1000 + 3  # the high byte of a sample near the end
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))
    assert abs(struct.unpack("<f", bytes(data[offset - 3 : offset + 1]))[0]) > 1e30
    with pytest.raises(AudioDecodeError, match="samples out of range"):
        load(path)


@pytest.mark.parametrize("scale", [1e3, 32768.0, MAX_ABS_SAMPLE])
def test_load_keeps_float_audio_at_an_integer_scale(tmp_path, scale):
    y = synth(0.5)
    y = (y / np.abs(y).max() * scale).astype(np.float32)
    samples, _ = load(_float_wav(tmp_path / "scaled.wav", y))
    np.testing.assert_array_equal(samples, y)


def test_what_load_accepts_the_front_end_accepts_after_resampling(tmp_path):
    # a full-scale square wave at the limit overshoots it by 19% when resampled from 44.1 kHz
    t = np.arange(44100)
    square = np.where((t // 50) % 2, MAX_ABS_SAMPLE, -MAX_ABS_SAMPLE).astype(np.float32)
    path = tmp_path / "square.wav"
    sf.write(path, square, 44100, subtype="FLOAT")
    samples, _ = load(path, sr=SR)
    assert np.abs(samples).max() > MAX_ABS_SAMPLE
    features, _ = MelFrontend()(samples)
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("bad", [1e20, float("nan"), float("-inf")])
def test_the_front_end_and_a_compressor_refuse_bad_tensors(bad):
    y = torch.from_numpy(synth(0.5))
    y[100] = bad
    reason = "NaN or infinite" if not np.isfinite(bad) else "samples out of range"
    with pytest.raises(ParameterError, match=reason):
        MelFrontend()(y)
    with pytest.raises(ParameterError, match=reason):
        Compressor.from_pretrained()(y, SR)


@pytest.mark.parametrize(
    ("model", "log"), [("none", "ln"), ("none", "db"), ("none", "none"), ("flux", "ln"), ("default", "ln")]
)
def test_the_pipeline_names_huge_files_and_writes_finite_features(tmp_path, model, log):
    audio = tmp_path / "in"
    audio.mkdir()
    y = synth(0.6)
    _float_wav(audio / "huge.wav", np.where(np.arange(len(y)) % 97 == 0, 1.1e24, y))
    _float_wav(audio / "int16_scale.wav", y * 32767)
    _float_wav(audio / "int32_scale.wav", y / np.abs(y).max() * MAX_ABS_SAMPLE)
    _float_wav(audio / "plain.wav", y)
    out = tmp_path / "out"
    summary = extract(audio, out, config=ExtractConfig(model=model, frontend={"log": log}), jobs=1)
    failures = {record["source"]: record["error"] for record in read_jsonl(out / FAILURES_NAME)}
    assert failures == {
        "huge.wav": "samples out of range from 0.000 s: max |x| = 1.1e+24; float audio is expected in [-1, 1] "
        "(at most 2^31 is accepted)"
    }
    done = [record for record in read_jsonl(out / MANIFEST_NAME) if record["status"] == "ok"]
    assert sorted(record["source"] for record in done) == ["int16_scale.wav", "int32_scale.wav", "plain.wav"]
    for record in done:
        assert np.isfinite(load_features(out / record["output"]).mel).all()
    assert summary is not None


def _features(mel: np.ndarray, scores: np.ndarray | None = None) -> Features:
    spans = np.stack([np.arange(len(mel)), np.arange(1, len(mel) + 1)], axis=1)
    return Features(mel=mel, spans=spans, scores=scores, meta={"sr": SR, "source": "a/b.wav"})


@pytest.mark.parametrize("format", ["npz", "hdf5"])
@pytest.mark.parametrize("where", ["mel", "scores"])
def test_no_non_finite_features_are_ever_written(tmp_path, format, where):
    if format == "hdf5":
        pytest.importorskip("h5py")
    mel = np.zeros((6, 4), np.float32)
    scores = np.ones(6, np.float32)
    (mel if where == "mel" else scores)[3] = np.nan
    features = _features(mel, scores)
    path = tmp_path / "x.npz"
    with pytest.raises(ParameterError) as error:
        write_features(features, path, format=format)
    assert str(error.value) == (
        f"features of a/b.wav hold non-finite values: {4 if where == 'mel' else 1} NaN or Inf of "
        f"{mel.size if where == 'mel' else scores.size} in {where}, first at frame 3; refusing to write them"
    )
    with pytest.raises(ParameterError, match="non-finite"):
        features.save(path)
    assert list(tmp_path.iterdir()) == []


def test_finite_features_pass_the_last_check(tmp_path):
    # values whose sum overflows float32 are still finite
    features = _features(np.full((4, 3), 3e38, np.float32))
    require_finite(features)
    features.save(tmp_path / "x.npz")
    assert json.loads(json.dumps(load_features(tmp_path / "x.npz").meta))["source"] == "a/b.wav"
