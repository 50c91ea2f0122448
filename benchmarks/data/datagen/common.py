"""What every task module shares: the plan and job shapes, and background noise."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from . import dsp, tools

# Sonic Pi ambience, split by file like everything else so no background recording is shared
# between splits.
AMBIENCE = (
    "ambi_choir", "ambi_dark_woosh", "ambi_drone", "ambi_glass_hum", "ambi_glass_rub", "ambi_haunted_hum",
    "ambi_lunar_land", "ambi_piano", "ambi_sauna", "ambi_soft_buzz", "ambi_swoosh", "vinyl_hiss",
)  # fmt: skip
T = TypeVar("T")
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}

Clip = dict[str, Any]
"""One planned clip: ``path``, ``label``, ``split``, ``seed`` and the task's generation parameters."""


@dataclass
class TaskPlan:
    """Everything decided before rendering: the jobs (each a list of clips) and the split design."""

    name: str
    labels: tuple[str, ...]
    clip_s: float
    jobs: list[dict[str, Any]]
    parameters: dict[str, Any]
    split_sources: dict[str, Any] = field(default_factory=dict)


def slug(text: str) -> str:
    """A file-name-safe spelling of a voice or preset name."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def clip_rng(clip: Clip) -> np.random.Generator:
    """The generator for the random parts decided at render time (noise samples, excerpts)."""
    return np.random.default_rng(clip["seed"])


@functools.cache
def _ambience(name: str) -> np.ndarray:
    audio, sr = tools.sonic_pi_sample(name)
    audio = dsp.resample(audio, sr_in=sr)
    audio.setflags(write=False)
    return audio


def background(clip: Clip, *, num_samples: int) -> np.ndarray:
    """Unit-RMS background noise as the clip asks: ``noise`` is a colour or a Sonic Pi ambience name."""
    rng = clip_rng(clip)
    kind = clip["noise"]
    if kind in NOISE_COLOURS:
        return dsp.coloured_noise(rng, num_samples=num_samples, exponent=NOISE_COLOURS[kind])
    piece = dsp.excerpt(rng, _ambience(kind), num_samples=num_samples)
    piece = piece - piece.mean()
    rms = float(np.sqrt(np.mean(piece**2)))
    # A silent stretch of an ambience file would make a silent "noisy" clip; fall back to pink noise.
    if rms < 1e-4:
        return dsp.coloured_noise(rng, num_samples=num_samples, exponent=1.0)
    return piece / rms


def chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
