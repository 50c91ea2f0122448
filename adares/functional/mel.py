"""Pure tensor functions of the log-mel front end.

Everything here is stateless, batched over leading dimensions, and runs on any device the inputs
live on; :class:`adares.frontend.MelFrontend` is a thin module over these functions.

Two families of conventions are covered:

* librosa's (``librosa.feature.melspectrogram`` with ``center=True``) and torchaudio's: a
  window zero-padded to ``n_fft`` and centred in it, centred frames with zero or reflect
  padding, triangular filters in Hz between points evenly spaced on the Slaney or HTK mel scale
  (:func:`power_spectrogram`, :func:`mel_filterbank`);
* Kaldi's ``compute-fbank-feats`` (as reimplemented by ``kaldi-native-fbank``): frames that fit
  entirely in the signal ("snip edges"), per-frame DC removal and pre-emphasis, the Povey window,
  triangles that are linear on the ``1127 ln(1 + f/700)`` mel scale
  (:func:`kaldi_power_spectrogram`, :func:`povey_window`, :func:`kaldi_mel_filterbank`).

:func:`mel_power` and :func:`kaldi_mel_power` combine framing, FFT and a banded mel projection
(:func:`filterbank_blocks`, :func:`apply_filterbank`) a chunk of frames at a time; they are
what the front end runs. Shapes are time-major: a power spectrogram is
``[..., T, n_fft // 2 + 1]`` and a mel spectrogram ``[..., T, n_mels]``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from adares.errors import ParameterError

__all__ = [
    "FLOAT32_EPS",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "kaldi_mel_filterbank",
    "povey_window",
    "power_spectrogram",
    "kaldi_power_spectrogram",
    "mel_power",
    "kaldi_mel_power",
    "FilterbankBlock",
    "filterbank_blocks",
    "apply_filterbank",
    "apply_log",
]

MelScale = Literal["slaney", "htk", "kaldi"]
LogMode = Literal["ln", "db", "none"]
EpsMode = Literal["add", "clamp"]
PadMode = Literal["constant", "reflect"]

FilterbankBlock = tuple[int, int, int, int]
"""``(bin_start, bin_stop, mel_start, mel_stop)``: mel bands ``[mel_start, mel_stop)`` read only
FFT bins ``[bin_start, bin_stop)``."""

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)
"""``FLT_EPSILON`` (1.19e-7): the floor Kaldi puts under mel energies before the log."""

# Slaney's Auditory Toolbox mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above,
# with 27 steps per factor 6.4 in frequency.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOGSTEP = math.log(6.4) / 27.0

# Frames per chunk of the chunked mel power on the CPU. Whole-signal intermediates (framed
# signal, complex spectrum, power: about 5 kB a frame at n_fft=512) cost more to allocate and
# stream through memory than the FFTs themselves; chunks of a few thousand frames stay in cache
# (benchmarks/RESULTS.md, front end). On accelerators chunks only bound memory, so they are large.
_CPU_CHUNK_FRAMES = 4096
_DEVICE_CHUNK_FRAMES = 1 << 16

# A mel block is only worth its extra matmul call when it saves at least this fraction of the
# dense product's multiply-adds; below that the dense product (one BLAS call) wins.
_BLOCK_MIN_SAVING = 0.5


# --------------------------------------------------------------------------------------------
# mel scales and filterbanks


def hz_to_mel(freq: Tensor, *, scale: MelScale = "slaney") -> Tensor:
    """Convert frequencies in Hz to mels.

    Parameters
    ----------
    freq : Tensor [shape=(...)]
        Frequencies in Hz, floating point.
    scale : {"slaney", "htk", "kaldi"}
        ``"slaney"``: linear below 1 kHz, logarithmic above (librosa's default, ``htk=False``).
        ``"htk"``: ``2595 log10(1 + f / 700)`` (librosa ``htk=True``).
        ``"kaldi"``: ``1127 ln(1 + f / 700)`` (Kaldi and kaldi-native-fbank).

    Returns
    -------
    Tensor [shape=(...)]
        Mels, same dtype as ``freq``.
    """
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    if scale == "kaldi":
        return 1127.0 * torch.log1p(freq / 700.0)
    if scale == "slaney":
        linear = freq / _SLANEY_HZ_PER_MEL
        # clamp keeps log() finite on the branch torch.where discards
        log_part = (
            _SLANEY_MIN_LOG_MEL
            + torch.log(torch.clamp(freq, min=_SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
        )
        return torch.where(freq >= _SLANEY_MIN_LOG_HZ, log_part, linear)
    raise ParameterError(f"unknown mel scale {scale!r}: use 'slaney', 'htk' or 'kaldi'")


def mel_to_hz(mel: Tensor, *, scale: MelScale = "slaney") -> Tensor:
    """Convert mels to frequencies in Hz; the inverse of :func:`hz_to_mel`.

    Parameters
    ----------
    mel : Tensor [shape=(...)]
        Mel values, floating point.
    scale : {"slaney", "htk", "kaldi"}
        The mel scale, as in :func:`hz_to_mel`.

    Returns
    -------
    Tensor [shape=(...)]
        Frequencies in Hz, same dtype as ``mel``.
    """
    if scale == "htk":
        return 700.0 * (torch.pow(10.0, mel / 2595.0) - 1.0)
    if scale == "kaldi":
        return 700.0 * torch.expm1(mel / 1127.0)
    if scale == "slaney":
        linear = _SLANEY_HZ_PER_MEL * mel
        log_part = _SLANEY_MIN_LOG_HZ * torch.exp(_SLANEY_LOGSTEP * (mel - _SLANEY_MIN_LOG_MEL))
        return torch.where(mel >= _SLANEY_MIN_LOG_MEL, log_part, linear)
    raise ParameterError(f"unknown mel scale {scale!r}: use 'slaney', 'htk' or 'kaldi'")


def _check_band(*, sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> float:
    """Validate the common filterbank arguments; return ``fmax`` resolved to Hz."""
    if isinstance(sr, bool) or not isinstance(sr, int) or sr <= 0:
        raise ParameterError(f"sr must be a positive integer in Hz, got {sr!r}")
    if isinstance(n_fft, bool) or not isinstance(n_fft, int) or n_fft < 2:
        raise ParameterError(f"n_fft must be an integer >= 2, got {n_fft!r}")
    if isinstance(n_mels, bool) or not isinstance(n_mels, int) or n_mels < 1:
        raise ParameterError(f"n_mels must be an integer >= 1, got {n_mels!r}")
    nyquist = sr / 2
    fmax = nyquist if fmax is None else float(fmax)
    fmin = float(fmin)
    if not math.isfinite(fmin) or fmin < 0:
        raise ParameterError(f"fmin must be a finite frequency >= 0 Hz, got {fmin!r}")
    if not math.isfinite(fmax) or fmax > nyquist:
        raise ParameterError(f"fmax must be at most the Nyquist frequency sr/2 = {nyquist:g} Hz, got {fmax!r}")
    if fmin >= fmax:
        raise ParameterError(f"fmin ({fmin:g} Hz) must be below fmax ({fmax:g} Hz)")
    return fmax


def mel_filterbank(
    *,
    sr: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    scale: Literal["slaney", "htk"] = "slaney",
    norm: Literal["slaney"] | None = "slaney",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Triangular mel filterbank, equal to ``librosa.filters.mel(...).T``.

    Filter ``m`` rises linearly (in Hz) from ``f[m]`` to ``f[m + 1]`` and falls to ``f[m + 2]``,
    where ``f`` are ``n_mels + 2`` points evenly spaced on the mel scale between ``fmin`` and
    ``fmax``. Computed in float64, then cast.

    Parameters
    ----------
    sr : int
        Sampling rate in Hz.
    n_fft : int
        FFT size; the filterbank has ``n_fft // 2 + 1`` rows, one per FFT bin.
    n_mels : int
        Number of mel bands.
    fmin, fmax : float
        Lowest and highest frequency in Hz; ``fmax=None`` means ``sr / 2``.
    scale : {"slaney", "htk"}
        Mel scale of the band edges (librosa ``htk=False`` / ``htk=True``).
    norm : {"slaney", None}
        ``"slaney"`` divides each triangle by half its width in Hz (constant energy per band, as
        librosa's default); ``None`` leaves peaks at 1.
    dtype : torch.dtype
        Dtype of the result.
    device : torch.device or str, optional
        Device of the result.

    Returns
    -------
    Tensor [shape=(n_fft // 2 + 1, n_mels)]
        Filter weights; ``power @ fbank`` projects a power spectrogram onto the mel bands.

    Raises
    ------
    ParameterError
        On invalid sizes, frequencies outside ``[0, sr / 2]``, or unknown ``scale`` / ``norm``.

    Warns
    -----
    UserWarning
        When some band covers no FFT bin (``n_mels`` too large for ``n_fft``), as librosa does.
    """
    fmax = _check_band(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    if scale not in ("slaney", "htk"):
        raise ParameterError(f"unknown mel scale {scale!r}: use 'slaney' or 'htk'")
    if norm not in ("slaney", None):
        raise ParameterError(f"unknown filterbank norm {norm!r}: use 'slaney' or None")
    f64 = torch.float64
    bin_hz = torch.arange(n_fft // 2 + 1, dtype=f64) * (sr / n_fft)
    edges_mel = torch.linspace(
        float(hz_to_mel(torch.tensor(float(fmin), dtype=f64), scale=scale)),
        float(hz_to_mel(torch.tensor(fmax, dtype=f64), scale=scale)),
        n_mels + 2,
        dtype=f64,
    )
    edges_hz = mel_to_hz(edges_mel, scale=scale)
    widths = edges_hz.diff()  # [n_mels + 1]
    offset = bin_hz[:, None] - edges_hz[None, :]  # [F, n_mels + 2]: f_k - f_m
    rising = offset[:, :-2] / widths[:-1]
    falling = -offset[:, 2:] / widths[1:]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        weights = weights * (2.0 / (edges_hz[2:] - edges_hz[:-2]))
    _warn_empty(weights, n_fft=n_fft)
    return weights.to(dtype=dtype, device=device)


def kaldi_mel_filterbank(
    *,
    sr: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 20.0,
    fmax: float | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Kaldi's mel filterbank (``MelBanks`` in ``compute-fbank-feats`` and kaldi-native-fbank).

    Triangles are linear on the mel scale ``1127 ln(1 + f / 700)`` with peaks at 1 and no
    normalisation; ``n_mels + 2`` edges evenly spaced in mel between ``fmin`` and ``fmax``. As in
    Kaldi, the Nyquist bin gets no weight, and a band that covers no FFT bin is an error.

    Parameters
    ----------
    sr : int
        Sampling rate in Hz.
    n_fft : int
        FFT size (Kaldi's padded window length).
    n_mels : int
        Number of mel bands (Kaldi's ``num_bins``).
    fmin, fmax : float
        Band limits in Hz (Kaldi's ``low_freq`` and ``high_freq``); ``fmax=None`` means
        ``sr / 2`` (Kaldi's ``high_freq=0``). Kaldi's default ``low_freq`` is 20 Hz.
    dtype : torch.dtype
        Dtype of the result.
    device : torch.device or str, optional
        Device of the result.

    Returns
    -------
    Tensor [shape=(n_fft // 2 + 1, n_mels)]
        Filter weights.

    Raises
    ------
    ParameterError
        On invalid sizes or frequencies, or when some band would cover no FFT bin.
    """
    fmax = _check_band(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    f64 = torch.float64
    num_bins = n_fft // 2
    bin_mel = hz_to_mel(torch.arange(num_bins, dtype=f64) * (sr / n_fft), scale="kaldi")
    mel_lo = math.log1p(float(fmin) / 700.0) * 1127.0
    mel_hi = math.log1p(fmax / 700.0) * 1127.0
    delta = (mel_hi - mel_lo) / (n_mels + 1)
    band = torch.arange(n_mels, dtype=f64)
    left = mel_lo + band * delta
    center = left + delta
    right = left + 2 * delta
    m = bin_mel[:, None]
    weights = torch.where(m <= center, (m - left) / (center - left), (right - m) / (right - center))
    weights = torch.where((m > left) & (m < right), weights, torch.zeros((), dtype=f64))
    empty = (weights == 0).all(dim=0)
    if bool(empty.any()):
        first = int(empty.nonzero()[0, 0])
        raise ParameterError(
            f"Kaldi mel band {first} of {n_mels} covers no FFT bin (n_fft={n_fft}, "
            f"{fmin:g}-{fmax:g} Hz): use fewer mel bands, a larger n_fft, or a higher fmin"
        )
    # Kaldi's bins stop below Nyquist: the last FFT bin never enters a band.
    weights = torch.cat([weights, torch.zeros(1, n_mels, dtype=f64)], dim=0)
    return weights.to(dtype=dtype, device=device)


def _warn_empty(weights: Tensor, *, n_fft: int) -> None:
    empty = (weights.amax(dim=0) <= 0).nonzero().flatten().tolist()
    if empty:
        warnings.warn(
            f"mel bands {empty} cover no FFT bin at n_fft={n_fft}; they will always be zero: "
            "use fewer mel bands or a larger n_fft",
            UserWarning,
            stacklevel=3,
        )


def povey_window(
    win_samples: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """Kaldi's "povey" window: a symmetric Hann window raised to the power 0.85.

    Parameters
    ----------
    win_samples : int
        Window length in samples, at least 2.
    dtype : torch.dtype
        Dtype of the result.
    device : torch.device or str, optional
        Device of the result.

    Returns
    -------
    Tensor [shape=(win_samples,)]
        ``(0.5 - 0.5 cos(2 pi n / (win_samples - 1))) ** 0.85``.
    """
    if isinstance(win_samples, bool) or not isinstance(win_samples, int) or win_samples < 2:
        raise ParameterError(f"the povey window needs at least 2 samples, got {win_samples!r}")
    n = torch.arange(win_samples, dtype=torch.float64)
    hann = 0.5 - 0.5 * torch.cos(2 * math.pi * n / (win_samples - 1))
    return hann.pow(0.85).to(dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------
# power spectrograms


def _check_framing(waveform: Tensor, *, n_fft: int, hop_samples: int, window: Tensor) -> None:
    if not isinstance(waveform, Tensor) or not waveform.is_floating_point() or waveform.dim() < 1:
        raise ParameterError("waveform must be a floating-point tensor of shape [..., N]")
    if not isinstance(window, Tensor) or window.dim() != 1 or window.numel() < 1:
        raise ParameterError("window must be a non-empty 1-D tensor")
    if isinstance(hop_samples, bool) or not isinstance(hop_samples, int) or hop_samples < 1:
        raise ParameterError(f"hop_samples must be a positive integer, got {hop_samples!r}")
    if isinstance(n_fft, bool) or not isinstance(n_fft, int) or n_fft < window.numel():
        raise ParameterError(f"n_fft must be an integer >= the window length {window.numel()}, got {n_fft!r}")


def power_spectrogram(
    waveform: Tensor,
    *,
    n_fft: int,
    hop_samples: int,
    window: Tensor,
    center: bool = True,
    pad_mode: PadMode = "constant",
    lengths: Tensor | None = None,
) -> Tensor:
    """Power spectrogram ``|STFT|**2``, time-major, with librosa's framing.

    Parameters
    ----------
    waveform : Tensor [shape=(..., N)]
        Real signal(s), floating point.
    n_fft : int
        FFT size, at least the window length.
    hop_samples : int
        Hop between frames in samples.
    window : Tensor [shape=(win_samples,)]
        Analysis window, same dtype and device as ``waveform``. Shorter windows are zero-padded
        on both sides to ``n_fft`` (centred in the FFT frame, as librosa does); the power does
        not depend on where the padding goes.
    center : bool
        ``True``: frame ``t`` is centred on sample ``t * hop_samples``, the signal is padded with
        ``n_fft // 2`` samples at both ends and ``T = 1 + N // hop_samples`` for even ``n_fft``
        (librosa with ``center=True``; ``1 + (N - 1) // hop_samples`` for odd ``n_fft``, as
        librosa). ``False``: frame ``t`` covers samples ``[t * hop, t * hop + win_samples)``
        and must fit in the signal, ``T = 1 + (N - win_samples) // hop_samples`` (0 when the
        signal is shorter).
    pad_mode : {"constant", "reflect"}
        Centred frames only: zeros (librosa's ``pad_mode="constant"``) or the signal mirrored
        at its ends without repeating the edge sample (``"reflect"``, torch.stft's default).
    lengths : Tensor [shape=(B,)], int, optional
        Centred frames of a ``[B, N]`` batch only: valid samples per item. Samples past an
        item's length are absent (zero, or the reflection starts at the item's own end), so
        every frame that item has alone comes out the same; later frames are meaningless.

    Returns
    -------
    Tensor [shape=(..., T, n_fft // 2 + 1)]
        Power per frame and FFT bin, in the dtype of ``waveform``.

    Raises
    ------
    ParameterError
        On a non-floating waveform, a window longer than ``n_fft``, a non-positive hop, bad
    ``lengths``, or a signal too short to reflect.
    """
    _check_framing(waveform, n_fft=n_fft, hop_samples=hop_samples, window=window)
    flat = waveform.reshape(-1, waveform.shape[-1])
    count, power_of = _librosa_frames(
        flat, n_fft=n_fft, hop_samples=hop_samples, window=window, center=center, pad_mode=pad_mode, lengths=lengths
    )
    power = power_of(0, count)
    return power.reshape(*waveform.shape[:-1], *power.shape[-2:])


def kaldi_power_spectrogram(
    waveform: Tensor,
    *,
    n_fft: int,
    hop_samples: int,
    window: Tensor,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
) -> Tensor:
    """Power spectrogram with Kaldi's frame processing (``snip_edges=true``, no dither).

    Each frame covers samples ``[t * hop, t * hop + win_samples)`` of the signal and is, in
    order: shifted to zero mean (``remove_dc_offset``), pre-emphasised
    (``x[i] -= preemphasis * x[i - 1]``, with ``x[-1] = x[0]``), multiplied by ``window``, and
    zero-padded to ``n_fft``.

    Parameters
    ----------
    waveform : Tensor [shape=(..., N)]
        Real signal(s), floating point, used as they are (no rescaling to 16-bit range).
    n_fft : int
        FFT size (Kaldi rounds the window length up to a power of two).
    hop_samples : int
        Frame shift in samples.
    window : Tensor [shape=(win_samples,)]
        Analysis window, e.g. :func:`povey_window`.
    preemphasis : float
        Pre-emphasis coefficient; 0 disables it.
    remove_dc_offset : bool
        Subtract each frame's mean before pre-emphasis.

    Returns
    -------
    Tensor [shape=(..., T, n_fft // 2 + 1)]
        ``T = 1 + (N - win_samples) // hop`` frames (0 when the signal is shorter than a window).
    """
    _check_framing(waveform, n_fft=n_fft, hop_samples=hop_samples, window=window)
    flat = waveform.reshape(-1, waveform.shape[-1])
    count, power_of = _kaldi_frames(
        flat,
        n_fft=n_fft,
        hop_samples=hop_samples,
        window=window,
        preemphasis=preemphasis,
        remove_dc_offset=remove_dc_offset,
    )
    power = power_of(0, count)
    return power.reshape(*waveform.shape[:-1], *power.shape[-2:])


PowerOf = Callable[[int, int], Tensor]
"""``power_of(t0, t1)``: power spectrum of frames ``[t0, t1)``, shape ``[B, t1 - t0, F]``."""


def _librosa_frames(
    flat: Tensor,
    *,
    n_fft: int,
    hop_samples: int,
    window: Tensor,
    center: bool,
    pad_mode: PadMode = "constant",
    lengths: Tensor | None = None,
) -> tuple[int, PowerOf]:
    """Frame count and a frame-range power function for librosa's framing of ``[B, N]``."""
    n, win, n_bins = flat.shape[-1], window.numel(), n_fft // 2 + 1
    if not center:
        count = max(0, 1 + (n - win) // hop_samples)

        def uncentred(t0: int, t1: int) -> Tensor:
            if t1 <= t0:
                return flat.new_zeros(flat.shape[0], 0, n_bins)
            frames = flat[:, t0 * hop_samples : (t1 - 1) * hop_samples + win].unfold(-1, win, hop_samples)
            return _frame_power(frames * window, n_fft=n_fft)

        return count, uncentred

    # Padding once and cutting frame ranges out of the padded signal gives exactly the frames
    # of librosa's (and torch.stft's) centred STFT, for any range of frames.
    padded = _centre_pad(flat, pad=n_fft // 2, pad_mode=pad_mode, lengths=lengths)

    def centred(t0: int, t1: int) -> Tensor:
        # torch.stft pads the window centred to n_fft exactly like librosa.util.pad_center.
        spec = torch.stft(
            padded[:, t0 * hop_samples : (t1 - 1) * hop_samples + n_fft],
            n_fft,
            hop_length=hop_samples,
            win_length=win,
            window=window,
            center=False,
            return_complex=True,
        )  # [B, F, t1 - t0], laid out in memory as [B, t1 - t0, F]
        power = spec.real.square()
        return power.addcmul_(spec.imag, spec.imag).transpose(-1, -2)

    # librosa's count: 1 + N // hop for even n_fft, 1 + (N - 1) // hop for odd
    return 1 + (padded.shape[-1] - n_fft) // hop_samples, centred


def _centre_pad(flat: Tensor, *, pad: int, pad_mode: PadMode, lengths: Tensor | None) -> Tensor:
    """Pad ``[B, N]`` by ``pad`` samples at both ends, each item at its own length.

    Samples at or past an item's length are absent: zeros for ``"constant"``, and for
    ``"reflect"`` the reflection starts at the item's last real sample, as if it were alone.
    """
    if pad_mode not in ("constant", "reflect"):
        raise ParameterError(f"unknown pad_mode {pad_mode!r}: use 'constant' or 'reflect'")
    n = flat.shape[-1]
    if lengths is not None:
        lengths = _check_lengths(lengths, batch=flat.shape[0], n=n, device=flat.device)
    if pad_mode == "constant":
        if lengths is not None and int(lengths.min()) < n:  # some item is padded: zero its tail
            flat = flat.masked_fill(torch.arange(n, device=flat.device) >= lengths[:, None], 0.0)
        return torch.nn.functional.pad(flat, (pad, pad))
    shortest = n if lengths is None else int(lengths.min())
    if shortest <= pad:
        raise ParameterError(f"reflect padding needs more than n_fft // 2 = {pad} samples per signal, got {shortest}")
    if lengths is None:
        return torch.nn.functional.pad(flat, (pad, pad), mode="reflect")
    # Reflect around each item's own first and last sample: source index |s| before the start,
    # 2 (L - 1) - s past the end. Positions reached only by frames past the item's own frame
    # count are clamped into range; those frames are not the item's.
    source = torch.arange(-pad, n + pad, device=flat.device).abs().expand(flat.shape[0], -1)
    last = lengths[:, None] - 1
    source = torch.where(source > last, 2 * last - source, source).clamp(0, n - 1)
    return torch.gather(flat, 1, source)


def _check_lengths(lengths: Tensor, *, batch: int, n: int, device: torch.device) -> Tensor:
    if not isinstance(lengths, Tensor) or lengths.dtype.is_floating_point or lengths.dtype.is_complex:
        raise ParameterError("lengths must be an integer tensor of samples per item")
    if lengths.shape != (batch,):
        raise ParameterError(f"lengths must have shape [{batch}], got {tuple(lengths.shape)}")
    lengths = lengths.to(device=device, dtype=torch.int64)
    if batch and (int(lengths.min()) < 0 or int(lengths.max()) > n):
        raise ParameterError(f"lengths must lie in [0, {n}]")
    return lengths


def _kaldi_frames(
    flat: Tensor, *, n_fft: int, hop_samples: int, window: Tensor, preemphasis: float, remove_dc_offset: bool
) -> tuple[int, PowerOf]:
    """Frame count and a frame-range power function for Kaldi's framing of ``[B, N]``."""
    n, win = flat.shape[-1], window.numel()
    count = max(0, 1 + (n - win) // hop_samples)

    def power_of(t0: int, t1: int) -> Tensor:
        if t1 <= t0:
            return flat.new_zeros(flat.shape[0], 0, n_fft // 2 + 1)
        frames = flat[:, t0 * hop_samples : (t1 - 1) * hop_samples + win].unfold(-1, win, hop_samples)
        if remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if preemphasis != 0.0:
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = frames - preemphasis * previous
        return _frame_power(frames * window, n_fft=n_fft)

    return count, power_of


def _frame_power(windowed: Tensor, *, n_fft: int) -> Tensor:
    """``|rfft(frame, n_fft)|**2`` of windowed frames ``[B, T, win]``."""
    win = windowed.shape[-1]
    if win < n_fft:
        # rfft on an already padded buffer is cheaper than rfft(n=...) padding each frame.
        windowed = torch.nn.functional.pad(windowed, (0, n_fft - win))
    spec = torch.fft.rfft(windowed, dim=-1)
    power = spec.real.square()
    return power.addcmul_(spec.imag, spec.imag)


def mel_power(
    waveform: Tensor,
    *,
    fbank: Tensor,
    n_fft: int,
    hop_samples: int,
    window: Tensor,
    center: bool = True,
    pad_mode: PadMode = "constant",
    lengths: Tensor | None = None,
    blocks: Sequence[FilterbankBlock] = (),
    chunk_frames: int | None = None,
) -> Tensor:
    """Mel power spectrogram with librosa's framing, computed a chunk of frames at a time.

    Equal to ``apply_filterbank(power_spectrogram(...), fbank)``, but the ``[T, F]`` power
    spectrum (and the framed signal and complex spectrum before it) only ever exists for
    ``chunk_frames`` frames at once: memory stays proportional to the output, however long the
    signal, and on the CPU it is also faster than streaming whole-signal intermediates through
    memory.

    Parameters
    ----------
    waveform : Tensor [shape=(..., N)]
        Real signal(s), floating point.
    fbank : Tensor [shape=(n_fft // 2 + 1, n_mels)]
        Mel filterbank, same dtype and device as ``waveform``.
    n_fft, hop_samples, window, center, pad_mode, lengths
        As in :func:`power_spectrogram`.
    blocks : sequence of (int, int, int, int)
        Banded plan for ``fbank`` from :func:`filterbank_blocks` (empty: dense product).
    chunk_frames : int, optional
        Frames per chunk, shared by the items of a batch. Default: 4096 on the CPU, 65536
        elsewhere.

    Returns
    -------
    Tensor [shape=(..., T, n_mels)]
        Mel power.
    """
    _check_framing(waveform, n_fft=n_fft, hop_samples=hop_samples, window=window)
    flat = waveform.reshape(-1, waveform.shape[-1])
    count, power_of = _librosa_frames(
        flat, n_fft=n_fft, hop_samples=hop_samples, window=window, center=center, pad_mode=pad_mode, lengths=lengths
    )
    mel = _project_chunks(count, power_of, flat, fbank=fbank, blocks=blocks, chunk_frames=chunk_frames)
    return mel.reshape(*waveform.shape[:-1], *mel.shape[-2:])


def kaldi_mel_power(
    waveform: Tensor,
    *,
    fbank: Tensor,
    n_fft: int,
    hop_samples: int,
    window: Tensor,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    blocks: Sequence[FilterbankBlock] = (),
    chunk_frames: int | None = None,
) -> Tensor:
    """Mel power spectrogram with Kaldi's framing, a chunk of frames at a time.

    Equal to ``apply_filterbank(kaldi_power_spectrogram(...), fbank)``; see :func:`mel_power`
    for ``blocks`` and ``chunk_frames`` and :func:`kaldi_power_spectrogram` for the rest.

    Returns
    -------
    Tensor [shape=(..., T, n_mels)]
        Mel power (no log: Kaldi's log is :func:`apply_log` with ``eps_mode="clamp"``).
    """
    _check_framing(waveform, n_fft=n_fft, hop_samples=hop_samples, window=window)
    flat = waveform.reshape(-1, waveform.shape[-1])
    count, power_of = _kaldi_frames(
        flat,
        n_fft=n_fft,
        hop_samples=hop_samples,
        window=window,
        preemphasis=preemphasis,
        remove_dc_offset=remove_dc_offset,
    )
    mel = _project_chunks(count, power_of, flat, fbank=fbank, blocks=blocks, chunk_frames=chunk_frames)
    return mel.reshape(*waveform.shape[:-1], *mel.shape[-2:])


def _project_chunks(
    count: int,
    power_of: PowerOf,
    flat: Tensor,
    *,
    fbank: Tensor,
    blocks: Sequence[FilterbankBlock],
    chunk_frames: int | None,
) -> Tensor:
    """Mel power ``[B, count, n_mels]``, projecting ``power_of`` one chunk of frames at a time."""
    if chunk_frames is None:
        chunk_frames = _CPU_CHUNK_FRAMES if flat.device.type == "cpu" else _DEVICE_CHUNK_FRAMES
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise ParameterError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    # a batch shares each chunk's frame range, so keep the frames per call about the same
    per_call = max(1, chunk_frames // max(1, flat.shape[0]))
    if count <= per_call:
        return apply_filterbank(power_of(0, count), fbank, blocks=blocks)
    out = flat.new_empty(flat.shape[0], count, fbank.shape[1])
    for t0 in range(0, count, per_call):
        t1 = min(count, t0 + per_call)
        out[:, t0:t1] = apply_filterbank(power_of(t0, t1), fbank, blocks=blocks)
    return out


# --------------------------------------------------------------------------------------------
# mel projection


def filterbank_blocks(fbank: Tensor, *, block_mels: int = 16) -> tuple[FilterbankBlock, ...]:
    """Plan a banded mel projection: groups of adjacent bands and the FFT bins they read.

    A mel filterbank is banded: each FFT bin feeds at most two adjacent triangles, so most of a
    dense ``[F, n_mels]`` product multiplies zeros. Cutting the bands into groups of
    ``block_mels`` and multiplying each group by only the bins it reads gives the same sums with
    far fewer multiply-adds (about 7x fewer for 128 bands at n_fft=512). Groups of 16 bands keep
    each product wide enough for the BLAS kernels to run at full speed (narrower groups are
    slower, not faster).

    Parameters
    ----------
    fbank : Tensor [shape=(F, n_mels)]
        A filterbank (any device; read once on the host).
    block_mels : int
        Bands per group.

    Returns
    -------
    tuple of (int, int, int, int)
        The groups, covering all bands in order; empty when blocking saves less than half of the
        dense product's work, in which case the dense product is the faster choice.
    """
    if fbank.dim() != 2:
        raise ParameterError(f"fbank must be 2-D [F, n_mels], got shape {tuple(fbank.shape)}")
    if isinstance(block_mels, bool) or not isinstance(block_mels, int) or block_mels < 1:
        raise ParameterError(f"block_mels must be a positive integer, got {block_mels!r}")
    n_bins, n_mels = fbank.shape
    used = (fbank != 0).cpu()
    blocks: list[FilterbankBlock] = []
    for start in range(0, n_mels, block_mels):
        stop = min(start + block_mels, n_mels)
        rows = used[:, start:stop].any(dim=1).nonzero().flatten()
        if rows.numel() == 0:
            blocks.append((0, 0, start, stop))
        else:
            blocks.append((int(rows[0]), int(rows[-1]) + 1, start, stop))
    work = sum((b1 - b0) * (m1 - m0) for b0, b1, m0, m1 in blocks)
    if work > (1.0 - _BLOCK_MIN_SAVING) * n_bins * n_mels:
        return ()
    return tuple(blocks)


def apply_filterbank(power: Tensor, fbank: Tensor, *, blocks: Sequence[FilterbankBlock] = ()) -> Tensor:
    """Project a power spectrogram onto mel bands: ``power @ fbank``.

    Parameters
    ----------
    power : Tensor [shape=(..., T, F)]
        Power spectrogram (linear), same dtype and device as ``fbank``.
    fbank : Tensor [shape=(F, n_mels)]
        Filterbank, e.g. from :func:`mel_filterbank`.
    blocks : sequence of (int, int, int, int)
        A banded plan from :func:`filterbank_blocks` for this ``fbank``; empty means the dense
        product. The plan skips only zero weights, so both give the same sums (up to float
        rounding order). It is used on the CPU only: on accelerators one dense kernel is faster
        than several small ones.

    Returns
    -------
    Tensor [shape=(..., T, n_mels)]
        Mel power.
    """
    if power.shape[-1] != fbank.shape[0]:
        raise ParameterError(f"power has {power.shape[-1]} frequency bins but the filterbank expects {fbank.shape[0]}")
    if not blocks or power.device.type != "cpu":
        return torch.matmul(power, fbank)
    lead = power.shape[:-1]
    flat = power.reshape(-1, power.shape[-1])
    parts = []
    for b0, b1, m0, m1 in blocks:
        if b1 > b0:
            parts.append(torch.mm(flat[:, b0:b1], fbank[b0:b1, m0:m1]))
        else:
            parts.append(flat.new_zeros(flat.shape[0], m1 - m0))
    return torch.cat(parts, dim=-1).reshape(*lead, fbank.shape[1])


# --------------------------------------------------------------------------------------------
# the log of the power


def apply_log(
    power: Tensor,
    *,
    mode: LogMode = "ln",
    eps: float = 1e-6,
    eps_mode: EpsMode = "add",
    amin: float = 1e-10,
) -> Tensor:
    """The log of (mel) power: ln, dB or none.

    Parameters
    ----------
    power : Tensor [shape=(...)]
        Linear power, non-negative.
    mode : {"ln", "db", "none"}
        ``"ln"``: natural log, ``ln(P + eps)`` (``eps_mode="add"``, the adares default) or
        ``ln(max(P, eps))`` (``eps_mode="clamp"``, Kaldi's floor).
        ``"db"``: ``10 log10(max(P, amin))``, i.e. ``librosa.power_to_db(P, ref=1.0,
        amin=amin, top_db=None)``.
        ``"none"``: ``P`` unchanged.
    eps : float
        Offset or floor of the natural log, > 0.
    eps_mode : {"add", "clamp"}
        How ``eps`` enters the natural log.
    amin : float
        Floor of the dB mode, > 0.

    Returns
    -------
    Tensor [shape=(...)]
        The compressed values, same dtype.
    """
    if mode == "none":
        return power
    if mode == "ln":
        if not eps > 0:
            raise ParameterError(f"eps must be positive, got {eps!r}")
        if eps_mode == "add":
            return torch.log(power + eps)
        if eps_mode == "clamp":
            return torch.log(torch.clamp(power, min=eps))
        raise ParameterError(f"unknown eps_mode {eps_mode!r}: use 'add' or 'clamp'")
    if mode == "db":
        if not amin > 0:
            raise ParameterError(f"amin must be positive, got {amin!r}")
        return 10.0 * torch.log10(torch.clamp(power, min=amin))
    raise ParameterError(f"unknown log mode {mode!r}: use 'ln', 'db' or 'none'")
