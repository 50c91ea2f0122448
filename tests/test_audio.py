import numpy as np
import pytest
import soundfile as sf
import soxr

from adares import audio
from adares.audio import info, load, stream
from adares.errors import AdaresError, AudioDecodeError, ParameterError

from .conftest import synth

SR = 16000


def tone(seconds=0.5, sr=SR, freq=440.0, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    y = 0.5 * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        y = np.stack([y * (c + 1) / channels for c in range(channels)], axis=1)
    return y.astype(np.float32)


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype", "atol"),
    [
        (".wav", "WAV", "PCM_U8", 1 / 64),
        (".wav", "WAV", "PCM_16", 1e-4),
        (".wav", "WAV", "PCM_24", 1e-6),
        (".wav", "WAV", "PCM_32", 1e-6),
        (".wav", "WAV", "FLOAT", 0),
        (".flac", "FLAC", "PCM_16", 1e-4),
        (".aiff", "AIFF", "PCM_16", 1e-4),
    ],
)
def test_lossless_formats_roundtrip(tmp_path, suffix, fmt, subtype, atol):
    y = tone()
    path = tmp_path / f"x{suffix}"
    sf.write(path, y, SR, format=fmt, subtype=subtype)
    samples, rate = load(path, sr=SR)
    assert rate == SR and samples.dtype == np.float32 and samples.shape == y.shape
    np.testing.assert_allclose(samples, y, atol=atol)


@pytest.mark.parametrize(("suffix", "fmt", "subtype"), [(".ogg", "OGG", "VORBIS"), (".mp3", "MP3", "MPEG_LAYER_III")])
def test_lossy_formats_decode(tmp_path, suffix, fmt, subtype):
    y = tone(seconds=1.0)
    path = tmp_path / f"x{suffix}"
    sf.write(path, y, SR, format=fmt, subtype=subtype)
    samples, rate = load(path, sr=SR)
    assert rate == SR and samples.dtype == np.float32
    # lossy codecs add delay/padding; the tone's energy must survive
    assert abs(len(samples) - len(y)) < 0.1 * SR
    assert np.sqrt(np.mean(samples**2)) == pytest.approx(np.sqrt(np.mean(y**2)), rel=0.1)


def test_resamples_only_when_rates_differ(tmp_path, monkeypatch):
    path = tmp_path / "x.wav"
    sf.write(path, tone(sr=44100), 44100, subtype="FLOAT")
    samples, rate = load(path, sr=SR)
    assert rate == SR and len(samples) == pytest.approx(0.5 * SR, abs=2)
    # a 440 Hz tone stays a 440 Hz tone: compare away from the edges
    expected = tone(sr=SR)
    np.testing.assert_allclose(samples[200:-200], expected[200:-200], atol=2e-3)

    def refuse(*args, **kwargs):
        raise AssertionError("resampler used although the rates are equal")

    monkeypatch.setattr(soxr, "ResampleStream", refuse)
    sf.write(path, tone(), SR, subtype="FLOAT")
    samples, _ = load(path, sr=SR)
    np.testing.assert_array_equal(samples, tone())


def test_native_rate_with_sr_none(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, tone(sr=22050), 22050)
    samples, rate = load(path, sr=None)
    assert rate == 22050 and len(samples) == 11025


def test_streamed_resampling_matches_one_shot(tmp_path, monkeypatch):
    # many small blocks must give the same signal as resampling the whole file at once
    monkeypatch.setattr(audio, "_BLOCK_FRAMES", 1000)
    rng = np.random.default_rng(0)
    y = (0.1 * rng.standard_normal(48000 + 123)).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, y, 48000, subtype="FLOAT")
    samples, _ = load(path, sr=SR)
    whole = soxr.resample(y, 48000, SR, quality="HQ")
    assert len(samples) == len(whole)
    np.testing.assert_allclose(samples, whole, atol=1e-5)


def test_channel_policy(tmp_path):
    stereo = tone(channels=2)
    path = tmp_path / "x.wav"
    sf.write(path, stereo, SR, subtype="FLOAT")
    mixed, _ = load(path)
    np.testing.assert_allclose(mixed, stereo.mean(axis=1), atol=1e-7)
    right, _ = load(path, channel=1)
    np.testing.assert_allclose(right, stereo[:, 1])
    both, _ = load(path, mono=False)
    assert both.shape == (2, len(stereo))
    np.testing.assert_allclose(both.T, stereo)
    with pytest.raises(AudioDecodeError, match="channel 2"):
        load(path, channel=2)


def test_info(tmp_path):
    path = tmp_path / "x.flac"
    sf.write(path, tone(channels=2), SR)
    header = info(path)
    assert (header.sr, header.frames, header.channels, header.format) == (SR, 8000, 2, "FLAC")
    assert header.duration == pytest.approx(0.5)


def expect_failure(path, reason):
    with pytest.raises(AudioDecodeError) as error:
        load(path)
    message = str(error.value)
    assert str(path) in message and reason in message
    assert "\n" not in message
    assert isinstance(error.value, AdaresError)
    return message


def test_missing_file(tmp_path):
    expect_failure(tmp_path / "nope.wav", "file not found")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    expect_failure(path, "empty file (0 bytes)")


def test_directory(tmp_path):
    (tmp_path / "dir.wav").mkdir()
    expect_failure(tmp_path / "dir.wav", "directory")


def test_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is a text file, not a recording\n" * 20)
    expect_failure(path, "not an audio file")


def test_truncated_wav(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, tone(seconds=2.0), SR, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: 44 + int(0.3 * SR) * 2])
    message = expect_failure(path, "truncated")
    assert "header says 2 s" in message and "0.3 s present" in message


def test_truncated_flac(tmp_path):
    path = tmp_path / "cut.flac"
    rng = np.random.default_rng(1)
    sf.write(path, (0.1 * rng.standard_normal(2 * SR)).astype(np.float32), SR)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 4])
    expect_failure(path, "truncated")


def test_zero_samples(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(0, np.float32), SR)
    expect_failure(path, "no audio samples")


def test_non_finite_samples(tmp_path):
    y = tone()
    y[4000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, y, SR, subtype="FLOAT")
    expect_failure(path, "non-finite samples (NaN or Inf) from 0.250 s")


def test_info_reports_bad_files(tmp_path):
    path = tmp_path / "notes.flac"
    path.write_text("nope")
    with pytest.raises(AudioDecodeError, match="not an audio file"):
        info(path)


@pytest.mark.parametrize("kwargs", [{"sr": 0}, {"sr": 16000.5}, {"channel": -1}, {"channel": "left"}])
def test_bad_parameters(tmp_path, kwargs):
    path = tmp_path / "x.wav"
    sf.write(path, tone(), SR)
    with pytest.raises(ParameterError):
        load(path, **kwargs)


# Committed real clips (tests/data): real decoders on real recordings.


def _peak_hz(samples, sr):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / sr), spectrum


def test_real_clip_44k1_stereo_resampled_and_mixed():
    from .conftest import DATA

    samples, rate = load(DATA / "notes_44k1_stereo.wav", sr=SR)
    assert rate == SR and len(samples) == 2 * SR
    freqs, spectrum = _peak_hz(samples[int(0.2 * SR) : int(1.6 * SR)], SR)

    def energy_near(hz):
        return spectrum[(freqs > hz - 8) & (freqs < hz + 8)].max()

    # the mixdown holds both notes; one channel alone would hold only its own
    floor = np.median(spectrum)
    assert energy_near(440.0) > 100 * floor and energy_near(659.26) > 100 * floor
    left, _ = load(DATA / "notes_44k1_stereo.wav", sr=SR, channel=0)
    freqs, spectrum = _peak_hz(left[int(0.2 * SR) : int(1.6 * SR)], SR)
    assert energy_near(440.0) > 30 * energy_near(659.26)


def test_real_keyword_flac_and_mp3_agree():
    from .conftest import DATA

    flac, _ = load(DATA / "keyword_yes_16k.flac")
    mp3, _ = load(DATA / "keyword_yes_16k.mp3")
    assert len(flac) == 16000 and abs(len(mp3) - len(flac)) < 1200
    n = min(len(flac), len(mp3))
    assert np.corrcoef(flac[:n], mp3[:n])[0, 1] > 0.95
    assert np.all(flac[:3900] == 0) and np.abs(flac[4000:10347]).max() > 0.05


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_a_segment_is_the_slice_of_the_whole_by_seeking(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    sf.write(path, synth(2.0), SR, subtype="PCM_16")
    whole, _ = load(path, sr=SR)
    part, _ = load(path, sr=SR, start=0.25, end=1.5)
    np.testing.assert_array_equal(part, whole[4000:24000])
    rest, _ = load(path, sr=SR, start=1.75)
    np.testing.assert_array_equal(rest, whole[28000:])
    count, chunks = stream(path, sr=SR, start=0.25, end=1.5, block_frames=999)
    assert count == 20000
    np.testing.assert_array_equal(np.concatenate(list(chunks())), part)


def test_a_segment_beyond_the_recording_is_a_named_failure(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, synth(1.0), SR)
    with pytest.raises(AudioDecodeError, match=r"segment ends at 1.500 s, after the recording's end \(1.000 s\)"):
        load(path, sr=SR, start=0.5, end=1.5)
    with pytest.raises(AudioDecodeError, match="segment starts at 2.000 s"):
        load(path, sr=SR, start=2.0)
    with pytest.raises(ParameterError, match="end must be"):
        load(path, sr=SR, start=0.5, end=0.5)
