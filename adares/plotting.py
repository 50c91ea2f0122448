"""Draw variable-resolution features on a true time axis (needs matplotlib: ``adares[plot]``).

:func:`plot` is to merged frames what librosa's ``specshow`` is to uniform ones: each merged frame
is a block as wide as its span, so a reader sees where the compressor kept detail and where it
merged. With the source audio at hand it also draws the waveform, the fine log-mel and the
importance scores above it, all sharing one time axis.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from adares.errors import ParameterError
from adares.features import Features
from adares.units import format_ms

__all__ = ["plot"]


def plot(
    features: Features,
    *,
    samples: np.ndarray | None = None,
    fine_mel: np.ndarray | None = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    width_inches: float = 11.0,
) -> Any:
    """Draw features, and optionally the audio they came from, on one time axis.

    Parameters
    ----------
    features : Features
        What to draw; ``mel`` [T', F] as blocks spanning ``spans``.
    samples : np.ndarray [shape=(N,)], optional
        The waveform at ``features.sr`` (adds a waveform panel).
    fine_mel : np.ndarray [shape=(T, F)], optional
        The fine log-mel before merging (adds a panel, drawn at its uniform hop).
    path : str or os.PathLike, optional
        Save the figure there (PNG, PDF, SVG by extension).
    title : str, optional
        Figure title; defaults to the source and the compressor.
    width_inches : float
        Figure width.

    Returns
    -------
    matplotlib.figure.Figure
        The figure; the merged panel's mesh is ``figure.axes[-1].collections[0]``.

    Raises
    ------
    ParameterError
        If matplotlib is not installed.
    """
    try:
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ParameterError("plotting needs matplotlib: pip install 'adares[plot]'") from None

    sr = features.sr
    hop = int(features.meta.get("hop_samples", 0))
    offset = int(features.meta.get("frame_offset_samples", 0))
    panels: list[tuple[str, np.ndarray]] = []
    if samples is not None:
        panels.append(("wave", np.asarray(samples)))
    if fine_mel is not None:
        panels.append(("fine", np.asarray(fine_mel)))
    if features.scores is not None and hop > 0:
        panels.append(("scores", features.scores))
    panels.append(("merged", features.mel))
    heights = {"wave": 1.0, "fine": 2.0, "scores": 1.0, "merged": 2.0}
    figure, axes = plt.subplots(
        len(panels),
        1,
        sharex=True,
        figsize=(width_inches, 1.4 * sum(heights[p] for p, _ in panels) + 0.6),
        gridspec_kw={"height_ratios": [heights[p] for p, _ in panels]},
        squeeze=False,
    )
    axes = axes[:, 0]
    end = features.num_samples / sr
    color_range = _color_range(features.mel if fine_mel is None else fine_mel)

    for axis, (panel, data) in zip(axes, panels, strict=True):
        if panel == "wave":
            axis.plot(np.arange(len(data)) / sr, data, linewidth=0.4, color="0.2")
            axis.set_ylabel("waveform")
        elif panel == "fine":
            edges = _uniform_edges(len(data), hop=hop, offset=offset, sr=sr, end=end)
            axis.pcolormesh(
                edges, np.arange(data.shape[1] + 1), data.T, shading="flat", vmin=color_range[0], vmax=color_range[1]
            )
            axis.set_ylabel(f"fine log-mel\n({format_ms(hop, sr=sr)} hop)")
        elif panel == "scores":
            centres = (offset + hop * np.arange(len(data))) / sr
            axis.plot(centres, data, linewidth=0.8, color="tab:red")
            axis.set_ylim(0, 1.05)
            axis.set_ylabel("importance")
        else:
            x_edges = np.append(features.spans[:, 0], features.spans[-1, 1]) / sr
            axis.pcolormesh(
                x_edges,
                np.arange(features.num_mels + 1),
                features.mel.T,
                shading="flat",
                vmin=color_range[0],
                vmax=color_range[1],
            )
            axis.vlines(x_edges, 0, features.num_mels * 0.04, color="white", linewidth=0.3)
            axis.set_ylabel(f"merged\n({features.num_frames} frames)")
    axes[-1].set_xlim(0, end)
    axes[-1].set_xlabel("time (s)")
    compressor = features.meta.get("compressor", "none")
    figure.suptitle(title or f"{features.meta.get('source', '')}  compressor: {compressor}", fontsize=10)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=110)
    return figure


def _color_range(mel: np.ndarray) -> tuple[float, float]:
    finite = mel[np.isfinite(mel)]
    if finite.size == 0:
        return 0.0, 1.0
    high = float(np.percentile(finite, 99.5))
    return max(float(finite.min()), high - 20.0), high  # 20 nepers ~ 87 dB of range


def _uniform_edges(count: int, *, hop: int, offset: int, sr: int, end: float) -> np.ndarray:
    if hop <= 0:
        return np.linspace(0, end, count + 1)
    centres = offset + hop * np.arange(count)
    edges = np.append(centres - hop / 2, centres[-1] + hop / 2) / sr
    return np.clip(edges, 0, end)
