"""Rebuild the shipped ``default`` compressor bundle from scratch (``make train-default``).

One importance estimator that starts at the training-free spectral flux and learns a correction
(raw score = flux x exp(gain x CNN(log-mel)), the gain starting at 0) is trained on the three
benchmark tasks together, on their ``wide`` variety (``make data`` builds it: other renderings, with
more accents, rates, pitches and velocities, than the clips the screen tests), with one classifier
per task reading the averaged plane (what ``adares extract`` writes), at hops 2.5, 5 and 10 ms drawn
per clip and reductions 0.5 and 0.75 drawn per batch, from seed 0 on one CPU thread (the setting
the shipped weights were made with: other thread counts can change the last bits of a
convolution and so the weights). The bundle (``weights.safetensors`` + ``config.json``) is copied
to ``adares/pretrained/default/``; its card records the score cap its merges use
(``min_span_exponent`` 0.5: every merged frame spans at least (T/T')^0.5 fine frames; the
estimator trains without it) and the screen's figures for these weights with that cap (from
``benchmarks/results/screen-default-capped-24seeds.json``) in ``metrics.screen``. The same data and screen
results give the same bytes on the same kind of CPU (another CPU's kernels round differently, and
training amplifies it). ``--card-only`` rewrites the card of the bundle in ``--out`` without training.

    python adares/pretrained/make_default.py [--data DIR] [--work DIR] [--out DIR] [--card-only]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("keywords", "pitch", "drums")
HOPS = ("2.5ms", "5ms", "10ms")
REDUCTIONS = (0.5, 0.75)
# The shipped recipe (each a flag below): the estimator's own peak learning rate (None: the classifiers'),
# and the score cap its merges use at extraction (see adares.functional.merge.normalize_scores).
COMPRESSOR_LR: float | None = None
MIN_SPAN_EXPONENT = 0.5
DESCRIPTION = (
    "Importance estimator that starts at the training-free spectral flux and learns a correction: raw score = "
    "{flux} x exp(gain x CNN(log-mel)), the CNN a residual 1-D network (channels 128-32-16-8-4-1, kernel 5, each "
    "clip's log-mel standardised at its input) and the scalar gain starting at 0{power}, so untrained it scores "
    "{untrained}. Trained jointly with one classifier per task (reading the averaged plane, what adares "
    "extract writes) on the wide variety of the adares benchmark tasks keywords, pitch and drums, at hops 2.5, 5 "
    "and 10 ms and reductions {reductions}. It reads its own analysis of the audio (16 kHz, 128 mels, 25 ms "
    "window, at your hop) and its scores merge your front end's linear mel power, whatever its mel count.{cap} "
    "What the learned correction adds over flux on the screen (group folds, paired runs) is in metrics.screen."
)
CAP_DESCRIPTION = (
    " Its merges cap every score at (T'/T)^{exponent:g} (min_span_exponent), so every merged frame spans at least "
    "(T/T')^{exponent:g} fine frames ({at_075:.2g} at reduction 0.75, {at_05:.2g} at 0.5): no onset keeps a single "
    "fine frame to itself (the estimator trained without the cap)."
)
PLAIN_DESCRIPTION = (
    "Importance estimator: the sigmoid of a residual 1-D CNN (channels 128-32-16-8-4-1, kernel 5, each clip's "
    "log-mel standardised at its input), trained jointly with one classifier per task on the adares benchmark "
    "tasks keywords, pitch and drums at hops 2.5, 5 and 10 ms and reductions {reductions} (make_default.py "
    "--no-flux-base, not the shipped recipe)."
)
# `--classifier screen`: the classifiers of benchmarks/screen.py (its Classifier; a test keeps the two
# equal), trained without augmentation as the screen trains them, so the estimator is fitted to the
# classifier the screen judges it by rather than to the benchmark's larger, augmented one.
SCREEN_CLASSIFIER = {
    "widths": (24, 32, 64, 64),
    "kernel_size": 3,
    "pool_every": 1,
    "dropout": 0.1,
    "weight_decay": 1e-4,
    "time_masks": 0,
    "freq_masks": 0,
}
# The reductions at which the card records the screen's figures.
SCREENED = (0.5, 0.75)


def with_min_span_exponent(card: dict, exponent: float) -> dict:
    """``card`` with its ``min_span_exponent`` after ``reduction``, where a Compressor writes it (none when 0)."""
    out = {}
    for key, value in card.items():
        if key != "min_span_exponent":
            out[key] = value
        if key == "reduction" and exponent:
            out["min_span_exponent"] = exponent
    return out


def screen_figures(path: Path, *, sha256: str, min_span_exponent: float = 0.0) -> dict | None:
    """The task-averaged paired differences that ``path`` (a ``screen.py`` results file) holds for this bundle.

    The bundle is the screened configuration whose weights' digest is ``sha256`` and that merged
    with ``min_span_exponent`` (screens from before it was recorded merged with 0); None if there
    is none, or it was not screened at every :data:`SCREENED` reduction, so a card never carries
    another bundle's figures.
    """
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    summary, meta = results.get("summary", {}), results.get("meta", {})
    exponents = meta.get("min_span_exponents", {})
    models = [
        model
        for model, digest in meta.get("weights", {}).items()
        if digest == sha256 and exponents.get(model, 0.0) == min_span_exponent
    ]
    if not models:
        return None
    names = {r: f"{Path(models[0]).name}-{r:g}" for r in SCREENED}
    if not all(name in summary for name in names.values()):
        return None
    return {
        "note": "paired accuracy differences in points, mean and standard error over (seed, fold) runs, "
        "averaged over tasks (benchmarks/screen.py; per task in benchmarks/RESULTS.md)",
        "screened_as": models[0],
        "commit": meta.get("commit"),
        "runs": len(meta.get("seeds", [])) * int(meta.get("folds", 0)),
        "tasks": meta.get("tasks"),
        **{
            f"reduction {r:g}": {
                base: {"mean": round(stats["mean"], 2), "sem": round(stats["sem"], 2)}
                for base, stats in summary[name]["mean"]["vs"].items()
            }
            for r, name in names.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data" / "generated-wide")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "cache" / "default-train")
    parser.add_argument("--out", type=Path, default=ROOT / "adares" / "pretrained" / "default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override the trainer's default")
    parser.add_argument("--restart", action="store_true", help="ignore a checkpoint in --work")
    parser.add_argument(
        "--card-only",
        action="store_true",
        help="train nothing: rewrite the card of the bundle in --out (cap, description, screen figures), "
        "as a full run would write it for the same weights",
    )
    parser.add_argument(
        "--reductions",
        default=",".join(f"{r:g}" for r in REDUCTIONS),
        help="comma-separated reductions drawn per batch (the shipped bundle's: %(default)s)",
    )
    parser.add_argument(
        "--flux-base",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start at the flux and learn a correction (the shipped recipe); --no-flux-base: a plain sigmoid estimator",
    )
    parser.add_argument(
        "--learn-sharpness",
        action="store_true",
        help="with --flux-base: also learn the power the flux's scores are raised to (starts at 1)",
    )
    parser.add_argument(
        "--flux-power",
        type=float,
        default=1.0,
        help="with --flux-base: the power the flux is raised to, fixed (or where --learn-sharpness starts) [1]",
    )
    parser.add_argument(
        "--classifier",
        choices=("benchmark", "screen"),
        default="benchmark",
        help="the classifiers trained with the estimator: the benchmark's (the shipped recipe) or the "
        "screen's compact one without augmentation",
    )
    parser.add_argument(
        "--planes",
        default="avg",
        choices=("auto", "avg", "stack", "mix"),
        help="what the classifiers read while training (avg: the averaged plane, what `adares extract` writes)",
    )
    parser.add_argument("--compressor-lr", type=float, default=COMPRESSOR_LR, help="estimator's peak learning rate")
    parser.add_argument(
        "--min-span-exponent",
        type=float,
        default=MIN_SPAN_EXPONENT,
        help="the score cap the bundle's merges use at extraction, recorded in its card (every merged frame "
        "spans at least (T/T')**K fine frames; the estimator trains without it) [%(default)s]",
    )
    parser.add_argument(
        "--screen",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "screen-default-capped-24seeds.json",
        help="screen results whose figures for this bundle go into its card (when they name its weights)",
    )
    args = parser.parse_args(argv)

    from adares.train import DEFAULT_ESTIMATOR_CHANNELS, TrainConfig, load_spectrograms, train_multitask

    try:
        reductions = tuple(float(r) for r in args.reductions.split(",") if r.strip())
    except ValueError:
        parser.error(f"--reductions must be comma-separated numbers, got {args.reductions!r}")
    if not reductions or not all(0.0 <= r < 1.0 for r in reductions):
        parser.error(f"--reductions must lie in [0, 1), got {args.reductions!r}")
    if (args.learn_sharpness or args.flux_power != 1.0) and not args.flux_base:
        parser.error("--learn-sharpness and --flux-power need --flux-base")
    if not args.flux_power > 0.0:
        parser.error(f"--flux-power must be positive, got {args.flux_power}")
    if not 0.0 <= args.min_span_exponent <= 1.0:
        parser.error(f"--min-span-exponent must lie in [0, 1], got {args.min_span_exponent}")
    missing = [task for task in TASKS if not (args.data / task / "labels.csv").is_file()]
    if missing and not args.card_only:
        parser.error(f"missing datasets {', '.join(missing)} under {args.data}: run `make data` first")
    # min_epochs 12: the shipped bundle's setting (its run went the full 25 epochs and kept the last).
    # Standardised estimator input: fed the raw ln-mel (mean near -8), the first block's ReLUs die
    # and the estimator collapses to a near-constant score (benchmarks/RESULTS.md, accuracy notes).
    settings = {
        "compressor": "diffres",
        "reduction": reductions[0],
        "seed": args.seed,
        "min_epochs": 12,
        "planes": args.planes,
        "compressor_lr": args.compressor_lr,
        "estimator": {"channels": list(DEFAULT_ESTIMATOR_CHANNELS), "standardize": True}
        | ({"flux_base": True} if args.flux_base else {})
        | ({"learn_sharpness": True} if args.learn_sharpness else {})
        | ({"flux_power": args.flux_power} if args.flux_power != 1.0 else {}),
    }
    if args.epochs is not None:
        settings["epochs"] = args.epochs
    if args.classifier == "screen":
        settings.update(SCREEN_CLASSIFIER)
    config = TrainConfig(**settings)
    description = describe(args, reductions)
    if args.card_only:
        return rewrite_card(args, description)
    began = time.perf_counter()
    datasets = {
        task: {
            hop: load_spectrograms(
                args.data / task,
                frontend=TrainConfig(**{**settings, "hop": hop}).frontend_config(),
                cache_dir=ROOT / "benchmarks" / "cache",
                progress=True,
            )
            for hop in HOPS
        }
        for task in TASKS
    }
    print(f"log-mels ready in {time.perf_counter() - began:.0f} s", flush=True)
    metrics = train_multitask(
        datasets,
        args.work,
        config,
        reductions=reductions,
        bundle_name="default",
        bundle_description=description,
        resume=not args.restart,
        threads=args.threads,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.work / "compressor" / "weights.safetensors", args.out / "weights.safetensors")
    card = finish_card(json.loads((args.work / "compressor" / "config.json").read_text()), args, description)
    (args.out / "config.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps({"bundle": metrics["bundle"], "test": metrics["test"]}, indent=1))
    print(f"wrote {args.out} in {(time.perf_counter() - began) / 60:.1f} min")
    return 0


def describe(args: argparse.Namespace, reductions: tuple[float, ...]) -> str:
    """The card's description of the bundle these arguments build."""
    if args.learn_sharpness:
        flux, power = "flux^p", f" and the learned power p at {args.flux_power:g}"
    elif args.flux_power != 1.0:
        flux, power = "flux^p", f" and the power p fixed at {args.flux_power:g}"
    else:
        flux, power = "flux", ""
    untrained = "exactly as --model flux"
    if args.flux_power != 1.0:
        untrained = f"as the flux raised to {args.flux_power:g} (flattened towards uniform pooling below 1)"
    exponent = args.min_span_exponent
    cap = ""
    if exponent:
        cap = CAP_DESCRIPTION.format(exponent=exponent, at_075=4.0**exponent, at_05=2.0**exponent)
    return (DESCRIPTION if args.flux_base else PLAIN_DESCRIPTION).format(
        reductions=" and ".join(f"{r:g}" for r in reductions), flux=flux, power=power, untrained=untrained, cap=cap
    )


def finish_card(card: dict, args: argparse.Namespace, description: str) -> dict:
    """The trainer's ``card`` as shipped: the cap, the description, the screen's figures for these weights and cap."""
    card = with_min_span_exponent(card, args.min_span_exponent)
    card["description"] = description  # also when --work held a finished run of an earlier description
    figures = screen_figures(args.screen, sha256=card["weights"]["sha256"], min_span_exponent=args.min_span_exponent)
    if figures is not None:
        card["metrics"]["screen"] = figures
    else:
        card["metrics"].pop("screen", None)
        print(f"{args.screen} holds no screen of these weights and cap: the card has no screen figures", flush=True)
    return card


def rewrite_card(args: argparse.Namespace, description: str) -> int:
    """``--card-only``: finish the card of the bundle already in ``--out`` (its weights untouched)."""
    path = args.out / "config.json"
    if not path.is_file() or not (args.out / "weights.safetensors").is_file():
        raise SystemExit(f"{args.out}: no bundle to rewrite the card of (config.json and weights.safetensors)")
    path.write_text(json.dumps(finish_card(json.loads(path.read_text()), args, description), indent=2) + "\n")
    print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
