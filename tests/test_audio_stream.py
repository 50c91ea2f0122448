"""adares.audio.stream: a long file's samples in blocks, equal to load's, with load's checks."""

import numpy as np
import pytest
import soundfile as sf

from adares.audio import load, stream
from adares.errors import AudioDecodeError, ParameterError

SR = 16000


def noise(frames, *, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    shape = (frames, channels) if channels > 1 else (frames,)
    return (0.3 * rng.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize(
    ("rate", "frames", "channels", "channel", "suffix"),
    [
        (16000, 50_000, 1, None, ".wav"),
        (44100, 123_457, 1, None, ".flac"),
        (48000, 96_001, 2, None, ".wav"),
        (22050, 70_001, 3, 2, ".flac"),
        (8000, 30_003, 1, None, ".wav"),
        (48000, 7, 1, None, ".wav"),
    ],
)
@pytest.mark.parametrize("block_frames", [4096, 1 << 18])
def test_stream_gives_the_samples_of_load(tmp_path, rate, frames, channels, channel, suffix, block_frames):
    path = tmp_path / f"x{suffix}"
    sf.write(path, noise(frames, channels=channels), rate, subtype="PCM_16")
    expected, _ = load(path, sr=SR, channel=channel)
    num_samples, chunks = stream(path, sr=SR, channel=channel, block_frames=block_frames)
    assert num_samples == len(expected)
    for _ in range(2):  # every pass reads the file again
        pieces = list(chunks())
        assert all(piece.dtype == np.float32 and piece.ndim == 1 for piece in pieces)
        assert np.array_equal(np.concatenate(pieces), expected)
    if block_frames == 4096 and frames > 3 * block_frames:
        assert len(pieces) > 2


def test_stream_refuses_what_the_header_shows(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, noise(20_000), SR, subtype="PCM_16")
    with pytest.raises(AudioDecodeError, match="channel 1 was requested"):
        stream(path, sr=SR, channel=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioDecodeError, match="truncated"):
        stream(path, sr=SR)
    with pytest.raises(AudioDecodeError, match="file not found"):
        stream(tmp_path / "missing.wav", sr=SR)
    with pytest.raises(ParameterError, match="sr"):
        stream(path, sr=0)


def test_a_pass_raises_for_bad_samples_as_load_does(tmp_path):
    samples = noise(50_000)
    samples[40_000] = np.nan
    path = tmp_path / "x.wav"
    sf.write(path, samples, SR, subtype="FLOAT")
    with pytest.raises(AudioDecodeError) as from_load:
        load(path, sr=SR)
    _, chunks = stream(path, sr=SR, block_frames=4096)
    with pytest.raises(AudioDecodeError) as from_stream:
        list(chunks())
    assert from_stream.value.reason == from_load.value.reason and "2.500 s" in from_stream.value.reason


def test_a_file_that_changes_between_passes_is_refused(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, noise(50_000), SR, subtype="PCM_16")
    _, chunks = stream(path, sr=SR)
    sf.write(path, noise(40_000), SR, subtype="PCM_16")
    with pytest.raises(AudioDecodeError, match="changed while being read"):
        list(chunks())


def test_load_or_stream_decides_by_the_header(tmp_path):
    from adares.audio import load_or_stream

    path = tmp_path / "x.flac"
    sf.write(path, noise(44_100), 44100, subtype="PCM_16")  # 1 s
    expected, _ = load(path, sr=SR)
    short = load_or_stream(path, sr=SR, longer_than=1.0)
    assert isinstance(short, np.ndarray) and np.array_equal(short, expected)
    num_samples, chunks = load_or_stream(path, sr=SR, longer_than=0.99)
    assert num_samples == len(expected) and np.array_equal(np.concatenate(list(chunks())), expected)
    with pytest.raises(AudioDecodeError, match="not an audio file"):
        (tmp_path / "bad.wav").write_text("no")
        load_or_stream(tmp_path / "bad.wav", sr=SR, longer_than=1.0)
