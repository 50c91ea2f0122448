"""Tests of adares.functional.mel: filterbanks, power spectrograms, mel projection, log.

References are librosa and kaldi-native-fbank where they define the convention, and slow
frame-by-frame numpy loops written here otherwise.
"""

from __future__ import annotations

import kaldi_native_fbank as knf
import librosa
import numpy as np
import pytest
import torch

from adares.errors import ParameterError
from adares.functional import mel as fmel

RNG_SEED = 1234


def _signal(n: int, sr: int, *, seed: int = RNG_SEED) -> np.ndarray:
    """Noise plus a rising chirp: energy in every bin, with structure."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    duration = n / sr
    f0, f1 = 100.0, 0.45 * sr  # sweeps almost to Nyquist
    chirp = 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration)))
    return 0.1 * rng.standard_normal(n) + chirp


# --------------------------------------------------------------------------------------------
# mel scales and filterbanks


@pytest.mark.parametrize("scale", ["slaney", "htk"])
def test_hz_to_mel_matches_librosa(scale):
    hz = np.array([0.0, 20.0, 440.0, 999.0, 1000.0, 1001.0, 4000.0, 8000.0, 22050.0])
    got = fmel.hz_to_mel(torch.from_numpy(hz), scale=scale).numpy()
    np.testing.assert_allclose(got, librosa.hz_to_mel(hz, htk=scale == "htk"), rtol=1e-12, atol=1e-12)
    back = fmel.mel_to_hz(torch.from_numpy(got), scale=scale).numpy()
    np.testing.assert_allclose(back, hz, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(back, librosa.mel_to_hz(got, htk=scale == "htk"), rtol=1e-10, atol=1e-9)


def test_kaldi_mel_scale_is_1127_ln():
    hz = torch.tensor([0.0, 20.0, 700.0, 8000.0], dtype=torch.float64)
    expected = 1127.0 * np.log(1.0 + hz.numpy() / 700.0)
    np.testing.assert_allclose(fmel.hz_to_mel(hz, scale="kaldi").numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(fmel.mel_to_hz(fmel.hz_to_mel(hz, scale="kaldi"), scale="kaldi"), hz, atol=1e-9)


@pytest.mark.parametrize(
    "sr, n_fft, n_mels, fmin, fmax, scale, norm",
    [
        (16000, 512, 128, 0.0, None, "slaney", "slaney"),
        (16000, 512, 40, 0.0, None, "slaney", None),
        (22050, 1024, 64, 50.0, 8000.0, "slaney", "slaney"),
        (44100, 2048, 40, 0.0, None, "htk", None),
        (8000, 256, 40, 100.0, 3900.0, "htk", "slaney"),
        (48000, 2048, 128, 0.0, 24000.0, "htk", "slaney"),
    ],
)
def test_mel_filterbank_equals_librosa(sr, n_fft, n_mels, fmin, fmax, scale, norm):
    expected = librosa.filters.mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=scale == "htk", norm=norm, dtype=np.float64
    ).T
    got = fmel.mel_filterbank(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, scale=scale, norm=norm, dtype=torch.float64
    )
    assert got.shape == (n_fft // 2 + 1, n_mels)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12 * expected.max())
    as_float = fmel.mel_filterbank(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, scale=scale, norm=norm)
    assert as_float.dtype == torch.float32
    np.testing.assert_allclose(as_float.numpy(), expected, rtol=1e-6, atol=1e-9)


def test_mel_filterbank_warns_on_empty_bands():
    with pytest.warns(UserWarning, match="cover no FFT bin"):
        fmel.mel_filterbank(sr=16000, n_fft=128, n_mels=128)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fmax": 9000.0},
        {"fmin": -1.0},
        {"fmin": 4000.0, "fmax": 4000.0},
        {"n_mels": 0},
        {"n_fft": 1},
        {"sr": 0},
        {"scale": "bark"},
        {"norm": 2},
    ],
)
def test_mel_filterbank_rejects_bad_arguments(kwargs):
    args = {"sr": 16000, "n_fft": 512, "n_mels": 40} | kwargs
    with pytest.raises(ParameterError):
        fmel.mel_filterbank(**args)


@pytest.mark.parametrize(
    "sr, frame_ms, num_bins, low, high",
    [(16000, 25, 23, 20.0, 0.0), (16000, 25, 80, 20.0, 0.0), (8000, 20, 40, 64.0, 3800.0), (22050, 30, 64, 0.0, 0.0)],
)
def test_kaldi_mel_filterbank_equals_kaldi_native_fbank(sr, frame_ms, num_bins, low, high):
    frame_opts = knf.FrameExtractionOptions()
    frame_opts.samp_freq = sr
    frame_opts.frame_length_ms = frame_ms
    mel_opts = knf.MelBanksOptions(num_bins=num_bins, low_freq=low, high_freq=high)
    expected = np.array(knf.MelBanks(mel_opts, frame_opts, 1.0).get_matrix(), dtype=np.float64).T
    n_fft = 2 * (expected.shape[0] - 1)
    got = fmel.kaldi_mel_filterbank(
        sr=sr, n_fft=n_fft, n_mels=num_bins, fmin=low, fmax=high or None, dtype=torch.float64
    )
    assert got.shape == expected.shape
    # kaldi-native-fbank computes the weights in float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)
    assert torch.all(got[-1] == 0), "Kaldi gives the Nyquist bin no weight"


def test_kaldi_mel_filterbank_rejects_empty_bands():
    with pytest.raises(ParameterError, match="covers no FFT bin"):
        fmel.kaldi_mel_filterbank(sr=16000, n_fft=512, n_mels=128)


def test_povey_window_equals_kaldi_native_fbank():
    opts = knf.FrameExtractionOptions()
    expected = np.array(knf.FeatureWindowFunction(opts).window)
    got = fmel.povey_window(expected.size, dtype=torch.float64).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(ParameterError):
        fmel.povey_window(1)


# --------------------------------------------------------------------------------------------
# power spectrograms


def _reference_power(
    y: np.ndarray, *, n_fft: int, hop: int, window: np.ndarray, center: bool, pad_mode: str = "constant"
) -> np.ndarray:
    """Frame by frame, the obvious way: pad, cut, window, FFT, square."""
    win = window.size
    if center:
        padded_window = np.zeros(n_fft)
        start = (n_fft - win) // 2
        padded_window[start : start + win] = window
        padded = np.pad(y, n_fft // 2, mode=pad_mode)
        count = 1 + (padded.size - n_fft) // hop  # every whole frame of the padded signal
        frames = [padded[t * hop : t * hop + n_fft] * padded_window for t in range(count)]
    else:
        count = max(0, 1 + (y.size - win) // hop)
        frames = [np.concatenate([y[t * hop : t * hop + win] * window, np.zeros(n_fft - win)]) for t in range(count)]
    if not frames:
        return np.zeros((0, n_fft // 2 + 1))
    return np.abs(np.fft.rfft(np.stack(frames), axis=-1)) ** 2


@pytest.mark.parametrize("center, pad_mode", [(True, "constant"), (True, "reflect"), (False, "constant")])
@pytest.mark.parametrize(
    "n, n_fft, win, hop",
    [(4000, 512, 400, 80), (4000, 256, 256, 40), (4000, 1024, 882, 441), (4000, 255, 200, 33), (3993, 255, 200, 33)],
)
def test_power_spectrogram_matches_frame_loop(center, pad_mode, n, n_fft, win, hop):
    y = _signal(n, 16000)
    window = np.hanning(win + 1)[:-1]
    expected = _reference_power(y, n_fft=n_fft, hop=hop, window=window, center=center, pad_mode=pad_mode)
    got = fmel.power_spectrogram(
        torch.from_numpy(y),
        n_fft=n_fft,
        hop_samples=hop,
        window=torch.from_numpy(window),
        center=center,
        pad_mode=pad_mode,
    )
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12 * expected.max())


def test_power_spectrogram_keeps_leading_dimensions():
    y = torch.from_numpy(np.stack([[_signal(3000, 16000, seed=s) for s in range(3)] for _ in range(2)]))
    window = torch.hann_window(400, dtype=torch.float64)
    got = fmel.power_spectrogram(y, n_fft=512, hop_samples=80, window=window)
    assert got.shape == (2, 3, 1 + 3000 // 80, 257)
    single = fmel.power_spectrogram(y[1, 2], n_fft=512, hop_samples=80, window=window)
    torch.testing.assert_close(got[1, 2], single)


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_power_spectrogram_treats_samples_past_lengths_as_absent(pad_mode):
    lengths = [3000, 1234, 2999, 257]
    batch = np.random.default_rng(5).uniform(-1, 1, size=(len(lengths), 3000))  # garbage past each length
    window = torch.hann_window(400, dtype=torch.float64)
    got = fmel.power_spectrogram(
        torch.from_numpy(batch),
        n_fft=512,
        hop_samples=80,
        window=window,
        pad_mode=pad_mode,
        lengths=torch.tensor(lengths),
    )
    for i, length in enumerate(lengths):
        expected = _reference_power(
            batch[i, :length], n_fft=512, hop=80, window=window.numpy(), center=True, pad_mode=pad_mode
        )
        np.testing.assert_allclose(got[i, : len(expected)].numpy(), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pad_mode": "edge"}, "pad_mode"),
        ({"pad_mode": "reflect", "waveform": torch.zeros(2, 256)}, "reflect padding needs"),
        ({"pad_mode": "reflect", "lengths": torch.tensor([1000, 256])}, "reflect padding needs"),
        ({"lengths": torch.tensor([1000])}, "shape"),
        ({"lengths": torch.tensor([1000, 1001])}, r"\[0, 1000\]"),
        ({"lengths": torch.tensor([1000.0, 10.0])}, "integer"),
    ],
)
def test_centred_padding_rejects_bad_arguments(kwargs, match):
    args = {"waveform": torch.zeros(2, 1000), "n_fft": 512, "hop_samples": 80, "window": torch.hann_window(400)}
    with pytest.raises(ParameterError, match=match):
        fmel.power_spectrogram(**(args | kwargs))


def test_power_spectrogram_is_differentiable():
    y = torch.from_numpy(_signal(40, 8000)).requires_grad_()
    window = torch.hann_window(12, dtype=torch.float64)
    for center in (True, False):
        assert torch.autograd.gradcheck(
            lambda x, c=center: fmel.power_spectrogram(x, n_fft=16, hop_samples=8, window=window, center=c),
            (y,),
            fast_mode=True,
        )


def _reference_kaldi_power(y: np.ndarray, *, n_fft: int, hop: int, window: np.ndarray, preemph: float) -> np.ndarray:
    win = window.size
    rows = []
    for t in range(1 + (y.size - win) // hop):
        frame = y[t * hop : t * hop + win].copy()
        frame -= frame.mean()
        for i in range(win - 1, 0, -1):  # Kaldi's in-place loop, last sample first
            frame[i] -= preemph * frame[i - 1]
        frame[0] -= preemph * frame[0]
        rows.append(np.abs(np.fft.rfft(frame * window, n=n_fft)) ** 2)
    return np.stack(rows)


def test_kaldi_power_spectrogram_matches_frame_loop():
    y = _signal(3000, 16000)
    window = fmel.povey_window(400, dtype=torch.float64)
    expected = _reference_kaldi_power(y, n_fft=512, hop=160, window=window.numpy(), preemph=0.97)
    got = fmel.kaldi_power_spectrogram(torch.from_numpy(y), n_fft=512, hop_samples=160, window=window)
    assert got.shape == expected.shape == (1 + (3000 - 400) // 160, 257)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12 * expected.max())


def test_kaldi_power_spectrogram_of_short_signal_has_no_frames():
    window = fmel.povey_window(400)
    got = fmel.kaldi_power_spectrogram(torch.zeros(2, 399), n_fft=512, hop_samples=160, window=window)
    assert got.shape == (2, 0, 257)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"waveform": torch.zeros(100, dtype=torch.int16)},
        {"n_fft": 256},
        {"hop_samples": 0},
        {"window": torch.ones(2, 2)},
    ],
)
def test_power_spectrogram_rejects_bad_arguments(kwargs):
    args = {"waveform": torch.zeros(1000), "n_fft": 512, "hop_samples": 80, "window": torch.hann_window(400)}
    with pytest.raises(ParameterError):
        fmel.power_spectrogram(**(args | kwargs))


# --------------------------------------------------------------------------------------------
# mel projection


@pytest.mark.parametrize(
    "fbank",
    [
        fmel.mel_filterbank(sr=16000, n_fft=512, n_mels=128),
        fmel.mel_filterbank(sr=48000, n_fft=2048, n_mels=128, scale="htk", norm=None),
        fmel.mel_filterbank(sr=16000, n_fft=512, n_mels=64, fmin=300.0, fmax=6000.0),
        fmel.kaldi_mel_filterbank(sr=16000, n_fft=512, n_mels=80),
    ],
    ids=["slaney128", "htk128-48k", "band-limited64", "kaldi80"],
)
def test_banded_projection_equals_dense(fbank):
    blocks = fmel.filterbank_blocks(fbank)
    assert blocks, "a mel filterbank this size should be worth blocking"
    # the blocks cover every band once, in order, and leave out only zero weights
    assert [m for b in blocks for m in range(b[2], b[3])] == list(range(fbank.shape[1]))
    covered = torch.zeros_like(fbank, dtype=torch.bool)
    for b0, b1, m0, m1 in blocks:
        covered[b0:b1, m0:m1] = True
    assert torch.all(fbank[~covered] == 0)

    power = torch.rand(3, 50, fbank.shape[0], generator=torch.Generator().manual_seed(0)) ** 4
    dense = power.double() @ fbank.double()
    banded = fmel.apply_filterbank(power, fbank, blocks=blocks)
    assert banded.shape == (3, 50, fbank.shape[1])
    torch.testing.assert_close(banded.double(), dense, rtol=1e-5, atol=1e-7 * float(dense.max()))
    torch.testing.assert_close(fmel.apply_filterbank(power, fbank), banded, rtol=1e-5, atol=1e-7 * float(dense.max()))


def test_dense_filterbank_is_not_blocked():
    dense = torch.rand(257, 64) + 0.1
    assert fmel.filterbank_blocks(dense) == ()


def test_apply_filterbank_rejects_mismatched_bins():
    with pytest.raises(ParameterError, match="frequency bins"):
        fmel.apply_filterbank(torch.zeros(10, 129), fmel.mel_filterbank(sr=16000, n_fft=512, n_mels=40))


@pytest.mark.parametrize("chunk_frames", [16, 100, 100_000, None])
@pytest.mark.parametrize("framing", ["centred", "uncentred", "kaldi"])
def test_chunked_mel_power_equals_whole_spectrogram(framing, chunk_frames):
    y = torch.from_numpy(np.stack([_signal(3000, 16000, seed=s) for s in range(3)])).float()
    window = torch.hann_window(400) if framing != "kaldi" else fmel.povey_window(400)
    fbank = (
        fmel.mel_filterbank(sr=16000, n_fft=512, n_mels=64)
        if framing != "kaldi"
        else fmel.kaldi_mel_filterbank(sr=16000, n_fft=512, n_mels=64)
    )
    blocks = fmel.filterbank_blocks(fbank)
    if framing == "kaldi":
        whole = fmel.kaldi_power_spectrogram(y, n_fft=512, hop_samples=80, window=window)
        got = fmel.kaldi_mel_power(
            y, fbank=fbank, n_fft=512, hop_samples=80, window=window, blocks=blocks, chunk_frames=chunk_frames
        )
    else:
        center = framing == "centred"
        whole = fmel.power_spectrogram(y, n_fft=512, hop_samples=80, window=window, center=center)
        got = fmel.mel_power(
            y,
            fbank=fbank,
            n_fft=512,
            hop_samples=80,
            window=window,
            center=center,
            blocks=blocks,
            chunk_frames=chunk_frames,
        )
    expected = whole.double() @ fbank.double()
    assert got.shape == expected.shape
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-7 * float(expected.max()))


def test_chunked_mel_power_keeps_leading_dimensions_and_gradients():
    y = torch.from_numpy(_signal(2000, 16000)).reshape(2, 1, 1000).requires_grad_()
    window = torch.hann_window(128, dtype=torch.float64)
    fbank = fmel.mel_filterbank(sr=16000, n_fft=128, n_mels=16, dtype=torch.float64)
    mel = fmel.mel_power(y, fbank=fbank, n_fft=128, hop_samples=32, window=window, chunk_frames=5)
    assert mel.shape == (2, 1, 1 + 1000 // 32, 16)
    (grad,) = torch.autograd.grad(mel.sum(), y)
    (expected,) = torch.autograd.grad(
        (fmel.power_spectrogram(y, n_fft=128, hop_samples=32, window=window) @ fbank).sum(), y
    )
    torch.testing.assert_close(grad, expected)


def test_mel_power_rejects_bad_chunk_size():
    fbank = fmel.mel_filterbank(sr=16000, n_fft=512, n_mels=40)
    with pytest.raises(ParameterError, match="chunk_frames"):
        fmel.mel_power(
            torch.zeros(4000), fbank=fbank, n_fft=512, hop_samples=80, window=torch.hann_window(400), chunk_frames=0
        )


# --------------------------------------------------------------------------------------------
# log compression


def _powers() -> np.ndarray:
    rng = np.random.default_rng(RNG_SEED)
    return np.concatenate([[0.0, 1e-12, 1e-10, 1e-7, 1e-6], 10.0 ** rng.uniform(-8, 4, 200)])


def test_log_compress_ln():
    p = _powers()
    np.testing.assert_allclose(fmel.apply_log(torch.from_numpy(p)).numpy(), np.log(p + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(fmel.apply_log(torch.from_numpy(p), eps=1e-3).numpy(), np.log(p + 1e-3), rtol=1e-12)
    floor = fmel.FLOAT32_EPS
    np.testing.assert_allclose(
        fmel.apply_log(torch.from_numpy(p), eps=floor, eps_mode="clamp").numpy(),
        np.log(np.maximum(p, floor)),
        rtol=1e-12,
    )


def test_log_compress_db_equals_librosa_power_to_db():
    p = _powers()
    expected = librosa.power_to_db(p, ref=1.0, amin=1e-10, top_db=None)
    np.testing.assert_allclose(fmel.apply_log(torch.from_numpy(p), mode="db").numpy(), expected, rtol=1e-12)


def test_log_compress_none_is_identity():
    p = torch.from_numpy(_powers())
    assert fmel.apply_log(p, mode="none") is p


@pytest.mark.parametrize(
    "kwargs", [{"mode": "log10"}, {"eps": 0.0}, {"eps": -1.0}, {"eps_mode": "max"}, {"mode": "db", "amin": 0.0}]
)
def test_log_compress_rejects_bad_arguments(kwargs):
    with pytest.raises(ParameterError):
        fmel.apply_log(torch.ones(3), **kwargs)
