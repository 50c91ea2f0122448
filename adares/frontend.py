"""The fine-hop log-mel front end: :class:`MelFrontend`.

A thin :class:`torch.nn.Module` over :mod:`adares.functional.mel`: it resolves a preset and
durations into sample counts, precomputes the window and the filterbank as buffers, validates
input once, and handles zero-padded batches with ``lengths``. Merging happens on the linear mel
power (:meth:`MelFrontend.power`); :meth:`MelFrontend.log_mel` applies the configured log last.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from adares.audio import MAX_ABS_SAMPLE, out_of_range_reason
from adares.errors import ParameterError
from adares.functional import mel as fmel
from adares.units import Duration, to_samples
from adares.units import num_frames as _num_frames

__all__ = ["MelFrontend", "PRESETS"]

PRESETS: dict[str, dict[str, Any]] = {
    # librosa.feature.melspectrogram(center=True, pad_mode="constant", window="hann",
    # htk=False, norm="slaney", power=2.0), then ln(P + 1e-6) as DESIGN.md specifies.
    "librosa": {
        "center": True,
        "pad_mode": "constant",
        "window": "hann",
        "mel_scale": "slaney",
        "mel_norm": "slaney",
        "preemphasis": 0.0,
        "remove_dc_offset": False,
        "fmin": 0.0,
        "n_mels": 128,
        "eps": 1e-6,
        "eps_mode": "add",
    },
    # torchaudio.transforms.MelSpectrogram's defaults (power 2): centred frames with reflect
    # padding, periodic Hann window, HTK mel scale without norm; then ln(P + 1e-6).
    "torchaudio": {
        "center": True,
        "pad_mode": "reflect",
        "window": "hann",
        "mel_scale": "htk",
        "mel_norm": None,
        "preemphasis": 0.0,
        "remove_dc_offset": False,
        "fmin": 0.0,
        "n_mels": 128,
        "eps": 1e-6,
        "eps_mode": "add",
    },
    # kaldi-native-fbank's OnlineFbank with its defaults and dither=0: snip edges, DC removal,
    # pre-emphasis 0.97, povey window, triangles on Kaldi's mel scale from 20 Hz, no
    # normalisation, ln(max(P, FLT_EPSILON)). 80 bands by default: Kaldi's mel scale leaves low
    # bands empty at 128 bands with n_fft=512, which Kaldi refuses.
    "kaldi": {
        "center": False,
        "pad_mode": None,
        "window": "povey",
        "mel_scale": "kaldi",
        "mel_norm": None,
        "preemphasis": 0.97,
        "remove_dc_offset": True,
        "fmin": 20.0,
        "n_mels": 80,
        "eps": fmel.FLOAT32_EPS,
        "eps_mode": "clamp",
    },
}
"""Per-preset conventions and defaults. Every value ends up in :meth:`MelFrontend.config`."""

_LOG_MODES = ("ln", "db", "none")
_DB_AMIN = 1e-10  # librosa.power_to_db's default floor
_CONSTRUCTOR_KEYS = {
    "preset": "preset",
    "sr": "sr",
    "hop_samples": "hop",
    "win_samples": "win",
    "n_fft": "n_fft",
    "n_mels": "n_mels",
    "fmin": "fmin",
    "fmax": "fmax",
    "log": "log",
    "eps": "eps",
}


# Twice what adares.load accepts: resampling a file whose samples reach the loader's limit can
# overshoot it (by 19% for a full-scale square wave), and the mel power is still far from overflow.
_MAX_ABS_INPUT = 2 * MAX_ABS_SAMPLE


def _check_range(x: Tensor) -> None:
    """Refuse NaN, Inf and samples beyond ``2 * MAX_ABS_SAMPLE`` (2^32): no audio is that loud, and
    float32 mel power overflows not many orders of magnitude above it.

    One pass: a NaN propagates into both the minimum and the maximum, an Inf into one of them.
    """
    if not x.numel():
        return
    low, high = torch.stack(torch.aminmax(x)).tolist()  # one device sync
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ParameterError("waveform contains NaN or infinite samples")
    peak = max(-low, high)
    if peak > _MAX_ABS_INPUT:
        raise ParameterError(f"waveform {out_of_range_reason(peak, limit=_MAX_ABS_INPUT)}")


def _hz(value: Any, *, name: str) -> float:
    """A finite real number from a config value, or ParameterError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class MelFrontend(nn.Module):
    """Fine-hop (log-)mel spectrogram, batched, with exact librosa or Kaldi conventions.

    Parameters
    ----------
    sr : int
        Sampling rate of the input in Hz.
    hop : str or int
        Hop between frames: ``"5ms"``, ``"0.005s"`` or samples (see :func:`adares.units.to_samples`).
        Must be a whole number of samples at ``sr``.
    win : str or int
        Analysis window length, same forms as ``hop``.
    n_fft : int, optional
        FFT size, even and at least the window length. Default: the smallest power of two not
        below the window (512 for 25 ms at 16 kHz; Kaldi's ``round_to_power_of_two``).
    n_mels : int, optional
        Number of mel bands. Default: the preset's (128 for ``librosa``, 80 for ``kaldi``).
    fmin : float, optional
        Lowest band edge in Hz. Default: the preset's (0 for ``librosa``, 20 for ``kaldi``).
    fmax : float, optional
        Highest band edge in Hz, at most ``sr / 2``. Default: ``sr / 2``.
    log : {"ln", "db", "none"}
        Compression applied by :meth:`forward` / :meth:`compress`: ``"ln"`` is
        ``ln(P + eps)`` (``librosa``) or ``ln(max(P, eps))`` (``kaldi``); ``"db"`` is
        ``librosa.power_to_db(P, ref=1.0, amin=1e-10, top_db=None)``; ``"none"`` keeps power.
    eps : float, optional
        Offset / floor of the natural log. Default: the preset's (1e-6 for ``librosa``,
        ``FLT_EPSILON`` for ``kaldi``).
    preset : {"librosa", "torchaudio", "kaldi"}
        ``"librosa"``: centred frames (``T = 1 + N // hop``, zero padding), periodic Hann window
        centred in the FFT frame, Slaney mel scale and norm; equal to
        ``librosa.feature.melspectrogram(..., center=True, pad_mode="constant")``.
        ``"torchaudio"``: ``torchaudio.transforms.MelSpectrogram``'s defaults: the same framing
        with reflect padding (inputs need more than ``n_fft // 2`` samples), HTK mel scale,
        no norm.
        ``"kaldi"``: kaldi-native-fbank's ``OnlineFbank`` with ``dither=0``: frames that fit in
        the signal (``T = 1 + (N - win) // hop``), DC removal, pre-emphasis 0.97, povey window,
        Kaldi mel triangles without norm. The waveform is used as given (no 16-bit rescaling).
        Every value a preset fixes is recorded by :meth:`config`.

    Attributes
    ----------
    sr, hop_samples, win_samples, n_fft, n_mels : int
        Resolved sizes.
    fmin, fmax : float
        Resolved band limits in Hz.
    log, preset : str
        As given.
    center : bool
        Whether frames are centred on ``t * hop_samples``.
    eps, eps_mode, amin
        Parameters of the log (see :func:`adares.functional.mel.apply_log`).
    frame_offset_samples : int
        Sample index of frame 0's centre: 0 for centred frames, ``win_samples // 2`` for Kaldi's
        frames. Frame ``t`` is centred on ``frame_offset_samples + t * hop_samples``.

    Notes
    -----
    Long signals are processed a chunk of frames at a time (see
    :func:`adares.functional.mel.mel_power`), so memory grows with the output only.
    The window and the filterbank are (non-persistent) buffers, so ``.to(device)`` and
    ``.double()`` move and cast the computation; inputs follow the module's device and dtype.
    Everything is differentiable with respect to the waveform.
    """

    window: Tensor
    fbank: Tensor

    def __init__(
        self,
        *,
        sr: int = 16000,
        hop: Duration = "5ms",
        win: Duration = "25ms",
        n_fft: int | None = None,
        n_mels: int | None = None,
        fmin: float | None = None,
        fmax: float | None = None,
        log: str = "ln",
        eps: float | None = None,
        preset: str = "librosa",
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ParameterError(f"unknown front-end preset {preset!r}: use one of {sorted(PRESETS)}")
        if log not in _LOG_MODES:
            raise ParameterError(f"unknown log mode {log!r}: use one of {list(_LOG_MODES)}")
        spec = PRESETS[preset]
        self.preset = preset
        self.sr = sr
        self.hop_samples = to_samples(hop, sr=sr, name="hop")
        self.win_samples = to_samples(win, sr=sr, name="window")
        if n_fft is None:
            n_fft = max(2, 1 << (self.win_samples - 1).bit_length())
        # even only: with an odd n_fft librosa's centred frame count is 1 + (N - 1) // hop
        if isinstance(n_fft, bool) or not isinstance(n_fft, int) or n_fft < self.win_samples or n_fft % 2:
            raise ParameterError(
                f"n_fft must be an even integer >= the window length ({self.win_samples} samples), got {n_fft!r}"
            )
        self.n_fft = n_fft
        self.n_mels = spec["n_mels"] if n_mels is None else n_mels
        self.fmin = _hz(spec["fmin"] if fmin is None else fmin, name="fmin")
        self.fmax = _hz(sr / 2 if fmax is None else fmax, name="fmax")
        self.log = log
        self.eps = _hz(spec["eps"] if eps is None else eps, name="eps")  # a plain number, like Hz
        if not self.eps > 0:
            raise ParameterError(f"eps must be a positive number, got {eps!r}")
        self.eps_mode: str = spec["eps_mode"]
        self.amin = _DB_AMIN
        self.center: bool = spec["center"]
        self.pad_mode: str | None = spec["pad_mode"]
        self.window_type: str = spec["window"]
        self.mel_scale: str = spec["mel_scale"]
        self.mel_norm: str | None = spec["mel_norm"]
        self.preemphasis: float = spec["preemphasis"]
        self.remove_dc_offset: bool = spec["remove_dc_offset"]
        self.frame_offset_samples = 0 if self.center else self.win_samples // 2

        if self.window_type == "povey":
            window = fmel.povey_window(self.win_samples, dtype=torch.float64)
            fbank = fmel.kaldi_mel_filterbank(
                sr=sr, n_fft=self.n_fft, n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax, dtype=torch.float64
            )
        else:
            window = torch.hann_window(self.win_samples, periodic=True, dtype=torch.float64)
            fbank = fmel.mel_filterbank(
                sr=sr,
                n_fft=self.n_fft,
                n_mels=self.n_mels,
                fmin=self.fmin,
                fmax=self.fmax,
                scale=self.mel_scale,  # type: ignore[arg-type]
                norm=self.mel_norm,  # type: ignore[arg-type]
                dtype=torch.float64,
            )
        # float64 masters, so that .double() gets exact constants rather than widened float32
        self._window64 = window
        self._fbank64 = fbank
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("fbank", fbank.float(), persistent=False)
        # The plan depends only on where the weights are zero, which no device move or cast
        # changes, so it is computed once here.
        self._blocks = fmel.filterbank_blocks(fbank)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # .to()/.double()/.cuda() all come through here: re-derive the buffers from the float64
        # masters in whatever device and dtype they were moved to.
        super()._apply(fn, recurse)
        self.window = self._window64.to(device=self.window.device, dtype=self.window.dtype)
        self.fbank = self._fbank64.to(device=self.fbank.device, dtype=self.fbank.dtype)
        return self

    # ----------------------------------------------------------------------------------------
    # configuration

    def config(self) -> dict[str, Any]:
        """Every value that determines the output, JSON-serialisable.

        Returns
        -------
        dict
            Sizes in samples, band limits in Hz, and the preset's conventions (framing, window,
            mel scale and norm, log and its constants). :meth:`from_config` rebuilds the module.
        """
        return {
            "preset": self.preset,
            "sr": self.sr,
            "hop_samples": self.hop_samples,
            "win_samples": self.win_samples,
            "n_fft": self.n_fft,
            "n_mels": self.n_mels,
            "fmin": self.fmin,
            "fmax": self.fmax,
            "log": self.log,
            "eps": self.eps,
            "eps_mode": self.eps_mode,
            "amin": self.amin,
            "center": self.center,
            "pad_mode": self.pad_mode,
            "window": self.window_type,
            "mel_scale": self.mel_scale,
            "mel_norm": self.mel_norm,
            "preemphasis": self.preemphasis,
            "remove_dc_offset": self.remove_dc_offset,
            "power": 2.0,
            "frame_offset_samples": self.frame_offset_samples,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MelFrontend:
        """Rebuild a front end from :meth:`config`'s dict.

        Parameters
        ----------
        config : Mapping
            As returned by :meth:`config` (e.g. read back from JSON).

        Returns
        -------
        MelFrontend

        Raises
        ------
        ParameterError
            On unknown keys, missing keys, or recorded conventions that this version's preset
            does not reproduce (features would silently differ otherwise).
        """
        if not isinstance(config, Mapping):
            raise ParameterError(f"a front-end config must be a mapping, got {type(config).__name__}")
        missing = sorted(set(_CONSTRUCTOR_KEYS) - set(config))
        if missing:
            raise ParameterError(f"front-end config lacks {missing}")
        kwargs = {arg: config[key] for key, arg in _CONSTRUCTOR_KEYS.items()}
        frontend = cls(**kwargs)
        rebuilt = frontend.config()
        unknown = sorted(set(config) - set(rebuilt))
        if unknown:
            raise ParameterError(f"front-end config has unknown keys {unknown}")
        differ = [key for key in config if config[key] != rebuilt[key]]
        if differ:
            detail = ", ".join(f"{k}: {config[k]!r} recorded, {rebuilt[k]!r} here" for k in differ)
            raise ParameterError(f"front-end config does not match preset {frontend.preset!r}: {detail}")
        return frontend

    def extra_repr(self) -> str:
        return (
            f"preset={self.preset!r}, sr={self.sr}, hop_samples={self.hop_samples}, "
            f"win_samples={self.win_samples}, n_fft={self.n_fft}, n_mels={self.n_mels}, "
            f"fmin={self.fmin:g}, fmax={self.fmax:g}, log={self.log!r}"
        )

    # ----------------------------------------------------------------------------------------
    # frame bookkeeping

    def num_frames(self, num_samples: int) -> int:
        """Number of frames for a signal of ``num_samples`` samples (0 if Kaldi's is too short)."""
        return _num_frames(num_samples, hop_samples=self.hop_samples, center=self.center, win_samples=self.win_samples)

    def frame_center(self, index: int) -> int:
        """Sample index on which frame ``index`` is centred (for even Kaldi windows, the later
        of the two middle samples)."""
        return self.frame_offset_samples + index * self.hop_samples

    # ----------------------------------------------------------------------------------------
    # computation

    def power(
        self, waveform: Tensor | np.ndarray, lengths: Tensor | np.ndarray | list[int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Linear mel power.

        Parameters
        ----------
        waveform : Tensor or np.ndarray [shape=(N,) or (B, N)]
            Floating-point audio at ``sr`` (float32 or float64; cast to the module's dtype).
        lengths : Tensor or array-like [shape=(B,)], optional
            Valid samples per item of a zero-padded batch. Samples past an item's length are
            ignored, so each item gets exactly the frames it would get alone.

        Returns
        -------
        power : Tensor [shape=(B, T, n_mels)]
            Mel power; ``T`` is the frame count of the full (padded) length, and frames past an
            item's own count are zero.
        frames : Tensor [shape=(B,)], int64
            Frame count of each item.

        Raises
        ------
        ParameterError
            On a waveform that is not 1-D or 2-D, not floating point, not finite, or with samples
            beyond twice :data:`~adares.audio.MAX_ABS_SAMPLE` in magnitude (2^32); on lengths
            of the wrong shape or outside ``[0, N]``; on (items) shorter than one window with
            the ``kaldi`` preset.
        """
        x, lengths_t = self._prepare(waveform, lengths)
        if self.center:
            mel = fmel.mel_power(
                x,
                fbank=self.fbank,
                n_fft=self.n_fft,
                hop_samples=self.hop_samples,
                window=self.window,
                center=True,
                pad_mode=self.pad_mode,  # type: ignore[arg-type]
                lengths=lengths_t,
                blocks=self._blocks,
            )
        else:
            mel = fmel.kaldi_mel_power(
                x,
                fbank=self.fbank,
                n_fft=self.n_fft,
                hop_samples=self.hop_samples,
                window=self.window,
                preemphasis=self.preemphasis,
                remove_dc_offset=self.remove_dc_offset,
                blocks=self._blocks,
            )
        if lengths_t is None:
            count = self.num_frames(x.shape[-1])
            return mel, torch.full((x.shape[0],), count, dtype=torch.int64, device=x.device)
        if self.center:
            frames = 1 + torch.div(lengths_t, self.hop_samples, rounding_mode="floor")
        else:
            frames = 1 + torch.div(lengths_t - self.win_samples, self.hop_samples, rounding_mode="floor")
        if int(frames.min()) >= mel.shape[-2]:  # no item is padded
            return mel, frames
        beyond = torch.arange(mel.shape[-2], device=mel.device) >= frames[:, None]
        return mel.masked_fill(beyond[..., None], 0.0), frames

    def log_mel(self, power: Tensor) -> Tensor:
        """Apply the configured log to (merged) linear mel power.

        Parameters
        ----------
        power : Tensor [shape=(...)]
            Linear mel power.

        Returns
        -------
        Tensor [shape=(...)]
            ``ln``, dB or unchanged, as configured by ``log``, ``eps`` and the preset.
        """
        return fmel.apply_log(power, mode=self.log, eps=self.eps, eps_mode=self.eps_mode, amin=self.amin)  # type: ignore[arg-type]

    def forward(
        self, waveform: Tensor | np.ndarray, lengths: Tensor | np.ndarray | list[int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Log-mel spectrogram: :meth:`power` followed by :meth:`compress`.

        Parameters
        ----------
        waveform : Tensor or np.ndarray [shape=(N,) or (B, N)]
            Floating-point audio at ``sr``.
        lengths : Tensor or array-like [shape=(B,)], optional
            Valid samples per item of a zero-padded batch.

        Returns
        -------
        features : Tensor [shape=(B, T, n_mels)]
            Compressed mel power; frames past an item's count hold the log of zero power.
        frames : Tensor [shape=(B,)], int64
            Frame count of each item.
        """
        power, frames = self.power(waveform, lengths)
        return self.log_mel(power), frames

    def _prepare(
        self, waveform: Tensor | np.ndarray, lengths: Tensor | np.ndarray | list[int] | None
    ) -> tuple[Tensor, Tensor | None]:
        """Validate the input once, at the boundary; return ``[B, N]`` on the module's device."""
        if isinstance(waveform, np.ndarray):
            if waveform.dtype.kind != "f":
                raise ParameterError(
                    f"waveform must hold floating-point samples in [-1, 1], got dtype {waveform.dtype}"
                )
            waveform = torch.from_numpy(np.ascontiguousarray(waveform))
        elif not isinstance(waveform, Tensor):
            raise ParameterError(f"waveform must be a torch.Tensor or numpy array, got {type(waveform).__name__}")
        if not waveform.is_floating_point():
            raise ParameterError(f"waveform must hold floating-point samples in [-1, 1], got dtype {waveform.dtype}")
        if waveform.dim() not in (1, 2):
            raise ParameterError(f"waveform must have shape [N] or [B, N], got {tuple(waveform.shape)}")
        x = waveform if waveform.dim() == 2 else waveform.unsqueeze(0)
        x = x.to(device=self.fbank.device, dtype=self.fbank.dtype)
        _check_range(x)
        batch, n = x.shape
        if batch == 0:
            raise ParameterError("waveform batch is empty")
        if lengths is None:
            if n < self._min_samples:
                raise ParameterError(self._too_short(n))
            return x, None

        lengths_t = lengths if isinstance(lengths, Tensor) else torch.as_tensor(np.asarray(lengths))
        if lengths_t.dtype.is_floating_point or lengths_t.dtype.is_complex or lengths_t.dtype == torch.bool:
            raise ParameterError(f"lengths must be integers (samples), got dtype {lengths_t.dtype}")
        if lengths_t.shape != (batch,):
            raise ParameterError(
                f"lengths must have shape [{batch}] for a batch of {batch}, got {tuple(lengths_t.shape)}"
            )
        lengths_t = lengths_t.to(device=x.device, dtype=torch.int64)
        low, high = int(lengths_t.min()), int(lengths_t.max())
        if low < 0 or high > n:
            raise ParameterError(f"lengths must lie in [0, {n}] (the padded length), got {low}..{high}")
        if low < self._min_samples:
            item = int((lengths_t < self._min_samples).nonzero()[0, 0])
            raise ParameterError(f"batch item {item}: " + self._too_short(int(lengths_t[item])))
        # Samples past each length are zeroed (or reflected at the item's own end) inside the
        # functional code, so every item gets exactly the frames it would get alone.
        return x, lengths_t

    @property
    def _min_samples(self) -> int:
        """Shortest signal the preset can frame."""
        if not self.center:
            return self.win_samples  # only frames that fit entirely
        if self.pad_mode == "reflect":
            return self.n_fft // 2 + 1  # a reflection needs more samples than it mirrors
        return 0

    def _too_short(self, n: int) -> str:
        if not self.center:
            least = f"one window ({self.win_samples} samples): the {self.preset!r} preset only uses frames that fit"
        else:
            least = f"{self._min_samples} samples, the least that reflect padding by n_fft // 2 can mirror"
        return f"input of {n} samples is shorter than {least}"
