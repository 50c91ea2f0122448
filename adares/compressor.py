"""A trained compressor bundle: importance-estimator weights, the front end they read, a model card.

A bundle is a folder with two files::

    weights.safetensors   the ImportanceEstimator's state dict (safetensors: no pickle, ever)
    config.json           the model card: format, front end, estimator architecture, training
                          reduction, training data, metrics, validated settings, sha256 of the weights

:class:`Compressor` loads a bundle (verifying the weights against the sha256 in the card before
reading them), scores the fine frames of a waveform with its estimator, and merges the user's
linear mel power with those scores. The estimator reads its own analysis of the audio (its
trained front end, at the user's hop), so the merge applies to features with any number of mel
bins or any log; settings outside what the bundle was validated on raise a
:class:`ValidationWarning` naming the setting.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.resources
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

from adares import __version__
from adares.atomic import atomic_open, atomic_write_text
from adares.diffres import ImportanceEstimator, input_sums, standardisation
from adares.errors import ModelError, ParameterError, ValidationWarning
from adares.extractor import BLOCK_FRAMES, MergingExtractor, fine_power, power_blocks
from adares.frontend import MelFrontend
from adares.functional.importance import flux_rise
from adares.functional.merge import check_min_span_exponent, check_reduction
from adares.importance import AudioChunks, Importance, PowerBlocks
from adares.precision import exact_float32
from adares.units import format_ms

__all__ = ["Compressor", "export_bundle", "FORMAT", "FORMAT_VERSION"]

FORMAT = "adares-compressor"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
_PRETRAINED = "pretrained"

# Front-end settings that only change the log, not the linear mel power.
_LOG_SETTINGS = ("log", "eps", "eps_mode", "amin")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Compressor(Importance):
    """A trained importance estimator with its front end and model card.

    It is an :class:`~adares.importance.Importance` (the extraction pipeline scores files with
    it), and called on a waveform it gives merged features.

    Parameters
    ----------
    estimator : adares.diffres.ImportanceEstimator
        Trained estimator (put in eval mode).
    frontend : dict
        :meth:`adares.frontend.MelFrontend.config` of the front end the estimator was trained on.
    reduction : float
        Reduction ρ it was trained at; the default of :meth:`__call__`.
    card : dict, optional
        Model card fields (name, description, training, metrics, validated settings).
    min_span_exponent : float
        ``κ`` in ``[0, 1]``: the score cap its merges use (every output frame spans at least
        ``(T/T')^κ`` fine frames; see :func:`adares.functional.merge.normalize_scores`). Recorded
        in the card when not 0.

    Attributes
    ----------
    name : str
    sha256 : str
        Hex sha256 of the serialised weights (the bytes of ``weights.safetensors``).
    card : dict
        The model card, as written to ``config.json``.
    """

    def __init__(
        self,
        estimator: torch.nn.Module,
        *,
        frontend: dict[str, Any],
        reduction: float,
        card: dict[str, Any] | None = None,
        min_span_exponent: float = 0.0,
    ) -> None:
        self.estimator = estimator.eval()
        self.frontend_config = dict(MelFrontend.from_config(frontend).config())
        self.reduction = check_reduction(reduction)
        self.min_span_exponent = check_min_span_exponent(min_span_exponent)
        self._weights = self._serialise()
        self.sha256 = _sha256(self._weights)
        card = dict(card or {})
        self.name = str(card.get("name", "custom"))
        self.card = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "description": card.get("description", ""),
            "adares_version": card.get("adares_version", __version__),
            "frontend": self.frontend_config,
            "estimator": self._architecture(),
            "reduction": self.reduction,
            # Only when set, so the cards of bundles made before it stay byte for byte the same.
            **({"min_span_exponent": self.min_span_exponent} if self.min_span_exponent else {}),
            "validated": card.get("validated", self._default_validated()),
            "training": card.get("training", {}),
            "metrics": card.get("metrics", {}),
            "weights": {
                "file": WEIGHTS_FILE,
                "sha256": self.sha256,
                "bytes": len(self._weights),
                "parameters": sum(p.numel() for p in estimator.parameters()),
            },
        }
        self._analysis: dict[tuple, Any] = {}
        self._warned: set[str] = set()

    # ------------------------------------------------------------------------------------------
    # bundle I/O

    def _architecture(self) -> dict[str, Any]:
        estimator = self.estimator
        architecture = {
            "type": "ImportanceEstimator",
            "n_mels": int(estimator.n_mels),
            "kernel_size": int(estimator.kernel_size),
            "channels": [int(c) for c in estimator.channels],
            "standardize": bool(estimator.standardize),
            "receptive_field_frames": int(estimator.receptive_field),
        }
        if estimator.flux_base:  # only then: cards of other estimators stay as they were
            architecture["flux_base"] = True
        if estimator.learn_sharpness:
            architecture["learn_sharpness"] = True
        elif estimator.flux_power != 1.0:  # a fixed power; a learned one lives in the weights
            architecture["flux_power"] = estimator.flux_power
        return architecture

    def _default_validated(self) -> dict[str, Any]:
        config = self.frontend_config
        return {
            "sr": [config["sr"]],
            "hop_samples": [config["hop_samples"]],
            "preset": [config["preset"]],
            "reduction": [self.reduction],
        }

    def _serialise(self) -> bytes:
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.estimator.state_dict().items()}
        return save_tensors(state, metadata={"format": FORMAT})

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bundle (``weights.safetensors`` and ``config.json``) to the folder ``path``.

        Each file is written atomically; the weights go first, so a card never names weights that
        are not there.

        Returns
        -------
        pathlib.Path
            The folder.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(folder / WEIGHTS_FILE, "wb") as handle:
            handle.write(self._weights)
        atomic_write_text(folder / CONFIG_FILE, json.dumps(self.card, indent=2, sort_keys=False) + "\n")
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Compressor:
        """Load a bundle folder, verifying its weights against the card's sha256.

        Raises
        ------
        ModelError
            If the folder or a file is missing, the card is not valid JSON or not a compressor
            card, the weights do not match their sha256 (corrupt or tampered with) or do not fit
            the architecture the card describes.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise ModelError(f"{folder}: no such compressor bundle (expected a folder with {CONFIG_FILE})")
        return cls._from_files(folder, where=str(folder))

    @classmethod
    def _from_files(cls, folder, *, where: str) -> Compressor:
        # `folder` is a Path or an importlib.resources Traversable: only joinpath/read_bytes.
        try:
            card_bytes = folder.joinpath(CONFIG_FILE).read_bytes()
        except OSError:
            raise ModelError(f"{where}: not a compressor bundle, {CONFIG_FILE} is missing") from None
        try:
            card = json.loads(card_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelError(f"{where}/{CONFIG_FILE}: not valid JSON ({error})") from None
        if not isinstance(card, dict) or card.get("format") != FORMAT:
            raise ModelError(f"{where}/{CONFIG_FILE}: not an adares compressor card (format must be {FORMAT!r})")
        if card.get("format_version") != FORMAT_VERSION:
            raise ModelError(
                f"{where}: bundle format version {card.get('format_version')!r}; this adares reads {FORMAT_VERSION}"
            )
        try:
            weights_name = card["weights"]["file"]
            expected = card["weights"]["sha256"]
            architecture = card["estimator"]
            frontend = card["frontend"]
            reduction = card["reduction"]
        except (KeyError, TypeError) as error:
            raise ModelError(f"{where}/{CONFIG_FILE}: the card lacks {error}") from None
        if not isinstance(weights_name, str) or "/" in weights_name or "\\" in weights_name:
            raise ModelError(f"{where}/{CONFIG_FILE}: weights file must be a plain file name, got {weights_name!r}")
        try:
            data = folder.joinpath(weights_name).read_bytes()
        except OSError:
            raise ModelError(f"{where}: weights file {weights_name} is missing") from None
        actual = _sha256(data)
        if actual != expected:
            raise ModelError(
                f"{where}/{weights_name}: sha256 {actual} does not match {expected} recorded in {CONFIG_FILE}; "
                "the weights are corrupt or were modified, refusing to load them"
            )
        try:
            state = load_tensors(data)
        except (SafetensorError, ValueError, RuntimeError) as error:
            raise ModelError(f"{where}/{weights_name}: not a readable safetensors file ({error})") from None
        estimator = _build_estimator(architecture, where=where)
        try:
            estimator.load_state_dict(state, strict=True)
        except RuntimeError as error:
            message = str(error).splitlines()[0]
            raise ModelError(f"{where}: the weights do not fit the estimator the card describes ({message})") from None
        try:
            compressor = cls(
                estimator,
                frontend=frontend,
                reduction=reduction,
                card=card,
                min_span_exponent=card.get("min_span_exponent", 0.0),
            )
        except ParameterError as error:
            raise ModelError(f"{where}/{CONFIG_FILE}: {error}") from None
        # Keep the card as written (metrics, training...), with the verified digest.
        compressor.card = card
        compressor.name = str(card.get("name", compressor.name))
        compressor._weights = data
        compressor.sha256 = actual
        return compressor

    @staticmethod
    def _pretrained_root():
        return importlib.resources.files("adares").joinpath(_PRETRAINED)

    @classmethod
    def available(cls) -> list[str]:
        """Names of the bundles shipped with adares."""
        root = cls._pretrained_root()
        try:
            entries = list(root.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(entry.name for entry in entries if entry.is_dir() and entry.joinpath(CONFIG_FILE).is_file())

    @classmethod
    def is_pretrained_name(cls, name: str) -> bool:
        """Whether ``name`` names a shipped bundle (a bare name, not a path)."""
        return isinstance(name, str) and "/" not in name and os.sep not in name and name in cls.available()

    @classmethod
    def from_pretrained(cls, name: str = "default") -> Compressor:
        """Load a bundle shipped with adares (``"default"``).

        Raises
        ------
        ModelError
            If no bundle has that name, or it fails verification.
        """
        available = cls.available()
        if name not in available:
            listed = ", ".join(available) or "none installed"
            raise ModelError(f"no pretrained compressor named {name!r} (available: {listed})")
        return cls._from_files(cls._pretrained_root().joinpath(name), where=f"adares/pretrained/{name}")

    # ------------------------------------------------------------------------------------------
    # inference

    def to(self, device: str | torch.device) -> Compressor:
        """Move the estimator (and later analyses) to ``device``; returns ``self``."""
        self.estimator.to(device)
        self._analysis.clear()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.estimator.parameters()).device

    def score(self, samples: np.ndarray, power: Tensor, *, frontend: MelFrontend) -> Tensor:
        """Raw scores ``[T]`` of one file (:meth:`raw_scores`, checked against the front end's frame count)."""
        raw = self.raw_scores(samples, frontend=frontend, power=power)
        if raw.shape[0] != power.shape[0]:
            raise ModelError(
                f"the estimator's analysis gave {raw.shape[0]} frames where the front end gave {power.shape[0]}"
            )
        return raw

    def score_batch(
        self, *, waveform: Tensor, lengths: Tensor, power: Tensor, frames: Tensor, frontend: MelFrontend
    ) -> Tensor:
        """Raw scores ``[B, T]`` of a zero-padded batch (:meth:`batch_scores`, checked against ``frames``)."""
        self.check_settings(sr=frontend.sr, hop_samples=frontend.hop_samples, preset=frontend.preset)
        raw, analysed = self.batch_scores(waveform, lengths, frontend=frontend, power=(power, frames))
        if raw.shape[1] != power.shape[1] or bool((analysed.cpu() != frames.cpu()).any()):
            raise ModelError("the estimator's analysis and the front end disagree on the frame count")
        return raw

    def check_settings(
        self, *, sr: int, hop_samples: int, preset: str | None = None, reduction: float | None = None
    ) -> list[str]:
        """Warn (once per setting) about settings outside what the bundle was validated on.

        Returns
        -------
        list of str
            The messages (also issued as :class:`ValidationWarning`).
        """
        validated = self.card.get("validated", {})
        messages = []
        srs = validated.get("sr", [])
        if srs and sr not in srs:
            messages.append(
                f"sampling rate {sr} Hz is outside what compressor {self.name!r} was validated on "
                f"({', '.join(f'{s} Hz' for s in srs)}); the estimator's analysis is resampled in time only"
            )
        hops = validated.get("hop_samples", [])
        reference_sr = int(self.frontend_config["sr"])
        valid_hops = {Fraction(h, reference_sr): h for h in hops}
        if valid_hops and Fraction(hop_samples, sr) not in valid_hops:
            validated_hops = ", ".join(format_ms(h, sr=reference_sr) for h in valid_hops.values())
            messages.append(
                f"hop {format_ms(hop_samples, sr=sr)} ({hop_samples} samples) is outside the hops compressor "
                f"{self.name!r} was validated on ({validated_hops}); its scores may be poor"
            )
        presets = validated.get("preset", [])
        if preset is not None and presets and preset not in presets:
            messages.append(
                f"front-end preset {preset!r} is outside what compressor {self.name!r} was validated on "
                f"({', '.join(presets)}); scores come from its own centred analysis, aligned to the nearest frame"
            )
        reductions = validated.get("reduction", [])
        if reduction is not None and reductions and not any(math.isclose(reduction, r) for r in reductions):
            low, high = min(reductions), max(reductions)
            if not low <= reduction <= high:
                messages.append(
                    f"reduction {reduction:g} is outside the range compressor {self.name!r} was validated on "
                    f"({low:g} to {high:g})"
                )
        for message in messages:
            if message not in self._warned:
                self._warned.add(message)
                warnings.warn(message, ValidationWarning, stacklevel=3)
        return messages

    def analysis_frontend(self, *, sr: int, hop_samples: int):
        """The estimator's own front end at the user's rate and hop (window scaled with the rate)."""
        key = (sr, hop_samples, str(self.device))
        if key not in self._analysis:
            config = self.frontend_config
            trained_sr = int(config["sr"])
            win = max(1, round(config["win_samples"] * sr / trained_sr))
            n_fft = max(int(config["n_fft"]) if sr == trained_sr else 1 << (win - 1).bit_length(), win)
            frontend = MelFrontend(
                preset=config["preset"],
                sr=sr,
                hop=hop_samples,
                win=win,
                n_fft=n_fft,
                n_mels=int(config["n_mels"]),
                fmin=float(config["fmin"]),
                fmax=min(float(config["fmax"]), sr / 2),
                log="ln",
                eps=config["eps"],
            )
            self._analysis[key] = frontend.to(self.device)
        return self._analysis[key]

    @torch.inference_mode()
    def estimate(self, log_mel: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Raw scores ``[B, T]`` in (0, 1] of an analysis log-mel ``[B, T, n_mels]``.

        Long inputs are scored in blocks of :data:`BLOCK_FRAMES` with a margin of half the
        receptive field, which gives exactly the scores of one call (the estimator is local, its
        batch norm, in eval mode, is per frame, and a standardising estimator is given the
        statistics of the whole input). On CUDA it computes in full float32, as on the CPU
        (:func:`~adares.precision.exact_float32`).

        Raises
        ------
        ParameterError
            If ``log_mel`` holds NaN or infinite values (the scores would be NaN).
        """
        if not bool(torch.isfinite(log_mel).all()):
            raise ParameterError("log_mel holds NaN or infinite values; the estimator's scores would be NaN")
        with exact_float32(log_mel.device):
            return self._estimate(log_mel, lengths)

    def _estimate(self, log_mel: Tensor, lengths: Tensor | None) -> Tensor:
        frames = log_mel.shape[1]
        if frames <= BLOCK_FRAMES:
            return self.estimator(log_mel, lengths)
        if lengths is not None and bool((lengths != frames).any()):
            raise ParameterError("blockwise scoring takes full-length items; score long files one at a time")
        statistics = self.estimator.input_statistics(log_mel) if self.estimator.standardize else None
        peak = self.estimator.flux_peak(log_mel) if self.estimator.flux_base else None
        margin = self.estimator.receptive_field // 2
        out = log_mel.new_empty(log_mel.shape[0], frames)
        for first in range(0, frames, BLOCK_FRAMES):
            last = min(frames, first + BLOCK_FRAMES)
            low, high = max(0, first - margin), min(frames, last + margin)
            block = self.estimator(log_mel[:, low:high], statistics=statistics, flux_peak=peak)
            out[:, first:last] = block[:, first - low : last - low]
        return out

    def _reads_same_power(self, analysis, frontend) -> bool:
        """Whether ``frontend`` computes the very mel power the estimator's analysis would.

        Then the analysis is the log of the user's power, and its STFT need not run twice (the
        shipped default and the extractor's default front end agree: 5 ms, 25 ms, 128 mels).
        """
        mine = {key: value for key, value in analysis.config().items() if key not in _LOG_SETTINGS}
        theirs = {key: value for key, value in frontend.config().items() if key not in _LOG_SETTINGS}
        return mine == theirs

    @torch.inference_mode()
    def raw_scores(self, samples: np.ndarray | Tensor, *, frontend, power: Tensor | None = None) -> Tensor:
        """Raw importance ``[T]`` of the fine frames ``frontend`` gives for ``samples``.

        The estimator reads its own analysis (its trained front end at ``frontend``'s rate and
        hop); for a front end whose frames are not centred (Kaldi), each frame takes the score of
        the nearest centred analysis frame.

        Parameters
        ----------
        samples : np.ndarray or torch.Tensor [shape=(N,)]
            Mono audio at ``frontend.sr``.
        frontend : adares.frontend.MelFrontend
            The user's front end.
        power : torch.Tensor [shape=(T, F)], optional
            ``frontend``'s linear mel power of ``samples``, reused when the analysis would compute
            the same.

        Returns
        -------
        torch.Tensor [shape=(T,)], float32
        """
        self.check_settings(sr=frontend.sr, hop_samples=frontend.hop_samples, preset=frontend.preset)
        waveform = samples.detach().cpu().numpy() if isinstance(samples, Tensor) else np.asarray(samples)
        waveform = np.ascontiguousarray(waveform, dtype=np.float32)
        analysis = self.analysis_frontend(sr=frontend.sr, hop_samples=frontend.hop_samples)
        if power is not None and self._reads_same_power(analysis, frontend):
            log_mel = analysis.log_mel(power.to(self.device))
        else:
            log_mel = analysis.log_mel(fine_power(analysis, waveform))
        raw = self.estimate(log_mel[None].to(torch.float32))[0]
        return _aligned(raw, frames=frontend.num_frames(len(waveform)), analysis=analysis, frontend=frontend)

    @torch.inference_mode()
    def score_long(self, *, audio: AudioChunks, power: PowerBlocks, num_samples: int, frontend: MelFrontend) -> Tensor:
        """Raw scores ``[T]`` of a file of any length: :meth:`raw_scores`, in passes over blocks.

        A standardising estimator first sums its input over the whole file; then each block of
        :data:`~adares.extractor.BLOCK_FRAMES` frames is scored with half a receptive field of its
        neighbours, as :meth:`estimate` scores a long input held in memory.
        """
        self.check_settings(sr=frontend.sr, hop_samples=frontend.hop_samples, preset=frontend.preset)
        analysis = self.analysis_frontend(sr=frontend.sr, hop_samples=frontend.hop_samples)
        same = self._reads_same_power(analysis, frontend)

        def log_mel_blocks() -> Iterator[Tensor]:
            blocks = power() if same else power_blocks(analysis, audio(), num_samples=num_samples)
            for block in blocks:
                yield analysis.log_mel(block.to(self.device)).to(torch.float32)

        statistics, peak = self._whole_file_statistics(log_mel_blocks)
        with exact_float32(self.device):
            raw = torch.cat(list(self._score_blocks(log_mel_blocks(), statistics, peak)))
        return _aligned(raw, frames=frontend.num_frames(num_samples), analysis=analysis, frontend=frontend)

    def _whole_file_statistics(
        self, log_mel_blocks: Callable[[], Iterator[Tensor]]
    ) -> tuple[tuple[Tensor, Tensor] | None, Tensor | None]:
        """What the estimator needs of the whole file before it scores a block: the standardisation
        (mean, inverse standard deviation) and the flux's peak, where it uses them; one pass."""
        standardize, flux_base = self.estimator.standardize, self.estimator.flux_base
        if not (standardize or flux_base):
            return None, None
        total, squares, count = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64), 0
        peak = torch.zeros(1, 1)
        previous = None
        for block in log_mel_blocks():
            if standardize:
                block_total, block_squares, block_count = input_sums(block)
                total, squares, count = total + block_total.cpu(), squares + block_squares.cpu(), count + block_count
            if flux_base:
                rise = flux_rise(block[None], previous)
                peak = torch.maximum(peak, rise.amax(1, keepdim=True).cpu())
                previous = block[None, -1]
        statistics = None
        if standardize:
            mean, inverse_std = standardisation(total, squares, count)
            statistics = (
                mean.to(torch.float32).reshape(1, 1, 1).to(self.device),
                inverse_std.to(torch.float32).reshape(1, 1, 1).to(self.device),
            )
        return statistics, peak.to(self.device) if flux_base else None

    def _score_blocks(
        self, blocks: Iterator[Tensor], statistics: tuple[Tensor, Tensor] | None, peak: Tensor | None
    ) -> Iterator[Tensor]:
        """Scores of consecutive log-mel blocks ``[t, F]``, each with ``margin`` frames of context per side."""
        margin = self.estimator.receptive_field // 2
        before = None  # the last `margin` frames before the current block
        current = next(blocks, None)
        while current is not None:
            following = next(blocks, None)
            pieces = [current] if before is None else [before, current]
            if following is not None:
                pieces.append(following[:margin])
            window = torch.cat(pieces) if len(pieces) > 1 else current
            offset = 0 if before is None else before.shape[0]
            scores = self.estimator(window[None], statistics=statistics, flux_peak=peak)
            yield scores[0, offset : offset + current.shape[0]]
            before = (current if before is None else torch.cat([before, current]))[-margin:]
            current = following

    @torch.inference_mode()
    def batch_scores(
        self, waveform: Tensor, lengths: Tensor | None, *, frontend, power: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Raw scores of a zero-padded batch, from the estimator's own analysis at ``frontend``'s rate and hop.

        Parameters
        ----------
        waveform : torch.Tensor [shape=(B, N)]
        lengths : torch.Tensor [shape=(B,)], optional
            Valid samples per item.
        frontend : adares.frontend.MelFrontend
            The user's (centred) front end.
        power : (torch.Tensor, torch.Tensor), optional
            ``frontend``'s linear mel power ``[B, T, F]`` of the batch and its frame counts
            ``[B]``, reused when the analysis would compute the same.

        Returns
        -------
        raw : torch.Tensor [shape=(B, T)]
        frames : torch.Tensor [shape=(B,)]
            Valid analysis frames per item.
        """
        analysis = self.analysis_frontend(sr=frontend.sr, hop_samples=frontend.hop_samples)
        if power is not None and self._reads_same_power(analysis, frontend):
            log_mel, frames = analysis.log_mel(power[0].to(self.device)), power[1].to(self.device)
        else:
            log_mel, frames = analysis(waveform.to(self.device), None if lengths is None else lengths.to(self.device))
        return self.estimate(log_mel.to(torch.float32), frames), frames

    def __call__(self, waveform: np.ndarray | Tensor, sr: int, *, reduction: float | None = None, frontend=None):
        """Variable-resolution features of one waveform.

        Parameters
        ----------
        waveform : np.ndarray or torch.Tensor [shape=(N,)]
            Mono audio at ``sr``.
        sr : int
            Its sampling rate.
        reduction : float, optional
            ρ; default: the bundle's training reduction.
        frontend : adares.frontend.MelFrontend, optional
            The output features' front end (any ``n_mels``, hop, log); default: the bundle's own
            front end at ``sr``.

        Returns
        -------
        adares.features.Features
            Merged log-mel ``[T', F]``, spans ``[T', 2]`` in samples, scores ``[T]`` and ``meta``
            (front-end settings, ``compressor`` name, ``compressor_sha256``, ``reduction``...).
        """
        if isinstance(sr, bool) or not isinstance(sr, int) or sr <= 0:
            raise ParameterError(f"sr must be a positive integer, got {sr!r}")
        samples = waveform.detach().cpu().numpy() if isinstance(waveform, Tensor) else np.asarray(waveform)
        if samples.ndim != 1:
            raise ParameterError(f"waveform must be mono [N], got shape {samples.shape}")
        if frontend is None:
            trained_sr = int(self.frontend_config["sr"])
            hop = max(1, round(int(self.frontend_config["hop_samples"]) * sr / trained_sr))
            frontend = MelFrontend.from_config(self.analysis_frontend(sr=sr, hop_samples=hop).config())
        elif frontend.sr != sr:
            raise ParameterError(f"the front end runs at {frontend.sr} Hz, the waveform is at {sr} Hz")
        rho = self.reduction if reduction is None else check_reduction(reduction)
        self.check_settings(sr=sr, hop_samples=frontend.hop_samples, preset=frontend.preset, reduction=rho)
        extractor = MergingExtractor(frontend.to(self.device), self, reduction=rho)
        return extractor(np.ascontiguousarray(samples, dtype=np.float32))

    def __repr__(self) -> str:
        return f"Compressor(name={self.name!r}, sha256={self.sha256[:12]}..., reduction={self.reduction:g})"


def _aligned(raw: Tensor, *, frames: int, analysis: MelFrontend, frontend: MelFrontend) -> Tensor:
    """The analysis frames' scores on the user's ``frames``: for frames that are not centred
    (Kaldi), each takes the score of the nearest centred analysis frame."""
    if analysis.frame_offset_samples == frontend.frame_offset_samples and raw.shape[0] == frames:
        return raw
    shift = (frontend.frame_offset_samples - analysis.frame_offset_samples) / frontend.hop_samples
    index = (torch.arange(frames, device=raw.device) + round(shift)).clamp(0, raw.shape[0] - 1)
    return raw[index]


def _build_estimator(architecture: Any, *, where: str) -> ImportanceEstimator:
    try:
        if architecture.get("type") != "ImportanceEstimator":
            raise ModelError(f"{where}: unknown estimator type {architecture.get('type')!r}")
        # Bundles written before these options existed have none of them.
        switches = {name: architecture.get(name, False) for name in ("standardize", "flux_base", "learn_sharpness")}
        for name, value in switches.items():
            if not isinstance(value, bool):
                raise ModelError(f"{where}: the card's estimator {name} must be true or false, got {value!r}")
        return ImportanceEstimator(
            int(architecture["n_mels"]),
            kernel_size=int(architecture["kernel_size"]),
            channels=[int(c) for c in architecture["channels"]],
            flux_power=architecture.get("flux_power", 1.0),
            **switches,
        )
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise ModelError(f"{where}: the card's estimator description is invalid ({error})") from None


def export_bundle(
    diffres: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    frontend: dict[str, Any],
    reduction: float,
    name: str | None = None,
    description: str = "",
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    validated: dict[str, Any] | None = None,
    min_span_exponent: float | None = None,
) -> Compressor:
    """Write the estimator of a trained :class:`~adares.diffres.DiffRes` as a bundle.

    Parameters
    ----------
    diffres : adares.diffres.DiffRes or ImportanceEstimator
        The trained module (its ``estimator`` is what ships).
    path : str or os.PathLike
        Bundle folder.
    frontend : dict
        The front end it was trained on: ``MelFrontend`` keyword arguments or its ``config()``.
    reduction : float
        Training reduction.
    name, description, training, metrics, validated
        Model-card fields.
    min_span_exponent : float, optional
        The score cap the bundle's merges use (see :class:`Compressor`); default: the module's
        own (``diffres.min_span_exponent``), else 0.

    Returns
    -------
    Compressor
        The saved bundle, loaded.
    """
    estimator = copy.deepcopy(getattr(diffres, "estimator", diffres)).cpu().eval()
    config = frontend if "hop_samples" in frontend else MelFrontend(**frontend).config()
    card = {
        "name": name or Path(path).name,
        "description": description,
        "training": training or {},
        "metrics": metrics or {},
    }
    if validated is not None:
        card["validated"] = validated
    if min_span_exponent is None:
        min_span_exponent = getattr(diffres, "min_span_exponent", 0.0)
    compressor = Compressor(
        estimator, frontend=config, reduction=reduction, card=card, min_span_exponent=min_span_exponent
    )
    compressor.save(path)
    return Compressor.load(path)
