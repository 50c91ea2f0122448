"""``adares extract IN OUT``: a corpus of audio files to feature files."""

from __future__ import annotations

import functools
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from adares.extensions import AUDIO_EXTENSIONS

from .config_file import config_options

if TYPE_CHECKING:
    from adares.pipeline import Summary

_PLAIN_EVERY_SECONDS = 10.0


@config_options
@click.command("extract")
@click.argument("input_path", metavar="IN", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.argument("output_dir", metavar="OUT", type=click.Path(file_okay=False))
@click.option("--hop", default="5ms", help="Hop between fine frames: 5ms, 2.5ms, 0.005s, or samples (80).")
@click.option("--win", default="25ms", help="Analysis window length, same units as --hop.")
@click.option(
    "--n-fft", default=None, type=click.IntRange(min=2), help="FFT size  [default: next power of two >= window]"
)
@click.option("--n-mels", default=None, type=click.IntRange(min=1), help="Mel bins  [default: 128; kaldi preset 80]")
@click.option("--sr", default=16000, type=click.IntRange(min=1), help="Sampling rate the audio is resampled to.")
@click.option("--fmin", default=None, type=float, help="Lowest mel frequency in Hz  [default: 0; kaldi preset 20]")
@click.option("--fmax", default=None, type=float, help="Highest mel frequency in Hz  [default: sr/2]")
@click.option("--preset", default="librosa", type=click.Choice(["librosa", "kaldi"]), help="Front-end convention.")
@click.option("--log", "log", default="ln", type=click.Choice(["ln", "db", "none"]), help="Log compression.")
@click.option(
    "--model",
    default="default",
    help="Compressor: the shipped 'default' DiffRes, none (fine frames), flux (training-free), "
    "a pretrained name (see `adares models`), or a bundle folder from `adares train`.",
)
@click.option(
    "--reduction", default=0.5, type=click.FloatRange(0.0, 1.0, max_open=True), help="Fraction of frames merged away."
)
@click.option(
    "--min-span-exponent",
    default=None,
    type=click.FloatRange(0.0, 1.0),
    help="Every merged frame spans at least (T/T')**K fine frames: 0 lets single fine frames through, "
    "0.5 the geometric mean of the fine hop and the average merged hop, 1 is uniform pooling  "
    "[default: the model's own; 0 for flux]",
)
@click.option(
    "--ext",
    "extensions",
    default=",".join(e.lstrip(".") for e in AUDIO_EXTENSIONS),
    help="Audio extensions to include (comma-separated).",
)
@click.option("--channel", default=None, type=click.IntRange(min=0), help="Take this channel instead of mixing down.")
@click.option(
    "--format",
    "format_",
    default="npz",
    type=click.Choice(["npz", "hdf5", "shards"]),
    help="npz: a file per input; hdf5; shards: WebDataset tar shards under OUT/shards (README).",
)
@click.option(
    "--dtype", default="float32", type=click.Choice(["float32", "float16"]), help="Type of the mel values written."
)
@click.option("--jobs", "-j", default=None, type=click.IntRange(min=1), help="Worker processes  [default: all cores]")
@click.option(
    "--device",
    default="cpu",
    help="Torch device for the workers: cpu, cuda, cuda:N, auto. CPU workers are usually faster for "
    "extraction; with cuda, fewer --jobs start faster (README).",
)
@click.option("--overwrite", is_flag=True, help="Recompute everything and replace outputs of another configuration.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first file that fails.")
@click.option("--quiet", "-q", is_flag=True, help="No progress and no summary; errors only.")
@click.option(
    "--scheduler",
    envvar="ADARES_SCHEDULER",
    default=None,
    help="Run on a Dask cluster: scheduler address tcp://HOST:PORT (or $ADARES_SCHEDULER).",
)
@click.option(
    "--dask-workers", default=None, type=click.IntRange(min=1), help="Start a local Dask cluster with N workers."
)
def extract_command(
    input_path: str,
    output_dir: str,
    hop: str,
    win: str,
    n_fft: int | None,
    n_mels: int | None,
    sr: int,
    fmin: float | None,
    fmax: float | None,
    preset: str,
    log: str,
    model: str,
    reduction: float,
    min_span_exponent: float | None,
    extensions: str,
    channel: int | None,
    format_: str,
    dtype: str,
    jobs: int | None,
    device: str,
    overwrite: bool,
    fail_fast: bool,
    quiet: bool,
    scheduler: str | None,
    dask_workers: int | None,
) -> None:
    """Extract features for every audio file under IN into OUT (the folder tree is mirrored).

    IN may also be one audio file, or a file describing a corpus: a .txt/.lst list of paths, a CSV
    with id,path[,start,end], a Kaldi wav.scp (with its segments), a lhotse .jsonl/.jsonl.gz
    manifest; each input's id then names its output.

    Writes one feature file per input, OUT/manifest.jsonl (a record each time a file is done or
    fails) and OUT/failures.jsonl (every file that could not be read, with the reason). Rerunning
    the same command skips files already done; one run writes an OUT at a time. Exit status: 0 all
    done, 1 some files failed or OUT could not be written, 2 bad usage.
    """
    # Imported here, not at the top, so `--help` stays quick; it imports no numpy either, so
    # extract() starts its workers before this process's own heavy imports.
    from adares.pipeline import ExtractConfig, extract

    settings = {"sr": sr, "hop": hop, "win": win, "n_fft": n_fft, "n_mels": n_mels, "fmin": fmin, "fmax": fmax}
    config = ExtractConfig(
        # unset values are left to the preset's defaults (recorded resolved in every file's meta)
        frontend={key: value for key, value in settings.items() if value is not None} | {"preset": preset, "log": log},
        model=model,
        reduction=reduction,
        min_span_exponent=min_span_exponent,
        format=format_,
        dtype=dtype,
        channel=channel,
        device=device,
    )
    progress = _Progress(enabled=not quiet)
    run = functools.partial(
        extract,
        input_path,
        output_dir,
        config=config,
        extensions=[e for e in extensions.split(",") if e.strip()],
        overwrite=overwrite,
        fail_fast=fail_fast,
        on_plan=progress.plan,
        on_record=progress.update,
        dedicated_process=True,
    )
    try:
        if scheduler is None and dask_workers is None:
            summary = run(jobs=jobs)
        else:
            from adares.cluster import dask_executor

            with dask_executor(scheduler=scheduler, local_workers=dask_workers) as dask:
                if not quiet:
                    click.echo(
                        f"Dask scheduler {dask.scheduler}, {dask.threads} worker threads, dashboard {dask.dashboard}",
                        err=True,
                    )
                summary = run(jobs=dask.threads, executor=dask.executor)
    finally:
        progress.close()
    if not quiet:
        click.echo(format_summary(summary), err=True)
    sys.exit(summary.exit_code)


class _Progress:
    """A tqdm bar (files, audio hours, ETA) on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.interactive = enabled and sys.stderr.isatty()
        self.bar: Any = None
        self.total_files = 0
        self.total_hours = 0.0
        self.files = self.failed = self.skipped = 0
        self.hours = 0.0
        self.started = time.monotonic()
        self.last_line = 0.0

    def plan(self, files: int, seconds: float) -> None:
        self.total_files, self.total_hours = files, seconds / 3600
        if self.interactive and files:
            from tqdm import tqdm

            self.bar = tqdm(total=files, unit="file", dynamic_ncols=True, file=sys.stderr, smoothing=0.05)
        elif self.enabled:
            from adares.pipeline.planning import DURATION_SAMPLE  # imported by the run already

            about = "about " if files > DURATION_SAMPLE else ""  # estimated from a sample of headers
            click.echo(f"{files} files to process ({about}{self.total_hours:.2f} h of audio)", err=True)

    def update(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        status = record.get("status")
        if status == "skipped":
            self.skipped += 1
            return
        self.files += 1
        self.failed += status == "failed"
        self.hours += (record.get("duration") or 0.0) / 3600
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"{self.hours:.3f}/{self.total_hours:.3f} h audio, {self.failed} failed", refresh=False
            )
            self.bar.update(1)
            return
        now = time.monotonic()
        if now - self.last_line >= _PLAIN_EVERY_SECONDS or self.files == self.total_files:
            self.last_line = now
            elapsed = now - self.started
            rate = self.files / elapsed if elapsed > 0 else 0.0
            eta = (self.total_files - self.files) / rate if rate > 0 else 0.0
            click.echo(
                f"[{self.files}/{self.total_files}] {self.hours:.3f} h audio, {self.failed} failed, "
                f"{rate:.1f} files/s, ETA {_duration(eta)}",
                err=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_summary(summary: Summary, *, max_failures: int = 10) -> str:
    """A one-screen account of a run."""
    hours = summary.audio_seconds / 3600
    lines = [
        f"done {summary.done}, skipped {summary.skipped} (already done), failed {summary.failed} "
        f"of {summary.total} files",
        f"audio {hours:.3f} h in {_duration(summary.wall_seconds)}, {summary.real_time_factor:.0f}x real time",
        f"output {summary.output_dir} (config {summary.config_hash})",
    ]
    if summary.stopped_early:
        lines.append("stopped at the first failure (--fail-fast); rerun to continue")
    if summary.failures:
        lines.append(f"failed files (all in {os.path.join(summary.output_dir, 'failures.jsonl')}):")
        lines += [f"  {f['source']}: {f['error']}" for f in summary.failures[:max_failures]]
        if len(summary.failures) > max_failures:
            lines.append(f"  ... and {len(summary.failures) - max_failures} more")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
