"""Durations in whole samples, and frame-count conventions.

Users say ``5ms``, ``2.5ms``, ``0.005s`` or ``80`` (samples); signal code needs whole samples.
Parsing goes through :class:`fractions.Fraction`, so ``2.5ms`` at 16 kHz is exactly 40 samples and
never 39.99999 rounded the wrong way.
"""

from __future__ import annotations

import re
from fractions import Fraction

from adares.errors import ParameterError

__all__ = ["Duration", "to_samples", "num_frames", "format_samples", "format_ms"]

Duration = str | int
"""A duration as users write it: ``"5ms"``, ``"2.5ms"``, ``"0.005s"``, ``"80"`` or ``80`` (samples)."""

_PATTERN = re.compile(r"^\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|s|samples?)?\s*$")
_SECONDS_PER_UNIT = {"ms": Fraction(1, 1000), "s": Fraction(1)}


def to_samples(value: Duration, *, sr: int, name: str = "duration") -> int:
    """Convert a duration to a whole, positive number of samples at ``sr``.

    Parameters
    ----------
    value : str or int
        ``"5ms"``, ``"2.5ms"``, ``"0.005s"``, ``"80"``, ``"80samples"`` or the int ``80``.
        A bare number is a count of samples.
    sr : int
        Sampling rate in Hz.
    name : str
        What the value is (``"hop"``, ``"window"``), used in error messages.

    Returns
    -------
    int
        The number of samples, at least 1.

    Raises
    ------
    ParameterError
        If the value cannot be parsed, is not positive, or is not a whole number of samples at
        ``sr``; the message then lists the nearest values that would work.

    Examples
    --------
    >>> to_samples("5ms", sr=16000)
    80
    >>> to_samples("2.5ms", sr=16000)
    40
    >>> to_samples(80, sr=16000)
    80
    """
    if isinstance(sr, bool) or not isinstance(sr, int) or sr <= 0:
        raise ParameterError(f"sampling rate must be a positive integer in Hz, got {sr!r}")
    if isinstance(value, bool):
        raise ParameterError(f"{name} must be a duration like '5ms', '0.005s' or 80, got {value!r}")
    if isinstance(value, int):
        samples = Fraction(value)
        unit = "samples"
    elif isinstance(value, str):
        match = _PATTERN.match(value.lower())
        if match is None:
            raise ParameterError(
                f"cannot read {name} {value!r}: write a duration like '5ms', '0.005s' or a whole "
                "number of samples like '80'"
            )
        number = Fraction(match["number"])
        unit = match["unit"] or "samples"
        samples = number * sr * _SECONDS_PER_UNIT[unit] if unit in _SECONDS_PER_UNIT else number
    else:
        raise ParameterError(f"{name} must be a str or an int, got {type(value).__name__}")

    if samples <= 0:
        raise ParameterError(f"{name} must be positive, got {value!r}")
    if samples.denominator != 1:
        raise ParameterError(_not_whole_message(value, samples, sr=sr, name=name))
    return int(samples)


def _not_whole_message(value: Duration, samples: Fraction, *, sr: int, name: str) -> str:
    low, high = max(1, int(samples)), int(samples) + 1
    options = " or ".join(format_samples(n, sr=sr) for n in sorted({low, high}))
    rates = [r for r in (8000, 16000, 22050, 24000, 32000, 44100, 48000) if r != sr]
    fitting = [r for r in rates if (samples / sr * r).denominator == 1]
    hint = f"; or use a rate where it is whole, e.g. sr={fitting[0]} (--sr {fitting[0]})" if fitting else ""
    return f"{name} {value!r} is {float(samples):g} samples at {sr} Hz, not a whole number; use {options}{hint}"


def format_ms(samples: int, *, sr: int) -> str:
    """A sample count as milliseconds for people, e.g. ``"5 ms"`` (80 at 16 kHz), ``"2.5 ms"``."""
    return f"{float(Fraction(samples, sr) * 1000):.4g} ms"


def format_samples(samples: int, *, sr: int) -> str:
    """Describe a sample count for people, e.g. ``"80 samples (5 ms)"``."""
    return f"{samples} samples ({format_ms(samples, sr=sr)})"


def num_frames(num_samples: int, *, hop_samples: int, center: bool = True, win_samples: int = 0) -> int:
    """Number of analysis frames for a signal of ``num_samples`` samples.

    Parameters
    ----------
    num_samples : int
        Signal length in samples.
    hop_samples : int
        Hop between frames in samples.
    center : bool
        Centred frames (librosa's convention): frame ``t`` is centred on sample ``t * hop``,
        so ``T = 1 + num_samples // hop_samples``. Otherwise frames start at ``t * hop`` and must
        fit entirely (Kaldi's ``snip_edges``): ``T = 1 + (num_samples - win_samples) // hop_samples``,
        or 0 when the signal is shorter than one window.
    win_samples : int
        Window length in samples; only used when ``center`` is false.

    Returns
    -------
    int
        The frame count.
    """
    if hop_samples <= 0:
        raise ParameterError(f"hop_samples must be positive, got {hop_samples}")
    if num_samples < 0:
        raise ParameterError(f"num_samples must be non-negative, got {num_samples}")
    if center:
        return 1 + num_samples // hop_samples
    if num_samples < win_samples:
        return 0
    return 1 + (num_samples - win_samples) // hop_samples
