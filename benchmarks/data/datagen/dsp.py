"""Signal helpers shared by the recipes: levels, trimming, placement, noise, resampling, writing.

Every function is pure given its inputs (randomness comes in as a ``numpy.random.Generator``),
so a clip is a deterministic function of its planned parameters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
# Every clip is scaled so its peak stays at or below -1 dBFS: no clipping after PCM16 rounding.
PEAK_CEILING_DBFS = -1.0
FRAME_S = 0.010


def db_to_amplitude(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def amplitude_to_db(amplitude: float) -> float:
    return float(20.0 * np.log10(max(amplitude, 1e-12)))


def frame_rms(x: np.ndarray, *, sr: int) -> np.ndarray:
    """RMS of consecutive 10 ms frames (the last, partial frame included). x: (N,) -> (ceil(N/frame),)."""
    frame = max(1, round(FRAME_S * sr))
    padded = np.zeros(-(-len(x) // frame) * frame, dtype=np.float64)
    padded[: len(x)] = x
    return np.sqrt(np.mean(padded.reshape(-1, frame) ** 2, axis=1))


def active_rms(x: np.ndarray, *, sr: int, floor_db: float = -40.0) -> float:
    """RMS over the frames within ``floor_db`` of the loudest frame.

    Loudness of a sound regardless of how much silence surrounds it, so a short word and a long
    one normalised to the same target sound equally loud.
    """
    rms = frame_rms(x, sr=sr)
    if rms.size == 0 or rms.max() <= 0:
        return 0.0
    active = rms[rms >= rms.max() * db_to_amplitude(floor_db)]
    return float(np.sqrt(np.mean(active**2)))


def trim(x: np.ndarray, *, sr: int, floor_db: float = -40.0, margin_s: float = 0.010) -> np.ndarray:
    """Cut leading and trailing frames quieter than ``floor_db`` below the loudest, keeping a margin."""
    rms = frame_rms(x, sr=sr)
    if rms.size == 0 or rms.max() <= 0:
        return x[:0]
    loud = np.flatnonzero(rms >= rms.max() * db_to_amplitude(floor_db))
    frame = max(1, round(FRAME_S * sr))
    margin = round(margin_s * sr)
    start = max(0, loud[0] * frame - margin)
    stop = min(len(x), (loud[-1] + 1) * frame + margin)
    return x[start:stop]


def fade_out(x: np.ndarray, *, sr: int, fade_s: float = 0.010) -> np.ndarray:
    """Raised-cosine fade over the last ``fade_s``: a sound cut at the clip end must not click."""
    n = min(len(x), round(fade_s * sr))
    if n == 0:
        return x
    y = x.copy()
    y[-n:] *= 0.5 * (1.0 + np.cos(np.linspace(0.0, np.pi, n)))
    return y


def place(sound: np.ndarray, *, num_samples: int, start: int) -> np.ndarray:
    """Put ``sound`` into silence of ``num_samples`` at ``start``, cutting (with a fade) what overhangs."""
    if not 0 <= start < num_samples:
        raise ValueError(f"start {start} outside a clip of {num_samples} samples")
    out = np.zeros(num_samples, dtype=np.float64)
    piece = sound[: num_samples - start]
    if len(piece) < len(sound):
        piece = fade_out(piece, sr=SAMPLE_RATE)
    out[start : start + len(piece)] = piece
    return out


def coloured_noise(rng: np.random.Generator, *, num_samples: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.fft.rfftfreq(num_samples)
    freqs[0] = freqs[1] if num_samples > 1 else 1.0  # no infinite gain at DC
    spectrum *= freqs ** (-exponent / 2.0)
    noise = np.fft.irfft(spectrum, n=num_samples)
    noise -= noise.mean()
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def excerpt(rng: np.random.Generator, source: np.ndarray, *, num_samples: int) -> np.ndarray:
    """A random stretch of ``source``, looped when the source is shorter than asked."""
    if len(source) < num_samples:
        source = np.tile(source, -(-num_samples // len(source)) + 1)
    start = int(rng.integers(0, len(source) - num_samples + 1))
    return source[start : start + num_samples]


def set_level(x: np.ndarray, *, rms_dbfs: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Scale so the active RMS (see ``active_rms``) is ``rms_dbfs``."""
    level = active_rms(x, sr=sr)
    if level <= 0:
        return x
    return x * (db_to_amplitude(rms_dbfs) / level)


def limit_peak(x: np.ndarray, *, ceiling_dbfs: float = PEAK_CEILING_DBFS) -> np.ndarray:
    """Scale the whole clip down (never up) so its peak is at most ``ceiling_dbfs``."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    ceiling = db_to_amplitude(ceiling_dbfs)
    return x * (ceiling / peak) if peak > ceiling else x


def to_mono(x: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) -> (N,) float64, channels averaged."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return x
    # Column by column: ten times faster than mean(axis=1) on a long (N, 2) array.
    total = x[:, 0] + 0.0
    for channel in range(1, x.shape[1]):
        total = total + x[:, channel]
    return total / x.shape[1]


def resample(x: np.ndarray, *, sr_in: float, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """soxr high-quality resampling of a mono signal; ``sr_in`` may be fractional (speed change)."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float64)
    return soxr.resample(np.asarray(x, dtype=np.float64), sr_in, sr_out, quality="HQ")


def write_flac(path: Path, x: np.ndarray, *, sr: int = SAMPLE_RATE) -> None:
    """16-bit FLAC; refuses samples outside [-1, 1] rather than letting the encoder clip them."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 1.0:
        raise ValueError(f"{path}: peak {peak:.3f} would clip")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), sr, format="FLAC", subtype="PCM_16")


def onset_aligned(x: np.ndarray, *, sr: int, span_s: float = 0.5) -> np.ndarray:
    """``span_s`` from the onset (first sample above 1 % of the peak), zero-padded, unit norm.

    The dot product of two such vectors is their waveform similarity: near 1 only when both come
    from the same recording at the same pitch. The recipes use it to find soundfont presets that
    reuse one sample, so that no such sample lands in two splits.
    """
    n = round(span_s * sr)
    out = np.zeros(n, dtype=np.float64)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak <= 0:
        return out
    start = int(np.argmax(np.abs(x) > 0.01 * peak))
    piece = x[start : start + n]
    out[: len(piece)] = piece
    return out / float(np.linalg.norm(out))


def levels(x: np.ndarray) -> dict[str, float]:
    """Whole-clip RMS and peak in dBFS, for the clip records."""
    return {
        "rms_dbfs": round(amplitude_to_db(float(np.sqrt(np.mean(x**2)))), 2),
        "peak_dbfs": round(amplitude_to_db(float(np.max(np.abs(x)))), 2),
    }
