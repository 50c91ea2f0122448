import pytest

from adares.errors import ParameterError
from adares.units import format_samples, num_frames, to_samples


@pytest.mark.parametrize(
    ("value", "sr", "expected"),
    [
        ("5ms", 16000, 80),
        ("2.5ms", 16000, 40),
        ("10ms", 16000, 160),
        ("0.005s", 16000, 80),
        ("80", 16000, 80),
        (80, 16000, 80),
        ("80samples", 16000, 80),
        (" 25 ms ", 16000, 400),
        ("5MS", 48000, 240),
        ("2.5ms", 48000, 120),
        ("10ms", 44100, 441),
        (".5s", 8000, 4000),
        # 0.1 is not exact in binary floating point; Fraction parsing keeps this exact
        ("0.1ms", 40000, 4),
    ],
)
def test_to_samples(value, sr, expected):
    assert to_samples(value, sr=sr) == expected


def test_not_whole_number_names_working_values():
    with pytest.raises(ParameterError) as error:
        to_samples("5ms", sr=22050, name="hop")
    message = str(error.value)
    assert "hop" in message and "110.25" in message
    assert "110 samples" in message and "111 samples" in message
    # 5 ms is whole at 16 kHz, so the message can point there
    assert "--sr" in message


def test_not_whole_at_44100():
    with pytest.raises(ParameterError, match="110.25"):
        to_samples("2.5ms", sr=44100)


@pytest.mark.parametrize("value", ["", "ms", "5 hours", "-5ms", "0", "0ms", "5e-3s", "five", 0, -3, 2.5, None, True])
def test_bad_values(value):
    with pytest.raises(ParameterError):
        to_samples(value, sr=16000)


@pytest.mark.parametrize("sr", [0, -16000, 16000.0, "16000", True])
def test_bad_rate(sr):
    with pytest.raises(ParameterError, match="sampling rate"):
        to_samples("5ms", sr=sr)


def test_fraction_of_a_sample():
    with pytest.raises(ParameterError) as error:
        to_samples("0.01ms", sr=16000)
    assert "1 samples" in str(error.value)


@pytest.mark.parametrize(
    ("num_samples", "hop", "expected"), [(0, 80, 1), (79, 80, 1), (80, 80, 2), (16000, 80, 201), (16000, 160, 101)]
)
def test_centred_frame_count(num_samples, hop, expected):
    assert num_frames(num_samples, hop_samples=hop) == expected


@pytest.mark.parametrize(("num_samples", "expected"), [(0, 0), (399, 0), (400, 1), (559, 1), (560, 2), (16000, 98)])
def test_snip_edges_frame_count(num_samples, expected):
    assert num_frames(num_samples, hop_samples=160, center=False, win_samples=400) == expected


def test_frame_count_rejects_bad_values():
    with pytest.raises(ParameterError):
        num_frames(100, hop_samples=0)
    with pytest.raises(ParameterError):
        num_frames(-1, hop_samples=80)


def test_format_samples():
    assert format_samples(80, sr=16000) == "80 samples (5 ms)"
