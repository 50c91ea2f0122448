"""``adares inspect FILE``: what the compressor did to one file, in numbers and in a picture."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from adares.audio import load
from adares.errors import FeatureFileError
from adares.extractor import fine_power
from adares.features import Features, load_features
from adares.frontend import MelFrontend
from adares.plotting import plot
from adares.registry import resolve_extractor
from adares.units import format_ms


@click.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Draw a plot to this PNG/PDF/SVG.")
@click.option(
    "--audio",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Source audio of an .npz (adds waveform and fine log-mel to the plot).",
)
@click.option(
    "--model",
    default="default",
    help="For audio input: compressor to run (default, none, flux, a pretrained name or a bundle folder).",
)
@click.option(
    "--reduction",
    default=0.5,
    type=click.FloatRange(0.0, 1.0, max_open=True),
    help="For audio input: fraction of frames merged away.",
)
@click.option(
    "--min-span-exponent",
    default=None,
    type=click.FloatRange(0.0, 1.0),
    help="For audio input: every merged frame spans at least (T/T')**K fine frames  [default: the model's own]",
)
@click.option("--hop", default="5ms", help="For audio input: fine hop.")
@click.option("--n-mels", default=128, type=click.IntRange(min=1), help="For audio input: mel bins.")
@click.option("--sr", default=16000, type=click.IntRange(min=1), help="For audio input: sampling rate.")
def inspect_command(
    file: str,
    output: str | None,
    audio: str | None,
    model: str,
    reduction: float,
    min_span_exponent: float | None,
    hop: str,
    n_mels: int,
    sr: int,
) -> None:
    """Describe an audio file's features or a feature file written by `adares extract`; -o draws them.

    FILE is audio, an .npz or .h5, or one sample of a shard, SHARD.tar#KEY (a shard alone lists its
    samples). For a feature file the settings come from the file; for audio the features are
    computed in memory with the options given (nothing is written but the plot).
    """
    path = Path(file)
    samples = None
    if ".tar#" in file or path.suffix.lower() == ".tar":
        if path.suffix.lower() == ".tar":
            _list_shard(path)
            return
        features = _read(path)
        if audio is not None:
            samples, _ = load(audio, sr=features.sr)
        frontend = MelFrontend(**_frontend_kwargs(features)) if samples is not None else None
    elif not path.exists():
        raise click.BadParameter(f"{file} does not exist", param_hint="FILE")
    elif path.suffix.lower() in (".npz", ".h5"):
        features = _read(path)
        if audio is not None:
            samples, _ = load(audio, sr=features.sr)
        frontend = MelFrontend(**_frontend_kwargs(features)) if samples is not None else None
    else:
        frontend = MelFrontend(sr=sr, hop=hop, n_mels=n_mels)
        samples, _ = load(path, sr=sr)
        extractor = resolve_extractor(
            model, frontend=frontend, reduction=reduction, min_span_exponent=min_span_exponent
        )
        features = extractor(samples, meta={"source": path.name})
    click.echo(describe(features, name=str(path)))
    if output is not None:
        fine = None
        if samples is not None and frontend is not None:
            fine = frontend.log_mel(fine_power(frontend, samples)).numpy()
        plot(features, samples=samples, fine_mel=fine, path=output)
        click.echo(f"plot written to {output}")


def _read(path: Path) -> Features:
    try:
        return load_features(path)  # any layout: .npz, HDF5 or SHARD.tar#KEY
    except FeatureFileError as error:
        raise click.ClickException(str(error)) from None


def _list_shard(path: Path) -> None:
    """One line per sample of a shard: its key, frames and duration."""
    import re
    import tarfile

    try:
        with tarfile.open(path) as tar:
            # a sample's key: the member name up to the first dot of its last component, as WebDataset splits it
            keys = sorted({re.sub(r"\.[^/]*$", "", name) for name in tar.getnames()})
    except (OSError, tarfile.TarError) as error:
        raise click.ClickException(f"{path}: cannot read shard ({error})") from None
    click.echo(f"shard       {path}: {len(keys)} samples")
    for key in keys:
        features = _read(Path(f"{path}#{key}"))
        click.echo(f"  {key}  {features.num_frames} frames x {features.num_mels} mels, {features.duration:.3f} s")


def _frontend_kwargs(features: Features) -> dict:
    meta = features.meta
    keys = ("sr", "n_fft", "n_mels", "fmin", "fmax", "preset", "log")
    config = {key: meta[key] for key in keys if key in meta}
    config["hop"] = int(meta["hop_samples"])
    config["win"] = int(meta["win_samples"])
    return config


def describe(features: Features, *, name: str) -> str:
    """The inspect report: shape, duration, compression, frame lengths, compressor."""
    meta = features.meta
    durations_ms = features.frame_durations() * 1000
    hop = int(meta.get("hop_samples", 0))
    fine_frames = len(features.scores) if features.scores is not None else features.num_frames
    lines = [
        f"file        {name}",
        f"features    {features.num_frames} frames x {features.num_mels} mels, "
        f"{features.duration:.3f} s at {features.sr} Hz",
    ]
    if hop:
        lines.append(
            f"fine grid   {fine_frames} frames at {format_ms(hop, sr=features.sr)} hop "
            f"({meta.get('preset', '?')} preset, log {meta.get('log', '?')})"
        )
    merge = "no merging"
    if meta.get("reduction") is not None:
        merge = f"reduction {meta['reduction']:g}"
        if meta.get("min_span_exponent"):
            merge += f", min_span_exponent {meta['min_span_exponent']:g}"
    lines.append(f"compression {fine_frames / max(features.num_frames, 1):.2f}x ({merge})")
    if len(durations_ms):
        lines.append(
            f"frame span  shortest {durations_ms.min():.2f} ms, median {np.median(durations_ms):.2f} ms, "
            f"longest {durations_ms.max():.2f} ms"
        )
    sha = meta.get("compressor_sha256")
    lines.append(f"compressor  {meta.get('compressor', 'none')}" + (f" (sha256 {sha[:12]}...)" if sha else ""))
    return "\n".join(lines)
