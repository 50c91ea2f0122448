"""Tests of adares.frontend.MelFrontend: parity with librosa and kaldi-native-fbank, batches with
lengths, input validation, configuration round trip."""

from __future__ import annotations

import json

import kaldi_native_fbank as knf
import librosa
import numpy as np
import pytest
import torch

import adares
from adares.audio import MAX_ABS_SAMPLE
from adares.errors import ParameterError
from adares.frontend import MelFrontend


def _signal(n: int, sr: int, *, seed: int = 0) -> np.ndarray:
    """Noise plus a chirp sweeping 100 Hz to 0.45 sr: energy in every band, float64."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    duration = n / sr
    f0, f1 = 100.0, 0.45 * sr
    chirp = 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration)))
    return 0.1 * rng.standard_normal(n) + chirp


def _librosa_power(y: np.ndarray, fe: MelFrontend, *, torchaudio: bool = False) -> np.ndarray:
    """The reference: librosa's mel power with the front end's settings, [T, n_mels].

    ``torchaudio=True`` gives torchaudio.transforms.MelSpectrogram's defaults in librosa's terms
    (reflect padding, HTK mel points, triangles without norm): torchaudio builds the same
    triangles in Hz between HTK mel points as librosa does.
    """
    return librosa.feature.melspectrogram(
        y=y,
        sr=fe.sr,
        n_fft=fe.n_fft,
        hop_length=fe.hop_samples,
        win_length=fe.win_samples,
        window="hann",
        center=True,
        pad_mode="reflect" if torchaudio else "constant",
        power=2.0,
        n_mels=fe.n_mels,
        fmin=fe.fmin,
        fmax=fe.fmax,
        htk=torchaudio,
        norm=None if torchaudio else "slaney",
    ).T


# Power parity tolerance: rtol 1e-4 (float32 FFT and projection against librosa in float64),
# with an absolute floor of 1e-6 x the largest power for bins near zero.
RTOL = 1e-4
ATOL_FRACTION_OF_MAX = 1e-6

NOT_WHOLE = {("2.5ms", 44100): ("110 samples", "111 samples"), ("5ms", 44100): ("220 samples", "221 samples")}


@pytest.mark.parametrize("n_mels", [40, 64, 128])
@pytest.mark.parametrize("sr", [16000, 44100, 48000])
@pytest.mark.parametrize("hop", ["2.5ms", "5ms", "10ms"])
def test_power_matches_librosa(hop, sr, n_mels):
    if (hop, sr) in NOT_WHOLE:
        with pytest.raises(ParameterError) as info:
            MelFrontend(sr=sr, hop=hop, win="20ms", n_mels=n_mels)
        message = str(info.value)
        for working in NOT_WHOLE[hop, sr]:
            assert working in message, message
        return
    fe = MelFrontend(sr=sr, hop=hop, win="20ms", n_mels=n_mels, log="none")
    y = _signal(sr // 2, sr)
    expected = _librosa_power(y, fe)
    power, frames = fe.power(torch.from_numpy(y).float())
    assert power.shape == (1, *expected.shape)
    assert power.dtype == torch.float32
    assert frames.tolist() == [expected.shape[0]] == [fe.num_frames(y.size)]
    np.testing.assert_allclose(power[0].numpy(), expected, rtol=RTOL, atol=ATOL_FRACTION_OF_MAX * expected.max())


@pytest.mark.parametrize(
    "sr, hop, win, n_mels", [(16000, "5ms", "25ms", 80), (22050, 441, "40ms", 64), (48000, "2.5ms", "20ms", 96)]
)
def test_torchaudio_preset_matches_its_definition(sr, hop, win, n_mels):
    fe = MelFrontend(sr=sr, hop=hop, win=win, n_mels=n_mels, log="none", preset="torchaudio")
    y = _signal(sr // 2, sr, seed=11)
    expected = _librosa_power(y, fe, torchaudio=True)
    power, frames = fe.power(torch.from_numpy(y).float())
    assert power.shape == (1, *expected.shape)
    assert frames.tolist() == [expected.shape[0]] == [fe.num_frames(y.size)]
    np.testing.assert_allclose(power[0].numpy(), expected, rtol=RTOL, atol=ATOL_FRACTION_OF_MAX * expected.max())


def test_torchaudio_preset_rejects_input_too_short_to_reflect():
    fe = MelFrontend(preset="torchaudio", n_mels=64)
    assert fe(torch.zeros(257))[0].shape == (1, 4, 64)
    with pytest.raises(ParameterError, match="reflect padding"):
        fe(torch.zeros(256))
    with pytest.raises(ParameterError, match="batch item 0"):
        fe(torch.zeros(2, 1000), lengths=[100, 1000])


def test_default_configuration_is_the_design_default():
    fe = MelFrontend()
    assert (fe.sr, fe.hop_samples, fe.win_samples, fe.n_fft, fe.n_mels) == (16000, 80, 400, 512, 128)
    assert (fe.fmin, fe.fmax, fe.log, fe.preset, fe.center) == (0.0, 8000.0, "ln", "librosa", True)
    assert fe.frame_offset_samples == 0
    assert adares.MelFrontend is MelFrontend


def test_ln_and_db_match_librosa():
    y = _signal(8000, 16000)
    fe_ln = MelFrontend(log="ln")
    reference = _librosa_power(y, fe_ln)
    ln, _ = fe_ln(torch.from_numpy(y).float())
    # d ln(P) = dP / P: the power tolerance carries over as an absolute one on the log
    np.testing.assert_allclose(ln[0].numpy(), np.log(reference + 1e-6), atol=RTOL, rtol=0)
    db, _ = MelFrontend(log="db")(torch.from_numpy(y).float())
    expected_db = librosa.power_to_db(reference, ref=1.0, amin=1e-10, top_db=None)
    np.testing.assert_allclose(db[0].numpy(), expected_db, atol=10 / np.log(10) * RTOL, rtol=0)
    power, _ = MelFrontend(log="none")(torch.from_numpy(y).float())
    torch.testing.assert_close(fe_ln.log_mel(power), ln)


def _knf_fbank(y: np.ndarray, *, sr: int, shift_ms: float, length_ms: float, bins: int, low: float, high: float):
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = sr
    opts.frame_opts.frame_shift_ms = shift_ms
    opts.frame_opts.frame_length_ms = length_ms
    opts.mel_opts.num_bins = bins
    opts.mel_opts.low_freq = low
    opts.mel_opts.high_freq = high
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(sr, y.astype(np.float32).tolist())
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


@pytest.mark.parametrize(
    "sr, hop_ms, win_ms, n_mels, fmin, fmax",
    [
        (16000, 10, 25, 80, None, None),  # Kaldi's usual setting with the preset's defaults
        (16000, 5, 25, 40, 20.0, None),
        (8000, 5, 20, 23, 64.0, 3800.0),
        (24000, 2, 30, 64, 0.0, 10000.0),
    ],
)
def test_kaldi_preset_matches_kaldi_native_fbank(sr, hop_ms, win_ms, n_mels, fmin, fmax):
    y = _signal(sr // 2, sr, seed=3).astype(np.float32)
    fe = MelFrontend(sr=sr, hop=f"{hop_ms}ms", win=f"{win_ms}ms", n_mels=n_mels, fmin=fmin, fmax=fmax, preset="kaldi")
    expected = _knf_fbank(
        y, sr=sr, shift_ms=hop_ms, length_ms=win_ms, bins=n_mels, low=fe.fmin, high=0.0 if fmax is None else fmax
    )
    got, frames = fe(y)
    assert got.shape == (1, *expected.shape)
    assert frames.tolist() == [expected.shape[0]] == [fe.num_frames(y.size)]
    np.testing.assert_allclose(got[0].numpy(), expected, atol=1e-3, rtol=0)


def test_kaldi_preset_defaults():
    fe = MelFrontend(preset="kaldi")
    assert (fe.n_mels, fe.fmin, fe.fmax, fe.n_fft, fe.center) == (80, 20.0, 8000.0, 512, False)
    assert fe.frame_offset_samples == 200
    assert fe.frame_center(3) == 200 + 3 * 80
    assert fe.num_frames(399) == 0 and fe.num_frames(400) == 1 and fe.num_frames(480) == 2


def test_kaldi_preset_rejects_input_shorter_than_a_window():
    fe = MelFrontend(preset="kaldi")
    with pytest.raises(ParameterError, match="shorter than one window"):
        fe(torch.zeros(399))
    with pytest.raises(ParameterError, match="batch item 1"):
        fe(torch.zeros(2, 1000), lengths=[1000, 300])


@pytest.mark.parametrize("preset", ["librosa", "torchaudio", "kaldi"])
@pytest.mark.parametrize("log", ["ln", "db"])
def test_padded_batch_equals_items_alone(preset, log):
    lengths = [8000, 5333, 401, 7999]
    n = max(lengths)
    rng = np.random.default_rng(7)
    batch = rng.uniform(-1, 1, size=(len(lengths), n)).astype(np.float32)  # garbage past each length
    fe = MelFrontend(preset=preset, log=log, n_mels=64)
    features, frames = fe(torch.from_numpy(batch), lengths=torch.tensor(lengths))
    power, _ = fe.power(torch.from_numpy(batch), lengths=torch.tensor(lengths))
    assert features.shape == (len(lengths), fe.num_frames(n), fe.n_mels)
    assert frames.dtype == torch.int64
    assert frames.tolist() == [fe.num_frames(length) for length in lengths]
    for i, length in enumerate(lengths):
        alone, alone_frames = fe(torch.from_numpy(batch[i, :length]))
        count = int(alone_frames[0])
        assert count == frames[i]
        torch.testing.assert_close(features[i, :count], alone[0], rtol=1e-5, atol=1e-5)
        assert torch.all(power[i, count:] == 0), "frames past an item's count are zero power"
        torch.testing.assert_close(features[i, count:], fe.log_mel(torch.zeros_like(features[i, count:])))


def test_full_lengths_equal_no_lengths():
    batch = torch.from_numpy(np.stack([_signal(4000, 16000, seed=s) for s in range(2)])).float()
    fe = MelFrontend()
    with_lengths, frames = fe(batch, lengths=[4000, 4000])
    without, frames_without = fe(batch)
    torch.testing.assert_close(with_lengths, without, rtol=0, atol=0)
    assert frames.tolist() == frames_without.tolist() == [51, 51]


def test_input_forms_agree():
    y64 = _signal(4000, 16000)
    fe = MelFrontend()
    reference, _ = fe(torch.from_numpy(y64).float())
    assert reference.shape == (1, 51, 128) and reference.dtype == torch.float32
    for form in (y64, y64.astype(np.float32), torch.from_numpy(y64), y64[None, :], y64[::-1].copy()[::-1]):
        got, frames = fe(form)
        assert got.shape == (1, 51, 128) and got.dtype == torch.float32
        torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)
        assert frames.tolist() == [51]


def test_double_module_computes_in_float64():
    y = _signal(4000, 16000)
    fe = MelFrontend(log="none").double()
    power, _ = fe.power(y)
    assert power.dtype == torch.float64
    # librosa's melspectrogram casts its filterbank to float32; build the float64 reference by hand
    spectrum = librosa.stft(
        y, n_fft=fe.n_fft, hop_length=fe.hop_samples, win_length=fe.win_samples, center=True, pad_mode="constant"
    )
    expected = (np.abs(spectrum) ** 2).T @ librosa.filters.mel(
        sr=fe.sr, n_fft=fe.n_fft, n_mels=fe.n_mels, dtype=np.float64
    ).T
    np.testing.assert_allclose(power[0].numpy(), expected, rtol=1e-9, atol=1e-12 * expected.max())


def test_gradients_reach_the_waveform():
    y = torch.from_numpy(_signal(2000, 16000)).float().requires_grad_()
    for preset in ("librosa", "kaldi"):
        features, _ = MelFrontend(preset=preset)(y)
        (grad,) = torch.autograd.grad(features.sum(), y)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(
    "waveform, lengths, match",
    [
        (np.zeros(1000, dtype=np.int16), None, "floating-point"),
        (torch.zeros(1000, dtype=torch.int32), None, "floating-point"),
        (torch.zeros(2, 2, 1000), None, r"\[N\] or \[B, N\]"),
        (torch.zeros(()), None, r"\[N\] or \[B, N\]"),
        ([0.0] * 1000, None, "torch.Tensor or numpy array"),
        (torch.tensor([0.0, float("nan"), 0.0]), None, "NaN or infinite"),
        (torch.zeros(2, 1000), [1000], r"shape \[2\]"),
        (torch.zeros(2, 1000), [1000, 1001], r"\[0, 1000\]"),
        (torch.zeros(2, 1000), [-1, 1000], r"\[0, 1000\]"),
        (torch.zeros(2, 1000), [1000.0, 500.0], "integers"),
        (torch.zeros(0, 1000), None, "empty"),
    ],
)
def test_bad_input_raises_parameter_error(waveform, lengths, match):
    with pytest.raises(ParameterError, match=match):
        MelFrontend()(waveform, lengths)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"preset": "htk"}, "unknown front-end preset"),
        ({"log": "log10"}, "unknown log mode"),
        ({"fmax": 8001.0}, "Nyquist"),
        ({"fmin": 5000.0, "fmax": 4000.0}, "below fmax"),
        ({"n_mels": 0}, "n_mels"),
        ({"n_fft": 256}, "n_fft"),
        ({"n_fft": 511}, "even"),
        ({"hop": "3.3ms"}, "52 samples"),
        ({"win": "0ms"}, "positive"),
        ({"sr": 0}, "sampling rate"),
        ({"eps": 0.0}, "eps"),
        ({"fmax": "8k"}, "fmax must be a finite number"),
        ({"fmin": float("nan")}, "fmin must be a finite number"),
        ({"preset": "kaldi", "n_mels": 128}, "covers no FFT bin"),
    ],
)
def test_bad_configuration_raises_parameter_error(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        MelFrontend(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"preset": "kaldi", "hop": "10ms"},
        {"preset": "torchaudio", "n_mels": 40, "fmax": 7600.0},
        {"sr": 48000, "hop": "2.5ms", "win": "20ms", "n_mels": 64, "fmin": 50.0, "fmax": 20000.0, "log": "db"},
        {"n_fft": 1024, "log": "none", "eps": 1e-3},
    ],
)
def test_config_round_trips_through_json(kwargs):
    fe = MelFrontend(**kwargs)
    config = json.loads(json.dumps(fe.config()))
    assert config == fe.config()
    rebuilt = MelFrontend.from_config(config)
    assert rebuilt.config() == fe.config()
    y = torch.from_numpy(_signal(fe.sr // 10, fe.sr)).float()
    torch.testing.assert_close(rebuilt(y)[0], fe(y)[0], rtol=0, atol=0)


def test_config_records_every_convention():
    config = MelFrontend(preset="kaldi").config()
    for key, value in {
        "preset": "kaldi",
        "center": False,
        "window": "povey",
        "mel_scale": "kaldi",
        "mel_norm": None,
        "log": "ln",
        "eps_mode": "clamp",
        "preemphasis": 0.97,
        "remove_dc_offset": True,
        "frame_offset_samples": 200,
    }.items():
        assert config[key] == value, key


@pytest.mark.parametrize(
    "change, match",
    [
        ({"window": "hamming"}, "does not match"),
        ({"surprise": 1}, "unknown keys"),
        ({"hop_samples": None}, "hop"),
    ],
)
def test_from_config_rejects_foreign_configs(change, match):
    config = MelFrontend().config() | change
    with pytest.raises(ParameterError, match=match):
        MelFrontend.from_config(config)
    incomplete = MelFrontend().config()
    del incomplete["sr"]
    with pytest.raises(ParameterError, match="lacks"):
        MelFrontend.from_config(incomplete)


@pytest.mark.parametrize("preset", ["librosa", "torchaudio", "kaldi"])
def test_num_frames_matches_output(preset):
    fe = MelFrontend(preset=preset, n_mels=64)
    for n in (400, 401, 479, 480, 481, 1600, 2001):
        features, frames = fe(torch.zeros(n))
        assert features.shape[1] == frames.item() == fe.num_frames(n)


def test_module_follows_to():
    fe = MelFrontend().to("cpu")
    assert fe.window.device.type == fe.fbank.device.type == "cpu"
    assert "window" not in fe.state_dict() and "fbank" not in fe.state_dict()


@pytest.mark.parametrize("scale", [1e24, 3e38, -1e30])
def test_samples_beyond_the_limit_are_refused_by_name(scale):
    # float32 power would overflow to inf, and its log to inf or NaN
    y = torch.zeros(2000)
    y[700] = scale
    with pytest.raises(ParameterError, match=r"samples out of range: max \|x\| = .*expected in \[-1, 1\]"):
        MelFrontend()(y)


@pytest.mark.parametrize("preset", ["librosa", "torchaudio", "kaldi"])
@pytest.mark.parametrize("log", ["ln", "db"])
@pytest.mark.parametrize("scale", [1e3, 32768.0, MAX_ABS_SAMPLE, 2 * MAX_ABS_SAMPLE])
def test_large_samples_up_to_the_limit_equal_a_float64_reference(preset, log, scale):
    # float WAVs written at an integer PCM scale: float32 features equal, in the log domain, the
    # float64 front end's, and both equal the unscaled log-mel shifted by the scale's log
    y = _signal(4000, 16000)
    y = y / np.abs(y).max() * scale
    fe = MelFrontend(preset=preset, log=log, n_mels=64)  # 128 leaves an HTK band empty
    features = fe(torch.from_numpy(y.astype(np.float32)))[0][0].numpy()
    reference = MelFrontend(preset=preset, log=log, n_mels=64).double()(torch.from_numpy(y))[0][0].numpy()
    assert np.isfinite(features).all()
    unit = 1.0 if log == "ln" else 10.0 / np.log(10.0)  # nats or dB per natural log
    loud = reference > reference.max() - 15 * unit  # bins above float32's rounding floor
    assert np.abs(features - reference)[loud].max() < 1e-3 * unit
    # ln(s^2 P + eps) = 2 ln s + ln(P + eps / s^2), and the same for Kaldi's floor
    eps = fe.eps / scale**2 if log == "ln" else None
    unscaled = (
        MelFrontend(preset=preset, log=log, n_mels=64, eps=eps).double()(torch.from_numpy(y / scale))[0][0].numpy()
    )
    shifted = unscaled + 2 * np.log(scale) * unit
    assert np.abs(reference - shifted)[loud].max() < 1e-6 * unit
