"""``adares train DATA_DIR OUT_DIR``: joint training of a compressor with a classifier."""

from __future__ import annotations

from pathlib import Path

import click

from adares.train import COMPRESSORS, TrainConfig, train

from .config_file import config_options

_DEFAULTS = TrainConfig()


def _estimator_settings(
    *, standardize: bool, flux_base: bool, learn_sharpness: bool = False, flux_power: float = 1.0
) -> dict:
    """The default estimator settings with the input and base choices; each key only when it is set
    (the same settings give the same configuration, whichever way they were given)."""
    switches = {"standardize": standardize, "flux_base": flux_base, "learn_sharpness": learn_sharpness}
    settings = {key: value for key, value in _DEFAULTS.estimator.items() if key not in switches}
    return (
        settings
        | {key: True for key, value in switches.items() if value}
        | ({"flux_power": flux_power} if flux_power != 1.0 else {})
    )


@config_options
@click.command("train")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--compressor",
    type=click.Choice(COMPRESSORS),
    default=_DEFAULTS.compressor,
    help="Temporal compressor trained with the classifier; 'none' feeds the fine log-mel.",
)
@click.option("--reduction", type=float, default=_DEFAULTS.reduction, help="ρ: share of frames removed.")
@click.option("--hop", default=_DEFAULTS.hop, help="Front-end hop, e.g. 5ms, 10ms, 80 (samples).")
@click.option("--win", default=_DEFAULTS.win, help="Front-end window.")
@click.option("--n-mels", type=int, default=_DEFAULTS.n_mels, help="Mel bins.")
@click.option("--sr", type=int, default=_DEFAULTS.sr, help="Sampling rate the clips are resampled to.")
@click.option("--seed", type=int, default=_DEFAULTS.seed, help="Seeds weights, data order and augmentation.")
@click.option("--epochs", type=int, default=_DEFAULTS.epochs, help="Most epochs.")
@click.option("--patience", type=int, default=_DEFAULTS.patience, help="Early stopping patience (epochs).")
@click.option(
    "--min-epochs", type=int, default=_DEFAULTS.min_epochs, help="Epochs before early stopping and selection start."
)
@click.option("--batch-size", type=int, default=_DEFAULTS.batch_size)
@click.option("--lr", type=float, default=_DEFAULTS.lr, help="Peak learning rate of the classifier.")
@click.option("--compressor-lr", type=float, default=None, help="Peak learning rate of the estimator [default: --lr].")
@click.option("--guide-weight", type=float, default=_DEFAULTS.guide_weight, help="Weight of the DiffRes guide loss.")
@click.option("--mixup", type=float, default=_DEFAULTS.mixup, help="Mixup Beta(α, α); 0 disables it.")
@click.option(
    "--standardize-input/--raw-input",
    default=bool(_DEFAULTS.estimator.get("standardize", False)),
    show_default=True,
    help="Standardise each clip's log-mel at the DiffRes estimator's input (the shipped default is "
    "trained so); --raw-input feeds the raw log-mel, as the paper.",
)
@click.option(
    "--flux-base",
    is_flag=True,
    help="DiffRes estimator that starts at the flux and learns a correction (raw score = flux x "
    "exp(gain x network), gain starting at 0).",
)
@click.option(
    "--learn-sharpness",
    is_flag=True,
    help="With --flux-base: also learn the power the flux is raised to (raw score = flux^p x ..., p "
    "starting at 1; below 1 flatter, towards uniform pooling, above 1 sharper).",
)
@click.option(
    "--flux-power",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="With --flux-base: the power the flux is raised to, fixed (or, with --learn-sharpness, where it starts).",
)
@click.option(
    "--planes",
    type=click.Choice(["auto", "avg", "stack", "mix"]),
    default=_DEFAULTS.planes,
    help="What the classifier reads: the averaged plane, or the three DiffRes planes stacked or mixed "
    "per mel bin (auto: mix for flux and diffres, avg otherwise).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the decoded log-mels here, keyed by front end and files, for later runs.",
)
@click.option("--restart", is_flag=True, help="Ignore a checkpoint in OUT_DIR and start over.")
@click.option("--threads", type=int, default=None, help="CPU threads for torch.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_command(
    data_dir: Path,
    out_dir: Path,
    compressor: str,
    reduction: float,
    hop: str,
    win: str,
    n_mels: int,
    sr: int,
    seed: int,
    epochs: int,
    patience: int,
    min_epochs: int,
    batch_size: int,
    lr: float,
    compressor_lr: float | None,
    guide_weight: float,
    mixup: float,
    standardize_input: bool,
    flux_base: bool,
    learn_sharpness: bool,
    flux_power: float,
    planes: str,
    cache_dir: Path | None,
    restart: bool,
    threads: int | None,
    quiet: bool,
) -> None:
    """Train a compressor and a classifier on DATA_DIR (labels.csv: path,label,split).

    Writes OUT_DIR/model.safetensors, metrics.json (accuracy, loss curves, classifier MACs per
    clip, training time), checkpoint.pt (rerun the same command to resume) and, for diffres, a
    compressor bundle OUT_DIR/compressor that `adares extract --model` loads.
    """
    if (learn_sharpness or flux_power != 1.0) and not flux_base:
        raise click.UsageError(
            "--learn-sharpness and --flux-power need --flux-base: they set the power of the flux's scores"
        )
    config = TrainConfig(
        compressor=compressor,
        reduction=reduction,
        hop=hop,
        win=win,
        n_mels=n_mels,
        sr=sr,
        seed=seed,
        epochs=epochs,
        patience=patience,
        min_epochs=min_epochs,
        batch_size=batch_size,
        lr=lr,
        compressor_lr=compressor_lr,
        guide_weight=guide_weight,
        mixup=mixup,
        planes=planes,
        estimator=_estimator_settings(
            standardize=standardize_input,
            flux_base=flux_base,
            learn_sharpness=learn_sharpness,
            flux_power=flux_power,
        ),
    )
    metrics = train(
        data_dir,
        out_dir,
        config,
        cache_dir=cache_dir,
        resume=not restart,
        progress=not quiet,
        threads=threads,
    )
    click.echo(
        f"test accuracy {metrics['accuracy']:.4f} (validation {metrics['val_accuracy']:.4f}, "
        f"best epoch {metrics['best_epoch']}/{metrics['epochs_run']}); classifier "
        f"{metrics['macs'] / 1e6:.2f} M MACs per clip over {metrics['mean_output_frames']:.1f} frames; "
        f"{metrics['training_seconds']:.0f} s of training"
    )
    click.echo(f"written to {out_dir}")
